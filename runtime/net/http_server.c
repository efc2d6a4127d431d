/* HTTP/1.1 server on our libuv loop: TCP from libuv, message framing from http-parser (the
 * parser Node used before llhttp; Debian's libhttp-parser), one write per answer.
 *
 * Why not libwebsockets' HTTP server, which this file used before: lws 4.1 spins at 100% CPU
 * when a request with a body arrives pipelined behind another, lets Content-Length win over
 * Transfer-Encoding (a smuggling hole), closes the connection where an oversized head should
 * get 431 or 414, reads a chunked body as an unframed one of up to 100 MiB, and closes a
 * connection as soon as the client half-closes, losing answers still being computed. Here
 * each of those is decided in one place below. The performance design stays: an answer is
 * built in one buffer and leaves in one write, and a request allocates nothing of ours
 * unless it is larger than any before it.
 *
 * Descriptors under a flood (issue 8): at start the soft RLIMIT_NOFILE is raised to the hard
 * one and client connections are capped below it, leaving a reserve for the store, LiveKit
 * calls, logs and policy files. At the cap a new connection first evicts the oldest idle
 * keep-alive connection, then the oldest one still sending its request (a slow client);
 * connections whose request is being handled are never evicted, and only when every one is
 * busy is the newcomer refused. Every request also has a deadline for its head and body
 * (408), so slow clients give their descriptors back on their own. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "http_server.h"

#include <arpa/inet.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "chunked.h"
#include "http_error.h"
#include "websocket.h"
#include "../log.h"
#include "../metrics.h"

#define MAX_HEADERS 96
#define MAX_ARGS 64
#define MAX_URI 8192    /* request target, bytes: longer gets 414 */
#define MAX_HEAD 16384  /* header names and values together: more gets 431 */
#define READ_BUF 65536  /* one shared read buffer for every connection */
#define IN_HIGH (256 * 1024)    /* stop reading a connection with this much unparsed input */
#define WRITE_HIGH (256 * 1024) /* stop parsing while this much of a connection's answers waits */
#define IDLE_MS 30000   /* keep-alive connection without a request */
#define LINGER_MS 2000  /* after a closing answer: read and drop what the client still sends */
#define RESERVE_MIN 64  /* descriptors kept back from client connections */
#define DEADLINE_EXTENSIONS 8 /* request deadlines added while the delay is ours (on_timer) */

/* Finished exchanges kept for the next request, with their buffers: at most 64 x 4 x 16 KiB
 * stay allocated after a burst. */
#define EXCHANGE_POOL 64
#define KEEP_BUFFER_MAX (16 * 1024) /* larger buffers are released with the exchange */

/* Buffers this large (request bodies, long answers, input held under backpressure) are
 * mapped from the OS and unmapped when released, so their pages go back at once. Through
 * malloc they did not: after 300 bodies of 1 MB, mimalloc kept 315 MB resident for good,
 * because it decommits freed spans of a segment only when a later allocation or free in the
 * same segment finds the delay past, and an idle server makes none. The sanitizer builds
 * keep malloc, whose redzones catch overruns that a mapping would not. */
#if defined(__SANITIZE_ADDRESS__)
#define MAP_MIN ((size_t)-1)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MAP_MIN ((size_t)-1)
#endif
#endif
#ifndef MAP_MIN
#define MAP_MIN ((size_t)128 * 1024) /* a power of two times 1024, so page-aligned */
#endif

typedef struct conn conn;

enum { BODY_NONE, BODY_LENGTH, BODY_CHUNKED };

enum conn_state {
    C_IDLE,   /* keep-alive, no byte of a request yet */
    C_RECV,   /* receiving a request: the request deadline runs */
    C_BUSY,   /* a request is with the handler */
    C_LINGER, /* closing answer queued: we shut down our side and drop what still comes */
    C_UPGRADED, /* a WebSocket: bytes go to its owner (qc_http_upgrade_ops), no HTTP here */
};

typedef struct {
    conn *head, *tail;
} conn_list;

struct qc_http_server {
    uv_loop_t *loop;
    uv_tcp_t *listener; /* its own allocation: libuv may close it after a failed start */
    int listening;
    qc_http_server_options opts;
    http_parser_settings settings;
    size_t inflight;
    int stopping;
    int shut;
    size_t nlive, max_conns; /* connections not yet closing, and their cap */
    conn_list idle, recv, other; /* idle and recv in age order: the eviction candidates */
    conn_list upgraded;          /* never evicted; told to say goodbye at shutdown */
    uint64_t last_cap_log, last_accept_log;
    size_t accept_errors;
    size_t evicted, refused;
    qc_http_exchange *pool[EXCHANGE_POOL];
    size_t npool;
    char readbuf[READ_BUF];
    int readbuf_busy;
};

struct conn {
    /* Not a handle first: the host's stop closes every handle whose data points at itself
     * as one a binding owns (task.h), and a connection's handles are the server's. */
    qc_http_server *srv;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    uv_write_t continue_req;
    conn *prev, *next;
    conn_list *list;
    enum conn_state state;
    http_parser parser;
    qc_http_exchange *ex; /* the request being received or handled; NULL once answered */
    char *in;             /* input not yet parsed: in[in_start, in_len) */
    size_t in_start, in_len, in_cap;
    size_t writes; /* answers queued and not yet written */
    int reading, eof, closing, in_process, continue_busy;
    int used; /* a byte has arrived on this connection */
    int extensions; /* deadlines added to the current request's (on_timer) */
    int ws_pending; /* an upgrade request is with the handler: read nothing until it decides */
    const qc_http_upgrade_ops *up; /* C_UPGRADED: the owner */
    void *up_ud;
    int fail_status; /* set by a parser callback that refuses the request */
    int fail_426;    /* ... with Sec-WebSocket-Version: 13 in the answer */
    const char *fail_code, *fail_msg;
    /* head_scan's state: the checks http-parser skips as Debian builds it */
    int scan_cr, scan_first_done;
    size_t scan_tail_len;
    char scan_tail[9];
    char peer[48];
};

typedef struct {
    size_t name, name_len, value, value_len; /* offsets into raw */
} raw_field;

struct qc_http_exchange {
    /* Reset for every request (zeroed up to `raw`). */
    qc_http_server *srv;
    conn *conn; /* NULL once the connection is gone */
    int dispatched, responded, close_after, head, value_last;
    int websocket; /* a valid WebSocket upgrade request (ws_check) */
    int body_mode; /* BODY_NONE, BODY_LENGTH or BODY_CHUNKED, from check_framing */
    int in_body, body_done, too_large;
    uint64_t remaining; /* BODY_LENGTH: bytes still to come */
    qc_chunked dechunk;
    uint64_t start_ns;
    char method[16];
    char route[128]; /* the route pattern the handler was matched by (GET /metrics' label) */
    const char *path, *query, *peer;
    size_t nheaders, nargs, nfields, url_len, raw_len, body_len, out_len;
    uv_write_t wreq;
    raw_field fields[MAX_HEADERS];
    /* Kept across requests when the exchange is pooled. */
    char *raw; /* request target, then every header name and value, as they arrived */
    size_t raw_cap;
    char *text; /* path, query, peer, every header and argument, NUL-terminated */
    size_t text_cap;
    char *body;
    size_t body_cap;
    char *out; /* the whole answer */
    size_t out_cap;
    qc_http_header headers[MAX_HEADERS];
    qc_http_header args[MAX_ARGS];
};

/* ---- exchanges ------------------------------------------------------------------------ */

