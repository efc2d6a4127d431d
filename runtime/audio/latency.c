/* Added latency of the ingest path: see latency.h. A prepare callback runs just before the
 * loop polls, so the first ingest message after it belongs to a new turn. A turn's messages
 * are held (their latencies only) until the turn ends, when the CPU clock says which
 * histograms they belong in. */
#define _POSIX_C_SOURCE 200809L
#include "audio/latency.h"

#include <string.h>
#include <time.h>

#define TURN_MAX 4096 /* messages held per turn; past this they count as on CPU */

static struct {
    uv_prepare_t prep;
    int attached;
    uint64_t turn_ns; /* when this turn's first ingest message came; 0: none yet */
    uint64_t turn_cpu_ns;
    uint64_t last_out_ns;
    uint64_t half_ns; /* when the current half started */
    uint32_t held[TURN_MAX];
    size_t nheld;
    qc_latency_stats cur, prev;
} lat;

static uint64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static size_t bucket(uint64_t ns) {
    uint64_t us = ns / 1000;
    if (us < 1000) return (size_t)(us / 10);
    uint64_t ms = us / 1000;
    return ms < 100 ? QC_LATENCY_FINE + (size_t)ms - 1 : QC_LATENCY_BUCKETS - 1;
}

static void record(uint64_t d, int oncpu) {
    size_t b = bucket(d);
    lat.cur.buckets[b]++;
    lat.cur.count++;
    if (d > lat.cur.max_ns) lat.cur.max_ns = d;
    if (oncpu) lat.cur.oncpu_buckets[b]++, lat.cur.oncpu_count++;
}

/* The previous turn is over: sort its messages by whether the thread stayed on its CPU. */
static void on_prepare(uv_prepare_t *p) {
    (void)p;
    if (!lat.turn_ns) return;
    uint64_t wall = clock_ns(CLOCK_MONOTONIC) - lat.turn_ns, cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID) - lat.turn_cpu_ns;
    int oncpu = wall <= cpu + QC_LATENCY_OFFCPU_NS;
    for (size_t i = 0; i < lat.nheld; i++) record(lat.held[i], oncpu);
    lat.nheld = 0;
    uint64_t busy = lat.last_out_ns > lat.turn_ns ? lat.last_out_ns - lat.turn_ns : 0;
    lat.cur.turn_buckets[bucket(busy)]++;
    lat.cur.turns++;
    if (!oncpu) lat.cur.offcpu_turns++;
    if (busy > lat.cur.turn_max_ns) lat.cur.turn_max_ns = busy;
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
    lat.nheld = 0;
    lat.half_ns = clock_ns(CLOCK_MONOTONIC);
    return 0;
}

void qc_latency_detach(void) {
    if (!lat.attached) return;
    lat.attached = 0;
    lat.turn_ns = 0;
    lat.nheld = 0;
    uv_close((uv_handle_t *)&lat.prep, NULL);
}

void qc_latency_in(void) {
    if (lat.attached && !lat.turn_ns) {
        lat.turn_ns = clock_ns(CLOCK_MONOTONIC);
        lat.turn_cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    }
}

void qc_latency_out(void) {
    if (!lat.turn_ns) return;
    uint64_t t = clock_ns(CLOCK_MONOTONIC), d = t - lat.turn_ns;
    lat.last_out_ns = t;
    if (lat.nheld < TURN_MAX) lat.held[lat.nheld++] = d < UINT32_MAX ? (uint32_t)d : UINT32_MAX;
    else record(d, 1);
}

void qc_latency_get(qc_latency_stats *out) {
    *out = lat.cur;
    out->count += lat.prev.count;
    out->oncpu_count += lat.prev.oncpu_count;
    out->turns += lat.prev.turns;
    out->offcpu_turns += lat.prev.offcpu_turns;
    if (lat.prev.max_ns > out->max_ns) out->max_ns = lat.prev.max_ns;
    if (lat.prev.turn_max_ns > out->turn_max_ns) out->turn_max_ns = lat.prev.turn_max_ns;
    for (size_t b = 0; b < QC_LATENCY_BUCKETS; b++) {
        out->buckets[b] += lat.prev.buckets[b];
        out->oncpu_buckets[b] += lat.prev.oncpu_buckets[b];
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
