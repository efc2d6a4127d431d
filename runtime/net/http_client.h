/* Outbound HTTP(S) on the libuv loop: libcurl's multi *socket* interface, one uv_poll per
 * socket and one uv_timer, so hundreds of transfers run at once without a thread or a
 * blocking call. Connections (and DNS answers) are cached and reused by the client.
 * Knows nothing of Lua; bindings/fetch.c puts qc.fetch on top of it. */
#ifndef QC_HTTP_CLIENT_H
#define QC_HTTP_CLIENT_H

#include <stddef.h>
#include <uv.h>

typedef struct qc_http_client qc_http_client;

#include "http_header.h"

/* Everything is copied by qc_http_client_start: the request may die once it returns.
 * libcurl's implicit Content-Type (form-urlencoded) and `Expect: 100-continue` are not sent;
 * set a Content-Type header yourself. An empty value sends the header with no value. */
typedef struct {
    const char *method;            /* NULL = "GET"; an HTTP token, e.g. "POST", "PATCH" */
    const char *url;               /* http:// or https:// only; redirects are not followed */
    const qc_http_header *headers; /* nheaders pairs; no CR/LF/NUL, names are tokens */
    size_t nheaders;
    const char *body;  /* NULL = no body; non-NULL with body_len 0 sends Content-Length: 0 */
    size_t body_len;
    long timeout_ms;   /* whole transfer, connect included; 0 = 30000 */
    size_t max_body;   /* response body cap in bytes; 0 = 16 MiB; over it -> "TOO_LARGE" */
} qc_http_request;

/* Owned by the client, valid only during the done callback: copy what you keep. */
typedef struct {
    /* NULL on success (any HTTP status, 4xx/5xx included). On failure one of
     * "TIMEOUT", "CONNECT" (refused/unreachable), "DNS", "TLS", "TOO_LARGE",
     * "CANCELLED", "FAILED" (anything else), and message says what happened. */
    const char *code;
    const char *message;
    long status;                   /* e.g. 200; 0 on failure */
    const qc_http_header *headers; /* names lowercased, in arrival order, duplicates kept */
    size_t nheaders;
    const char *body;              /* never NULL ("" when empty) */
    size_t body_len;
} qc_http_result;

/* Runs exactly once per started transfer, always from the loop (or from
 * qc_http_client_close), never from inside qc_http_client_start. It may start new
 * transfers or close the client. */
typedef void (*qc_http_done_cb)(const qc_http_result *res, void *ud);

/* Also calls curl_global_init the first time (not thread-safe: create clients from one
 * thread). Returns NULL and fills err on failure. */
qc_http_client *qc_http_client_new(uv_loop_t *loop, char *err, size_t errlen);

/* Starts a transfer; cb(res, ud) runs when it ends. Returns -1 with err filled on a bad
 * request (method, header) or when the client is closed or out of memory; cb is then
 * never called. */
int qc_http_client_start(qc_http_client *c, const qc_http_request *req, qc_http_done_cb cb,
                         void *ud, char *err, size_t errlen);

/* Transfers in flight. */
size_t qc_http_client_pending(const qc_http_client *c);

/* Cancels pending transfers (their callbacks run with code "CANCELLED" before this returns;
 * when called from a done callback, right after that callback returns), closes every
 * connection and the uv handles. The client frees itself from libuv's close callbacks, so
 * run the loop afterwards until it ends. NULL is a no-op; c must not be used afterwards. */
void qc_http_client_close(qc_http_client *c);

/* The host's shared client, created lazily on the host's loop; NULL if it could not be
 * created. Provided by runtime/host, not by http_client.c. */
typedef struct qc_host qc_host;
qc_http_client *qc_host_http_client(qc_host *h);

#endif
