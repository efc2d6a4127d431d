/* Decoder for HTTP/1.1 chunked request bodies (RFC 9112 §7.1). libwebsockets 4.1 passes a
 * chunked body through undecoded (as if it had no length), so the server decodes it here. */
#ifndef QC_CHUNKED_H
#define QC_CHUNKED_H

#include <stddef.h>

typedef struct {
    int state;
    size_t remaining; /* data bytes left in the current chunk */
    int size_digits;
} qc_chunked;

enum { QC_CHUNKED_MORE = 0, QC_CHUNKED_DONE = 1, QC_CHUNKED_ERROR = -1 };

void qc_chunked_init(qc_chunked *c);

/* Feeds len bytes of the encoded body. Decoded data is appended through sink(ud, p, n).
 * *used is how many input bytes were consumed (less than len only when DONE: the rest
 * belongs to the next request). Returns MORE, DONE or ERROR (malformed framing). */
int qc_chunked_feed(qc_chunked *c, const char *in, size_t len, size_t *used,
                    void (*sink)(void *ud, const char *p, size_t n), void *ud);

#endif
