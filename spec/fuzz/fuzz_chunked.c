/* libFuzzer harness for the chunked body decoder (runtime/net/chunked.c). The input is the
 * encoded body as a client would send it. Besides the sanitizers, two properties: feeding
 * it in one call and one byte per call gives the same outcome and the same decoded bytes
 * (chunk boundaries may fall anywhere in the reads), and the decoded body is never longer
 * than the input nor the consumed count past it. */
#include <string.h>

#include "net/chunked.h"
#include "fuzz_common.h"

typedef struct {
    unsigned char *buf;
    size_t n, cap;
} sink_buf;

static void sink(void *ud, const char *p, size_t n) {
    sink_buf *o = ud;
    if (n == 0) fuzz_fail("the decoder handed on an empty piece");
    if (o->n + n > o->cap) fuzz_fail("decoded more bytes than the input holds");
    memcpy(o->buf + o->n, p, n);
    o->n += n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static unsigned char out_whole[1 << 20], out_bytes[1 << 20];
    if (size > sizeof out_whole) return 0;
    sink_buf whole = {out_whole, 0, size}, bytes = {out_bytes, 0, size};

    qc_chunked c;
    qc_chunked_init(&c);
    size_t used = (size_t)-1;
    int st = qc_chunked_feed(&c, (const char *)data, size, &used, sink, &whole);
    if (st != QC_CHUNKED_ERROR && used > size) fuzz_fail("consumed %zu of %zu bytes", used, size);
    if (st == QC_CHUNKED_MORE && used != size) fuzz_fail("MORE after consuming %zu of %zu bytes", used, size);

    qc_chunked_init(&c);
    int st1 = QC_CHUNKED_MORE;
    size_t consumed = 0;
    for (size_t i = 0; i < size && st1 == QC_CHUNKED_MORE; i++) {
        size_t u = (size_t)-1;
        st1 = qc_chunked_feed(&c, (const char *)data + i, 1, &u, sink, &bytes);
        if (st1 != QC_CHUNKED_ERROR) {
            if (u > 1) fuzz_fail("consumed %zu of a 1-byte read", u);
            consumed += u;
        }
    }
    if (size == 0) return 0;
    if (st1 != st) fuzz_fail("one call says %d, byte by byte says %d", st, st1);
    if (st == QC_CHUNKED_DONE && consumed != used)
        fuzz_fail("one call consumed %zu bytes, byte by byte %zu", used, consumed);
    if (st != QC_CHUNKED_ERROR && (whole.n != bytes.n || memcmp(out_whole, out_bytes, whole.n) != 0))
        fuzz_fail("one call decoded %zu bytes, byte by byte %zu (or different ones)", whole.n, bytes.n);
    return 0;
}
