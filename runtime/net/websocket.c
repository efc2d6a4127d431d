/* WebSocket (RFC 6455) server connections on our HTTP server's upgraded sockets: the frame
 * parser, the close handshake and a bounded send queue.
 *
 * The hot path is one read callback per client message (an ingest track sends ~100 a
 * second): the frame is unmasked in place in the server's shared read buffer and handed to
 * on_message from there, with no allocation and no copy. Only a message split across reads
 * (a frame cut by the network, or fragments) is gathered, into one buffer per connection that
 * grows up to max_message and is kept for the next such message. Sends try the socket first;
 * what it does not take is copied into a pending buffer, written with one uv_write per batch.
 * Every connection ends in on_close exactly once, never from inside a call the owner made. */
#define _POSIX_C_SOURCE 200809L
#include "websocket.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../log.h"

#define DEFAULT_MAX_MESSAGE 65536
#define DEFAULT_MAX_QUEUED (1024 * 1024)
#define CLOSE_GRACE_MS 2000 /* after our Close: how long the peer has to answer it */
#define KEEP_GATHER_MAX (64 * 1024) /* a larger gather buffer is released after its message */

static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* ---- handshake helpers ---------------------------------------------------------------- */

void qc_ws_accept_key(const char *key, char out[29]) {
    unsigned char digest[SHA_DIGEST_LENGTH];
    char joined[128 + sizeof GUID];
    size_t kl = strlen(key);
    if (kl > 128) kl = 128; /* a valid key has 24 characters; the server checked it */
    memcpy(joined, key, kl);
    memcpy(joined + kl, GUID, sizeof GUID - 1);
    SHA1((const unsigned char *)joined, kl + sizeof GUID - 1, digest);
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
    out[28] = 0;
}

static int b64_char(char ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '+' ||
           ch == '/';
}

/* 16 bytes in base64: 22 characters and "==", the last of the 22 carrying 2 bits only (so
 * one of A, Q, g, w), as RFC 4648 encodes them. */
int qc_ws_key_valid(const char *key) {
    if (strlen(key) != 24 || key[22] != '=' || key[23] != '=') return 0;
    for (int i = 0; i < 22; i++)
        if (!b64_char(key[i])) return 0;
    return strchr("AQgw", key[21]) != NULL;
}

int qc_ws_close_code_valid(int code) {
    if (code >= 1000 && code <= 1003) return 1;
    if (code >= 1007 && code <= 1014) return 1;
    return code >= 3000 && code <= 4999;
}