/* Releases a buffer grow() made; its capacity says where it came from. */
static void buf_release(char **buf, size_t *cap) {
    if (*cap >= MAP_MIN) munmap(*buf, *cap);
    else free(*buf);
    *buf = NULL;
    *cap = 0;
}

static void exchange_destroy(qc_http_exchange *ex) {
    buf_release(&ex->raw, &ex->raw_cap);
    buf_release(&ex->text, &ex->text_cap);
    buf_release(&ex->body, &ex->body_cap);
    buf_release(&ex->out, &ex->out_cap);
    free(ex);
}

static void drop_big(char **buf, size_t *cap) {
    if (*cap > KEEP_BUFFER_MAX) buf_release(buf, cap);
}

/* Back to the pool, or to malloc. A dispatched exchange stops counting as in flight here,
 * once its answer is written or its client gone, not when the handler answers: a graceful
 * stop must not close a connection whose answer is still waiting to be written. */
static void exchange_free(qc_http_exchange *ex) {
    if (!ex) return;
    qc_http_server *srv = ex->srv;
    if (ex->dispatched && srv->inflight) srv->inflight--;
    drop_big(&ex->raw, &ex->raw_cap);
    drop_big(&ex->text, &ex->text_cap);
    drop_big(&ex->body, &ex->body_cap);
    drop_big(&ex->out, &ex->out_cap);
    if (!srv->shut && srv->npool < EXCHANGE_POOL) {
        srv->pool[srv->npool++] = ex;
        return;
    }
    exchange_destroy(ex);
}

static qc_http_exchange *exchange_get(qc_http_server *srv) {
    qc_http_exchange *ex = srv->npool ? srv->pool[--srv->npool] : calloc(1, sizeof *ex);
    if (!ex) return NULL;
    memset(ex, 0, offsetof(qc_http_exchange, raw));
    ex->srv = srv;
    ex->start_ns = uv_hrtime();
    memcpy(ex->method, "-", 2);
    ex->path = "-";
    ex->query = "";
    return ex;
}

/* Grows buf to hold n bytes, keeping its contents; 0 or -1. */
static int grow(char **buf, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < n) c *= 2;
    if (c < MAP_MIN) {
        char *nb = realloc(*buf, c);
        if (!nb) return -1;
        *buf = nb;
        *cap = c;
        return 0;
    }
    /* Pages of the mapping that are never written (a body sized by Content-Length fills
     * about half of its power of two) are never resident. */
    void *m = mmap(NULL, c, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return -1;
    if (*cap) memcpy(m, *buf, *cap);
    buf_release(buf, cap);
    *buf = m;
    *cap = c;
    return 0;
}

const char *qc_http_exchange_path(const qc_http_exchange *ex) { return ex->path; }

void qc_http_exchange_set_route(qc_http_exchange *ex, const char *route) {
    snprintf(ex->route, sizeof ex->route, "%s", route ? route : "");
}
const char *qc_http_exchange_method(const qc_http_exchange *ex) { return ex->method; }

const char *qc_http_exchange_header(const qc_http_exchange *ex, const char *name) {
    for (size_t i = 0; i < ex->nheaders; i++)
        if (strcmp(ex->headers[i].name, name) == 0) return ex->headers[i].value;
    return NULL;
}

/* ---- connection bookkeeping ------------------------------------------------------------ */

static void list_remove(conn *c) {
    conn_list *l = c->list;
    if (!l) return;
    if (c->prev) c->prev->next = c->next;
    else l->head = c->next;
    if (c->next) c->next->prev = c->prev;
    else l->tail = c->prev;
    c->prev = c->next = NULL;
    c->list = NULL;
}

static void list_append(conn_list *l, conn *c) {
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail) l->tail->next = c;
    else l->head = c;
    l->tail = c;
    c->list = l;
}

static void on_timer(uv_timer_t *t);

/* Moves a connection to a state, its list and its timer. */
static void set_state(conn *c, enum conn_state st) {
    qc_http_server *srv = c->srv;
    /* Entering C_RECV again restarts the deadline (next pipelined request). A connection not
     * yet on a list has no state yet, whatever the field says. */
    if (c->state == st && c->list && st != C_RECV) return;
    c->state = st;
    list_remove(c);
    switch (st) {
    case C_IDLE:
        list_append(&srv->idle, c);
        uv_timer_start(&c->timer, on_timer, IDLE_MS, 0);
        break;
    case C_RECV:
        list_append(&srv->recv, c);
        c->extensions = 0;
        uv_timer_start(&c->timer, on_timer, (uint64_t)srv->opts.request_timeout_ms, 0);
        break;
    case C_BUSY:
        list_append(&srv->other, c);
        uv_timer_stop(&c->timer);
        break;
    case C_LINGER:
        list_append(&srv->other, c);
        uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
        break;
    case C_UPGRADED:
        list_append(&srv->upgraded, c);
        uv_timer_stop(&c->timer); /* the owner arms it */
        break;
    }
}

static void on_closed(uv_handle_t *h) {
    conn *c = h->data;
    if (h == (uv_handle_t *)&c->tcp) {
        uv_close((uv_handle_t *)&c->timer, on_closed);
        return;
    }
    buf_release(&c->in, &c->in_cap);
    if (c->up && c->up->on_closed) c->up->on_closed(c->up_ud);
    free(c);
}

/* Closes the socket now. A request still with the handler keeps its exchange, which the
 * handler's answer frees; a request half received is dropped. */
static void conn_close(conn *c) {
    if (c->closing) return;
    c->closing = 1;
    c->srv->nlive--;
    list_remove(c);
    uv_timer_stop(&c->timer);
    qc_http_exchange *ex = c->ex;
    c->ex = NULL;
    if (ex) {
        if (ex->dispatched && !ex->responded) ex->conn = NULL;
        else exchange_free(ex);
    }
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

/* Appends input that cannot be parsed yet to the connection's own buffer; 0 or -1. */
static int keep_input(conn *c, const char *data, size_t len) {
    if (grow(&c->in, &c->in_cap, c->in_len + len) < 0) return -1;
    memcpy(c->in + c->in_len, data, len);
    c->in_len += len;
    return 0;
}

static void process(conn *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    conn *c = h->data;
    /* Input goes to the shared buffer and is parsed in place; only what a connection cannot
     * parse yet is copied into its own buffer (see on_read). */
    if (!c->srv->readbuf_busy) {
        c->srv->readbuf_busy = 1;
        *buf = uv_buf_init(c->srv->readbuf, READ_BUF);
        return;
    }
    *buf = uv_buf_init(NULL, 0); /* cannot happen on one thread; libuv reports ENOBUFS */
}

static void reading(conn *c, int on) {
    if (on && c->ws_pending) return; /* the upgrade's handler has not decided yet */
    if (on && !c->reading && !c->eof && !c->closing) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
    } else if (!on && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    (void)status;
    conn *c = req->data;
    if (c->closing) return;
    if (c->eof || status < 0) conn_close(c);
}

/* After a closing answer: FIN once the answer is written, then read and drop input until
 * the client closes or LINGER_MS pass. Closing at once while the client is still sending
 * would make the kernel answer with RST, which can destroy our answer before it is read. */
static void conn_linger(conn *c) {
    if (c->state == C_LINGER || c->closing) return;
    set_state(c, C_LINGER);
    c->in_start = c->in_len = 0;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    reading(c, 1);
}

/* One line a second at most for each kind of warning a flood repeats: 1 when one is due. */
static int log_due(qc_http_server *srv, uint64_t *last) {
    uint64_t now = uv_now(srv->loop);
    if (*last && now - *last < 1000) return 0;
    *last = now;
    return 1;
}

static void log_cap(qc_http_server *srv, const char *what) {
    if (!log_due(srv, &srv->last_cap_log)) return;
    qc_log(QC_LOG_WARN, "http", "connection cap reached", " action=%s max_connections=%zu evicted=%zu refused=%zu",
           what, srv->max_conns, srv->evicted, srv->refused);
}

/* Makes room for one more connection; 0, or -1 when every connection is busy. */
static int make_room(qc_http_server *srv) {
    if (srv->nlive <= srv->max_conns) return 0;
    conn *victim = srv->idle.head ? srv->idle.head : srv->recv.head;
    if (!victim) {
        srv->refused++;
        log_cap(srv, "refused");
        return -1;
    }
    srv->evicted++;
    log_cap(srv, victim->state == C_IDLE ? "evicted_idle" : "evicted_slow");
    conn_close(victim);
    return 0;
}

static void on_connection(uv_stream_t *listener, int status) {
    qc_http_server *srv = listener->data;
    if (status < 0) { /* EMFILE: libuv's reserve descriptor has already shed the connection */
        srv->accept_errors++;
        if (log_due(srv, &srv->last_accept_log))
            qc_log(QC_LOG_WARN, "http", "accept failed", " error=%s count=%zu", uv_strerror(status), srv->accept_errors);
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) return;
    /* The loop's clock was read before this turn's callbacks, which may have run handlers for
     * a while: a deadline armed on it would start in the past. */
    uv_update_time(srv->loop);
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    srv->nlive++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    if (make_room(srv) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage sa;
    int salen = sizeof sa;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0) {
        if (sa.ss_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)&sa, c->peer, sizeof c->peer);
        else if (sa.ss_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)&sa, c->peer, sizeof c->peer);
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (srv->stopping) { /* accepted before the listener closed: say no politely */
        conn_close(c);
        return;
    }
    /* A new connection counts as receiving from the start: the request deadline bounds one
     * that never sends a byte, and the cap ranks it by age among the slow ones rather than
     * with the idle keep-alive connections, which go first. */
    set_state(c, C_RECV);
    reading(c, 1);
}

