/* WebSocket client connections (ws:// and wss://) on our own libuv loop, through
 * libwebsockets 4.1 on a foreign loop. Used by the ElevenLabs STT engine and by qc.ws.
 * Knows nothing of Lua or STT.
 *
 * One lws context serves every connection of the process. It is made by the first
 * connection and lives until qc_ws_client_shutdown (qc_host_drain_loop calls it), after which
 * the loop must run until it is empty for lws to be gone. Names are resolved with uv_getaddrinfo (libuv's thread pool), not by lws, whose
 * Debian build would block the loop in getaddrinfo. wss:// verifies the server against the
 * system CA store (/etc/ssl/certs/ca-certificates.crt, or $SSL_CERT_FILE). */
#ifndef QC_WS_CLIENT_H
#define QC_WS_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct qc_ws_client qc_ws_client;

typedef struct {
    /* The upgrade succeeded. Optional. */
    void (*on_open)(void *ud, qc_ws_client *c);
    /* A whole message (fragments joined); data is valid during the call only. */
    void (*on_message)(void *ud, qc_ws_client *c, int text, const uint8_t *data, size_t len);
    /* A Pong arrived. Optional. */
    void (*on_pong)(void *ud, qc_ws_client *c, const uint8_t *data, size_t len);
    /* The send queue drained (flow control). Optional. */
    void (*on_writable)(void *ud, qc_ws_client *c);
    /* The connection is over, or never was: code is the peer's close code (1005 when its
     * Close had none), the one we closed with, or 1006 for a connection that failed or was
     * dropped with no Close. http_status is the answer to a refused upgrade (401, 503...),
     * 0 otherwise. Called exactly once (never from inside qc_ws_client_connect); c is freed
     * when it returns. */
    void (*on_close)(void *ud, qc_ws_client *c, int code, int http_status, const char *reason);
} qc_ws_client_handlers;

typedef struct {
    const char *const *headers; /* extra handshake headers: name, value, name, value... */
    size_t nheaders;            /* pairs */
    size_t max_message;         /* a larger incoming message closes with 1009; 0 = 16 MiB */
    size_t max_queued;          /* qc_ws_client_send refuses past this; 0 = 4 MiB */
    long connect_timeout_ms;    /* resolve, connect, TLS and upgrade; 0 = 15000 */
} qc_ws_client_options;

/* Starts connecting to url (ws:// or wss://, host, optional port, path and query).
 * Everything is copied. NULL with err only for a bad URL or header (nothing is called
 * then); any later failure arrives as on_close. */
qc_ws_client *qc_ws_client_connect(uv_loop_t *loop, const char *url, const qc_ws_client_options *opt,
                                   const qc_ws_client_handlers *h, void *ud, char *err, size_t errlen);

/* Queues one message (before the upgrade completes too: it goes out after on_open).
 * 0, or -1 when it would pass max_queued or the connection is closing or over. */
int qc_ws_client_send(qc_ws_client *c, int text, const void *data, size_t len);

/* Queues a Ping (at most 125 bytes of payload). 0 or -1. */
int qc_ws_client_ping(qc_ws_client *c, const void *data, size_t len);

/* Bytes queued and not yet handed to the socket. */
size_t qc_ws_client_queued(const qc_ws_client *c);

/* Whether the upgrade has completed and no close has started. */
int qc_ws_client_is_open(const qc_ws_client *c);

/* Sends what is queued, then a Close with code (0 = none: an empty Close) and reason (at
 * most 123 bytes); on_close follows when the peer answers or after a short grace. */
void qc_ws_client_close(qc_ws_client *c, int code, const char *reason);

/* Drops the connection at once: nothing is called after this returns, and c must not be
 * used again. */
void qc_ws_client_abort(qc_ws_client *c);

/* The process is stopping: every connection is dropped (no callback) and the lws context
 * starts its destroy, which completes while the loop runs on (it ends by itself). */
void qc_ws_client_shutdown(void);

/* A ws(s):// URL taken apart (the parser alone, fuzzed by spec/fuzz/fuzz_elevenlabs.c). host
 * is the name to resolve (no brackets), hosthdr the Host header (with the port when it is
 * not the scheme's), path the path and query ("/" at least). One allocation. */
typedef struct {
    int tls, port;
    char *host, *hosthdr, *path;
} qc_ws_url;
int qc_ws_url_parse(const char *url, qc_ws_url *u, char *err, size_t errlen);
void qc_ws_url_free(qc_ws_url *u);

/* Connections alive (including those resolving or closing), for tests and stats. */
size_t qc_ws_client_count(void);

#endif