size_t qc_ws_frame_header(uint8_t out[10], int op, int fin, uint64_t len) {
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (op & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

/* ---- UTF-8, checked in pieces ---------------------------------------------------------
 * RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF. The state between
 * pieces is how many continuation bytes are still due and the range the next one must be
 * in (narrower than 80..BF right after E0, ED, F0 and F4). */
static int utf8_check(qc_ws_parser *p, const uint8_t *s, size_t n) {
    unsigned need = p->u8_need, lo = p->u8_lo, hi = p->u8_hi;
    size_t i = 0;
    while (i < n) {
        unsigned b = s[i];
        if (need == 0) {
            if (b < 0x80) {
                i++;
                /* ASCII runs, eight bytes at a time. */
                while (i + 8 <= n) {
                    uint64_t w;
                    memcpy(&w, s + i, 8);
                    if (w & 0x8080808080808080ull) break;
                    i += 8;
                }
                continue;
            }
            if (b < 0xC2) return -1;
            lo = 0x80;
            hi = 0xBF;
            if (b < 0xE0) {
                need = 1;
            } else if (b < 0xF0) {
                need = 2;
                if (b == 0xE0) lo = 0xA0;
                if (b == 0xED) hi = 0x9F;
            } else if (b < 0xF5) {
                need = 3;
                if (b == 0xF0) lo = 0x90;
                if (b == 0xF4) hi = 0x8F;
            } else {
                return -1;
            }
        } else {
            if (b < lo || b > hi) return -1;
            need--;
            lo = 0x80;
            hi = 0xBF;
        }
        i++;
    }
    p->u8_need = (uint8_t)need;
    p->u8_lo = (uint8_t)lo;
    p->u8_hi = (uint8_t)hi;
    return 0;
}

/* ---- the parser ----------------------------------------------------------------------- */

enum { P_HEADER, P_PAYLOAD, P_FAILED };

void qc_ws_parser_init(qc_ws_parser *p, size_t max_message, int require_mask) {
    memset(p, 0, sizeof *p);
    p->max_message = max_message ? max_message : DEFAULT_MAX_MESSAGE;
    p->require_mask = require_mask;
    p->state = P_HEADER;
    p->hneed = 2;
}

const char *qc_ws_parser_error(const qc_ws_parser *p, int *code) {
    if (code) *code = p->code;
    return p->reason;
}

static int fail(qc_ws_parser *p, int code, const char *fmt, unsigned long long a, unsigned long long b) {
    p->state = P_FAILED;
    p->code = code;
    snprintf(p->reason, sizeof p->reason, fmt, a, b);
    return -1;
}

/* Unmasks n bytes in place; the mask goes on where the last piece left it. */
static void unmask(qc_ws_parser *p, uint8_t *d, size_t n) {
    unsigned off = p->mask_off;
    size_t i = 0;
    if (n >= 8) { /* eight bytes at a time: 8 is a multiple of 4, so the phase holds */
        uint8_t m8[8];
        for (unsigned k = 0; k < 8; k++) m8[k] = p->mask[(off + k) & 3];
        uint64_t m;
        memcpy(&m, m8, 8);
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            memcpy(&w, d + i, 8);
            w ^= m;
            memcpy(d + i, &w, 8);
        }
    }
    for (; i < n; i++) d[i] ^= p->mask[(off + i) & 3];
    p->mask_off = (unsigned)((off + n) & 3);
}

/* The header is complete: check it and set up the payload. */
static int header_done(qc_ws_parser *p) {
    const uint8_t *h = p->hdr;
    int fin = h[0] >> 7, op = h[0] & 0x0f;
    uint64_t len = h[1] & 0x7f;
    if (len == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
        if (len < 126) return fail(p, 1002, "frame length %llu not minimally encoded", len, 0);
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | h[2 + i];
        if (len >> 63) return fail(p, 1002, "frame length is 2^63 or more", 0, 0);
        if (len <= 0xffff) return fail(p, 1002, "frame length %llu not minimally encoded", len, 0);
    }
    if (h[1] & 0x80) {
        memcpy(p->mask, h + p->hneed - 4, 4);
    } else if (p->require_mask) {
        return fail(p, 1002, "unmasked frame", 0, 0);
    } else {
        memset(p->mask, 0, 4);
    }
    p->mask_off = 0;
    p->op = op;
    p->fin = fin;
    p->left = len;
    if (op >= QC_WS_CLOSE) {
        if (op > QC_WS_PONG) return fail(p, 1002, "reserved opcode %llu", (unsigned long long)op, 0);
        if (!fin) return fail(p, 1002, "fragmented control frame", 0, 0);
        if (len > 125) return fail(p, 1002, "control frame too long: %llu bytes > 125", len, 0);
        p->ctl_len = 0;
    } else if (op == QC_WS_CONT) {
        if (!p->msg_op) return fail(p, 1002, "continuation frame without a message to continue", 0, 0);
    } else if (op == QC_WS_TEXT || op == QC_WS_BINARY) {
        if (p->msg_op) return fail(p, 1002, "new message before the last one ended", 0, 0);
        p->msg_op = op;
        p->msg_first = 1;
        p->msg_len = 0;
        p->u8_need = 0;
    } else {
        return fail(p, 1002, "reserved opcode %llu", (unsigned long long)op, 0);
    }
    if (op < QC_WS_CLOSE) {
        /* The bound holds before a byte of this frame's payload is taken. */
        if (len > p->max_message - p->msg_len)
            return fail(p, 1009, "message too big: %llu bytes > %llu", (unsigned long long)(p->msg_len + len),
                        (unsigned long long)p->max_message);
        p->msg_len += len;
    }
    p->state = P_PAYLOAD;
    return 0;
}

/* A whole control frame: Close payloads are checked here. */
static int control_done(qc_ws_parser *p, const qc_ws_parser_cb *cb, void *ud) {
    if (p->op == QC_WS_CLOSE && p->ctl_len) {
        if (p->ctl_len == 1) return fail(p, 1002, "close frame with a 1-byte payload", 0, 0);
        int code = p->ctl[0] << 8 | p->ctl[1];
        if (!qc_ws_close_code_valid(code)) return fail(p, 1002, "invalid close code %llu", (unsigned long long)code, 0);
        qc_ws_parser tmp = {0};
        if (utf8_check(&tmp, p->ctl + 2, p->ctl_len - 2) < 0 || tmp.u8_need)
            return fail(p, 1007, "invalid UTF-8 in close reason", 0, 0);
    }
    return cb->on_control(ud, p->op, p->ctl, p->ctl_len);
}

/* A piece of data payload (possibly empty at the end of a frame). */
static int data_piece(qc_ws_parser *p, uint8_t *d, size_t n, int frame_end, const qc_ws_parser_cb *cb, void *ud) {
    int last = frame_end && p->fin;
    if (p->msg_op == QC_WS_TEXT && n && utf8_check(p, d, n) < 0)
        return fail(p, 1007, "invalid UTF-8 in text message", 0, 0);
    if (last && p->msg_op == QC_WS_TEXT && p->u8_need)
        return fail(p, 1007, "invalid UTF-8 in text message (a character cut at its end)", 0, 0);
    if (!n && !last) return 0;
    int flags = (p->msg_first ? QC_WS_FIRST : 0) | (last ? QC_WS_FIN : 0);
    int op = p->msg_op;
    p->msg_first = 0;
    if (last) p->msg_op = 0;
    return cb->on_data(ud, op, d, n, flags);
}

int qc_ws_parser_feed(qc_ws_parser *p, uint8_t *data, size_t len, const qc_ws_parser_cb *cb, void *ud,
                      size_t *used) {
    size_t i = 0;
    int stop = 0;
    while (!stop) {
        if (p->state == P_FAILED) {
            if (used) *used = i;
            return -1;
        }
        if (p->state == P_HEADER) {
            if (i == len) break;
            /* Bytes needed are known after the second: 2 + 0/2/8 length + 0/4 mask. */
            while (i < len && p->hlen < p->hneed) {
                p->hdr[p->hlen++] = data[i++];
                if (p->hlen == 1) {
                    if (p->hdr[0] & 0x70) {
                        fail(p, 1002, "reserved bits set (no extension was agreed)", 0, 0);
                        break;
                    }
                } else if (p->hlen == 2) {
                    unsigned l7 = p->hdr[1] & 0x7f;
                    p->hneed = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((p->hdr[1] & 0x80) ? 4 : 0);
                    if (p->require_mask && !(p->hdr[1] & 0x80)) {
                        fail(p, 1002, "unmasked frame", 0, 0);
                        break;
                    }
                }
            }
            if (p->state == P_FAILED) continue;
            if (p->hlen < p->hneed) break;
            if (header_done(p) < 0) continue;
            p->hlen = 0;
            p->hneed = 2;
            if (p->left) continue;
            /* An empty frame ends here. */
            p->state = P_HEADER;
            if (p->op >= QC_WS_CLOSE) stop = control_done(p, cb, ud);
            else stop = data_piece(p, data + i, 0, 1, cb, ud);
            if (p->state == P_FAILED) continue;
            continue;
        }
        /* P_PAYLOAD */
        if (i == len) break;
        size_t n = len - i;
        if ((uint64_t)n > p->left) n = (size_t)p->left;
        unmask(p, data + i, n);
        p->left -= n;
        int end = p->left == 0;
        if (end) p->state = P_HEADER;
        if (p->op >= QC_WS_CLOSE) {
            memcpy(p->ctl + p->ctl_len, data + i, n);
            p->ctl_len += (unsigned)n;
            i += n;
            if (end) stop = control_done(p, cb, ud);
        } else {
            stop = data_piece(p, data + i, n, end, cb, ud);
            i += n;
        }
    }
    if (p->state == P_FAILED) {
        if (used) *used = i;
        return -1;
    }
    if (used) *used = i;
    return stop ? 1 : 0;
}

/* ---- connections ------------------------------------------------------------------------ */

enum { S_OPEN, S_CLOSING, S_DONE };

struct qc_ws_conn {
    qc_http_conn *hc;
    uv_stream_t *stream;
    uv_loop_t *loop;
    qc_ws_handlers h;
    void *ud;
    size_t max_queued;
    long idle_ms;
    qc_ws_parser parser;
    int state;
    int close_sent, close_rcvd, broken;
    int shut_after; /* after a protocol error: FIN once our Close is out */
    uv_shutdown_t sreq;
    int shut;
    int report_code;
    char report_reason[124];
    uint64_t last_rx, close_deadline;
    /* paused by the owner (qc_ws_read): the rest of a read waits in `held` */
    int paused;
    uint8_t *held;
    size_t held_len, held_cap;
    /* fragments and split frames of the message being received */
    uint8_t *msg;
    size_t msg_len, msg_cap;
    /* the send queue: `wbuf` is with uv_write, `qbuf` collects what comes meanwhile */
    uv_write_t wreq;
    int writing;
    uint8_t *wbuf, *qbuf;
    size_t wlen, wcap, qlen, qcap;
    qc_ws_stats stats;
};

static void conn_finish(qc_ws_conn *c);

static uint64_t now_ms(qc_ws_conn *c) { return uv_now(c->loop); }

/* Arms the timer for the earliest thing due: the close grace, or the idle check. */
static void arm_timer(qc_ws_conn *c) {
    if (c->state == S_DONE) return;
    uint64_t now = now_ms(c), due = UINT64_MAX;
    if (c->state == S_CLOSING) due = c->close_deadline;
    else if (c->idle_ms > 0) due = c->last_rx + (uint64_t)c->idle_ms;
    if (due == UINT64_MAX) return;
    qc_http_conn_timer(c->hc, due > now ? due - now : 0);
}

static int append(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *d, size_t n) {
    if (!n) return 0;
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap : 1024;
        while (nc < *len + n) nc *= 2;
        uint8_t *nb = realloc(*buf, nc);
        if (!nb) return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, d, n);
    *len += n;
    return 0;
}