/* ---- answers --------------------------------------------------------------------------- */

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 426: return "Upgrade Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
    }
}

/* Text builders for the hot path: plain copies, no printf. */
static char *put_str(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}

static char *put_uint(char *p, unsigned long long v) {
    char tmp[24];
    size_t n = 0;
    do tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n) *p++ = tmp[--n];
    return p;
}

/* Status line, headers and body in one buffer, for a final status (200 to 599, which
 * qc_http_exchange_respond ensures). A HEAD answer has the headers GET would have,
 * Content-Length included, and no body; 204 and 304 have neither (RFC 9110 8.6, 9.3.2). */
static int build_response(qc_http_exchange *ex, int status, const qc_http_header *headers,
                          size_t nheaders, const char *body, size_t body_len) {
    const char *why = reason(status);
    int no_length = status == 204 || status == 304;
    if (no_length) body_len = 0;
    size_t send_len = (no_length || ex->head) ? 0 : body_len;
    size_t hlen = 96 + strlen(why);
    for (size_t i = 0; i < nheaders; i++) hlen += strlen(headers[i].name) + strlen(headers[i].value) + 4;
    if (grow(&ex->out, &ex->out_cap, hlen + send_len) < 0) return -1;
    char *p = ex->out;
    p = put_str(p, "HTTP/1.1 ", 9);
    p = put_uint(p, (unsigned)status);
    *p++ = ' ';
    p = put_str(p, why, strlen(why));
    p = put_str(p, "\r\n", 2);
    for (size_t i = 0; i < nheaders; i++) {
        /* CR/LF in a header would split the response: drop such headers. */
        if (strpbrk(headers[i].name, "\r\n:") || strpbrk(headers[i].value, "\r\n")) continue;
        p = put_str(p, headers[i].name, strlen(headers[i].name));
        p = put_str(p, ": ", 2);
        p = put_str(p, headers[i].value, strlen(headers[i].value));
        p = put_str(p, "\r\n", 2);
    }
    if (!no_length) {
        p = put_str(p, "content-length: ", 16);
        p = put_uint(p, body_len);
        p = put_str(p, "\r\n", 2);
    }
    if (ex->close_after) p = put_str(p, "connection: close\r\n", 19);
    p = put_str(p, "\r\n", 2);
    if (send_len) p = put_str(p, body, send_len);
    ex->out_len = (size_t)(p - ex->out);
    return 0;
}

static void access_log(qc_http_exchange *ex, int status) {
    if (!qc_log_enabled(QC_LOG_INFO)) return;
    unsigned long long us = (uv_hrtime() - ex->start_ns) / 1000;
    char kv[3200], *p = kv;
    p = put_str(p, " method=", 8);
    p = put_str(p, ex->method, strlen(ex->method));
    p = put_str(p, " path=", 6);
    /* The path is decoded: a space or control byte in it would break the key=value line. */
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *s = (const unsigned char *)ex->path; *s && s - (const unsigned char *)ex->path < 1000; s++) {
        if (*s <= ' ' || *s == 0x7f || *s == '%') {
            *p++ = '%';
            *p++ = hex[*s >> 4];
            *p++ = hex[*s & 15];
        } else {
            *p++ = (char)*s;
        }
    }
    p = put_str(p, " status=", 8);
    p = put_uint(p, (unsigned)status);
    p = put_str(p, " duration_ms=", 13);
    p = put_uint(p, us / 1000);
    *p++ = '.';
    *p++ = (char)('0' + (us % 1000) / 100);
    *p++ = (char)('0' + (us % 100) / 10);
    *p = 0;
    qc_log_line(QC_LOG_INFO, "http", "request", kv);
}

static void on_written(uv_write_t *req, int status) {
    (void)status;
    qc_http_exchange *ex = req->data;
    conn *c = ex->conn;
    exchange_free(ex);
    if (!c) return;
    c->writes--;
    if (c->closing) return;
    if (c->state == C_LINGER) return; /* the shutdown follows the write */
    if (c->state == C_UPGRADED) return; /* the 101's remainder: nothing to parse after it */
    /* Parsing paused while answers queued up (or the client half-closed): go on. */
    process(c);
}

