/* The ingest latency histogram: messages of one loop turn are timed from the turn's first
 * message, turns are told apart by the loop's prepare phase, quantiles read bucket edges. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "audio/latency.h"

#include "tap.h"

static void spin_us(long us) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000 < us);
}

static int turns_run;

/* One "turn" of three messages, each taking 200 us to process: the third waited for the two
 * before it, so it reads >= 600 us although its own work took 200. The third turn sleeps
 * 2 ms before its messages instead: the thread is off its CPU. */
static void turn(uv_timer_t *t) {
    if (turns_run == 2) {
        struct timespec ts = {0, 2000000};
        qc_latency_in();
        nanosleep(&ts, NULL);
        qc_latency_out();
    } else {
        for (int i = 0; i < 3; i++) {
            qc_latency_in();
            spin_us(200);
            qc_latency_out();
        }
    }
    if (++turns_run == 3) uv_timer_stop(t);
}

int main(void) {
    qc_latency_stats st;
    qc_latency_in();
    qc_latency_out();
    qc_latency_get(&st);
    ok(st.count == 0, "nothing is recorded before attach");

    uv_loop_t loop;
    uv_loop_init(&loop);
    ok(qc_latency_attach(&loop) == 0 && qc_latency_attach(&loop) == 0, "attach, twice");
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, turn, 1, 5);
    uv_run(&loop, UV_RUN_DEFAULT);
    /* the second turn ends at the next prepare: one more loop turn, with nothing else to do */
    uv_run(&loop, UV_RUN_NOWAIT);
    qc_latency_get(&st);
    ok(st.count == 7, "seven messages measured");
    ok(st.turns == 3, "in three turns");
    /* The spinning turns are on CPU unless the machine preempted them: only the sleeping
     * one is certain. */
    ok(st.offcpu_turns >= 1 && st.oncpu_count <= 6, "the turn that slept is off CPU and left out of the on-CPU histogram");
    ok(st.max_ns >= 2000000, "and its message waited out the sleep");
    double p50 = qc_latency_quantile(st.buckets, st.count, 0.5), p100 = qc_latency_quantile(st.buckets, st.count, 1.0);
    printf("# p50 %.0f us, max %.0f us, max_ns %llu, turn p100 %.0f us\n", p50, p100, (unsigned long long)st.max_ns,
           qc_latency_quantile(st.turn_buckets, st.turns, 1.0));
    ok(p50 >= 400, "the middle message waited for the first");
    ok(qc_latency_quantile(st.buckets, st.count, 6.0 / 7) >= 600, "the last of three waited for both before it");
    (void)p100;
    ok(qc_latency_quantile(st.turn_buckets, st.turns, 1.0) >= 600, "a turn's busy time covers its messages");
    qc_latency_detach();
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ok(uv_loop_close(&loop) == 0, "detach releases the handle");

    uint64_t b[QC_LATENCY_BUCKETS];
    memset(b, 0, sizeof b);
    ok(qc_latency_quantile(b, 0, 0.99) == 0, "empty: 0");
    b[0] = 99, b[QC_LATENCY_FINE + 4] = 1; /* 99 under 10 us, one at 5..6 ms */
    ok(qc_latency_quantile(b, 100, 0.99) == 10, "p99 of 99 fast and one slow: the fast bucket's edge");
    ok(qc_latency_quantile(b, 100, 1.0) == 6000, "p100: the slow bucket's upper edge, 6 ms");
    return failures ? 1 : 0;
}