static void start_write(qc_ws_conn *c);

static void on_shut(uv_shutdown_t *req, int status) {
    (void)req;
    (void)status; /* the peer's EOF (or the grace) finishes the connection */
}

/* Our side is done (FIN); the peer's EOF or the close grace ends the connection. Closing at
 * once could turn unread input into a RST that destroys our Close before it is read. */
static void shut_write(qc_ws_conn *c) {
    if (c->shut || c->state == S_DONE) return;
    c->shut = 1;
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, c->stream, on_shut) < 0) qc_http_conn_timer(c->hc, 0);
}

static void on_written(uv_write_t *req, int status) {
    qc_ws_conn *c = req->data;
    c->writing = 0;
    c->wlen = 0;
    if (c->state == S_DONE) return;
    if (status < 0) {
        c->broken = 1;
        if (!c->report_code) {
            c->report_code = 1006;
            snprintf(c->report_reason, sizeof c->report_reason, "write failed: %s", uv_strerror(status));
        }
        conn_finish(c);
        return;
    }
    if (c->qlen) {
        start_write(c);
        return;
    }
    if (c->shut_after && c->close_sent) {
        shut_write(c);
        return;
    }
    /* Everything is out. After a Close both ways, the TCP connection can go (the server
     * closes first, RFC 6455 7.1.1). */
    if (c->close_sent && c->close_rcvd) {
        conn_finish(c);
        return;
    }
    if (c->state == S_OPEN && c->h.on_drain) c->h.on_drain(c->ud, c);
}