void qc_http_exchange_respond(qc_http_exchange *ex, int status, const qc_http_header *headers,
                              size_t nheaders, const char *body, size_t body_len) {
    if (ex->responded) return;
    ex->responded = 1;
    /* A final answer only: the host refuses a handler's 1xx or out-of-range status with a JSON
     * 500 before it gets here; this keeps the log and the wire in agreement if it ever did. */
    if (status < 200 || status > 599) status = 500;
    access_log(ex, status);
    qc_metrics_http_request(ex->route, ex->method, status, (double)(uv_hrtime() - ex->start_ns) / 1e9);
    conn *c = ex->conn;
    if (!c) { /* the client left while the handler ran */
        exchange_free(ex);
        return;
    }
    if (c->ex == ex) c->ex = NULL;
    c->ws_pending = 0; /* an upgrade refused: the linger reads (and drops) again */
    if (ex->srv->stopping) ex->close_after = 1;
    if (build_response(ex, status, headers, nheaders, body, body_len) < 0) {
        qc_log(QC_LOG_ERROR, "http", "out of memory building response", NULL);
        exchange_free(ex);
        conn_close(c);
        return;
    }
    /* Try the write now: when the socket takes it all, as it nearly always does, there is no
     * write request, and libuv does not re-arm the socket's epoll entry for it (one epoll_ctl
     * per request otherwise). Only a remainder goes through uv_write, in order. */
    int close_after = ex->close_after;
    uv_buf_t b = uv_buf_init(ex->out, (unsigned)ex->out_len);
    int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (w == (int)ex->out_len) {
        exchange_free(ex);
    } else if (w >= 0 || w == UV_EAGAIN) {
        if (w > 0) b = uv_buf_init(ex->out + w, (unsigned)(ex->out_len - (size_t)w));
        ex->wreq.data = ex;
        if (uv_write(&ex->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) w = UV_EPIPE;
        else c->writes++;
    }
    if (w < 0 && w != UV_EAGAIN) { /* the client is gone */
        ex->conn = NULL;
        exchange_free(ex);
        conn_close(c);
        return;
    }
    if (close_after) {
        conn_linger(c);
        return;
    }
    set_state(c, c->in_start < c->in_len ? C_RECV : C_IDLE);
    if (!c->in_process) process(c);
}

static void respond_error(qc_http_exchange *ex, int status, const char *code, const char *msg, int ws_version) {
    char body[QC_HTTP_ERROR_MAX];
    size_t n = qc_http_error_json(body, sizeof body, code, msg, NULL);
    qc_http_header h[] = {{"content-type", "application/json"}, {"sec-websocket-version", "13"}};
    qc_http_exchange_respond(ex, status, h, ws_version ? 2 : 1, body, n);
}

/* The exchange of the request being received, made when its first byte comes; NULL when
 * out of memory. */
static qc_http_exchange *conn_exchange(conn *c) {
    if (!c->ex && (c->ex = exchange_get(c->srv)) != NULL) {
        c->ex->conn = c;
        c->ex->peer = c->peer;
    }
    return c->ex;
}

/* Refuses the request being received with an error, then closes: after a framing error the
 * rest of the input cannot be trusted to start a request. */
static void fail(conn *c, int status, const char *code, const char *msg, int ws_version) {
    if (c->ex && c->ex->dispatched) return;
    qc_http_exchange *ex = conn_exchange(c);
    if (!ex) {
        conn_close(c);
        return;
    }
    ex->close_after = 1;
    respond_error(ex, status, code, msg, ws_version);
}

static void fail_parse(conn *c) {
    if (c->fail_status) {
        fail(c, c->fail_status, c->fail_code, c->fail_msg, c->fail_426);
        return;
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        fail(c, 431, "HEADERS_TOO_LARGE", "request header fields are too large", 0);
        return;
    case HPE_INVALID_CONTENT_LENGTH:
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        fail(c, 400, "BAD_REQUEST", "invalid or conflicting Content-Length", 0);
        return;
    case HPE_INVALID_TRANSFER_ENCODING:
        fail(c, 400, "BAD_REQUEST", "Transfer-Encoding must end in chunked", 0);
        return;
    case HPE_INVALID_CHUNK_SIZE:
        fail(c, 400, "BAD_REQUEST", "malformed chunked request body", 0);
        return;
    default:
        fail(c, 400, "BAD_REQUEST", "malformed HTTP request", 0);
        return;
    }
}

/* ---- parsing --------------------------------------------------------------------------- */

static qc_http_exchange *cur(http_parser *p) { return ((conn *)p->data)->ex; }

static int refuse(http_parser *p, int status, const char *code, const char *msg) {
    conn *c = p->data;
    c->fail_status = status;
    c->fail_426 = status == 426;
    c->fail_code = code;
    c->fail_msg = msg;
    return -1;
}

static int on_message_begin(http_parser *p) {
    if (!conn_exchange(p->data)) return refuse(p, 500, "INTERNAL", "out of memory");
    return 0;
}

static int raw_append(qc_http_exchange *ex, const char *at, size_t len) {
    if (grow(&ex->raw, &ex->raw_cap, ex->raw_len + len) < 0) return -1;
    memcpy(ex->raw + ex->raw_len, at, len);
    ex->raw_len += len;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
    qc_http_exchange *ex = cur(p);
    if (ex->url_len + len > MAX_URI) return refuse(p, 414, "URI_TOO_LONG", "request target is too long");
    if (raw_append(ex, at, len) < 0) return refuse(p, 500, "INTERNAL", "out of memory");
    ex->url_len += len;
    return 0;
}

/* Header names and values together so far, with len more: raw holds the request target,
 * then every name and value. (Trailer fields never come here: body_feed reads bodies.) */
static int head_too_large(const qc_http_exchange *ex, size_t len) {
    return ex->raw_len - ex->url_len + len > MAX_HEAD;
}

/* Header names and values arrive in pieces when a read splits them. */
static int on_header_field(http_parser *p, const char *at, size_t len) {
    qc_http_exchange *ex = cur(p);
    if (head_too_large(ex, len)) return refuse(p, 431, "HEADERS_TOO_LARGE", "request header fields are too large");
    if (ex->nfields == 0 || ex->value_last) {
        if (ex->nfields == MAX_HEADERS) return refuse(p, 431, "HEADERS_TOO_LARGE", "too many request header fields");
        ex->fields[ex->nfields++] = (raw_field){ex->raw_len, 0, ex->raw_len, 0};
        ex->value_last = 0;
    }
    raw_field *f = &ex->fields[ex->nfields - 1];
    if (raw_append(ex, at, len) < 0) return refuse(p, 500, "INTERNAL", "out of memory");
    f->name_len += len;
    f->value = ex->raw_len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
    qc_http_exchange *ex = cur(p);
    if (head_too_large(ex, len)) return refuse(p, 431, "HEADERS_TOO_LARGE", "request header fields are too large");
    if (ex->nfields == 0) return refuse(p, 400, "BAD_REQUEST", "malformed header");
    if (!ex->value_last) {
        ex->fields[ex->nfields - 1].value = ex->raw_len;
        ex->value_last = 1;
    }
    if (raw_append(ex, at, len) < 0) return refuse(p, 500, "INTERNAL", "out of memory");
    ex->fields[ex->nfields - 1].value_len += len;
    return 0;
}

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* %-decodes src into dst (which has room for n + 1); '+' is a space when plus is set.
 * Returns the decoded length, or -1 for a NUL byte, which no C string can carry. */
static long pct_decode(char *dst, const char *src, size_t n, int plus) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = src[i];
        if (ch == '%' && i + 2 < n) {
            int hi = hexval((unsigned char)src[i + 1]), lo = hexval((unsigned char)src[i + 2]);
            if (hi >= 0 && lo >= 0) {
                ch = (char)(hi * 16 + lo);
                i += 2;
            }
        } else if (ch == '+' && plus) {
            ch = ' ';
        }
        if (ch == 0) return -1;
        dst[o++] = ch;
    }
    dst[o] = 0;
    return (long)o;
}

/* Removes "." and ".." segments and repeated slashes from a decoded path, in place, so that
 * routes and policies see one spelling of each path. */
static void normalize_path(char *path) {
    char *out = path, *in = path;
    while (*in) {
        while (*in == '/') in++;
        char *seg = in;
        while (*in && *in != '/') in++;
        size_t len = (size_t)(in - seg);
        if (len == 0) break;
        if (len == 1 && seg[0] == '.') continue;
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            while (out > path && *--out != '/') {}
            continue;
        }
        *out++ = '/';
        memmove(out, seg, len);
        out += len;
    }
    if (out == path || (in > path && in[-1] == '/' && out[-1] != '/')) *out++ = '/';
    *out = 0;
}

static int is_token(const char *s, size_t n, const char *word) {
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

static void trim(const char **s, size_t *n) {
    while (*n && ((*s)[0] == ' ' || (*s)[0] == '\t')) (*s)++, (*n)--;
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) (*n)--;
}

