/* Decoder for HTTP/1.1 chunked request bodies (RFC 9112 §7.1), strict about line endings:
 * the server frames bodies with it because Debian's http-parser is built lenient there. */
#ifndef QC_CHUNKED_H
#define QC_CHUNKED_H

#include <stddef.h>

typedef struct {
    int state;
    size_t remaining; /* data bytes left in the current chunk */
    int size_digits;
    size_t trailer_bytes; /* trailer section so far: bounded like a head */
} qc_chunked;

#define QC_CHUNKED_MAX_TRAILER 16384

enum { QC_CHUNKED_MORE = 0, QC_CHUNKED_DONE = 1, QC_CHUNKED_ERROR = -1 };

void qc_chunked_init(qc_chunked *c);

/* Feeds len bytes of the encoded body. Decoded data is appended through sink(ud, p, n).
 * *used is how many input bytes were consumed (less than len only when DONE: the rest
 * belongs to the next request). Returns MORE, DONE or ERROR (malformed framing). */
int qc_chunked_feed(qc_chunked *c, const char *in, size_t len, size_t *used,
                    void (*sink)(void *ud, const char *p, size_t n), void *ud);

#endif
