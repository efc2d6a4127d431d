/* libFuzzer harness for the ? -> $n rewriting of SQL text sent to PostgreSQL
 * (runtime/store/pg.c, qc_pg_rewrite). Besides the sanitizers, three properties: every
 * placeholder it numbers was a ? of the input, the output is the input with those ?s
 * replaced (so exactly the digits it added longer), and nothing else changed: taking each
 * $k it wrote (k = 1.. in order) back to ? gives the input again. */
#define _POSIX_C_SOURCE 200809L
#include <string.h>

#include "store/pg.h"
#include "fuzz_common.h"

static size_t digits(int k) {
    size_t d = 1;
    while (k >= 10) {
        k /= 10;
        d++;
    }
    return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 16 || memchr(data, 0, size)) return 0; /* the binding refuses NUL bytes */
    int n = -1;
    char *out = qc_pg_rewrite((const char *)data, size, &n);
    if (!out) fuzz_fail("out of memory on %zu bytes", size);
    size_t q = 0;
    for (size_t i = 0; i < size; i++) q += data[i] == '?';
    if (n < 0 || (size_t)n > q) fuzz_fail("%d placeholders from %zu question marks", n, q);
    size_t want = size;
    for (int k = 1; k <= n; k++) want += digits(k);
    size_t len = strlen(out);
    if (len != want) fuzz_fail("output of %zu bytes, expected %zu", len, want);
    /* Undo: walk both texts; where they differ the output must hold the next $k. */
    size_t i = 0, o = 0;
    int k = 0;
    while (i < size) {
        if (out[o] == (char)data[i]) {
            i++;
            o++;
            continue;
        }
        if (data[i] != '?' || out[o] != '$') fuzz_fail("byte %zu changed", i);
        char num[16];
        int w = snprintf(num, sizeof num, "%d", ++k);
        if (strncmp(out + o + 1, num, (size_t)w) != 0) fuzz_fail("placeholder %d misnumbered at %zu", k, i);
        i++;
        o += 1 + (size_t)w;
    }
    if (k != n || o != len) fuzz_fail("%d placeholders found back, %d reported", k, n);
    free(out);
    return 0;
}