/* RFC 9112 6.1 and 6.3: a request framed by Transfer-Encoding must end in chunked and must
 * not also carry Content-Length; Content-Length must be one number. Anything else could be
 * read two ways by two servers in a chain, so it is refused and the connection closed.
 * http-parser checks most of this too; this is the rule written down in one place. */
static int check_framing(http_parser *p, qc_http_exchange *ex) {
    int ncl = 0, nte = 0, te_other = 0, te_chunked_last = 0, nhost = 0;
    uint64_t length = 0;
    for (size_t i = 0; i < ex->nfields; i++) {
        raw_field *f = &ex->fields[i];
        const char *name = ex->raw + f->name, *v = ex->raw + f->value;
        size_t vn = f->value_len;
        trim(&v, &vn);
        if (is_token(name, f->name_len, "host")) nhost++;
        if (is_token(name, f->name_len, "content-length")) {
            ncl++;
            if (vn == 0 || vn > 18) return refuse(p, 400, "BAD_REQUEST", "invalid Content-Length");
            length = 0;
            for (size_t k = 0; k < vn; k++) {
                if (v[k] < '0' || v[k] > '9') return refuse(p, 400, "BAD_REQUEST", "invalid Content-Length");
                length = length * 10 + (uint64_t)(v[k] - '0');
            }
        } else if (is_token(name, f->name_len, "transfer-encoding")) {
            nte++;
            size_t k = 0;
            while (k <= vn) { /* each coding of the comma-separated list */
                size_t e = k;
                while (e < vn && v[e] != ',') e++;
                const char *cod = v + k;
                size_t cn = e - k;
                trim(&cod, &cn);
                if (cn) {
                    if (te_chunked_last) return refuse(p, 400, "BAD_REQUEST", "Transfer-Encoding must end in chunked");
                    if (is_token(cod, cn, "chunked")) te_chunked_last = 1;
                    else te_other = 1;
                }
                k = e + 1;
            }
        }
    }
    /* RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one before it. */
    if (nhost > 1 || (nhost == 0 && p->http_minor >= 1)) return refuse(p, 400, "BAD_REQUEST", "one Host header is required");
    if (ncl > 1) return refuse(p, 400, "BAD_REQUEST", "more than one Content-Length");
    if (nte && ncl) return refuse(p, 400, "BAD_REQUEST", "Transfer-Encoding together with Content-Length");
    if (nte && !te_chunked_last) return refuse(p, 400, "BAD_REQUEST", "Transfer-Encoding must end in chunked");
    if (nte && te_other) return refuse(p, 501, "NOT_IMPLEMENTED", "only the chunked transfer coding is supported");
    if (nte) {
        ex->body_mode = BODY_CHUNKED;
        qc_chunked_init(&ex->dechunk);
    } else if (length) {
        ex->body_mode = BODY_LENGTH;
        ex->remaining = length;
    }
    return 0;
}

/* Builds what the handler sees: method, decoded path, query arguments, peer and headers
 * with lowercase names, all in the exchange's one text buffer, sized first so that no
 * pointer into it moves. */
static int build_request(http_parser *p, qc_http_exchange *ex) {
    const char *m = http_method_str((enum http_method)p->method);
    size_t ml = strlen(m);
    if (ml >= sizeof ex->method) ml = sizeof ex->method - 1;
    memcpy(ex->method, m, ml);
    ex->method[ml] = 0;
    ex->head = p->method == HTTP_HEAD;

    struct http_parser_url u;
    http_parser_url_init(&u);
    int connect = p->method == HTTP_CONNECT;
    if (http_parser_parse_url(ex->raw, ex->url_len, connect, &u) != 0)
        return refuse(p, 400, "BAD_REQUEST", "malformed request target");
    const char *path = "/", *query = "";
    size_t path_len = 1, query_len = 0;
    if (u.field_set & (1 << UF_PATH)) {
        path = ex->raw + u.field_data[UF_PATH].off;
        path_len = u.field_data[UF_PATH].len;
    }
    if (u.field_set & (1 << UF_QUERY)) {
        query = ex->raw + u.field_data[UF_QUERY].off;
        query_len = u.field_data[UF_QUERY].len;
    }
    size_t peer_len = strlen(ex->peer);
    size_t need = path_len + 2 + peer_len + 1 + 2 * (query_len + 1) + 2 * MAX_ARGS + 8; /* NULs of each name and value */
    for (size_t i = 0; i < ex->nfields; i++) need += ex->fields[i].name_len + ex->fields[i].value_len + 2;
    if (grow(&ex->text, &ex->text_cap, need) < 0) return refuse(p, 500, "INTERNAL", "out of memory");
    char *t = ex->text;

    long n = pct_decode(t, path, path_len, 0);
    if (n < 0) return refuse(p, 400, "BAD_REQUEST", "NUL byte in the path");
    if (t[0] != '/') { /* "*" (OPTIONS) or an authority (CONNECT): routes see "/" */
        t[0] = '/';
        t[1] = 0;
        n = 1;
    }
    normalize_path(t);
    ex->path = t;
    t += strlen(t) + 1;
    memcpy(t, ex->peer, peer_len + 1);
    ex->peer = t;
    t += peer_len + 1;

    /* Arguments split at '&' before decoding, so an encoded '&' or '=' stays in its value;
     * req.query is the decoded pairs joined with '&' again, for logs. */
    char *q = t;
    size_t ql = 0;
    q[0] = 0;
    t += query_len + 1;
    size_t k = 0;
    while (k < query_len && ex->nargs < MAX_ARGS) {
        size_t e = k;
        while (e < query_len && query[e] != '&') e++;
        if (e > k) {
            const char *eq = memchr(query + k, '=', e - k);
            size_t nl = eq ? (size_t)(eq - (query + k)) : e - k;
            char *name = t;
            long dn = pct_decode(name, query + k, nl, 1);
            if (dn < 0) return refuse(p, 400, "BAD_REQUEST", "NUL byte in the query");
            t += dn + 1;
            char *value = t;
            long dv = eq ? pct_decode(value, eq + 1, (size_t)(query + e - eq - 1), 1) : (value[0] = 0, 0);
            if (dv < 0) return refuse(p, 400, "BAD_REQUEST", "NUL byte in the query");
            t += dv + 1;
            if (ql) q[ql++] = '&';
            memcpy(q + ql, name, (size_t)dn);
            ql += (size_t)dn;
            if (eq) {
                q[ql++] = '=';
                memcpy(q + ql, value, (size_t)dv);
                ql += (size_t)dv;
            }
            q[ql] = 0;
            if (dn) ex->args[ex->nargs++] = (qc_http_header){name, value};
        }
        k = e + 1;
    }
    ex->query = q;

    for (size_t i = 0; i < ex->nfields; i++) {
        raw_field *f = &ex->fields[i];
        const char *v = ex->raw + f->value;
        size_t vn = f->value_len;
        trim(&v, &vn);
        if (memchr(v, 0, vn) || memchr(v, '\r', vn) || memchr(v, '\n', vn))
            return refuse(p, 400, "BAD_REQUEST", "invalid header value");
        char *name = t;
        for (size_t j = 0; j < f->name_len; j++) {
            char ch = ex->raw[f->name + j];
            name[j] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        name[f->name_len] = 0;
        t += f->name_len + 1;
        memcpy(t, v, vn);
        t[vn] = 0;
        ex->headers[ex->nheaders++] = (qc_http_header){name, t};
        t += vn + 1;
    }
    return 0;
}

/* Does a header value, a comma-separated token list, hold `token` (any case)? */
static int has_token(const char *v, const char *token) {
    size_t tl = strlen(token);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',') v++;
        const char *s = v;
        while (*v && *v != ',') v++;
        size_t n = (size_t)(v - s);
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
        if (n == tl && strncasecmp(s, token, tl) == 0) return 1;
    }
    return 0;
}

