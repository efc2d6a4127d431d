/* What every C test in spec/c prints: one TAP line per check (`ok N - what` or `not ok N -
 * what`), and exits non-zero when any failed, which is what ctest reads. */
#ifndef QC_SPEC_TAP_H
#define QC_SPEC_TAP_H

#include <stdio.h>

static int failures, count;

static void ok(int cond, const char *what) {
    count++;
    if (!cond) failures++;
    printf("%s %d - %s\n", cond ? "ok" : "not ok", count, what);
}

#endif
