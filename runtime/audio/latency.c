/* Added latency of the ingest path: see latency.h. A prepare callback runs just before the
 * loop polls, so the first ingest message after it belongs to a new turn. */
#define _POSIX_C_SOURCE 200809L
#include "audio/latency.h"

#include <string.h>
#include <time.h>

static struct {
    uv_prepare_t prep;
    int attached;
    uint64_t turn_ns; /* when this turn's first ingest message came; 0: none yet */
    uint64_t last_out_ns;
    qc_latency_stats st;
} lat;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static size_t bucket(uint64_t ns) {
    uint64_t us = ns / 1000;
    if (us < 1000) return (size_t)(us / 10);
    uint64_t ms = us / 1000;
    return ms < 100 ? QC_LATENCY_FINE + (size_t)ms - 1 : QC_LATENCY_BUCKETS - 1;
}

/* The previous turn is over: it stayed busy from its first ingest message to its last write. */
static void on_prepare(uv_prepare_t *p) {
    (void)p;
    if (!lat.turn_ns) return;
    uint64_t d = lat.last_out_ns > lat.turn_ns ? lat.last_out_ns - lat.turn_ns : 0;
    lat.st.turn_buckets[bucket(d)]++;
    lat.st.turns++;
    if (d > lat.st.turn_max_ns) lat.st.turn_max_ns = d;
    lat.turn_ns = 0;
}

int qc_latency_attach(uv_loop_t *loop) {
    if (lat.attached) return 0;
    if (uv_prepare_init(loop, &lat.prep) || uv_prepare_start(&lat.prep, on_prepare)) return -1;
    uv_unref((uv_handle_t *)&lat.prep); /* it must not keep the loop alive by itself */
    lat.attached = 1;
    lat.turn_ns = 0;
    return 0;
}

void qc_latency_detach(void) {
    if (!lat.attached) return;
    lat.attached = 0;
    lat.turn_ns = 0;
    uv_close((uv_handle_t *)&lat.prep, NULL);
}

void qc_latency_in(void) {
    if (lat.attached && !lat.turn_ns) lat.turn_ns = now_ns();
}

void qc_latency_out(void) {
    if (!lat.turn_ns) return;
    uint64_t t = now_ns(), d = t - lat.turn_ns;
    lat.last_out_ns = t;
    lat.st.buckets[bucket(d)]++;
    lat.st.count++;
    if (d > lat.st.max_ns) lat.st.max_ns = d;
}

void qc_latency_get(qc_latency_stats *out) { memcpy(out, &lat.st, sizeof *out); }

double qc_latency_quantile(const uint64_t buckets[QC_LATENCY_BUCKETS], uint64_t count, double q) {
    if (count == 0) return 0;
    uint64_t want = (uint64_t)(q * (double)count);
    if (want < 1) want = 1;
    uint64_t acc = 0;
    for (size_t b = 0; b < QC_LATENCY_BUCKETS; b++) {
        acc += buckets[b];
        if (acc >= want) {
            if (b < QC_LATENCY_FINE) return (double)(b + 1) * 10;
            if (b < QC_LATENCY_BUCKETS - 1) return (double)(b - QC_LATENCY_FINE + 2) * 1000;
            return 100000; /* at least */
        }
    }
    return 100000;
}
