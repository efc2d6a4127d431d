/* The stoppable pattern matcher without Lua: matches and captures, Lua's error messages,
 * and the check callback stopping a pattern that backtracks exponentially. The full
 * comparison with the stock string library is spec/strmatch_spec.lua. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/strmatch.h"

#include "tap.h"

/* string.find through qc_strmatch_scan: the first match from any start; returns its start
 * (0-based) or -1. */
static long find(qc_strmatch *m, const char *s, const char *p, qc_strmatch_check_fn check, void *ud,
                 size_t *end) {
    int anchor = p[0] == '^';
    const char *pp = p + anchor;
    qc_strmatch_init(m, s, strlen(s), pp, strlen(pp), check, ud);
    const char *at = s;
    const char *e = qc_strmatch_scan(m, &at, pp, anchor, NULL);
    if (!e) return -1;
    *end = (size_t)(e - s);
    return at - s;
}

static int stop_after(void *ud, unsigned long long steps) {
    unsigned long long *limit = ud;
    return steps > *limit ? 7 : 0;
}

static int calls;
static int never_stop(void *ud, unsigned long long steps) {
    (void)ud;
    (void)steps;
    calls++;
    return 0;
}

int main(void) {
    qc_strmatch m;
    size_t e = 0;

    ok(find(&m, "hello world", "o w", NULL, NULL, &e) == 4 && e == 7, "a plain string");
    ok(find(&m, "key = value", "(%w+)%s*=%s*(%w+)", NULL, NULL, &e) == 0 && e == 11 && m.level == 2 &&
           m.cap[0].len == 3 && memcmp(m.cap[1].init, "value", 5) == 0,
       "classes, quantifiers and two captures");
    ok(find(&m, "THE (quick) fox", "%f[%a]%a+%f[%A]", NULL, NULL, &e) == 0 && e == 3, "frontier");
    ok(find(&m, "x = f(a(b)c) + 1", "%b()", NULL, NULL, &e) == 5 && e == 12, "balanced parentheses");
    ok(find(&m, "abcabc", "^(abc)%1$", NULL, NULL, &e) == 0 && e == 6, "back-reference and anchors");
    ok(find(&m, "abc", "()b()", NULL, NULL, &e) == 1 && m.cap[0].len == QC_STRMATCH_CAP_POSITION &&
           m.cap[1].init - m.src == 2,
       "position captures");
    ok(find(&m, "aaab", "a-b", NULL, NULL, &e) == 0 && e == 4, "lazy repetition");
    ok(find(&m, "]x", "[]]", NULL, NULL, &e) == 0, "a ']' first in a set belongs to it");
    ok(find(&m, "ab", "[^%a]", NULL, NULL, &e) == -1 && m.err == QC_STRMATCH_OK, "no match is not an error");

    struct {
        const char *s, *p, *msg;
    } errs[] = {
        {"a", "a%", "malformed pattern (ends with '%')"},
        {"a", "[a", "malformed pattern (missing ']')"},
        {"a", "%fa", "missing '[' after '%f' in pattern"},
        {"a", "%1", "invalid capture index %1"},
        {"a", "(a)%0", "invalid capture index %0"},
        {"a", "a)", "invalid pattern capture"},
        {"a", "%b", "malformed pattern (missing arguments to '%b')"},
    };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        long r = find(&m, errs[i].s, errs[i].p, NULL, NULL, &e);
        char what[160];
        snprintf(what, sizeof what, "error for \"%.20s\": %s (got \"%s\")", errs[i].p, errs[i].msg, m.msg);
        ok(r == -1 && m.err == QC_STRMATCH_EPATTERN && strcmp(m.msg, errs[i].msg) == 0, what);
    }
    /* 200 nested attempts are allowed, as in Lua: "a?" x 199 still matches, x 200 does not. */
    char deep_s[256], deep_p[512];
    memset(deep_s, 'a', 255);
    deep_s[255] = 0;
    for (int n = 199; n <= 200; n++) {
        for (int i = 0; i < n; i++) memcpy(deep_p + 2 * i, "a?", 2);
        deep_p[2 * n] = 0;
        long r = find(&m, deep_s, deep_p, NULL, NULL, &e);
        if (n == 199) ok(r == 0 && e == 199, "199 nested attempts");
        else ok(r == -1 && m.err == QC_STRMATCH_EPATTERN && strcmp(m.msg, "pattern too complex") == 0,
                "200 nested attempts: pattern too complex");
    }
    /* Errors come when the matcher reaches the bad item, as in Lua: here it never does. */
    ok(find(&m, "a", "b%", NULL, NULL, &e) == -1 && m.err == QC_STRMATCH_OK, "an unreached error is no error");

    /* The pattern: 12 stars over 24 'a's and no 'b' backtracks for ~40 s in Lua. */
    char subject[25], pattern[64] = "";
    memset(subject, 'a', 24);
    subject[24] = 0;
    for (int i = 0; i < 12; i++) strcat(pattern, "a*");
    strcat(pattern, "b");
    unsigned long long limit = 5000000;
    ok(find(&m, subject, pattern, stop_after, &limit, &e) == -1 && m.err == QC_STRMATCH_ESTOPPED &&
           m.stop_code == 7,
       "the check callback stops an exponential backtrack");
    ok(qc_strmatch_steps(&m) >= limit && qc_strmatch_steps(&m) < limit + 2 * QC_STRMATCH_CHECK_EVERY,
       "it is asked every QC_STRMATCH_CHECK_EVERY steps");

    /* A long run and a long %b scan inside one attempt are paid for as they go. */
    size_t big = 1u << 22;
    char *s = malloc(big + 1);
    if (!s) return 1;
    memset(s, '(', big);
    s[big] = 0;
    calls = 0;
    qc_strmatch_init(&m, s, big, "%b()", 4, never_stop, NULL);
    ok(qc_strmatch_at(&m, s, "%b()") == NULL && m.err == QC_STRMATCH_OK && qc_strmatch_steps(&m) >= big &&
           calls >= (int)(big / 4096) - 1,
       "a %b scan pays for every byte");
    memset(s, 'a', big);
    calls = 0;
    qc_strmatch_init(&m, s, big, "a*$", 3, never_stop, NULL);
    ok(qc_strmatch_at(&m, s, "a*$") == s + big && qc_strmatch_steps(&m) >= big && calls >= (int)(big / 4096) - 1,
       "a run of a repeated class pays for every byte");
    free(s);

    /* Plain search in windows: a hit across a window's border, a needle longer than a
     * window, and a miss paid for by the byte. */
    size_t n = 300000;
    char *hay2 = malloc(n + 1), *needle = malloc(100001);
    if (!hay2 || !needle) return 1;
    memset(hay2, 'x', n);
    hay2[n] = 0;
    memcpy(hay2 + 65530, "needle", 6);
    qc_strmatch_init(&m, hay2, n, "needle", 6, NULL, NULL);
    ok(qc_strmatch_plain(&m, hay2, n, "needle", 6) == hay2 + 65530, "a plain hit across a window border");
    memset(needle, 'x', 100000);
    needle[99999] = 'y';
    needle[100000] = 0;
    hay2[250000] = 'y';
    qc_strmatch_init(&m, hay2, n, needle, 100000, NULL, NULL);
    ok(qc_strmatch_plain(&m, hay2, n, needle, 100000) == hay2 + 150001, "a needle longer than a window");
    qc_strmatch_init(&m, hay2, n, "nope", 4, NULL, NULL);
    ok(qc_strmatch_plain(&m, hay2, n, "nope", 4) == NULL && m.err == QC_STRMATCH_OK && qc_strmatch_steps(&m) >= n - 4,
       "a plain miss pays for the bytes it read");
    limit = 100000;
    qc_strmatch_init(&m, hay2, n, "nope", 4, stop_after, &limit);
    ok(qc_strmatch_plain(&m, hay2, n, "nope", 4) == NULL && m.err == QC_STRMATCH_ESTOPPED, "and can be stopped");
    free(hay2);
    free(needle);

    ok(qc_strmatch_is_plain("a)b]c", 5) && !qc_strmatch_is_plain("a.b", 3) && !qc_strmatch_is_plain("x-", 2),
       "plain patterns");
    const char hay[] = "abcabd";
    ok(qc_strmatch_memfind(hay, 6, "abd", 3) == hay + 3 && qc_strmatch_memfind(hay, 6, "", 0) == hay &&
           qc_strmatch_memfind(hay, 2, "abc", 3) == NULL,
       "plain search");

    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
