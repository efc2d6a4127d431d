/* A CPU-time budget for sections of code on one thread (each call into Lua), enforced from
 * a second thread. Why not Lua's count hook alone: with any hook set, Lua 5.4 calls into
 * its hook machinery before every VM instruction, which cost ~2.5 us of a 30 us token
 * request. Here a section costs two stores; a watchdog thread samples the watched thread's
 * CPU clock a few times per budget and, when one section has used up its budget, signals
 * that thread, whose handler calls on_overrun (the host arms a count hook there).
 * Knows nothing of Lua. One watchdog per process at a time (it owns a signal). */
#ifndef QC_WATCHDOG_H
#define QC_WATCHDOG_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct qc_watchdog qc_watchdog;

/* Called on the watched thread, from a signal handler, while the overrunning section is
 * still open: only async-signal-safe work (set a flag, lua_sethook). */
typedef void (*qc_watchdog_overrun_fn)(void *ud);

/* Watches the calling thread. budget_ms: CPU milliseconds one section may use. The
 * section is stopped between budget and budget + one sampling tick (a quarter of the
 * budget, between 1 and 25 ms). NULL with err filled on failure. */
qc_watchdog *qc_watchdog_new(long budget_ms, qc_watchdog_overrun_fn on_overrun, void *ud, char *err,
                             size_t errlen);

/* Stops the thread and restores the signal's previous disposition. */
void qc_watchdog_free(qc_watchdog *w);

/* Opens and closes a section, on the watched thread. The counter is odd inside one; only
 * this thread writes it, so a plain release store does. */
struct qc_watchdog_section {
    _Atomic unsigned long seq;
};
static inline void qc_watchdog_enter(struct qc_watchdog_section *s) {
    unsigned long v = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->seq, v + 1, memory_order_release);
}
static inline void qc_watchdog_leave(struct qc_watchdog_section *s) {
    unsigned long v = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->seq, v + 1, memory_order_release);
}

/* The section counter to pass to qc_watchdog_enter/leave. */
struct qc_watchdog_section *qc_watchdog_section(qc_watchdog *w);

/* How many sections were stopped so far. */
unsigned long qc_watchdog_overruns(const qc_watchdog *w);

#endif
