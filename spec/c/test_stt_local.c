/* The local engine's life cycle (runtime/stt/local.c) with Debian's en-us model: a stream
 * aborted while a worker decodes it gets no callback after the abort; a finished stream
 * reports CLOSED from the loop, after its results; streams the owner never waited for are
 * freed with the engine; a missing model is named. ASan checks the memory. Words are the
 * specs' business (spec/stt_local_spec.lua, on festival speech); here the audio is noise. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stt/stt.h"
#include "tap.h"

typedef struct {
    int results, closed, failed, after_abort, aborted;
} watch;

static void on_result(void *ud, const qc_stt_result *r) {
    watch *w = ud;
    (void)r;
    if (w->aborted) w->after_abort++;
    w->results++;
}
static void on_state(void *ud, qc_stt_state s, const char *d) {
    watch *w = ud;
    (void)d;
    if (w->aborted) w->after_abort++;
    if (s == QC_STT_CLOSED) w->closed++;
    if (s == QC_STT_FAILED) w->failed++;
}
static const qc_stt_callbacks cbs = {on_result, on_state};

static watch *done_when;
static void check(uv_idle_t *h) {
    if (done_when->closed) uv_idle_stop(h);
}

int main(void) {
    char err[512];
    uv_loop_t loop;
    uv_loop_init(&loop);
    qc_stt_config cfg = {.engine = "local", .model_dir = "/usr/share/pocketsphinx/model/en-us"};
    qc_stt_engine *e = qc_stt_engine_new(&loop, &cfg, err, sizeof err);
    ok(e != NULL, "the local engine is made with Debian's model");
    if (!e) return printf("# %s\n1..%d\n", err, count), 1;

    /* Three seconds of loud noise: enough for the decoder to be made and to work. */
    size_t n = 3 * QC_STT_RATE;
    int16_t *noise = malloc(n * sizeof *noise);
    unsigned x = 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        noise[i] = (int16_t)((int)((x >> 16) & 0x3fff) - 0x2000);
    }

    watch wa = {0}, wb = {0}, wc = {0};
    qc_stt_stream *a = qc_stt_stream_open(e, &cbs, &wa, err, sizeof err);
    qc_stt_stream *b = qc_stt_stream_open(e, &cbs, &wb, err, sizeof err);
    qc_stt_stream *c = qc_stt_stream_open(e, &cbs, &wc, err, sizeof err);
    ok(a && b && c, "three streams open");
    ok(qc_stt_stream_room(a) == 15 * QC_STT_RATE, "a stream has room for 15 s");
    ok(qc_stt_stream_write(a, noise, n) == n && qc_stt_stream_write(b, noise, n) == n, "writes are taken whole");
    ok(qc_stt_stream_room(a) <= 12 * QC_STT_RATE + 2048, "room shrinks by what waits for a worker");
    qc_stt_stats st;
    qc_stt_engine_stats(e, &st);
    ok(st.streams == 3 && st.samples_in == 2 * n && strcmp(st.state, "ready") == 0, "stats: streams, samples, ready");

    /* a: aborted while its decoder is being made or used. */
    qc_stt_stream_abort(a);
    wa.aborted = 1;
    /* b: finished; c: written, never finished, left to the engine. */
    qc_stt_stream_finish(b);
    qc_stt_stream_write(c, noise, n);
    ok(wb.closed == 0, "no CLOSED from inside finish");
    uv_idle_t idle;
    uv_idle_init(&loop, &idle);
    done_when = &wb;
    uv_idle_start(&idle, check);
    while (!wb.closed) uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&idle, NULL);
    ok(wb.closed == 1 && wb.failed == 0, "the finished stream reports CLOSED once, after decoding");
    ok(wa.after_abort == 0, "the aborted stream gets no callback after the abort");
    qc_stt_engine_stats(e, &st);
    ok(st.streams <= 2, "closed streams leave the count");

    /* Writing past the ring: the rest is refused and counted. */
    size_t big = 20 * QC_STT_RATE, took = 0;
    int16_t *lots = calloc(big, sizeof *lots);
    qc_stt_stream *d = qc_stt_stream_open(e, &cbs, &wc, err, sizeof err);
    took = qc_stt_stream_write(d, lots, big);
    qc_stt_engine_stats(e, &st);
    ok(took < big && st.dropped_samples >= big - took - 2048, "a write past the buffer is cut, the rest counted dropped");
    qc_stt_stream_abort(d);
    qc_stt_stream_abort(c);
    qc_stt_engine_free(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    ok(uv_loop_close(&loop) == 0, "the engine's handles are closed");

    uv_loop_init(&loop);
    cfg.model_dir = "/nonexistent";
    ok(!qc_stt_engine_new(&loop, &cfg, err, sizeof err) && strstr(err, "/nonexistent/en-us"), "a missing model is named");
    uv_loop_close(&loop);

    free(noise);
    free(lots);
    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
