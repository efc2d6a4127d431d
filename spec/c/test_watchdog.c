/* The watchdog: a section that burns CPU past its budget is signalled while still open;
 * short sections, time spent asleep inside a section and time between sections are not. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "host/watchdog.h"

#include "tap.h"

static volatile sig_atomic_t fired;
static void on_overrun(void *ud) {
    (void)ud;
    fired++;
}

static double thread_cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Burns CPU until the overrun arrives or limit_ms of CPU went by; returns the CPU used. */
static double spin_until_fired(double limit_ms) {
    double start = thread_cpu_ms();
    volatile unsigned long sink = 0;
    while (!fired && thread_cpu_ms() - start < limit_ms)
        for (int i = 0; i < 10000; i++) sink += (unsigned long)i;
    return thread_cpu_ms() - start;
}

int main(void) {
    char err[256];
    qc_watchdog *w = qc_watchdog_new(40, on_overrun, NULL, err, sizeof err);
    ok(w != NULL, "starts with a 40 ms budget");
    if (!w) return 1;
    struct qc_watchdog_section *s = qc_watchdog_section(w);

    qc_watchdog *second = qc_watchdog_new(40, on_overrun, NULL, err, sizeof err);
    ok(second == NULL && strstr(err, "already") != NULL, "refuses a second watchdog in the process");
    ok(qc_watchdog_new(0, on_overrun, NULL, err, sizeof err) == NULL, "refuses a budget of zero");

    /* A runaway section: signalled once it has used its budget, within a tick or two. */
    qc_watchdog_enter(s);
    double used = spin_until_fired(2000);
    qc_watchdog_leave(s);
    ok(fired == 1, "signals a section that burns CPU past its budget");
    /* A tick is 10 ms here; the slack is for a watchdog thread the host is slow to schedule. */
    ok(used >= 40 && used < 40 + 500, "signals it after the budget, not long after");
    ok(qc_watchdog_overruns(w) == 1, "counts the overrun");

    /* Many short sections adding up to far more than the budget: none is signalled. */
    fired = 0;
    double start = thread_cpu_ms();
    while (thread_cpu_ms() - start < 200) {
        qc_watchdog_enter(s);
        volatile unsigned long sink = 0;
        for (int i = 0; i < 20000; i++) sink += (unsigned long)i;
        qc_watchdog_leave(s);
    }
    ok(fired == 0, "leaves short sections alone, however many");

    /* Asleep inside a section for three budgets of wall time: CPU is what counts. */
    qc_watchdog_enter(s);
    struct timespec nap = {0, 120 * 1000000L};
    double t0 = wall_ms();
    while (wall_ms() - t0 < 120) nanosleep(&nap, &nap);
    qc_watchdog_leave(s);
    ok(fired == 0, "does not count time the thread spends asleep");

    /* Busy outside any section. */
    spin_until_fired(150);
    ok(fired == 0, "does not watch time between sections");

    /* The next runaway is caught too (the watchdog re-arms per section). */
    qc_watchdog_enter(s);
    spin_until_fired(2000);
    qc_watchdog_leave(s);
    ok(fired == 1 && qc_watchdog_overruns(w) == 2, "catches a second runaway section");

    qc_watchdog_free(w);
    w = qc_watchdog_new(40, on_overrun, NULL, err, sizeof err);
    ok(w != NULL, "starts again after the first was freed");
    qc_watchdog_free(w);

    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
