/* A backtracking matcher for Lua 5.4 patterns, written from the manual's description and
 * checked against the stock library case by case (spec/strmatch_spec.lua). Where it must
 * agree with Lua beyond the manual (which error is raised first, when nesting becomes
 * "pattern too complex"), it tries the pattern items in the same order and nests attempts
 * at the same places. Every loop pays into a step counter, so the check callback runs at
 * least every QC_STRMATCH_CHECK_EVERY steps however the pattern backtracks. */
#define _GNU_SOURCE
#include "strmatch.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define ESC '%'
#define UC(c) ((unsigned char)(c))

/* Long scans (a run of "x*", a "%b" search) are cut into slices of this many bytes, each
 * paid for before the next, so one scan cannot outrun the budget by much. */
#define SLICE 4096

__attribute__((noinline, cold)) static int tick_slow(qc_strmatch *m) {
    m->steps_base += (unsigned long long)(QC_STRMATCH_CHECK_EVERY - m->tick);
    m->tick = QC_STRMATCH_CHECK_EVERY;
    if (!m->check || m->err) return m->err != QC_STRMATCH_OK;
    int rc = m->check(m->ud, m->steps_base);
    if (rc) {
        m->err = QC_STRMATCH_ESTOPPED;
        m->stop_code = rc;
        snprintf(m->msg, sizeof m->msg, "match stopped");
        return 1;
    }
    return 0;
}

/* Pays n steps; true when the match must stop. */
static inline int pay(qc_strmatch *m, size_t n) {
    m->tick -= (long)n;
    return __builtin_expect(m->tick <= 0, 0) && tick_slow(m);
}

static const char *fail(qc_strmatch *m, const char *msg) {
    if (!m->err) {
        m->err = QC_STRMATCH_EPATTERN;
        snprintf(m->msg, sizeof m->msg, "%s", msg);
    }
    return NULL;
}

void qc_strmatch_init(qc_strmatch *m, const char *s, size_t slen, const char *p, size_t plen,
                      qc_strmatch_check_fn check, void *ud) {
    m->src = s;
    m->src_end = s + slen;
    m->pat_end = p + plen;
    m->err = QC_STRMATCH_OK;
    m->stop_code = 0;
    m->tick = QC_STRMATCH_CHECK_EVERY;
    m->steps_base = 0;
    m->check = check;
    m->ud = ud;
    m->msg[0] = 0;
    qc_strmatch_reset(m);
}

unsigned long long qc_strmatch_steps(const qc_strmatch *m) {
    return m->steps_base + (unsigned long long)(QC_STRMATCH_CHECK_EVERY - m->tick);
}

int qc_strmatch_is_plain(const char *p, size_t plen) {
    for (size_t i = 0; i < plen; i++) {
        switch (p[i]) {
        case '^': case '$': case '*': case '+': case '?': case '.': case '(': case '[': case '%': case '-':
            return 0;
        default:
            break;
        }
    }
    return 1;
}

/* Short needles: memchr to each candidate and compare, quick on the short strings handlers
 * search and at most MEMCHR_NEEDLE compares per byte. Longer ones: glibc's memmem, linear. */
#define MEMCHR_NEEDLE 32
#define PLAIN_WINDOW (1u << 16) /* bytes a plain search looks at between two payments */

const char *qc_strmatch_memfind(const char *s, size_t slen, const char *p, size_t plen) {
    if (plen == 0) return s;
    if (plen > slen) return NULL;
    if (plen > MEMCHR_NEEDLE) return memmem(s, slen, p, plen);
    const char *last = s + (slen - plen); /* the last start that leaves room for p */
    while (s <= last) {
        const char *c = memchr(s, p[0], (size_t)(last - s) + 1);
        if (!c) return NULL;
        if (memcmp(c + 1, p + 1, plen - 1) == 0) return c;
        s = c + 1;
    }
    return NULL;
}