/* Every value of a header (it may be repeated) searched for a token. */
static int any_has_token(const qc_http_exchange *ex, const char *name, const char *token) {
    for (size_t i = 0; i < ex->nheaders; i++)
        if (strcmp(ex->headers[i].name, name) == 0 && has_token(ex->headers[i].value, token)) return 1;
    return 0;
}

/* RFC 6455 4.2.1: a request that asks for a WebSocket gets one only with a complete
 * handshake; a broken one is answered here (400, or 426 naming the version we speak), so
 * the handler sees req->websocket only when qc_ws_accept can answer it. Either way the
 * connection ends with this request: nothing pipelined behind an upgrade is read. */
static int ws_check(http_parser *p, qc_http_exchange *ex) {
    if (!any_has_token(ex, "upgrade", "websocket")) return 0;
    ex->close_after = 1;
    if (p->method != HTTP_GET)
        return refuse(p, 400, "BAD_WEBSOCKET_HANDSHAKE", "a WebSocket upgrade must be a GET request");
    if (p->http_major != 1 || p->http_minor < 1)
        return refuse(p, 400, "BAD_WEBSOCKET_HANDSHAKE", "a WebSocket upgrade needs HTTP/1.1");
    if (!any_has_token(ex, "connection", "upgrade"))
        return refuse(p, 400, "BAD_WEBSOCKET_HANDSHAKE", "a WebSocket upgrade needs Connection: Upgrade");
    const char *version = qc_http_exchange_header(ex, "sec-websocket-version");
    if (!version || strcmp(version, "13") != 0)
        return refuse(p, 426, "UPGRADE_REQUIRED", "Sec-WebSocket-Version must be 13");
    const char *key = qc_http_exchange_header(ex, "sec-websocket-key");
    if (!key || !qc_ws_key_valid(key))
        return refuse(p, 400, "BAD_WEBSOCKET_HANDSHAKE", "Sec-WebSocket-Key must be the base64 of 16 bytes");
    if (ex->body_mode != BODY_NONE)
        return refuse(p, 400, "BAD_WEBSOCKET_HANDSHAKE", "a WebSocket upgrade request has no body");
    ex->websocket = 1;
    return 0;
}

static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

static void on_continue_written(uv_write_t *req, int status) {
    (void)status;
    conn *c = req->data;
    c->continue_busy = 0;
}

static int on_headers_complete(http_parser *p) {
    conn *c = p->data;
    qc_http_exchange *ex = c->ex;
    if (p->http_major != 1) return refuse(p, 505, "HTTP_VERSION_NOT_SUPPORTED", "only HTTP/1.x is served here");
    if (check_framing(p, ex) < 0) return -1;
    if (build_request(p, ex) < 0) return -1;
    int chunked = ex->body_mode == BODY_CHUNKED;
    uint64_t declared = ex->body_mode == BODY_LENGTH ? ex->remaining : 0;
    if (declared > c->srv->opts.max_body_bytes)
        return refuse(p, 413, "PAYLOAD_TOO_LARGE", "request body is over the limit");
    if (declared && grow(&ex->body, &ex->body_cap, (size_t)declared + 1) < 0)
        return refuse(p, 413, "PAYLOAD_TOO_LARGE", "request body cannot be held");
    if (!http_should_keep_alive(p) || p->upgrade) ex->close_after = 1;
    if (ws_check(p, ex) < 0) return -1;
    /* curl and others wait a second for this before sending a body. */
    const char *expect = qc_http_exchange_header(ex, "expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && (declared || chunked) && p->http_minor >= 1 &&
        !c->continue_busy) {
        uv_buf_t b = uv_buf_init((char *)continue_line, sizeof continue_line - 1);
        c->continue_req.data = c;
        if (uv_write(&c->continue_req, (uv_stream_t *)&c->tcp, &b, 1, on_continue_written) == 0)
            c->continue_busy = 1;
    }
    /* The body is read by body_feed, not by http-parser: 1 makes it end the message here. */
    return 1;
}

static void body_sink(void *ud, const char *at, size_t len) {
    qc_http_exchange *ex = ud;
    if (ex->too_large) return;
    if (ex->body_len + len > ex->srv->opts.max_body_bytes ||
        grow(&ex->body, &ex->body_cap, ex->body_len + len + 1) < 0) {
        ex->too_large = 1;
        return;
    }
    memcpy(ex->body + ex->body_len, at, len);
    ex->body_len += len;
    ex->body[ex->body_len] = 0;
}

/* Reads body bytes of the current request; returns how many it used. Bodies are framed
 * here, not by http-parser, whose Debian build lets any two bytes stand for the CRLF after
 * chunk data. A chunked body is refused with 413 within the read that passes the limit. */
static size_t body_feed(conn *c, qc_http_exchange *ex, const char *src, size_t avail) {
    size_t used = 0;
    if (ex->body_mode == BODY_LENGTH) {
        used = avail < ex->remaining ? avail : (size_t)ex->remaining;
        body_sink(ex, src, used);
        ex->remaining -= used;
        if (!ex->remaining) ex->body_done = 1;
    } else {
        int st = qc_chunked_feed(&ex->dechunk, src, avail, &used, body_sink, ex);
        if (st == QC_CHUNKED_ERROR) {
            refuse(&c->parser, 400, "BAD_CHUNKED_BODY", "malformed chunked request body");
            return avail;
        }
        if (st == QC_CHUNKED_DONE) ex->body_done = 1;
    }
    if (ex->too_large) refuse(&c->parser, 413, "PAYLOAD_TOO_LARGE", "request body is over the limit");
    return used;
}

/* What http-parser skips as Debian builds it (HTTP_PARSER_STRICT=0) is checked on the head
 * bytes it consumed: a CR must be followed by LF, and the request line must end in
 * " HTTP/d.d" (the non-strict parser takes any letters for "HTTP"). 0 or -1. */
static int head_scan(conn *c, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (c->scan_cr) {
            if (ch != '\n') return -1;
            c->scan_cr = 0;
        } else if (ch == '\r') {
            c->scan_cr = 1;
            continue;
        }
        if (c->scan_first_done) continue;
        if (ch == '\n') {
            if (c->scan_tail_len == 0) continue; /* empty lines before a request are allowed */
            const char *t = c->scan_tail;
            if (c->scan_tail_len < 9 || memcmp(t, " HTTP/", 6) != 0 || t[6] < '0' || t[6] > '9' || t[7] != '.' ||
                t[8] < '0' || t[8] > '9')
                return -1;
            c->scan_first_done = 1;
            continue;
        }
        if (c->scan_tail_len == 9) {
            memmove(c->scan_tail, c->scan_tail + 1, 8);
            c->scan_tail_len = 8;
        }
        c->scan_tail[c->scan_tail_len++] = ch;
    }
    return 0;
}

/* Stops the parser at the end of each head (bodies are read by body_feed): what follows
 * waits in the input until this request is answered, so answers go out in order. */
static int on_message_complete(http_parser *p) {
    http_parser_pause(p, 1);
    return 0;
}

