/* Chunked transfer decoding as a byte-at-a-time state machine for the framing and bulk
 * copies for the data, so chunk boundaries may fall anywhere in the reads. */
#include "chunked.h"

#include <stdint.h>

enum { SIZE, EXT, SIZE_LF, DATA, DATA_CR, DATA_LF, TRAILER_START, TRAILER_LINE, TRAILER_LF, END_LF, FINISHED };

void qc_chunked_init(qc_chunked *c) {
    c->state = SIZE;
    c->remaining = 0;
    c->size_digits = 0;
    c->trailer_bytes = 0;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

int qc_chunked_feed(qc_chunked *c, const char *in, size_t len, size_t *used,
                    void (*sink)(void *ud, const char *p, size_t n), void *ud) {
    size_t i = 0;
    while (i < len) {
        char ch = in[i];
        switch (c->state) {
        case SIZE: {
            int v = hexval(ch);
            if (v >= 0) {
                if (c->remaining > (SIZE_MAX >> 4) || ++c->size_digits > 15) return QC_CHUNKED_ERROR;
                c->remaining = (c->remaining << 4) | (size_t)v;
                i++;
            } else if (c->size_digits == 0) {
                return QC_CHUNKED_ERROR;
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                c->state = EXT;
                i++;
            } else if (ch == '\r') {
                c->state = SIZE_LF;
                i++;
            } else {
                return QC_CHUNKED_ERROR;
            }
            break;
        }
        case EXT: /* chunk extensions carry nothing we use */
            if (ch == '\r') c->state = SIZE_LF;
            else if (ch == '\n') return QC_CHUNKED_ERROR;
            i++;
            break;
        case SIZE_LF:
            if (ch != '\n') return QC_CHUNKED_ERROR;
            i++;
            c->size_digits = 0;
            c->state = c->remaining ? DATA : TRAILER_START;
            break;
        case DATA: {
            size_t n = len - i < c->remaining ? len - i : c->remaining;
            sink(ud, in + i, n);
            i += n;
            c->remaining -= n;
            if (!c->remaining) c->state = DATA_CR;
            break;
        }
        case DATA_CR:
            if (ch != '\r') return QC_CHUNKED_ERROR;
            c->state = DATA_LF;
            i++;
            break;
        case DATA_LF:
            if (ch != '\n') return QC_CHUNKED_ERROR;
            c->state = SIZE;
            i++;
            break;
        case TRAILER_START: /* an empty line ends the body; otherwise a trailer field */
            /* A bare LF ends a line for some parsers and not for others: refused, so that no
             * two readers of this body can disagree on where it ends. */
            if (ch == '\n') return QC_CHUNKED_ERROR;
            if (ch == '\r') c->state = END_LF;
            else c->state = TRAILER_LINE;
            c->trailer_bytes++;
            i++;
            break;
        case TRAILER_LINE:
            if (ch == '\n' || ++c->trailer_bytes > QC_CHUNKED_MAX_TRAILER) return QC_CHUNKED_ERROR;
            if (ch == '\r') c->state = TRAILER_LF;
            i++;
            break;
        case TRAILER_LF:
            if (ch != '\n') return QC_CHUNKED_ERROR;
            c->state = TRAILER_START;
            i++;
            break;
        case END_LF:
            if (ch != '\n') return QC_CHUNKED_ERROR;
            c->state = FINISHED;
            i++;
            *used = i;
            return QC_CHUNKED_DONE;
        default:
            *used = i;
            return QC_CHUNKED_DONE;
        }
    }
    *used = i;
    return c->state == FINISHED ? QC_CHUNKED_DONE : QC_CHUNKED_MORE;
}