const char *qc_strmatch_plain(qc_strmatch *m, const char *s, size_t slen, const char *p, size_t plen) {
    if (plen == 0) return s;
    /* Windows overlap by plen - 1, so an occurrence across a border is found in the next
     * window, and windows are searched in order, so the first hit is the first occurrence.
     * A window is at least twice the needle: memmem's set-up per window stays a fraction
     * of the bytes it searches. */
    size_t step = plen > PLAIN_WINDOW ? plen : PLAIN_WINDOW;
    const char *at = s, *end = s + slen;
    while ((size_t)(end - at) >= plen) {
        size_t len = (size_t)(end - at);
        if (len > step + plen - 1) len = step + plen - 1;
        const char *hit = qc_strmatch_memfind(at, len, p, plen);
        if (hit) return hit;
        if (pay(m, len)) return NULL;
        at += len - plen + 1;
    }
    return NULL;
}

/* ---- single characters ----------------------------------------------------------------- */

/* Does c belong to the class letter cl (%a, %D, ...)? Any other letter stands for itself. */
static int class_hit(int c, int cl) {
    int r;
    switch (tolower(cl)) {
    case 'a': r = isalpha(c); break;
    case 'c': r = iscntrl(c); break;
    case 'd': r = isdigit(c); break;
    case 'g': r = isgraph(c); break;
    case 'l': r = islower(c); break;
    case 'p': r = ispunct(c); break;
    case 's': r = isspace(c); break;
    case 'u': r = isupper(c); break;
    case 'w': r = isalnum(c); break;
    case 'x': r = isxdigit(c); break;
    case 'z': r = c == 0; break; /* deprecated in the manual, still accepted by 5.4 */
    default: return cl == c;
    }
    return isupper(cl) ? !r : r != 0;
}

/* Does c belong to the set that starts at '[' p and ends at ']' close? */
static int set_hit(int c, const char *p, const char *close) {
    int in = 1;
    p++;
    if (*p == '^') {
        in = 0;
        p++;
    }
    for (; p < close; p++) {
        if (*p == ESC) {
            p++;
            if (class_hit(c, UC(*p))) return in;
        } else if (p[1] == '-' && p + 2 < close) {
            if (UC(p[0]) <= c && c <= UC(p[2])) return in;
            p += 2;
        } else if (UC(*p) == c) {
            return in;
        }
    }
    return !in;
}

/* Where the single-character class at p ends (a quantifier may follow there). */
static const char *class_end(qc_strmatch *m, const char *p) {
    char first = *p++;
    if (first == ESC) {
        if (p == m->pat_end) return fail(m, "malformed pattern (ends with '%')");
        return p + 1;
    }
    if (first == '[') {
        if (*p == '^') p++;
        /* The first character after "[" or "[^" belongs to the set even if it is ']'. */
        do {
            if (p == m->pat_end) return fail(m, "malformed pattern (missing ']')");
            if (*p++ == ESC && p < m->pat_end) p++;
        } while (*p != ']');
        return p + 1;
    }
    return p;
}

static inline int single(const qc_strmatch *m, const char *s, const char *p, const char *ep) {
    if (s >= m->src_end) return 0;
    int c = UC(*s);
    switch (*p) {
    case '.': return 1;
    case ESC: return class_hit(c, UC(p[1]));
    case '[': return set_hit(c, p, ep - 1);
    default: return UC(*p) == c;
    }
}

/* How many characters from s in a row belong to the class p..ep. A %-class picks its ctype
 * test once per slice, not once per character as class_hit would. */
static size_t run_length(qc_strmatch *m, const char *s, const char *p, const char *ep) {
    size_t avail = (size_t)(m->src_end - s);
    if (*p == '.') return avail;
    int kind = 0, negate = 0, lit = UC(*p);
    if (*p == ESC) {
        int cl = UC(p[1]);
        kind = tolower(cl);
        negate = isupper(cl) != 0;
        if (!strchr("acdglpsuwxz", kind) || kind == 0) { /* "%." and such: the character itself */
            kind = negate = 0;
            lit = cl;
        }
    } else if (*p == '[') {
        kind = '[';
    }
#define RUN(test)                                                   \
    while (j < stop && ((test) != 0) != negate) j++; \
    break
    size_t i = 0;
    while (i < avail) {
        size_t stop = avail - i > SLICE ? i + SLICE : avail, j = i;
        switch (kind) {
        case 0: RUN(UC(s[j]) == lit);
        case '[': RUN(set_hit(UC(s[j]), p, ep - 1));
        case 'a': RUN(isalpha(UC(s[j])));
        case 'c': RUN(iscntrl(UC(s[j])));
        case 'd': RUN(isdigit(UC(s[j])));
        case 'g': RUN(isgraph(UC(s[j])));
        case 'l': RUN(islower(UC(s[j])));
        case 'p': RUN(ispunct(UC(s[j])));
        case 's': RUN(isspace(UC(s[j])));
        case 'u': RUN(isupper(UC(s[j])));
        case 'w': RUN(isalnum(UC(s[j])));
        case 'x': RUN(isxdigit(UC(s[j])));
        default: RUN(s[j] == 0); /* 'z' */
        }
        if (pay(m, j - i)) return 0;
        if (j < stop) return j;
        i = j;
    }
#undef RUN
    return i;
}