static void dispatch(conn *c) {
    qc_http_exchange *ex = c->ex;
    qc_http_incoming in = {
        /* HEAD is GET without the body (RFC 9110 9.3.2): handlers answer it as GET and
         * build_response leaves the body out. */
        .method = ex->head ? "GET" : ex->method,
        .path = ex->path,
        .query = ex->query,
        .args = ex->args,
        .nargs = ex->nargs,
        .headers = ex->headers,
        .nheaders = ex->nheaders,
        .body = ex->body_len ? ex->body : "",
        .body_len = ex->body_len,
        .peer = ex->peer,
        .websocket = ex->websocket,
    };
    /* An upgrade's handler may take its time: nothing is read meanwhile, so what the client
     * sends after its head waits in the socket (or in c->in) for the new owner. */
    if (ex->websocket) {
        c->ws_pending = 1;
        reading(c, 0);
    }
    ex->dispatched = 1;
    c->srv->inflight++;
    set_state(c, C_BUSY);
    c->srv->opts.on_request(c->srv->opts.ud, ex, &in);
}

/* Parses what is buffered for a connection (data/len: fresh input in the shared buffer when
 * nothing was buffered before it), hands on each complete request and keeps what it cannot
 * use yet. Called again when an answer is queued or written. */
static void parse_input(conn *c, const char *data, size_t len) {
    c->in_process = 1;
    while (!c->closing && c->state != C_LINGER && c->state != C_UPGRADED) {
        if (c->ex && c->ex->dispatched) break; /* answers go out in order */
        size_t avail = data ? len : c->in_len - c->in_start;
        if (avail == 0) break; /* before the pointer sum: c->in is NULL until input is kept */
        const char *src = data ? data : c->in + c->in_start;
        if (c->writes && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WRITE_HIGH) break;
        if (c->state == C_IDLE) set_state(c, C_RECV);
        c->fail_status = 0;
        qc_http_exchange *ex = c->ex;
        if (ex && ex->in_body) {
            size_t used = body_feed(c, ex, src, avail);
            if (data) data += used, len -= used;
            else c->in_start += used;
            if (c->fail_status) {
                fail_parse(c);
                break;
            }
            if (ex->body_done) dispatch(c);
            continue;
        }
        size_t n = http_parser_execute(&c->parser, &c->srv->settings, src, avail);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if ((e == HPE_OK || e == HPE_PAUSED) && head_scan(c, src, n) < 0) {
            refuse(&c->parser, 400, "BAD_REQUEST", "malformed request line or line ending");
            fail_parse(c);
            break;
        }
        if (data) data += n, len -= n;
        else c->in_start += n;
        if (e == HPE_PAUSED) { /* a head is complete */
            http_parser_pause(&c->parser, 0);
            c->scan_cr = c->scan_first_done = 0;
            c->scan_tail_len = 0;
            ex = c->ex;
            if (ex->body_mode != BODY_NONE) {
                ex->in_body = 1;
                continue;
            }
            dispatch(c);
            continue;
        }
        if (e != HPE_OK) {
            fail_parse(c);
            break;
        }
    }
    c->in_process = 0;
    if (c->closing) return;
    if (c->state == C_UPGRADED) {
        /* Accepted while its head was parsed: what followed the head is the new owner's,
         * handed over from the timer qc_ws_accept armed. */
        if (data && len && keep_input(c, data, len) < 0) conn_close(c);
        return;
    }
    if (c->state == C_LINGER) {
        c->in_start = c->in_len = 0;
        return;
    }
    if (data && len && keep_input(c, data, len) < 0) { /* keep what is left for later */
        conn_close(c);
        return;
    }
    if (c->in_start == c->in_len) {
        /* Nothing held: an idle keep-alive connection keeps no buffer of its own (input is
         * parsed from the shared read buffer; this one only holds what a read split). */
        c->in_start = c->in_len = 0;
        if (c->in) buf_release(&c->in, &c->in_cap);
    } else if (c->in_start > c->in_cap / 2) {
        memmove(c->in, c->in + c->in_start, c->in_len - c->in_start);
        c->in_len -= c->in_start;
        c->in_start = 0;
    }
    int waiting = c->ex && c->ex->dispatched;
    if (c->eof && c->in_len == 0) {
        /* The client has said all it will. Answers still owed go out, then we close. */
        if (waiting) return;
        if (c->ex) { /* a request cut short */
            fail(c, 400, "BAD_REQUEST", "the request ended before it was complete", 0);
            return;
        }
        if (c->writes) conn_linger(c);
        else conn_close(c);
        return;
    }
    reading(c, c->in_len - c->in_start < IN_HIGH);
}

static void process(conn *c) { parse_input(c, NULL, 0); }

/* ---- upgraded connections ------------------------------------------------------------- */

/* Hands the owner what was read before the upgrade and kept in c->in. */
static void upgraded_flush(conn *c) {
    if (c->in_len <= c->in_start || c->closing) return;
    uint8_t *d = (uint8_t *)c->in + c->in_start;
    size_t n = c->in_len - c->in_start;
    c->in_start = c->in_len = 0; /* the buffer stays ours until released below */
    char *held = c->in;
    size_t cap = c->in_cap;
    c->in = NULL;
    c->in_cap = 0;
    c->up->on_read(c->up_ud, d, n);
    buf_release(&held, &cap);
}

static void upgraded_read(conn *c, ssize_t nread, const uv_buf_t *buf) {
    if (nread < 0) {
        reading(c, 0);
        c->eof = 1;
        upgraded_flush(c);
        if (!c->closing) c->up->on_end(c->up_ud, (int)nread);
        return;
    }
    if (c->in_len > c->in_start) { /* input from before the upgrade goes first, in order */
        if (keep_input(c, buf->base, (size_t)nread) < 0) {
            conn_close(c);
            return;
        }
        upgraded_flush(c);
        return;
    }
    c->up->on_read(c->up_ud, (uint8_t *)buf->base, (size_t)nread);
}

qc_http_conn *qc_http_exchange_upgrade(qc_http_exchange *ex, const char *head, size_t head_len,
                                       const qc_http_upgrade_ops *ops, void *ud) {
    if (ex->responded) return NULL;
    ex->responded = 1;
    access_log(ex, 101);
    qc_metrics_http_request(ex->route, ex->method, 101, (double)(uv_hrtime() - ex->start_ns) / 1e9);
    conn *c = ex->conn;
    if (!c || c->closing) {
        exchange_free(ex);
        return NULL;
    }
    if (c->ex == ex) c->ex = NULL;
    c->ws_pending = 0;
    if (grow(&ex->out, &ex->out_cap, head_len) < 0) {
        exchange_free(ex);
        conn_close(c);
        return NULL;
    }
    memcpy(ex->out, head, head_len);
    ex->out_len = head_len;
    uv_buf_t b = uv_buf_init(ex->out, (unsigned)head_len);
    int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (w == (int)head_len) {
        exchange_free(ex);
    } else if (w >= 0 || w == UV_EAGAIN) {
        /* The rest goes first in the stream's write queue: frames written after it wait. */
        if (w > 0) b = uv_buf_init(ex->out + w, (unsigned)(head_len - (size_t)w));
        ex->wreq.data = ex;
        if (uv_write(&ex->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) w = UV_EPIPE;
        else c->writes++;
    }
    if (w < 0 && w != UV_EAGAIN) {
        ex->conn = NULL;
        exchange_free(ex);
        conn_close(c);
        return NULL;
    }
    c->up = ops;
    c->up_ud = ud;
    set_state(c, C_UPGRADED);
    reading(c, 1);
    return (qc_http_conn *)c;
}

uv_stream_t *qc_http_conn_stream(qc_http_conn *hc) { return (uv_stream_t *)&((conn *)hc)->tcp; }

void qc_http_conn_timer(qc_http_conn *hc, uint64_t ms) {
    conn *c = (conn *)hc;
    if (!c->closing) uv_timer_start(&c->timer, on_timer, ms, 0);
}

void qc_http_conn_read(qc_http_conn *hc, int on) { reading((conn *)hc, on); }

void qc_http_conn_close(qc_http_conn *hc) { conn_close((conn *)hc); }

const char *qc_http_conn_peer(const qc_http_conn *hc) { return ((const conn *)hc)->peer; }

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    conn *c = s->data;
    qc_http_server *srv = c->srv;
    if (buf->base == srv->readbuf) srv->readbuf_busy = 0;
    if (nread == 0 || c->closing) return;
    if (c->state == C_UPGRADED) {
        upgraded_read(c, nread, buf);
        return;
    }
    if (nread < 0) {
        reading(c, 0);
        if (nread != UV_EOF) {
            conn_close(c);
            return;
        }
        c->eof = 1;
        if (c->state == C_LINGER) {
            if (!c->writes) conn_close(c);
            return;
        }
        process(c);
        return;
    }
    if (c->state == C_LINGER) return; /* dropped */
    c->used = 1;
    if (c->in_len > c->in_start) { /* earlier input waits: append, parse in order */
        if (keep_input(c, buf->base, (size_t)nread) < 0) conn_close(c);
        else process(c);
        return;
    }
    parse_input(c, buf->base, (size_t)nread);
}

