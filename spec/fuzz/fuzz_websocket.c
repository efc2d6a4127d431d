/* libFuzzer harness for the WebSocket frame parser (runtime/net/websocket.c). The input's
 * first byte picks the message bound (64 << (b & 15) bytes) and where to split the rest;
 * the rest is what a client sends after the handshake. Besides the sanitizers: feeding it
 * in one call, in two pieces and one byte per call gives the same messages, control frames
 * and outcome (frames may be cut anywhere by the network); no message passes the bound; a
 * text message is valid UTF-8; a piece never lies outside the input. */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "net/websocket.h"
#include "fuzz_common.h"

typedef struct {
    uint8_t log[1 << 16]; /* every event, as bytes: kind, length, payload */
    size_t n;
    size_t msg, max;
    int open;
    const uint8_t *lo, *hi;
} rec;

static void put(rec *r, const void *p, size_t n) {
    if (r->n + n > sizeof r->log) n = sizeof r->log - r->n;
    memcpy(r->log + r->n, p, n);
    r->n += n;
}

/* A strict UTF-8 check of its own, to hold the parser's incremental one to. */
static int utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t k;
        uint32_t cp;
        if (b < 0x80) { i++; continue; }
        if (b >= 0xC2 && b <= 0xDF) k = 1, cp = b & 0x1F;
        else if (b >= 0xE0 && b <= 0xEF) k = 2, cp = b & 0x0F;
        else if (b >= 0xF0 && b <= 0xF4) k = 3, cp = b & 0x07;
        else return 0;
        if (i + k >= n) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

static uint8_t text_msg[1 << 20];
static size_t text_len;

static int on_data(void *ud, int op, uint8_t *d, size_t n, int flags) {
    rec *r = ud;
    if (n && (d < r->lo || d + n > r->hi)) fuzz_fail("a piece outside the input");
    if (!n && !(flags & QC_WS_FIN)) fuzz_fail("an empty piece that is not the last");
    if (flags & QC_WS_FIRST) {
        if (r->open) fuzz_fail("a message started inside another");
        r->open = 1;
        r->msg = 0;
        text_len = 0;
    } else if (!r->open) {
        fuzz_fail("a piece with no message open");
    }
    r->msg += n;
    if (r->msg > r->max) fuzz_fail("a message of %zu bytes passed the bound %zu", r->msg, r->max);
    if (op == QC_WS_TEXT) {
        memcpy(text_msg + text_len, d, n);
        text_len += n;
    }
    put(r, d, n);
    if (flags & QC_WS_FIN) {
        if (op == QC_WS_TEXT && !utf8_ok(text_msg, text_len)) fuzz_fail("a text message that is not UTF-8");
        uint8_t mark[2] = {(uint8_t)op, 0xEE};
        put(r, mark, 2);
        r->open = 0;
    }
    return 0;
}

static int on_control(void *ud, int op, uint8_t *d, size_t n) {
    rec *r = ud;
    if (n > 125) fuzz_fail("a control frame of %zu bytes", n);
    if (op == QC_WS_CLOSE && n == 1) fuzz_fail("a Close with a 1-byte payload passed");
    if (op == QC_WS_CLOSE && n >= 2 && !qc_ws_close_code_valid(d[0] << 8 | d[1])) fuzz_fail("an invalid close code passed");
    uint8_t mark[2] = {(uint8_t)(0x10 | op), (uint8_t)n};
    put(r, mark, 2);
    put(r, d, n);
    return 0;
}

static const qc_ws_parser_cb cb = {on_data, on_control};

/* Feeds data in pieces cut at the given offsets (sorted); returns the outcome. */
static int run(const uint8_t *data, size_t size, size_t max, const size_t *cuts, size_t ncuts, rec *r, int *code) {
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    r->n = 0;
    r->open = 0;
    r->max = max;
    r->lo = copy;
    r->hi = copy + size;
    qc_ws_parser p;
    qc_ws_parser_init(&p, max, 1);
    size_t at = 0;
    int rc = 0;
    for (size_t k = 0; k <= ncuts && rc == 0; k++) {
        size_t end = k < ncuts ? cuts[k] : size;
        if (end < at) end = at;
        size_t used = (size_t)-1;
        rc = qc_ws_parser_feed(&p, copy + at, end - at, &cb, r, &used);
        if (rc == 0 && used != end - at) fuzz_fail("used %zu of %zu", used, end - at);
        at = end;
    }
    *code = 0;
    if (rc < 0) {
        const char *why = qc_ws_parser_error(&p, code);
        if (*code != 1002 && *code != 1007 && *code != 1009) fuzz_fail("error code %d", *code);
        if (!why[0]) fuzz_fail("an error with no reason");
    }
    free(copy);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > (1 << 16)) return 0;
    size_t max = (size_t)64 << (data[0] & 15);
    data++;
    size--;
    static rec a, b, c;
    int ca, cb_, cc;
    int ra = run(data, size, max, NULL, 0, &a, &ca);
    size_t cut = size ? (size_t)data[0] * size / 256 : 0;
    int rb = run(data, size, max, &cut, 1, &b, &cb_);
    size_t *cuts = malloc((size ? size : 1) * sizeof *cuts);
    for (size_t i = 0; i < size; i++) cuts[i] = i + 1;
    int rc = run(data, size, max, cuts, size ? size - 1 : 0, &c, &cc);
    free(cuts);
    if (ra != rb || ra != rc) fuzz_fail("outcomes differ: whole %d, two pieces %d, bytes %d", ra, rb, rc);
    if (ca != cb_ || ca != cc) fuzz_fail("close codes differ: %d %d %d", ca, cb_, cc);
    /* Data events may be cut differently; the bytes and marks in order must agree. (After
     * an error they may not: a piece is checked before it is reported, so the bytes of a
     * bad piece before its bad byte are reported when they came in a read of their own.) */
    if (ra < 0) return 0;
    if (a.n != b.n || memcmp(a.log, b.log, a.n) != 0) fuzz_fail("one call and two pieces report differently");
    if (a.n != c.n || memcmp(a.log, c.log, a.n) != 0) fuzz_fail("one call and byte by byte report differently");
    return 0;
}