/* ---- items that nest ------------------------------------------------------------------- */

static const char *match(qc_strmatch *m, const char *s, const char *p);

/* Is the next item a plain character that must be there (no quantifier that allows zero)?
 * Then an attempt at a position holding another character fails at once, and a loop can
 * skip it without changing anything but speed. */
static int must_be_char(const qc_strmatch *m, const char *p, int *c) {
    if (p >= m->pat_end) return 0;
    switch (*p) {
    case '(': case ')': case '%': case '[': case '.':
        return 0;
    case '$':
        if (p + 1 == m->pat_end) return 0;
        break;
    default:
        break;
    }
    if (p[1] == '*' || p[1] == '?' || p[1] == '-') return 0;
    *c = UC(*p);
    return 1;
}

/* "x*" and "x+" take as many as they can, then give back one at a time. */
static const char *expand_max(qc_strmatch *m, const char *s, const char *p, const char *ep) {
    size_t i = run_length(m, s, p, ep);
    if (m->err) return NULL;
    int c;
    int skip = must_be_char(m, ep + 1, &c);
    for (;;) {
        /* An attempt skipped here would still have used a level of nesting: only skip
         * while one is left, so "pattern too complex" comes exactly where Lua's does. */
        if (skip && m->depth > 0 && (s + i >= m->src_end || UC(s[i]) != c)) {
            if (pay(m, 1)) return NULL;
        } else {
            const char *r = match(m, s + i, ep + 1);
            if (r) return r;
            if (m->err) return NULL;
        }
        if (i == 0) return NULL;
        i--;
    }
}

/* "x-" takes as few as it can, one more at a time. */
static const char *expand_min(qc_strmatch *m, const char *s, const char *p, const char *ep) {
    for (;;) {
        const char *r = match(m, s, ep + 1);
        if (r) return r;
        if (m->err) return NULL;
        if (!single(m, s, p, ep)) return NULL;
        s++;
    }
}

static const char *open_capture(qc_strmatch *m, const char *s, const char *p, ptrdiff_t what) {
    if (m->level >= QC_STRMATCH_MAXCAPTURES) return fail(m, "too many captures");
    m->cap[m->level].init = s;
    m->cap[m->level].len = what;
    m->level++;
    const char *r = match(m, s, p);
    if (!r) m->level--;
    return r;
}

static const char *close_capture(qc_strmatch *m, const char *s, const char *p) {
    int l = m->level - 1;
    while (l >= 0 && m->cap[l].len != QC_STRMATCH_CAP_UNFINISHED) l--;
    if (l < 0) return fail(m, "invalid pattern capture");
    m->cap[l].len = s - m->cap[l].init;
    const char *r = match(m, s, p);
    if (!r) m->cap[l].len = QC_STRMATCH_CAP_UNFINISHED;
    return r;
}

/* "%bxy" at s: the shortest balanced run from an x to its y. */
static const char *balance(qc_strmatch *m, const char *s, const char *p) {
    if (m->pat_end - p < 2) return fail(m, "malformed pattern (missing arguments to '%b')");
    if (*s != *p) return NULL; /* at the subject's end this reads its NUL, as Lua does */
    char open = p[0], close = p[1];
    int depth = 1;
    const char *paid = s;
    while (++s < m->src_end) {
        if (*s == close) {
            if (--depth == 0) return pay(m, (size_t)(s - paid)) ? NULL : s + 1;
        } else if (*s == open) {
            depth++;
        }
        if (s - paid >= SLICE) {
            if (pay(m, (size_t)(s - paid))) return NULL;
            paid = s;
        }
    }
    pay(m, (size_t)(s - paid));
    return NULL;
}

