/* Lua 5.4 pattern matching (manual §6.4.1) that can be stopped: the same results, errors and
 * limits as the string library's matcher, but it counts its steps and asks a callback every
 * QC_STRMATCH_CHECK_EVERY of them whether to go on. A matcher inside one C call runs no VM
 * instruction, so a count hook never sees it; this one stops when the caller's budget says.
 * Knows nothing of Lua: the binding (bindings/strmatch.c) turns errors into Lua errors. */
#ifndef QC_STRMATCH_H
#define QC_STRMATCH_H

#include <stddef.h>

#define QC_STRMATCH_MAXCAPTURES 32 /* LUA_MAXCAPTURES */
#define QC_STRMATCH_MAXDEPTH 200   /* nested attempts before "pattern too complex", as Lua */
#define QC_STRMATCH_CHECK_EVERY 1024 /* steps between two calls of the check callback */

/* A capture's len while it is open, and for a position capture "()". */
#define QC_STRMATCH_CAP_UNFINISHED (-1)
#define QC_STRMATCH_CAP_POSITION (-2)

enum {
    QC_STRMATCH_OK = 0,
    QC_STRMATCH_EPATTERN, /* malformed pattern and friends: msg holds Lua's own message */
    QC_STRMATCH_ESTOPPED, /* the check callback said stop: stop_code holds what it returned */
};

/* Called every QC_STRMATCH_CHECK_EVERY steps; nonzero stops the match with that code. */
typedef int (*qc_strmatch_check_fn)(void *ud, unsigned long long steps);

/* The state of one match. Public so a caller keeps it on its stack: a match is often a
 * few hundred nanoseconds, and an allocation would be a good part of that. */
typedef struct qc_strmatch {
    const char *src, *src_end; /* the subject */
    const char *pat_end;       /* the pattern's end (its start is passed to each attempt) */
    int level;                 /* captures open or closed so far */
    int depth;                 /* nested attempts left */
    int err;                   /* QC_STRMATCH_OK or an error above */
    int stop_code;
    long tick;                     /* steps left before the next check */
    unsigned long long steps_base; /* steps of the windows before this one */
    qc_strmatch_check_fn check;
    void *ud;
    struct {
        const char *init;
        ptrdiff_t len;
    } cap[QC_STRMATCH_MAXCAPTURES];
    char msg[64];
} qc_strmatch;

/* Both buffers must be readable one byte past their length and hold a NUL there, as Lua
 * strings do: Lua's matcher reads that byte in a few places ("%f" at the subject's end, a
 * set's end) and the results must match. check may be NULL. */
void qc_strmatch_init(qc_strmatch *m, const char *s, size_t slen, const char *p, size_t plen,
                      qc_strmatch_check_fn check, void *ud);

/* One attempt to match the pattern (from p, without a leading '^' anchor) at s. Returns
 * the end of the match, or NULL: no match if m->err is QC_STRMATCH_OK, else an error. */
const char *qc_strmatch_at(qc_strmatch *m, const char *s, const char *p);

/* Lua's search loop: attempts at *at, *at + 1, ... up to the subject's end (only *at when
 * anchored) until one matches with an end other than skip_end (gmatch's rule against an
 * empty match where the last one ended; NULL for none). Returns the end and sets *at to the
 * match's start; NULL when nothing matched or on an error (m->err). */
const char *qc_strmatch_scan(qc_strmatch *m, const char **at, const char *p, int anchor, const char *skip_end);

/* Clears the captures and the nesting count before the next attempt. */
static inline void qc_strmatch_reset(qc_strmatch *m) {
    m->level = 0;
    m->depth = QC_STRMATCH_MAXDEPTH;
}

/* Steps counted so far by this state. */
unsigned long long qc_strmatch_steps(const qc_strmatch *m);

/* Whether p has none of the characters that make a pattern more than a plain string. */
int qc_strmatch_is_plain(const char *p, size_t plen);

/* string.find's plain search: the first occurrence of p in s, or NULL (also when the check
 * callback said stop: see m->err). Paid for by the byte, in windows of 64 KiB. */
const char *qc_strmatch_plain(qc_strmatch *m, const char *s, size_t slen, const char *p, size_t plen);

/* The first occurrence of p in s, or NULL: memchr and compare for short needles, glibc's
 * two-way memmem (linear) for long ones. */
const char *qc_strmatch_memfind(const char *s, size_t slen, const char *p, size_t plen);

#endif
