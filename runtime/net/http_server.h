/* HTTP/1.1 server on our libuv loop (framing by http-parser). It reads requests, pipelined
 * ones in order, collects bodies (chunked included) up to a limit, refuses ambiguous framing,
 * hands each complete request to one callback and writes the answer in a single write. It
 * knows nothing of Lua or routes. */
#ifndef QC_HTTP_SERVER_H
#define QC_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct qc_http_server qc_http_server;

/* One request/response. After on_request the callee owns it and must call
 * qc_http_exchange_respond exactly once, even if the client has gone away. */
typedef struct qc_http_exchange qc_http_exchange;

#include "http_header.h"

typedef struct {
    const char *method;
    const char *path;  /* decoded path, no query */
    const char *query; /* the query's arguments joined with '&', "" when none (decoded, for logs) */
    const qc_http_header *args; /* the query's name/value pairs, %-decoded, in order */
    size_t nargs;
    const qc_http_header *headers;
    size_t nheaders;
    const char *body;
    size_t body_len;
    const char *peer; /* client IP address */
    /* A WebSocket upgrade with a valid handshake (GET, HTTP/1.1, Upgrade: websocket,
     * Connection: upgrade, Sec-WebSocket-Version: 13, a valid Sec-WebSocket-Key, no body):
     * answer it with qc_ws_accept (runtime/net/websocket.h) or refuse it with
     * qc_http_exchange_respond, which then closes the connection. A malformed upgrade never
     * gets here: the server answers 400 (426 for another version) itself. */
    int websocket;
} qc_http_incoming;

typedef void (*qc_http_request_cb)(void *ud, qc_http_exchange *ex, const qc_http_incoming *req);

typedef struct {
    const char *host; /* interface address, "0.0.0.0" for all */
    int port;         /* 0: the kernel picks one; see qc_http_server_port */
    size_t max_body_bytes;
    long request_timeout_ms;  /* head and body of one request must arrive within this (408); 0: 15000 */
    size_t max_connections;   /* 0: as many as the descriptor limit allows, less a reserve */
    qc_http_request_cb on_request;
    void *ud;
} qc_http_server_options;

qc_http_server *qc_http_server_new(uv_loop_t *loop, const qc_http_server_options *opts, char *err,
                                   size_t errlen);
int qc_http_server_port(const qc_http_server *s);

/* What the request asked for, valid until the answer is sent. */
const char *qc_http_exchange_path(const qc_http_exchange *ex);
const char *qc_http_exchange_method(const qc_http_exchange *ex);
const char *qc_http_exchange_header(const qc_http_exchange *ex, const char *lowercase_name);
/* The route pattern that matched (cut at 127 bytes): the label of its request metrics. */
void qc_http_exchange_set_route(qc_http_exchange *ex, const char *route);

/* Sends the response: headers are name/value pairs (Content-Length is added here). */
void qc_http_exchange_respond(qc_http_exchange *ex, int status, const qc_http_header *headers,
                              size_t nheaders, const char *body, size_t body_len);

/* Graceful stop, step one: close the listening socket and idle keep-alive connections;
 * the others get `Connection: close` on their next answer. */
void qc_http_server_stop_accepting(qc_http_server *s);
/* Requests handed out whose answer is not yet written (and whose client is still there). */
size_t qc_http_server_inflight(const qc_http_server *s);
/* Closes every connection; the loop must run on until libuv has closed their handles, then
 * call qc_http_server_free. */
void qc_http_server_shutdown(qc_http_server *s);
void qc_http_server_free(qc_http_server *s);

/* ---- for runtime/net/websocket.c: a connection taken over after an upgrade ------------
 * Once upgraded, the server reads the socket for its new owner and does nothing else with
 * it: no HTTP parsing, no request deadline, no keep-alive; it still counts against the
 * connection cap, and qc_http_server_shutdown calls on_stop and then closes it. */
typedef struct qc_http_conn qc_http_conn;

typedef struct {
    /* Bytes read, writable in place; valid during the call only. */
    void (*on_read)(void *ud, uint8_t *data, size_t len);
    /* The peer closed its side (UV_EOF) or the socket failed; nothing more will be read. */
    void (*on_end)(void *ud, int status);
    /* The connection's timer (qc_http_conn_timer) fired. */
    void (*on_timer)(void *ud);
    /* The server shuts down: say goodbye; the socket is closed right after this returns. */
    void (*on_stop)(void *ud);
    /* The socket is closed and libuv is done with it (writes cancelled): free the owner. */
    void (*on_closed)(void *ud);
} qc_http_upgrade_ops;

/* Answers the exchange with `head` (the whole 101 answer) and hands its connection to ops.
 * Bytes the client sent after the request head are given to on_read when the timer first
 * fires (arm it with 0 to have them at once). NULL when the client has gone (the exchange
 * is answered and freed either way). */
qc_http_conn *qc_http_exchange_upgrade(qc_http_exchange *ex, const char *head, size_t head_len,
                                       const qc_http_upgrade_ops *ops, void *ud);
uv_stream_t *qc_http_conn_stream(qc_http_conn *c);
/* (Re)arms the connection's one timer. */
void qc_http_conn_timer(qc_http_conn *c, uint64_t ms);
/* Starts or stops reading (flow control of a slow consumer). */
void qc_http_conn_read(qc_http_conn *c, int on);
/* Closes the socket; on_closed follows from the loop. Idempotent. */
void qc_http_conn_close(qc_http_conn *c);
const char *qc_http_conn_peer(const qc_http_conn *c);

#endif
