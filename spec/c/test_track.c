/* runtime/audio/track.c: bytes in pieces of any size give the same 16 kHz samples as the
 * same bytes at once (a frame split across pieces is carried, an odd byte waits for its
 * partner); counters and the muted flag; finish reaches QC_STT_CLOSED and frees the track
 * (ASan checks); the null engine counts and closes. A capturing engine made here records
 * what the track writes. TAP output. */
#define _POSIX_C_SOURCE 200809L
#include "audio/track.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define PI 3.14159265358979323846

/* ---- an engine that keeps what it is given -------------------------------------------- */
typedef struct {
    qc_stt_stream base;
    qc_stt_callbacks cb;
    void *ud;
    int16_t *buf;
    size_t n, cap;
    int finished;
} cap_stream;

static cap_stream *last;

static qc_stt_stream *c_open(qc_stt_engine *e, const qc_stt_callbacks *cb, void *ud, char *err, size_t errlen);
static size_t c_write(qc_stt_stream *s, const int16_t *x, size_t n) {
    cap_stream *c = (cap_stream *)s;
    size_t k = n < c->cap - c->n ? n : c->cap - c->n;
    memcpy(c->buf + c->n, x, k * sizeof *x);
    c->n += k;
    return k;
}
static void c_finish(qc_stt_stream *s) { ((cap_stream *)s)->finished = 1; }
static void c_abort(qc_stt_stream *s) {
    cap_stream *c = (cap_stream *)s;
    if (c == last) last = NULL;
    free(c->buf);
    free(c);
}
static size_t c_room(const qc_stt_stream *s) {
    const cap_stream *c = (const cap_stream *)s;
    return c->cap - c->n;
}
static void c_stats(const qc_stt_engine *e, qc_stt_stats *o) {
    (void)e;
    o->name = "capture";
}
static void c_free(qc_stt_engine *e) { (void)e; }
static const qc_stt_ops cap_ops = {"capture", c_open, c_write, c_finish, c_abort, c_stats, c_free, c_room};
static qc_stt_engine cap_engine = {&cap_ops};

static qc_stt_stream *c_open(qc_stt_engine *e, const qc_stt_callbacks *cb, void *ud, char *err, size_t errlen) {
    (void)e, (void)err, (void)errlen;
    cap_stream *c = calloc(1, sizeof *c);
    c->base.ops = &cap_ops;
    c->cb = *cb;
    c->ud = ud;
    c->cap = 40000;
    c->buf = malloc(c->cap * sizeof *c->buf);
    last = c;
    return &c->base;
}

/* The engine closing a finished stream, as a real one does from its loop. */
static void close_last(void) {
    cap_stream *c = last;
    last = NULL;
    qc_stt_callbacks cb = c->cb;
    void *ud = c->ud;
    free(c->buf);
    free(c);
    cb.on_state(ud, QC_STT_CLOSED, NULL);
}

static int closed_count;
static void on_result(void *ud, const qc_stt_result *r) { (void)ud, (void)r; }
static void on_state(void *ud, qc_stt_state s, const char *d) {
    (void)ud, (void)d;
    if (s == QC_STT_CLOSED) closed_count++;
}
static const qc_stt_callbacks cbs = {on_result, on_state};

/* One second of 48 kHz stereo: a 440 Hz tone left, 660 Hz right, as s16le bytes. */
static unsigned char *stereo_bytes(size_t *len) {
    size_t frames = 48000;
    unsigned char *b = malloc(frames * 4);
    for (size_t i = 0; i < frames; i++) {
        int16_t l = (int16_t)lrint(9000 * sin(2 * PI * 440 * (double)i / 48000));
        int16_t r = (int16_t)lrint(7000 * sin(2 * PI * 660 * (double)i / 48000));
        b[4 * i] = (unsigned char)(l & 0xff), b[4 * i + 1] = (unsigned char)((uint16_t)l >> 8);
        b[4 * i + 2] = (unsigned char)(r & 0xff), b[4 * i + 3] = (unsigned char)((uint16_t)r >> 8);
    }
    *len = frames * 4;
    return b;
}

