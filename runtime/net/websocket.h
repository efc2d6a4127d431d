/* WebSocket (RFC 6455) server side, on a connection our HTTP server has upgraded: frame
 * parsing (masking, fragments, control frames), pings answered, close handshake, a bounded
 * send queue. Knows nothing of Lua, audio or rooms.
 *
 * An upgrade request reaches qc_http_server's on_request like any other (req->websocket
 * says it asked for one, after the server checked the handshake headers); the callee
 * answers it with qc_http_exchange_respond to refuse it (the connection is then closed), or
 * accepts it with qc_ws_accept. The callee may take its time (a Lua handler yields for a
 * store query): nothing is read from the socket until it decides. */
#ifndef QC_WEBSOCKET_H
#define QC_WEBSOCKET_H

#include <stddef.h>
#include <stdint.h>

#include "http_server.h"

typedef struct qc_ws_conn qc_ws_conn;

typedef struct {
    /* A whole message (fragments joined), unmasked; text has been checked to be UTF-8.
     * data is valid during the call only. May call qc_ws_send or qc_ws_close. */
    void (*on_message)(void *ud, qc_ws_conn *c, int text, const uint8_t *data, size_t len);
    /* The connection is over: the peer's close code (1005 when its Close had none), 1006
     * for a drop with no Close, or the code we closed with; reason as text. Called once,
     * never from inside qc_ws_send or qc_ws_close; c must not be used after it returns. */
    void (*on_close)(void *ud, qc_ws_conn *c, int code, const char *reason);
    /* Optional: the send queue has drained (for flow control of a sender). */
    void (*on_drain)(void *ud, qc_ws_conn *c);
} qc_ws_handlers;

typedef struct {
    size_t max_message;      /* a larger message closes the connection with 1009; 0: 65536 */
    size_t max_queued_bytes; /* qc_ws_send refuses past this (the caller decides: close or drop); 0: 1 MiB */
    long idle_timeout_ms;    /* no frame at all for this long closes with 1001; 0 = none */
} qc_ws_limits;

/* Writes the 101 answer and turns the exchange's connection into a WebSocket; bytes the
 * client sent after its request head are parsed as frames (from the next loop turn, so no
 * handler runs before this returns). The exchange is answered by this (do not respond to
 * it again). NULL if the client has gone or memory ran out (nothing is called). */
qc_ws_conn *qc_ws_accept(qc_http_exchange *ex, const qc_ws_handlers *h, void *ud, const qc_ws_limits *lim);

/* Queues one message. 0, or -1 when the queue would pass max_queued_bytes or the
 * connection is closing (nothing queued). Tries the socket first: a message the socket
 * takes at once is neither copied nor allocated for. */
int qc_ws_send(qc_ws_conn *c, int text, const void *data, size_t len);

/* Bytes queued and not yet written to the socket. */
size_t qc_ws_queued(const qc_ws_conn *c);

/* 1 while messages may be sent (no Close sent or received). */
int qc_ws_is_open(const qc_ws_conn *c);

/* Starts the close handshake with code and reason (cut at 123 bytes); on_close follows
 * once the peer answers or a short grace runs out. Idempotent. */
void qc_ws_close(qc_ws_conn *c, int code, const char *reason);

/* Stops or resumes reading (flow control: a consumer that lags behind its messages). */
void qc_ws_read(qc_ws_conn *c, int on);

/* Replaces the handlers and their ud (NULL handlers: nothing is called any more). For an
 * owner that goes away before the connection does (the Lua host at stop). */
void qc_ws_set_handlers(qc_ws_conn *c, const qc_ws_handlers *h, void *ud);

/* Counters since accept. */
typedef struct {
    uint64_t messages_in, bytes_in, messages_out, bytes_out;
} qc_ws_stats;
void qc_ws_get_stats(const qc_ws_conn *c, qc_ws_stats *out);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + RFC 6455's GUID)),
 * 28 characters and a NUL. */
