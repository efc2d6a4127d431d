/* The ingest path's added latency, for /health and bench/ (bench/README.md, "Ingest"): per
 * audio message, the time from the start of the loop turn that read it to the moment its
 * audio had been handed to the STT stream. A message read while the loop is busy with others
 * waits for them, and that wait is what grows with the number of tracks, so the clock starts
 * at the turn's first ingest message, not at each message.
 *
 * A turn in which the loop thread was off its CPU for a while (preempted by other work on the
 * machine, or blocked in a syscall) adds that time to every message after it. Such turns are
 * told apart by the thread's CPU clock, read twice a turn: the "on CPU" histogram leaves them
 * out, so it shows what the code adds, and the plain one what the machine added on top.
 *
 * Always on once attached: one clock read per message, three per turn. The histograms cover
 * the last 10 to 20 seconds (two 10 s halves, the older dropped as a new one starts), so a
 * reader sees the present load, not the start-up. Loop thread only; one loop per process
 * (the server's). */
#ifndef QC_AUDIO_LATENCY_H
#define QC_AUDIO_LATENCY_H

#include <stdint.h>
#include <uv.h>

/* Buckets: 10 us wide to 1 ms, then 1 ms wide to 100 ms, then one for the rest. */
#define QC_LATENCY_FINE 100
#define QC_LATENCY_BUCKETS (QC_LATENCY_FINE + 99 + 1)
#define QC_LATENCY_HALF_NS 10000000000ull
/* A turn whose wall time passes its CPU time by more than this was off the CPU. */
#define QC_LATENCY_OFFCPU_NS 200000ull

/* Over the last 10 to 20 s. */
typedef struct {
    uint64_t count;                         /* messages measured */
    uint64_t max_ns;
    uint64_t buckets[QC_LATENCY_BUCKETS];
    uint64_t oncpu_count;                   /* messages of turns the thread ran through */
    uint64_t oncpu_buckets[QC_LATENCY_BUCKETS];
    uint64_t turns;                         /* loop turns that carried ingest messages */
    uint64_t offcpu_turns;                  /* of which the thread was off its CPU */
    uint64_t turn_max_ns;
    uint64_t turn_buckets[QC_LATENCY_BUCKETS]; /* each turn's busy time, wall clock */
} qc_latency_stats;

/* Starts measuring on loop (a prepare handle, unreferenced, marks each turn). Idempotent. */
int qc_latency_attach(uv_loop_t *loop);

/* Stops measuring and closes the handle (the loop must run on to release it). */
void qc_latency_detach(void);

/* An ingest message was read (call before handing it on), and its audio has now been
 * written to the STT stream (call after). Both do nothing when not attached. */
void qc_latency_in(void);
void qc_latency_out(void);

void qc_latency_get(qc_latency_stats *out);

/* The q-quantile (0..1) of a histogram, in microseconds: the upper edge of its bucket, so
 * it never reads lower than the truth. 0 for an empty one. */
double qc_latency_quantile(const uint64_t buckets[QC_LATENCY_BUCKETS], uint64_t count, double q);

#endif