/* Swaps the pending buffer in and writes it. */
static void start_write(qc_ws_conn *c) {
    if (c->writing || !c->qlen || c->broken) return;
    uint8_t *b = c->wbuf;
    size_t cap = c->wcap;
    c->wbuf = c->qbuf;
    c->wcap = c->qcap;
    c->wlen = c->qlen;
    c->qbuf = b;
    c->qcap = cap;
    c->qlen = 0;
    uv_buf_t ub = uv_buf_init((char *)c->wbuf, (unsigned)c->wlen);
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, c->stream, &ub, 1, on_written);
    if (rc < 0) {
        c->wlen = 0;
        c->broken = 1;
        if (!c->report_code) {
            c->report_code = 1006;
            snprintf(c->report_reason, sizeof c->report_reason, "write failed: %s", uv_strerror(rc));
        }
        qc_http_conn_timer(c->hc, 0); /* finished from the timer, never inside the caller */
        return;
    }
    c->writing = 1;
}

/* Writes one frame: straight to the socket when nothing waits, the rest queued. */
static int write_frame(qc_ws_conn *c, int op, const uint8_t *payload, size_t len) {
    if (c->broken) return -1;
    uint8_t hdr[10];
    size_t hl = qc_ws_frame_header(hdr, op, 1, len);
    size_t done = 0, total = hl + len;
    if (!c->writing && !c->qlen) {
        uv_buf_t bufs[2] = {uv_buf_init((char *)hdr, (unsigned)hl), uv_buf_init((char *)payload, (unsigned)len)};
        int w = uv_try_write(c->stream, bufs, len ? 2 : 1);
        if (w > 0) done = (size_t)w;
        else if (w < 0 && w != UV_EAGAIN) {
            c->broken = 1;
            if (!c->report_code) {
                c->report_code = 1006;
                snprintf(c->report_reason, sizeof c->report_reason, "write failed: %s", uv_strerror(w));
            }
            qc_http_conn_timer(c->hc, 0);
            return -1;
        }
    }
    if (done == total) {
        if (c->shut_after && op == QC_WS_CLOSE) shut_write(c);
        return 0;
    }
    if (done < hl) {
        if (append(&c->qbuf, &c->qlen, &c->qcap, hdr + done, hl - done) < 0) goto oom;
        done = hl;
    }
    if (append(&c->qbuf, &c->qlen, &c->qcap, payload + (done - hl), total - done) < 0) goto oom;
    start_write(c);
    return 0;
oom:
    c->broken = 1;
    if (!c->report_code) {
        c->report_code = 1011;
        snprintf(c->report_reason, sizeof c->report_reason, "out of memory queueing a message");
    }
    qc_http_conn_timer(c->hc, 0);
    return -1;
}

