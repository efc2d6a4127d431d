/* The chunked-body decoder: framing split at every possible byte, extensions, trailers,
 * and malformed input. */
#include <stdio.h>
#include <string.h>

#include "net/chunked.h"

#include "tap.h"

typedef struct {
    char buf[256];
    size_t n;
} out_buf;

static void sink(void *ud, const char *p, size_t n) {
    out_buf *o = ud;
    if (o->n + n < sizeof o->buf) memcpy(o->buf + o->n, p, n);
    o->n += n;
}

/* Feeds text in two pieces split at `split`; returns the final status. */
static int decode_split(const char *text, size_t split, out_buf *o, size_t *consumed) {
    qc_chunked c;
    qc_chunked_init(&c);
    memset(o, 0, sizeof *o);
    size_t len = strlen(text), used = 0;
    int st = qc_chunked_feed(&c, text, split, &used, sink, o);
    *consumed = used;
    if (st != QC_CHUNKED_MORE) return st;
    st = qc_chunked_feed(&c, text + split, len - split, &used, sink, o);
    *consumed += used;
    return st;
}

int main(void) {
    const char *body = "4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\nGET /next";
    size_t body_end = strlen(body) - strlen("GET /next");
    int all_ok = 1;
    for (size_t split = 0; split <= strlen(body); split++) {
        out_buf o;
        size_t used;
        int st = decode_split(body, split, &o, &used);
        if (st != QC_CHUNKED_DONE || o.n != 23 || memcmp(o.buf, "Wikipedia in\r\n\r\nchunks.", 23) != 0 ||
            used != body_end) {
            all_ok = 0;
            printf("# split %zu failed: st=%d n=%zu used=%zu\n", split, st, o.n, used);
        }
    }
    ok(all_ok, "decodes the same body split at every byte and stops at its end");

    out_buf o;
    size_t used;
    ok(decode_split("0\r\nX-Trailer: 1\r\n\r\n", 5, &o, &used) == QC_CHUNKED_DONE && o.n == 0,
       "accepts an empty body with a trailer field");
    ok(decode_split("A\r\n0123456789\r\n0\r\n\r\n", 3, &o, &used) == QC_CHUNKED_DONE && o.n == 10,
       "reads hex sizes");
    ok(decode_split("Z\r\nabc\r\n0\r\n\r\n", 1, &o, &used) == QC_CHUNKED_ERROR, "rejects a non-hex size");
    ok(decode_split("3\r\nabcX\r\n0\r\n\r\n", 4, &o, &used) == QC_CHUNKED_ERROR,
       "rejects data longer than its size");
    ok(decode_split("ffffffffffffffffff\r\n", 4, &o, &used) == QC_CHUNKED_ERROR, "rejects an absurd size");
    ok(decode_split("3\nabc\r\n0\r\n\r\n", 2, &o, &used) == QC_CHUNKED_ERROR, "rejects a bare LF after the size");
    ok(decode_split("2\r\nab\r\n0\r\nX: 1\nGET / HTTP/1.1\r\n\r\n", 9, &o, &used) == QC_CHUNKED_ERROR,
       "rejects a bare LF inside a trailer field");
    ok(decode_split("2\r\nab\r\n0\r\n\n", 9, &o, &used) == QC_CHUNKED_ERROR,
       "rejects a bare LF as the end of the trailer section");
    ok(decode_split("2\r\nabXY0\r\n\r\n", 3, &o, &used) == QC_CHUNKED_ERROR,
       "rejects other bytes where the CRLF after chunk data belongs");
    {
        static char big[QC_CHUNKED_MAX_TRAILER + 64];
        size_t n = (size_t)snprintf(big, sizeof big, "0\r\nX: ");
        memset(big + n, 'a', sizeof big - n - 1);
        big[sizeof big - 1] = 0;
        ok(decode_split(big, 10, &o, &used) == QC_CHUNKED_ERROR, "bounds the trailer section");
    }
    {
        qc_chunked c;
        qc_chunked_init(&c);
        memset(&o, 0, sizeof o);
        ok(qc_chunked_feed(&c, "5\r\nab", 5, &used, sink, &o) == QC_CHUNKED_MORE && o.n == 2,
           "asks for more in the middle of a chunk");
    }
    printf("%d passed, %d failed\n", count - failures, failures);
    return failures ? 1 : 0;
}
