/* The ingest path's added latency, for bench/ (bench/README.md, "Ingest"): per audio message,
 * the time from the start of the loop turn that read it to the moment its audio had been
 * handed to the STT stream. A message read while the loop is busy with others waits for
 * them, and that wait is what grows with the number of tracks, so the clock starts at the
 * turn's first ingest message, not at each message. Also recorded: how long each such turn
 * stayed busy, which bounds how long bytes sat in the kernel before the turn that read them.
 * Always on once attached: one clock read per message and one per turn. The histograms
 * cover the last 10 to 20 seconds (two 10 s halves, the older dropped as a new one starts),
 * so a reader sees the present load, not the start-up. Loop thread only; one loop per
 * process (the server's). */
#ifndef QC_AUDIO_LATENCY_H
#define QC_AUDIO_LATENCY_H

#include <stdint.h>
#include <uv.h>

/* Buckets: 10 us wide to 1 ms, then 1 ms wide to 100 ms, then one for the rest. */
#define QC_LATENCY_FINE 100
#define QC_LATENCY_BUCKETS (QC_LATENCY_FINE + 99 + 1)
#define QC_LATENCY_HALF_NS 10000000000ull

/* Over the last 10 to 20 s. */
typedef struct {
    uint64_t count;                         /* messages measured */
    uint64_t max_ns;
    uint64_t buckets[QC_LATENCY_BUCKETS];
    uint64_t turns;                         /* loop turns that carried ingest messages */
    uint64_t turn_max_ns;
    uint64_t turn_buckets[QC_LATENCY_BUCKETS];
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