/* Is the request late by our fault? Bytes waiting in the socket (FIONREAD) or in our own
 * input buffer have arrived and are not read or parsed yet: the loop was busy with other
 * requests (a handler that computes, a burst of large bodies) and timers run before the
 * loop reads again. The client did its part; the delay is ours. */
static int input_waits(conn *c) {
    if (c->in_len > c->in_start) return 1;
    uv_os_fd_t fd;
    int n = 0;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) < 0) return 0;
    return ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

static void on_timer(uv_timer_t *t) {
    conn *c = t->data;
    if (c->closing) return;
    switch (c->state) {
    case C_IDLE:
        conn_close(c);
        break;
    case C_RECV:
        /* QC_REQUEST_TIMEOUT_MS measures the client, not us. When its bytes wait unread, the
         * deadline gets one more period instead of a 408 the client did not earn. The bound
         * counts periods, not wall time: each one is granted only while input waits, which a
         * client cannot make happen on an idle server (we read at once), so it gives a slow
         * client at most DEADLINE_EXTENSIONS more periods, and only while we lag. A client
         * that is in fact slow still has nothing waiting when its time is up, and gets 408. */
        if (c->extensions < DEADLINE_EXTENSIONS && input_waits(c)) {
            c->extensions++;
            qc_log(QC_LOG_DEBUG, "http", "request deadline extended: its input waits on us", " peer=%s extensions=%d",
                   c->peer, c->extensions);
            uv_timer_start(&c->timer, on_timer, (uint64_t)c->srv->opts.request_timeout_ms, 0);
            break;
        }
        if (!c->used) { /* nothing ever sent: no one to tell */
            conn_close(c);
            break;
        }
        fail(c, 408, "REQUEST_TIMEOUT", "the request took too long to arrive", 0);
        break;
    case C_LINGER:
        conn_close(c);
        break;
    case C_BUSY:
        break;
    case C_UPGRADED:
        upgraded_flush(c);
        if (!c->closing && c->up->on_timer) c->up->on_timer(c->up_ud);
        break;
    }
}

/* ---- server ---------------------------------------------------------------------------- */

static void free_handle(uv_handle_t *h) { free(h); }

/* Raises the descriptor limit as far as we may and returns how many client connections fit
 * below it with a reserve left for everything else the process opens. */
static size_t connection_budget(size_t wanted) {
    struct rlimit rl;
    size_t limit = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            struct rlimit up = rl;
            up.rlim_cur = rl.rlim_max;
            if (setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
        }
        limit = rl.rlim_cur == RLIM_INFINITY ? (size_t)1 << 20 : (size_t)rl.rlim_cur;
    }
    size_t reserve = limit / 8 > RESERVE_MIN ? limit / 8 : RESERVE_MIN;
    size_t fit = limit > reserve + 16 ? limit - reserve : 16;
    if (wanted && wanted < fit) fit = wanted;
    return fit;
}

qc_http_server *qc_http_server_new(uv_loop_t *loop, const qc_http_server_options *opts, char *err,
                                   size_t errlen) {
    qc_http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->opts = *opts;
    if (s->opts.request_timeout_ms <= 0) s->opts.request_timeout_ms = 15000;
    s->max_conns = connection_budget(opts->max_connections);
    http_parser_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_message_complete = on_message_complete;

    struct sockaddr_storage sa;
    const char *host = opts->host && *opts->host ? opts->host : "0.0.0.0";
    int rc = uv_ip4_addr(host, opts->port, (struct sockaddr_in *)&sa);
    if (rc < 0) rc = uv_ip6_addr(host, opts->port, (struct sockaddr_in6 *)&sa);
    if (rc < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d (not an IP address)", host, opts->port);
        free(s);
        return NULL;
    }
    s->listener = malloc(sizeof *s->listener);
    if (!s->listener) {
        snprintf(err, errlen, "out of memory");
        free(s);
        return NULL;
    }
    uv_tcp_init(loop, s->listener);
    s->listener->data = s;
    s->listening = 1;
    rc = uv_tcp_bind(s->listener, (const struct sockaddr *)&sa, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)s->listener, 511, on_connection);
    if (rc < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d (%s)", host, opts->port, uv_strerror(rc));
        uv_close((uv_handle_t *)s->listener, free_handle); /* freed when the caller drains the loop */
        free(s);
        return NULL;
    }
    qc_log(QC_LOG_INFO, "http", "limits", " max_connections=%zu request_timeout_ms=%ld max_body=%zu", s->max_conns,
           s->opts.request_timeout_ms, s->opts.max_body_bytes);
    return s;
}

int qc_http_server_port(const qc_http_server *s) {
    struct sockaddr_storage sa;
    int len = sizeof sa;
    if (!s->listening) return -1;
    if (uv_tcp_getsockname(s->listener, (struct sockaddr *)&sa, &len) < 0) return -1;
    if (sa.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&sa)->sin_port);
    if (sa.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
    return -1;
}

size_t qc_http_server_inflight(const qc_http_server *s) { return s->inflight; }

static void close_list(conn_list *l) {
    while (l->head) conn_close(l->head);
}

void qc_http_server_stop_accepting(qc_http_server *s) {
    if (s->stopping) return;
    s->stopping = 1;
    if (s->listening) {
        uv_close((uv_handle_t *)s->listener, free_handle);
        s->listening = 0;
    }
    close_list(&s->idle); /* nothing to finish there */
}

void qc_http_server_shutdown(qc_http_server *s) {
    if (!s || s->shut) return;
    qc_http_server_stop_accepting(s);
    s->shut = 1;
    /* WebSockets first: each says goodbye (1001) before its socket closes. */
    while (s->upgraded.head) {
        conn *c = s->upgraded.head;
        if (c->up->on_stop) c->up->on_stop(c->up_ud);
        conn_close(c);
    }
    close_list(&s->idle);
    close_list(&s->recv);
    close_list(&s->other);
}

/* After the loop has run the close callbacks of every connection. */
void qc_http_server_free(qc_http_server *s) {
    if (!s) return;
    for (size_t i = 0; i < s->npool; i++) exchange_destroy(s->pool[i]);
    s->npool = 0;
    free(s);
}