int main(void) {
    char err[256];
    size_t len;
    unsigned char *bytes = stereo_bytes(&len);

    /* At once. */
    qc_track *t = qc_track_new(&cap_engine, 48000, 2, 3, &cbs, NULL, err, sizeof err);
    ok(t != NULL, "a 48 kHz stereo track opens a stream");
    ok(qc_track_frame_bytes(t) == 4, "its frames take 4 bytes");
    qc_track_feed(t, bytes, len);
    size_t n_whole = last->n;
    int16_t *whole = malloc(n_whole * sizeof *whole);
    memcpy(whole, last->buf, n_whole * sizeof *whole);
    qc_track_stats st;
    qc_track_stats_get(t, &st);
    ok(st.bytes_in == len && st.frames_in == 48000 && st.samples_out == n_whole && st.dropped == 0 && st.carried == 0,
       "counters: bytes, frames, samples out, nothing dropped or carried");
    ok(n_whole >= 15900 && n_whole <= 16000, "one second in gives about 16000 samples out");
    qc_track_finish(t);
    ok(last && last->finished && closed_count == 0, "finish finishes the stream; CLOSED waits for the engine");
    close_last();
    ok(closed_count == 1, "CLOSED reaches the track's owner, and the track is freed (ASan)");

    /* One byte at a time: every frame is split across four calls. */
    t = qc_track_new(&cap_engine, 48000, 2, 3, &cbs, NULL, err, sizeof err);
    int carried_ok = 1;
    for (size_t i = 0; i < len; i++) {
        qc_track_feed(t, bytes + i, 1);
        if (i < 8) {
            qc_track_stats_get(t, &st);
            carried_ok &= st.carried == (i + 1) % 4;
        }
    }
    ok(carried_ok, "1, 2, 3 bytes of a frame are carried until the 4th arrives");
    ok(last->n == n_whole && memcmp(last->buf, whole, n_whole * sizeof *whole) == 0,
       "bytes fed one at a time give exactly the samples fed at once");
    qc_track_abort(t);
    ok(last == NULL && closed_count == 1, "abort drops the stream with no callback");

    /* Pieces of odd sizes, as WebSocket messages that do not keep to frames. */
    t = qc_track_new(&cap_engine, 48000, 2, 3, &cbs, NULL, err, sizeof err);
    size_t at = 0, step = 3;
    while (at < len) {
        size_t k = step < len - at ? step : len - at;
        qc_track_feed(t, bytes + at, k);
        at += k;
        step = step * 31 % 4001 + 1;
    }
    ok(last->n == n_whole && memcmp(last->buf, whole, n_whole * sizeof *whole) == 0,
       "pieces of 1 to 4001 bytes give the same samples");
    qc_track_feed(t, bytes, 3);
    qc_track_stats_get(t, &st);
    ok(st.carried == 3 && st.frames_in == 48000, "3 trailing bytes wait as carried, not as a frame");
    qc_track_set_muted(t, 1);
    qc_track_set_muted(t, 1);
    qc_track_set_muted(t, 0);
    qc_track_stats_get(t, &st);
    ok(!st.muted && st.mute_changes == 2, "the muted flag and its changes are recorded");
    qc_track_abort(t);

    /* A full stream: the excess is counted as dropped; room says what fits. */
    t = qc_track_new(&cap_engine, 48000, 2, 3, &cbs, NULL, err, sizeof err);
    last->cap = 1000;
    ok(qc_track_room(t) == 1000, "room is what the stream can take");
    qc_track_feed(t, bytes, len);
    qc_track_stats_get(t, &st);
    ok(st.samples_out == 1000 && st.dropped == n_whole - 1000 && qc_track_room(t) == 0,
       "samples a full stream refuses are counted as dropped");
    qc_track_abort(t);

    ok(!qc_track_new(&cap_engine, 48000, 0, 3, &cbs, NULL, err, sizeof err) && last == NULL,
       "zero channels: no track, no stream");

    /* The null engine, on a loop. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    qc_stt_config cfg = {.engine = "null"};
    qc_stt_engine *e = qc_stt_engine_new(&loop, &cfg, err, sizeof err);
    ok(e != NULL, "the null engine is made by name");
    closed_count = 0;
    t = qc_track_new(e, 48000, 2, 3, &cbs, NULL, err, sizeof err);
    qc_track *t2 = qc_track_new(e, 16000, 1, 3, &cbs, NULL, err, sizeof err);
    qc_track_feed(t, bytes, len);
    qc_track_feed(t2, bytes, 3200);
    qc_stt_stats ss;
    qc_stt_engine_stats(e, &ss);
    ok(strcmp(ss.name, "null") == 0 && ss.streams == 2 && ss.samples_in == n_whole + 1600,
       "it counts streams and samples");
    qc_track_finish(t);
    qc_track_abort(t2);
    ok(closed_count == 0, "no CLOSED from inside finish");
    uv_run(&loop, UV_RUN_DEFAULT);
    qc_stt_engine_stats(e, &ss);
    ok(closed_count == 1 && ss.streams == 0, "CLOSED comes from the loop; no stream left");
    qc_stt_engine_free(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    ok(uv_loop_close(&loop) == 0, "no handle left on the loop");

    cfg.engine = "whisper";
    ok(!qc_stt_engine_new(&loop, &cfg, err, sizeof err) && strstr(err, "unknown STT engine"), "an unknown engine is named");

    free(whole);
    free(bytes);
    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