size_t qc_ws_queued(const qc_ws_conn *c) { return (c->writing ? c->wlen : 0) + c->qlen; }

int qc_ws_is_open(const qc_ws_conn *c) { return c->state == S_OPEN && !c->broken; }

int qc_ws_send(qc_ws_conn *c, int text, const void *data, size_t len) {
    if (c->state != S_OPEN || c->broken) return -1;
    if (qc_ws_queued(c) + len + 10 > c->max_queued) return -1;
    if (write_frame(c, text ? QC_WS_TEXT : QC_WS_BINARY, data, len) < 0) return -1;
    c->stats.messages_out++;
    c->stats.bytes_out += len;
    return 0;
}

/* Sends our Close (once). Control frames pass the queue bound: they are small and the
 * handshake needs them. */
static void send_close(qc_ws_conn *c, int code, const char *reason) {
    if (c->close_sent) return;
    c->close_sent = 1;
    uint8_t body[125];
    size_t n = 0;
    if (code && code != 1005 && code != 1006) {
        body[0] = (uint8_t)(code >> 8);
        body[1] = (uint8_t)code;
        size_t rl = reason ? strlen(reason) : 0;
        if (rl > 123) rl = 123;
        /* A reason cut inside a character would be invalid UTF-8: back up to its start. */
        while (rl && rl < (reason ? strlen(reason) : 0) && ((unsigned char)reason[rl] & 0xC0) == 0x80) rl--;
        if (rl) memcpy(body + 2, reason, rl);
        n = 2 + rl;
    }
    write_frame(c, QC_WS_CLOSE, body, n);
}

