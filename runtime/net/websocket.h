/* WebSocket (RFC 6455) server side, on a connection our HTTP server has upgraded: frame
 * parsing (masking, fragments, control frames), pings answered, close handshake, a bounded
 * send queue. Knows nothing of Lua, audio or rooms.
 *
 * An upgrade request reaches qc_http_server's on_request like any other (req->websocket
 * says it asked for one, after the server checked the handshake headers); the callee
 * answers it with qc_http_exchange_respond to refuse it (the connection is then closed), or
 * accepts it with qc_ws_accept. */
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
     * for a drop with no Close, or the code we closed with; reason as text. Called once;
     * c is freed when it returns. */
    void (*on_close)(void *ud, qc_ws_conn *c, int code, const char *reason);
    /* Optional: the send queue has drained (for flow control of a sender). */
    void (*on_drain)(void *ud, qc_ws_conn *c);
} qc_ws_handlers;

typedef struct {
    size_t max_message;      /* a larger message closes the connection with 1009 */
    size_t max_queued_bytes; /* qc_ws_send refuses past this (the caller decides: close or drop) */
    long idle_timeout_ms;    /* no frame at all for this long closes with 1001; 0 = none */
} qc_ws_limits;

/* Writes the 101 answer and turns the exchange's connection into a WebSocket; bytes the
 * client sent after its request head are parsed as frames. The exchange is answered by
 * this (do not respond to it again). NULL if the client has gone (nothing is called). */
qc_ws_conn *qc_ws_accept(qc_http_exchange *ex, const qc_ws_handlers *h, void *ud, const qc_ws_limits *lim);

/* Queues one message. 0, or -1 when the queue would pass max_queued_bytes or the
 * connection is closing (nothing queued). */
int qc_ws_send(qc_ws_conn *c, int text, const void *data, size_t len);

/* Bytes queued and not yet written to the socket. */
size_t qc_ws_queued(const qc_ws_conn *c);

/* Starts the close handshake with code and reason (at most 123 bytes); on_close follows
 * once the peer answers or a short grace runs out. */
void qc_ws_close(qc_ws_conn *c, int code, const char *reason);

/* The parser alone (fuzzed by spec/fuzz/fuzz_websocket.c): feed it bytes as they arrive,
 * in pieces of any size; it reports frames. Server side: client frames must be masked. */
typedef struct qc_ws_parser qc_ws_parser;

#endif
