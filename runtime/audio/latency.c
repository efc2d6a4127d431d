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
    uint64_t half_ns; /* when the current half started */
    qc_latency_stats cur, prev;
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
    lat.cur.turn_buckets[bucket(d)]++;
    lat.cur.turns++;
    if (d > lat.cur.turn_max_ns) lat.cur.turn_max_ns = d;
    lat.turn_ns = 0;
    if (lat.last_out_ns - lat.half_ns >= QC_LATENCY_HALF_NS) {
        lat.prev = lat.cur;
        memset(&lat.cur, 0, sizeof lat.cur);
        lat.half_ns = lat.last_out_ns;
    }
}

int qc_latency_attach(uv_loop_t *loop) {
    if (lat.attached) return 0;
    if (uv_prepare_init(loop, &lat.prep) || uv_prepare_start(&lat.prep, on_prepare)) return -1;
    uv_unref((uv_handle_t *)&lat.prep); /* it must not keep the loop alive by itself */
    lat.attached = 1;
    lat.turn_ns = 0;
    lat.half_ns = now_ns();
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
    lat.cur.buckets[bucket(d)]++;
    lat.cur.count++;
    if (d > lat.cur.max_ns) lat.cur.max_ns = d;
}

void qc_latency_get(qc_latency_stats *out) {
    *out = lat.cur;
    out->count += lat.prev.count;
    out->turns += lat.prev.turns;
    if (lat.prev.max_ns > out->max_ns) out->max_ns = lat.prev.max_ns;
    if (lat.prev.turn_max_ns > out->turn_max_ns) out->turn_max_ns = lat.prev.turn_max_ns;
    for (size_t b = 0; b < QC_LATENCY_BUCKETS; b++) {
        out->buckets[b] += lat.prev.buckets[b];
        out->turn_buckets[b] += lat.prev.turn_buckets[b];
    }
}

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