/* We start the close: our Close goes out, the peer has CLOSE_GRACE_MS to answer. */
static void begin_close(qc_ws_conn *c, int code, const char *reason) {
    if (c->state != S_OPEN) return;
    c->state = S_CLOSING;
    if (!c->report_code) {
        c->report_code = code;
        snprintf(c->report_reason, sizeof c->report_reason, "%s", reason ? reason : "");
    }
    send_close(c, code, reason);
    c->close_deadline = now_ms(c) + CLOSE_GRACE_MS;
    arm_timer(c);
}

void qc_ws_close(qc_ws_conn *c, int code, const char *reason) {
    if (code != 1000 && !qc_ws_close_code_valid(code)) code = 1000;
    begin_close(c, code, reason);
}

void qc_ws_read(qc_ws_conn *c, int on) {
    if (c->state == S_DONE) return;
    c->paused = !on;
    qc_http_conn_read(c->hc, on);
    if (on && c->held_len) qc_http_conn_timer(c->hc, 0);
}

void qc_ws_set_handlers(qc_ws_conn *c, const qc_ws_handlers *h, void *ud) {
    if (h) c->h = *h;
    else memset(&c->h, 0, sizeof c->h);
    c->ud = ud;
}

void qc_ws_get_stats(const qc_ws_conn *c, qc_ws_stats *out) { *out = c->stats; }

/* The end: the socket closes and the owner hears of it, once. */
static void conn_finish(qc_ws_conn *c) {
    if (c->state == S_DONE) return;
    c->state = S_DONE;
    if (!c->report_code) {
        c->report_code = 1006;
        snprintf(c->report_reason, sizeof c->report_reason, "connection dropped without a Close frame");
    }
    qc_http_conn_close(c->hc);
    qc_log(QC_LOG_DEBUG, "ws", "closed", " peer=%s code=%d reason=\"%s\" messages_in=%llu messages_out=%llu",
           qc_http_conn_peer(c->hc), c->report_code, c->report_reason, (unsigned long long)c->stats.messages_in,
           (unsigned long long)c->stats.messages_out);
    if (c->h.on_close) c->h.on_close(c->ud, c, c->report_code, c->report_reason);
    c->h.on_message = NULL;
    c->h.on_close = NULL;
    c->h.on_drain = NULL;
}

/* ---- parser callbacks ---- */

static int on_data(void *ud, int op, uint8_t *d, size_t n, int flags) {
    qc_ws_conn *c = ud;
    if (c->state != S_OPEN) { /* closing: data is no longer wanted */
        c->msg_len = 0;
        return 0;
    }
    if ((flags & (QC_WS_FIRST | QC_WS_FIN)) == (QC_WS_FIRST | QC_WS_FIN)) {
        c->stats.messages_in++;
        c->stats.bytes_in += n;
        if (c->h.on_message) c->h.on_message(c->ud, c, op == QC_WS_TEXT, d, n);
        return c->state == S_DONE || c->paused;
    }
    if (flags & QC_WS_FIRST) c->msg_len = 0;
    if (n && append(&c->msg, &c->msg_len, &c->msg_cap, d, n) < 0) {
        begin_close(c, 1011, "out of memory gathering a message");
        return 1;
    }
    if (!(flags & QC_WS_FIN)) return 0;
    c->stats.messages_in++;
    c->stats.bytes_in += c->msg_len;
    if (c->h.on_message) c->h.on_message(c->ud, c, op == QC_WS_TEXT, c->msg ? c->msg : (const uint8_t *)"", c->msg_len);
    c->msg_len = 0;
    if (c->msg_cap > KEEP_GATHER_MAX) {
        free(c->msg);
        c->msg = NULL;
        c->msg_cap = 0;
    }
    return c->state == S_DONE || c->paused;
}