void qc_ws_accept_key(const char *key, char out[29]);

/* Sec-WebSocket-Key is valid: base64 of exactly 16 bytes. */
int qc_ws_key_valid(const char *key);

/* Close codes a peer may send (RFC 6455 7.4, IANA's registry): 1 or 0. */
int qc_ws_close_code_valid(int code);

/* ---- the frame parser alone (fuzzed by spec/fuzz/fuzz_websocket.c) ---------------------
 * Feed it bytes as they arrive, in pieces of any size; it unmasks payloads in place and
 * reports data as pieces of messages and control frames whole. It checks every framing
 * rule: masking (server side), minimal length encodings, lengths under 2^63, control frames
 * of at most 125 bytes and unfragmented, no reserved bits or opcodes, continuation frames
 * only inside a message, the message size bound (from each frame's header, before any of
 * its payload is taken), UTF-8 of text messages across pieces and fragments, and Close
 * payloads (no 1-byte payload, a valid code, a UTF-8 reason). */

enum {
    QC_WS_CONT = 0x0,
    QC_WS_TEXT = 0x1,
    QC_WS_BINARY = 0x2,
    QC_WS_CLOSE = 0x8,
    QC_WS_PING = 0x9,
    QC_WS_PONG = 0xA,
};

enum { QC_WS_FIRST = 1, QC_WS_FIN = 2 }; /* flags of a data piece */

typedef struct {
    /* A piece of a message's payload, unmasked, len > 0 unless it is the FIN piece. op is
     * the message's (QC_WS_TEXT or QC_WS_BINARY), also for continuation frames. flags:
     * QC_WS_FIRST on the first piece of a message, QC_WS_FIN on its last, both on a message
     * that arrived in one piece. Return nonzero to stop the feed after this piece. */
    int (*on_data)(void *ud, int op, uint8_t *data, size_t len, int flags);
    /* A whole control frame (Ping, Pong or Close), unmasked; a Close payload is checked.
     * Return nonzero to stop the feed after it. */
    int (*on_control)(void *ud, int op, uint8_t *data, size_t len);
} qc_ws_parser_cb;

/* Private fields, in the open so a connection holds its parser without an allocation. */
typedef struct qc_ws_parser {
    size_t max_message;
    int require_mask;
    int state;          /* header, payload, or failed */
    uint8_t hdr[14];    /* the frame header as it arrives */
    unsigned hlen, hneed;
    int op, fin;
    uint8_t mask[4];
    unsigned mask_off;
    uint64_t left;      /* payload bytes of this frame still to come */
    int msg_op;         /* 0: no message open; else the open message's opcode */
    int msg_first;      /* the next piece reported is the message's first */
    uint64_t msg_len;   /* payload of the open message so far, counting this frame's */
    uint8_t u8_need, u8_lo, u8_hi; /* UTF-8 check across pieces */
    uint8_t ctl[125];   /* a control frame's payload, gathered */
    unsigned ctl_len;
    int code;           /* after a failure: the close code and reason to answer with */
    char reason[124];
} qc_ws_parser;

void qc_ws_parser_init(qc_ws_parser *p, size_t max_message, int require_mask);

/* Parses data[0, len): 0 when all of it was used, 1 when a callback stopped the feed (*used
 * says how far it got), -1 for a protocol error (qc_ws_parser_error; the parser then
 * refuses everything). data is modified (unmasked). */
int qc_ws_parser_feed(qc_ws_parser *p, uint8_t *data, size_t len, const qc_ws_parser_cb *cb, void *ud,
                      size_t *used);

/* After -1: the close code (1002, 1007 or 1009) and a reason in plain words. */
const char *qc_ws_parser_error(const qc_ws_parser *p, int *code);

/* Writes a server frame header (unmasked) for a payload of len bytes; returns its length
 * (2, 4 or 10). */
size_t qc_ws_frame_header(uint8_t out[10], int op, int fin, uint64_t len);

#endif
