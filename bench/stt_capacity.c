/* Capacity of the audio path without a network (bench/README.md, "Local STT capacity").
 *
 *   bench_stt_capacity resample FILE.wav
 *       The resampler's cost: FILE (48 kHz stereo, as Egress sends it) cut into 10 ms
 *       messages, each through qc_track_feed (downmix, speexdsp, the null engine's count).
 *       Prints CPU ns per message at each quality 0, 3, 5, and the track's heap.
 *
 *   bench_stt_capacity local N FILE.wav [REPEAT]
 *       N tracks of FILE (REPEAT times over, default 1: a longer run puts the decoders'
 *       loading in proportion) through the local engine at once, each fed as fast as its stream
 *       takes it. Prints audio seconds decoded per wall second (the tracks it keeps up with in
 *       real time), per CPU second, and the process's resident memory per stream while
 *       every decoder is loaded.
 *
 * Links qc_core only: no server, no Lua, nothing between the file and the engine. */
#define _POSIX_C_SOURCE 200809L
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include "audio/track.h"
#include "audio/wav.h"
#include "stt/stt.h"

static double now_s(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static uint8_t *load(const char *path, qc_wav_info *w) {
    FILE *f = fopen(path, "rb");
    if (!f) return perror(path), NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *all = malloc((size_t)size);
    if (!all || fread(all, 1, (size_t)size, f) != (size_t)size) return fclose(f), free(all), NULL;
    fclose(f);
    char err[256];
    if (qc_wav_parse(all, (size_t)size, (uint64_t)size, w, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", path, err);
        free(all);
        return NULL;
    }
    return all;
}

static void no_result(void *ud, const qc_stt_result *r) { (void)ud, (void)r; }
static int closed;
static void count_closed(void *ud, qc_stt_state s, const char *d) {
    (void)ud, (void)d;
    if (s == QC_STT_CLOSED) closed++;
}

static int resample(const char *path) {
    qc_wav_info w;
    uint8_t *all = load(path, &w);
    if (!all) return 1;
    const uint8_t *pcm = all + w.data_offset;
    size_t msg = (size_t)w.rate / 100 * 2 * w.channels; /* 10 ms */
    size_t nmsg = w.data_bytes / msg;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];
    qc_stt_config cfg = {.engine = "null"};
    qc_stt_engine *e = qc_stt_engine_new(&loop, &cfg, err, sizeof err);
    qc_stt_callbacks cb = {no_result, count_closed};
    int qualities[] = {0, 3, 5};
    for (int q = 0; q < 3; q++) {
        struct mallinfo2 before = mallinfo2();
        qc_track *t = qc_track_new(e, w.rate, w.channels, qualities[q], &cb, NULL, err, sizeof err);
        struct mallinfo2 after = mallinfo2();
        /* Several passes over the file, for a measurable time. */
        int passes = 20;
        double c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
        for (int p = 0; p < passes; p++)
            for (size_t i = 0; i < nmsg; i++) qc_track_feed(t, pcm + i * msg, msg);
        double c1 = now_s(CLOCK_PROCESS_CPUTIME_ID);
        printf("resample quality=%d rate=%u channels=%u messages=%zu ns_per_10ms_message=%.0f track_heap_bytes=%zu\n",
               qualities[q], w.rate, w.channels, nmsg * passes, (c1 - c0) * 1e9 / (double)(nmsg * passes),
               after.uordblks - before.uordblks);
        qc_track_abort(t);
    }
    qc_stt_engine_free(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(all);
    return 0;
}

typedef struct {
    qc_track *t;
    size_t at;
    int done, round;
} feeder;

static struct {
    feeder *f;
    int n, repeat;
    const uint8_t *pcm;
    qc_wav_info w;
    long rss_max;
    uv_timer_t tick;
} cap;

static void feed(uv_timer_t *tm) {
    (void)tm;
    size_t fb = 2 * (size_t)cap.w.channels;
    for (int i = 0; i < cap.n; i++) {
        feeder *f = &cap.f[i];
        if (f->done) continue;
        size_t room = qc_track_room(f->t);
        size_t frames = room * cap.w.rate / QC_STT_RATE;
        frames = frames > 8 ? frames - 8 : 0;
        size_t bytes = frames * fb, left = cap.w.data_bytes - f->at;
        if (bytes > left) bytes = left;
        if (bytes) qc_track_feed(f->t, cap.pcm + f->at, bytes);
        f->at += bytes;
        if (f->at == cap.w.data_bytes && ++f->round < cap.repeat) f->at = 0;
        if (f->at == cap.w.data_bytes) {
            f->done = 1;
            qc_track_finish(f->t);
        }
    }
    long r = rss_kb();
    if (r > cap.rss_max) cap.rss_max = r;
    if (closed == cap.n) uv_stop(tm->loop);
}

static int local(int n, const char *path, int repeat) {
    cap.repeat = repeat;
    cap.pcm = load(path, &cap.w);
    if (!cap.pcm) return 1;
    cap.pcm += cap.w.data_offset;
    cap.n = n;
    cap.f = calloc((size_t)n, sizeof *cap.f);
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];
    qc_stt_config cfg = {.engine = "local"};
    long rss0 = rss_kb();
    qc_stt_engine *e = qc_stt_engine_new(&loop, &cfg, err, sizeof err);
    if (!e) return fprintf(stderr, "local engine: %s\n", err), 1;
    qc_stt_callbacks cb = {no_result, count_closed};
    for (int i = 0; i < n; i++) cap.f[i].t = qc_track_new(e, cap.w.rate, cap.w.channels, 3, &cb, NULL, err, sizeof err);
    double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    uv_timer_init(&loop, &cap.tick);
    uv_timer_start(&cap.tick, feed, 0, 5);
    uv_run(&loop, UV_RUN_DEFAULT);
    double w1 = now_s(CLOCK_MONOTONIC), c1 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    qc_stt_stats st;
    qc_stt_engine_stats(e, &st);
    double audio = (double)cap.w.data_bytes / (2.0 * cap.w.channels * cap.w.rate) * n * repeat;
    printf("local tracks=%d audio_s=%.1f wall_s=%.2f cpu_s=%.2f realtime_tracks=%.1f audio_s_per_cpu_s=%.1f "
           "rss_base_mb=%.1f rss_peak_mb=%.1f rss_per_stream_mb=%.1f finals=%llu partials=%llu dropped=%llu\n",
           n, audio, w1 - w0, c1 - c0, audio / (w1 - w0), audio / (c1 - c0), rss0 / 1024.0, cap.rss_max / 1024.0,
           (cap.rss_max - rss0) / 1024.0 / n, (unsigned long long)st.results_final,
           (unsigned long long)st.results_partial, (unsigned long long)st.dropped_samples);
    uv_close((uv_handle_t *)&cap.tick, NULL);
    qc_stt_engine_free(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "resample") == 0) return resample(argv[2]);
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "local") == 0 && atoi(argv[2]) > 0)
        return local(atoi(argv[2]), argv[3], argc == 5 && atoi(argv[4]) > 0 ? atoi(argv[4]) : 1);
    fprintf(stderr, "usage: bench_stt_capacity resample FILE.wav | local N FILE.wav [REPEAT]\n");
    return 2;
}