static int on_control(void *ud, int op, uint8_t *d, size_t n) {
    qc_ws_conn *c = ud;
    if (op == QC_WS_PING) {
        if (c->state == S_OPEN) write_frame(c, QC_WS_PONG, d, n);
        return 0;
    }
    if (op == QC_WS_PONG) return 0;
    /* Close */
    c->close_rcvd = 1;
    if (c->state == S_OPEN) {
        c->state = S_CLOSING;
        int code = n >= 2 ? (d[0] << 8 | d[1]) : 1005;
        c->report_code = code;
        size_t rl = n > 2 ? n - 2 : 0;
        if (rl) memcpy(c->report_reason, d + 2, rl);
        c->report_reason[rl] = 0;
        /* Echo the code (an empty Close is answered with an empty one). */
        send_close(c, code, NULL);
        c->close_deadline = now_ms(c) + CLOSE_GRACE_MS;
        if (!c->writing && !c->qlen) conn_finish(c);
        else arm_timer(c);
        return 1;
    }
    /* The answer to our Close: done. */
    conn_finish(c);
    return 1;
}

static const qc_ws_parser_cb parser_cb = {on_data, on_control};

/* ---- socket events (qc_http_upgrade_ops) ---- */

static void feed(qc_ws_conn *c, uint8_t *data, size_t len, size_t *used);

static void up_read(void *ud, uint8_t *data, size_t len) {
    qc_ws_conn *c = ud;
    if (c->state == S_DONE) return;
    c->last_rx = now_ms(c);
    if (c->parser.state == P_FAILED) return; /* our Close is out: the rest is dropped */
    if (c->held_len || c->paused) { /* after what waits, in order */
        if (append(&c->held, &c->held_len, &c->held_cap, data, len) < 0) begin_close(c, 1011, "out of memory");
        return;
    }
    size_t used = len;
    feed(c, data, len, &used);
    if (used < len && c->state == S_OPEN && c->paused &&
        append(&c->held, &c->held_len, &c->held_cap, data + used, len - used) < 0)
        begin_close(c, 1011, "out of memory");
}

/* What a pause left unparsed, once the owner reads again (from the timer: never inside the
 * owner's own call). */
static void feed_held(qc_ws_conn *c) {
    if (!c->held_len || c->paused || c->state == S_DONE) return;
    size_t used = c->held_len;
    feed(c, c->held, c->held_len, &used);
    if (c->state == S_DONE) return;
    memmove(c->held, c->held + used, c->held_len - used);
    c->held_len -= used;
    if (!c->held_len && c->held_cap > KEEP_GATHER_MAX) {
        free(c->held);
        c->held = NULL;
        c->held_cap = 0;
    }
}

static void feed(qc_ws_conn *c, uint8_t *data, size_t len, size_t *used) {
    int rc = qc_ws_parser_feed(&c->parser, data, len, &parser_cb, c, used);
    if (rc < 0) *used = len;
    if (rc < 0 && c->state != S_DONE) {
        int code;
        const char *why = qc_ws_parser_error(&c->parser, &code);
        qc_log(QC_LOG_INFO, "ws", "protocol error", " peer=%s code=%d reason=\"%s\"", qc_http_conn_peer(c->hc), code,
               why);
        c->shut_after = 1;
        if (c->state == S_OPEN) {
            begin_close(c, code, why);
        } else if (!c->close_sent) {
            send_close(c, code, why);
        }
        if (c->close_rcvd && !c->writing && !c->qlen) conn_finish(c);
    }
}

