/* The watchdog thread: wakes every tick; while the watched thread stays inside the same
 * section it reads that thread's CPU clock, and once the section has used its budget it
 * queues a signal carrying the section's number to that thread. The handler acts only if
 * that very section is still open, so a late signal never hits the next one. */
#define _GNU_SOURCE
#include "watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct qc_watchdog {
    struct qc_watchdog_section section; /* first: written on the hot path */
    pthread_t watched;
    clockid_t cpu_clock;
    long budget_ns, tick_ns;
    qc_watchdog_overrun_fn on_overrun;
    void *ud;
    _Atomic unsigned long overruns;
    int signo;
    struct sigaction previous;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
};

/* The signal handler finds its watchdog here: one per process. */
static qc_watchdog *_Atomic active;

static void on_signal(int signo, siginfo_t *si, void *ctx) {
    (void)signo;
    (void)ctx;
    qc_watchdog *w = atomic_load(&active);
    if (!w || si->si_code != SI_QUEUE) return;
    unsigned long seq = atomic_load_explicit(&w->section.seq, memory_order_relaxed);
    /* Still inside the section the watchdog measured (odd, same number)? */
    if (!(seq & 1) || (unsigned)si->si_value.sival_int != (unsigned)seq) return;
    atomic_fetch_add(&w->overruns, 1);
    w->on_overrun(w->ud);
}

static long cpu_ns(clockid_t clk) {
    struct timespec ts;
    if (clock_gettime(clk, &ts) != 0) return -1;
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *watch(void *arg) {
    qc_watchdog *w = arg;
    unsigned long seen = 0; /* the open section being measured, 0 = none */
    long started = 0;       /* the watched thread's CPU clock when it was first seen */
    int signalled = 0;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += w->tick_ns;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        int rc = 0;
        while (!w->stop && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&w->cv, &w->mu, &until);
        if (w->stop) break;
        unsigned long seq = atomic_load_explicit(&w->section.seq, memory_order_acquire);
        if (!(seq & 1)) { /* between sections: nothing to measure, no clock read */
            seen = 0;
            continue;
        }
        long now = cpu_ns(w->cpu_clock);
        if (now < 0) continue;
        if (seq != seen) {
            seen = seq;
            started = now;
            signalled = 0;
            continue;
        }
        if (!signalled && now - started >= w->budget_ns) {
            union sigval v = {.sival_int = (int)(unsigned)seq};
            signalled = pthread_sigqueue(w->watched, w->signo, v) == 0;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

qc_watchdog *qc_watchdog_new(long budget_ms, qc_watchdog_overrun_fn on_overrun, void *ud, char *err,
                             size_t errlen) {
    if (budget_ms <= 0 || !on_overrun) {
        snprintf(err, errlen, "watchdog: budget must be positive");
        return NULL;
    }
    qc_watchdog *expected = NULL;
    qc_watchdog *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "watchdog: out of memory");
        return NULL;
    }
    if (!atomic_compare_exchange_strong(&active, &expected, w)) {
        snprintf(err, errlen, "watchdog: one is already running");
        free(w);
        return NULL;
    }
    w->watched = pthread_self();
    w->budget_ns = budget_ms * 1000000L;
    w->tick_ns = w->budget_ns / 4;
    if (w->tick_ns < 1000000L) w->tick_ns = 1000000L;
    if (w->tick_ns > 25000000L) w->tick_ns = 25000000L;
    w->on_overrun = on_overrun;
    w->ud = ud;
    w->signo = SIGRTMIN + 2; /* glibc keeps the first two for itself */
    int rc = pthread_getcpuclockid(w->watched, &w->cpu_clock);
    if (rc != 0) {
        snprintf(err, errlen, "watchdog: no CPU clock for this thread: %s", strerror(rc));
        goto fail;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(w->signo, &sa, &w->previous) != 0) {
        snprintf(err, errlen, "watchdog: sigaction: %s", strerror(errno));
        goto fail;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->mu, NULL);
    /* The watchdog thread takes no signals: process signals (SIGTERM, SIGHUP) stay with
     * the threads that expect them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&w->thread, NULL, watch, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "watchdog: cannot start its thread: %s", strerror(rc));
        sigaction(w->signo, &w->previous, NULL);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        goto fail;
    }
    return w;
fail:
    atomic_store(&active, NULL);
    free(w);
    return NULL;
}

void qc_watchdog_free(qc_watchdog *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    /* Ignoring the signal first discards one still queued, which the previous (default:
     * fatal) disposition would otherwise receive. */
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(w->signo, &ign, NULL);
    sigaction(w->signo, &w->previous, NULL);
    atomic_store(&active, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

struct qc_watchdog_section *qc_watchdog_section(qc_watchdog *w) { return &w->section; }

unsigned long qc_watchdog_overruns(const qc_watchdog *w) { return atomic_load(&w->overruns); }