/* "%1".."%9": the same text as that capture again. */
static const char *backref(qc_strmatch *m, const char *s, int digit) {
    int l = digit - '1';
    if (l < 0 || l >= m->level || m->cap[l].len == QC_STRMATCH_CAP_UNFINISHED) {
        if (!m->err) {
            m->err = QC_STRMATCH_EPATTERN;
            snprintf(m->msg, sizeof m->msg, "invalid capture index %%%d", l + 1);
        }
        return NULL;
    }
    size_t len = (size_t)m->cap[l].len; /* a position capture is huge here: never matches */
    if ((size_t)(m->src_end - s) < len) return NULL;
    if (pay(m, len / 16)) return NULL;
    return memcmp(m->cap[l].init, s, len) == 0 ? s + len : NULL;
}

/* ---- the matcher ----------------------------------------------------------------------- */

static const char *match(qc_strmatch *m, const char *s, const char *p) {
    if (m->depth-- == 0) return fail(m, "pattern too complex");
    for (;;) {
        if (pay(m, 1)) {
            s = NULL;
            break;
        }
        if (p == m->pat_end) break;
        switch (*p) {
        case '(':
            s = p[1] == ')' ? open_capture(m, s, p + 2, QC_STRMATCH_CAP_POSITION)
                            : open_capture(m, s, p + 1, QC_STRMATCH_CAP_UNFINISHED);
            goto out;
        case ')':
            s = close_capture(m, s, p + 1);
            goto out;
        case '$':
            if (p + 1 == m->pat_end) {
                if (s != m->src_end) s = NULL;
                goto out;
            }
            break; /* elsewhere '$' is an ordinary character */
        case ESC:
            if (p[1] == 'b') {
                s = balance(m, s, p + 2);
                if (!s) goto out;
                p += 4;
                continue;
            }
            if (p[1] == 'f') {
                p += 2;
                if (*p != '[') {
                    s = fail(m, "missing '[' after '%f' in pattern");
                    goto out;
                }
                const char *ep = class_end(m, p);
                if (!ep) {
                    s = NULL;
                    goto out;
                }
                int before = s == m->src ? 0 : UC(s[-1]);
                /* At the subject's end the NUL after it is the character "after". */
                if (!set_hit(before, p, ep - 1) && set_hit(UC(*s), p, ep - 1)) {
                    p = ep;
                    continue;
                }
                s = NULL;
                goto out;
            }
            if (isdigit(UC(p[1]))) {
                s = backref(m, s, UC(p[1]));
                if (!s) goto out;
                p += 2;
                continue;
            }
            break; /* a class such as %a */
        default:
            break;
        }
        /* One character class, perhaps quantified. */
        const char *ep = class_end(m, p);
        if (!ep) {
            s = NULL;
            goto out;
        }
        if (!single(m, s, p, ep)) {
            if (*ep == '*' || *ep == '?' || *ep == '-') { /* zero of them will do */
                p = ep + 1;
                continue;
            }
            s = NULL;
            goto out;
        }
        switch (*ep) {
        case '?': {
            const char *r = match(m, s + 1, ep + 1);
            if (r || m->err) {
                s = r;
                goto out;
            }
            p = ep + 1;
            continue;
        }
        case '+':
            s = expand_max(m, s + 1, p, ep);
            goto out;
        case '*':
            s = expand_max(m, s, p, ep);
            goto out;
        case '-':
            s = expand_min(m, s, p, ep);
            goto out;
        default:
            s++;
            p = ep;
            continue;
        }
    }
out:
    m->depth++;
    return s;
}

const char *qc_strmatch_at(qc_strmatch *m, const char *s, const char *p) {
    const char *r = match(m, s, p);
    return m->err ? NULL : r;
}

const char *qc_strmatch_scan(qc_strmatch *m, const char **at, const char *p, int anchor, const char *skip_end) {
    const char *s = *at;
    for (;;) {
        qc_strmatch_reset(m);
        const char *e = match(m, s, p);
        if (m->err) return NULL;
        if (e && e != skip_end) {
            *at = s;
            return e;
        }
        if (anchor || s >= m->src_end) return NULL;
        s++;
    }
}