static void up_end(void *ud, int status) {
    qc_ws_conn *c = ud;
    if (c->state == S_DONE) return;
    feed_held(c); /* the last messages and Close may wait there */
    if (c->state == S_DONE) return;
    /* Gone before any Close: a drop. After ours, the peer just did not answer it. */
    if (c->state == S_OPEN) {
        c->report_code = 1006;
        snprintf(c->report_reason, sizeof c->report_reason, "connection dropped without a Close frame%s%s",
                 status == UV_EOF ? "" : ": ", status == UV_EOF ? "" : uv_strerror(status));
    }
    conn_finish(c);
}

static void up_timer(void *ud) {
    qc_ws_conn *c = ud;
    if (c->state == S_DONE) return;
    uint64_t now = now_ms(c);
    if (c->broken) {
        conn_finish(c);
        return;
    }
    feed_held(c);
    if (c->state == S_DONE) return;
    if (c->state == S_CLOSING && now >= c->close_deadline) {
        conn_finish(c);
        return;
    }
    /* Paused, the silence is ours: no idle close then. */
    if (c->state == S_OPEN && c->idle_ms > 0 && !c->paused && !c->held_len && now >= c->last_rx + (uint64_t)c->idle_ms) {
        char why[64];
        snprintf(why, sizeof why, "idle for %ld ms", c->idle_ms);
        begin_close(c, 1001, why);
        return;
    }
    arm_timer(c);
}

static void up_stop(void *ud) {
    qc_ws_conn *c = ud;
    if (c->state == S_DONE) return;
    if (c->state == S_OPEN) {
        c->report_code = 1001;
        snprintf(c->report_reason, sizeof c->report_reason, "server stopping");
        send_close(c, 1001, "server stopping");
    }
    conn_finish(c);
}

static void up_closed(void *ud) {
    qc_ws_conn *c = ud;
    free(c->msg);
    free(c->held);
    free(c->wbuf);
    free(c->qbuf);
    free(c);
}

static const qc_http_upgrade_ops up_ops = {up_read, up_end, up_timer, up_stop, up_closed};

qc_ws_conn *qc_ws_accept(qc_http_exchange *ex, const qc_ws_handlers *h, void *ud, const qc_ws_limits *lim) {
    const char *key = qc_http_exchange_header(ex, "sec-websocket-key");
    char accept[29];
    qc_ws_accept_key(key ? key : "", accept);
    char head[160];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                      "sec-websocket-accept: %s\r\n\r\n",
                      accept);
    qc_ws_conn *c = calloc(1, sizeof *c);
    if (!c) {
        static const char body[] = "{\"error\":{\"code\":\"INTERNAL\",\"message\":\"out of memory\"}}";
        qc_http_header hs[] = {{"content-type", "application/json"}};
        qc_http_exchange_respond(ex, 500, hs, 1, body, sizeof body - 1);
        return NULL;
    }
    c->h = *h;
    c->ud = ud;
    size_t max_message = lim && lim->max_message ? lim->max_message : DEFAULT_MAX_MESSAGE;
    c->max_queued = lim && lim->max_queued_bytes ? lim->max_queued_bytes : DEFAULT_MAX_QUEUED;
    c->idle_ms = lim ? lim->idle_timeout_ms : 0;
    qc_ws_parser_init(&c->parser, max_message, 1);
    c->hc = qc_http_exchange_upgrade(ex, head, (size_t)hl, &up_ops, c);
    if (!c->hc) {
        free(c);
        return NULL;
    }
    c->stream = qc_http_conn_stream(c->hc);
    c->loop = c->stream->loop;
    c->last_rx = now_ms(c);
    /* Bytes that came with the head are handed over when the timer fires: now, but after
     * the caller has its handle. */
    qc_http_conn_timer(c->hc, 0);
    return c;
}
