/* WebSocket client on libwebsockets 4.1 with our uv loop as its foreign loop. lws does the
 * framing, TLS and the handshake; this file owns each connection's send queue, joins
 * incoming fragments, resolves names off the loop thread and keeps the one lws context
 * alive exactly as long as something uses it (see ws_client.h). */
#define _POSIX_C_SOURCE 200809L
#include "ws_client.h"

#include <arpa/inet.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../log.h"

#define DEFAULT_MAX_MESSAGE (16u << 20)
#define DEFAULT_MAX_QUEUED (4u << 20)
#define CONTEXT_TIMEOUT_S 15 /* lws' limit on connect, TLS and upgrade */
#define HOSTNAME_MAX 253
#define SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"
/* lws' write type for a Close frame: private to lws (lib/roles/ws/private-lib-roles-ws.h,
 * the same value from 2.x to 4.3), and the only way to send a Close without a code. */
#define QC_LWS_WRITE_CLOSE ((enum lws_write_protocol)4)

enum { Q_TEXT, Q_BINARY, Q_PING };

typedef struct qmsg {
    struct qmsg *next;
    int kind;
    size_t len;
    unsigned char buf[]; /* LWS_PRE bytes of headroom, then the payload */
} qmsg;

typedef enum { ST_RESOLVING, ST_WAIT_CONTEXT, ST_CONNECTING, ST_OPEN, ST_GONE } conn_state;

struct qc_ws_client {
    uv_loop_t *loop;
    qc_ws_client_handlers h;
    void *ud;
    conn_state state;
    struct lws *wsi;
    uv_getaddrinfo_t resolve;
    qc_ws_url u;
    char address[INET6_ADDRSTRLEN];
    char **headers; /* lws wants "name:" with the colon: copies, name then value */
    size_t nheaders;
    size_t max_message, max_queued;

    qmsg *head, *tail;
    size_t queued;

    unsigned char *rx;
    size_t rx_len, rx_cap;
    int rx_text, rx_active;

    int close_requested, close_code; /* ours */
    int empty_close_sent;
    char close_reason[124];
    int peer_code; /* from the peer's Close; 0 none */
    char peer_reason[124];
    int http_status;
    char fail_reason[160];

    int aborted;    /* nobody to tell any more */
    int reported;   /* on_close has run */
    int in_connect; /* inside lws_client_connect_via_info */
    int lws_gone;   /* lws freed the wsi while in_connect */
    struct qc_ws_client *next_wait;          /* ST_WAIT_CONTEXT list */
    struct qc_ws_client *next_all, *prev_all; /* G_all */
};

/* ---- the shared context ------------------------------------------------------------ */

/* The context lives from the first connection to qc_ws_client_shutdown, not from one busy
 * spell to the next: lws 4.1 closes its event pipe's descriptors at once when a context on a
 * foreign loop is destroyed, and the read end a second time when libuv has closed its poll
 * handle a loop turn later (lws_destroy_event_pipe). A descriptor reused in between (a
 * libcurl socket) would be closed under its owner, so the destroy happens only while the
 * process is shutting down and opens nothing new. */
typedef enum { CTX_LIVE, CTX_DESTROYING } ctx_phase;

/* Not task.h's self-owned handle (a loop drain would close it mid-destroy): the handle is
 * not the first member, and its data points at the box. */
typedef struct {
    struct lws_context *ctx;
    /* Polls for the end of lws' asynchronous close of its handles. An idle handle, not a
     * check: a check runs only after the loop has polled, and once every other handle is
     * closed nothing would wake the poll (the server hung on SIGTERM that way). */
    uv_idle_t check;
    uv_loop_t *loop;
    ctx_phase phase;
} ctx_box;

static ctx_box *G;              /* the live (or dying) context, NULL when none */
static size_t G_conns;          /* connections alive */
static qc_ws_client *G_all;     /* every connection alive, for the shutdown */
static qc_ws_client *G_waiting; /* connections waiting for a context to finish dying */

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);

static const struct lws_protocols protocols[] = {
    /* 8 KiB receive buffer a connection: larger messages arrive in pieces, joined here */
    {"qc-ws-client", callback, 0, 8192, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_log_bridge(int level, const char *line) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", line);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    qc_log_line(level & LLL_ERR ? QC_LOG_ERROR : QC_LOG_WARN, "lws", msg, NULL);
}

static void start_connect(qc_ws_client *c);

static void box_closed(uv_handle_t *h) {
    free(h->data);
    /* Connections that arrived while the old context was dying get a fresh one. */
    qc_ws_client *w = G_waiting;
    G_waiting = NULL;
    while (w) {
        qc_ws_client *n = w->next_wait;
        w->next_wait = NULL;
        start_connect(w);
        w = n;
    }
}

/* lws marks its own static handles (idle, timer) with handle->data == context; once a
 * walk finds none, its asynchronous close is complete and the second destroy frees it. */
typedef struct {
    void *ctx;
    int found;
} ctx_walk;

static void find_ctx_handle(uv_handle_t *h, void *arg) {
    ctx_walk *w = arg;
    if (h->data == w->ctx) w->found = 1;
}

static void on_check(uv_idle_t *chk) {
    ctx_box *b = chk->data;
    ctx_walk w = {b->ctx, 0};
    uv_walk(b->loop, find_ctx_handle, &w);
    if (w.found) return;
    lws_context_destroy(b->ctx);
    b->ctx = NULL;
    if (G == b) G = NULL;
    uv_idle_stop(&b->check);
    uv_close((uv_handle_t *)&b->check, box_closed);
}

/* The context for loop, made on first use. NULL while the previous one is still dying
 * (the caller waits in G_waiting) or on failure (err says why). */
static struct lws_context *context_for(uv_loop_t *loop, int *wait, char *err, size_t errlen) {
    *wait = 0;
    if (G) {
        if (G->loop != loop) {
            snprintf(err, errlen, "websocket client: one event loop per process");
            return NULL;
        }
        if (G->phase == CTX_DESTROYING) {
            *wait = 1;
            return NULL;
        }
        return G->ctx;
    }
    ctx_box *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_bridge);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    void *foreign_loops[1] = {loop};
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = foreign_loops;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.timeout_secs = CONTEXT_TIMEOUT_S;
    info.gid = -1;
    info.uid = -1;
    const char *ca = getenv("SSL_CERT_FILE");
    info.client_ssl_ca_filepath = (ca && *ca) ? ca : SYSTEM_CA;
    b->ctx = lws_create_context(&info);
    if (!b->ctx) {
        free(b);
        snprintf(err, errlen, "libwebsockets: cannot create a context (is libwebsockets-evlib-uv installed?)");
        return NULL;
    }
    b->loop = loop;
    uv_idle_init(loop, &b->check);
    b->check.data = b;
    b->phase = CTX_LIVE;
    G = b;
    return b->ctx;
}

/* ---- connections --------------------------------------------------------------------- */

static void free_queue(qc_ws_client *c) {
    while (c->head) {
        qmsg *m = c->head;
        c->head = m->next;
        free(m);
    }
    c->tail = NULL;
    c->queued = 0;
}

static void conn_free(qc_ws_client *c) {
    free_queue(c);
    free(c->rx);
    for (size_t i = 0; i < 2 * c->nheaders; i++) free(c->headers[i]);
    free(c->headers);
    qc_ws_url_free(&c->u);
    if (c->prev_all) c->prev_all->next_all = c->next_all;
    else G_all = c->next_all;
    if (c->next_all) c->next_all->prev_all = c->prev_all;
    free(c);
    G_conns--;
}

/* The one on_close of a connection (unless it was aborted). */
static void report_close(qc_ws_client *c) {
    if (c->reported) return;
    c->reported = 1;
    c->state = ST_GONE;
    if (c->aborted || !c->h.on_close) return;
    int code;
    const char *reason;
    if (c->peer_code) {
        code = c->peer_code;
        reason = c->peer_reason;
    } else if (c->close_requested && !c->fail_reason[0]) {
        code = c->close_code ? c->close_code : 1005;
        reason = c->close_reason;
    } else {
        code = 1006;
        reason = c->fail_reason[0] ? c->fail_reason : "connection lost";
    }
    c->h.on_close(c->ud, c, code, c->http_status, reason);
}

static void fail_before_lws(qc_ws_client *c, const char *why) {
    snprintf(c->fail_reason, sizeof c->fail_reason, "%.150s", why);
    report_close(c);
    conn_free(c);
}

static void start_connect(qc_ws_client *c) {
    if (c->aborted) {
        conn_free(c);
        return;
    }
    if (c->close_requested) {
        fail_before_lws(c, "closed before it opened");
        return;
    }
    char err[160];
    int wait;
    struct lws_context *ctx = context_for(c->loop, &wait, err, sizeof err);
    if (wait) {
        c->state = ST_WAIT_CONTEXT;
        c->next_wait = G_waiting;
        G_waiting = c;
        return;
    }
    if (!ctx) {
        fail_before_lws(c, err);
        return;
    }
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof i);
    i.context = ctx;
    i.address = c->address;
    i.port = c->u.port;
    i.ssl_connection = c->u.tls ? LCCSCF_USE_SSL : 0;
    i.path = c->u.path;
    i.host = c->u.hosthdr;
    i.origin = c->u.hosthdr;
    i.local_protocol_name = protocols[0].name;
    i.opaque_user_data = c;
    i.pwsi = &c->wsi;
    i.alpn = "http/1.1"; /* lws' client cannot carry a WebSocket over h2 */
    c->state = ST_CONNECTING;
    c->in_connect = 1;
    struct lws *w = lws_client_connect_via_info(&i);
    c->in_connect = 0;
    if (!w || c->lws_gone) {
        c->wsi = NULL;
        if (!c->fail_reason[0]) snprintf(c->fail_reason, sizeof c->fail_reason, "cannot connect");
        report_close(c);
        conn_free(c);
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    qc_ws_client *c = req->data;
    if (status != 0 || !res) {
        if (res) uv_freeaddrinfo(res);
        char why[300];
        snprintf(why, sizeof why, "cannot resolve %s: %s", c->u.host, uv_strerror(status));
        if (c->aborted) conn_free(c);
        else fail_before_lws(c, why);
        return;
    }
    /* The first IPv4 answer, else the first one: lws connects to a numeric address. */
    struct addrinfo *pick = res;
    for (struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    if (pick->ai_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)pick->ai_addr)->sin_addr, c->address, sizeof c->address);
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr, c->address, sizeof c->address);
    uv_freeaddrinfo(res);
    start_connect(c);
}

int qc_ws_url_parse(const char *url, qc_ws_url *u, char *err, size_t errlen) {
    memset(u, 0, sizeof *u);
    const char *p;
    if (strncasecmp(url, "ws://", 5) == 0) {
        u->tls = 0;
        p = url + 5;
    } else if (strncasecmp(url, "wss://", 6) == 0) {
        u->tls = 1;
        p = url + 6;
    } else {
        snprintf(err, errlen, "websocket url must start with ws:// or wss://");
        return -1;
    }
    for (const char *s = url; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f) {
            snprintf(err, errlen, "websocket url contains a space or control character");
            return -1;
        }
    const char *hend = p + strcspn(p, "/?#");
    const char *hs = p, *he = hend;
    int port = u->tls ? 443 : 80;
    if (*hs == '[') { /* [v6]:port */
        const char *rb = memchr(hs, ']', (size_t)(hend - hs));
        if (!rb) {
            snprintf(err, errlen, "websocket url: bad IPv6 host");
            return -1;
        }
        he = rb + 1;
    } else {
        const char *colon = memchr(hs, ':', (size_t)(hend - hs));
        if (colon) he = colon;
    }
    if (he < hend) {
        if (*he != ':' || he + 1 == hend) {
            snprintf(err, errlen, "websocket url: bad port");
            return -1;
        }
        long v = 0;
        for (const char *d = he + 1; d < hend; d++) {
            if (*d < '0' || *d > '9' || v > 65535) {
                snprintf(err, errlen, "websocket url: bad port");
                return -1;
            }
            v = v * 10 + (*d - '0');
        }
        if (v < 1 || v > 65535) {
            snprintf(err, errlen, "websocket url: bad port");
            return -1;
        }
        port = (int)v;
    }
    size_t hlen = (size_t)(he - hs);
    if (hlen == 0 || hlen > HOSTNAME_MAX) {
        snprintf(err, errlen, "websocket url: bad host");
        return -1;
    }
    if (memchr(hs, '@', hlen)) {
        snprintf(err, errlen, "websocket url: credentials in the url are not supported");
        return -1;
    }
    const char *path = hend;
    size_t plen = strcspn(path, "#");
    size_t hhlen = (size_t)(hend - hs);
    /* host\0hosthdr\0/path\0 */
    char *buf = malloc(hlen + 1 + hhlen + 1 + plen + 2);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *hcopy = hs;
    size_t hcopylen = hlen;
    if (*hs == '[') { /* the name to resolve has no brackets */
        hcopy++;
        hcopylen -= 2;
    }
    if (hcopylen == 0) { /* "[]" (found by fuzz_elevenlabs) */
        free(buf);
        snprintf(err, errlen, "websocket url: bad host");
        return -1;
    }
    memcpy(buf, hcopy, hcopylen);
    buf[hcopylen] = 0;
    u->host = buf;
    u->hosthdr = buf + hcopylen + 1;
    /* Host carries the port only when it is not the scheme's own (RFC 6455 4.1). */
    int default_port = port == (u->tls ? 443 : 80);
    size_t hh = default_port ? hlen : hhlen;
    memcpy(u->hosthdr, hs, hh);
    u->hosthdr[hh] = 0;
    u->path = u->hosthdr + hh + 1;
    if (plen == 0 || path[0] != '/') {
        u->path[0] = '/';
        memcpy(u->path + 1, path, plen);
        u->path[plen + 1] = 0;
    } else {
        memcpy(u->path, path, plen);
        u->path[plen] = 0;
    }
    u->port = port;
    return 0;
}

void qc_ws_url_free(qc_ws_url *u) {
    free(u->host);
    u->host = u->hosthdr = u->path = NULL;
}

static int header_ok(const char *s, int name) {
    if (!*s && name) return 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\r' || ch == '\n') return 0;
        if (name && (ch <= ' ' || ch == ':' || ch >= 0x7f)) return 0;
    }
    return 1;
}

qc_ws_client *qc_ws_client_connect(uv_loop_t *loop, const char *url, const qc_ws_client_options *opt,
                                   const qc_ws_client_handlers *h, void *ud, char *err, size_t errlen) {
    qc_ws_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    G_conns++; /* conn_free undoes it */
    c->next_all = G_all;
    if (G_all) G_all->prev_all = c;
    G_all = c;
    c->loop = loop;
    c->h = *h;
    c->ud = ud;
    c->max_message = opt && opt->max_message ? opt->max_message : DEFAULT_MAX_MESSAGE;
    c->max_queued = opt && opt->max_queued ? opt->max_queued : DEFAULT_MAX_QUEUED;
    c->aborted = 1; /* until it is returned: a failure here calls nobody */
    if (qc_ws_url_parse(url, &c->u, err, errlen) < 0) goto fail;
    if (opt && opt->nheaders) {
        c->headers = calloc(2 * opt->nheaders, sizeof *c->headers);
        if (!c->headers) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        c->nheaders = opt->nheaders;
        for (size_t i = 0; i < opt->nheaders; i++) {
            const char *n = opt->headers[2 * i], *v = opt->headers[2 * i + 1];
            if (!n || !v || !header_ok(n, 1) || !header_ok(v, 0)) {
                snprintf(err, errlen, "bad websocket header %s", n && header_ok(n, 1) ? n : "name");
                goto fail;
            }
            size_t nl = strlen(n);
            c->headers[2 * i] = malloc(nl + 2);
            c->headers[2 * i + 1] = strdup(v);
            if (!c->headers[2 * i] || !c->headers[2 * i + 1]) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            memcpy(c->headers[2 * i], n, nl);
            memcpy(c->headers[2 * i] + nl, ":", 2);
        }
    }
    c->state = ST_RESOLVING;
    c->resolve.data = c;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    int rc = uv_getaddrinfo(loop, &c->resolve, on_resolved, c->u.host, NULL, &hints);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", c->u.host, uv_strerror(rc));
        goto fail;
    }
    c->aborted = 0;
    return c;
fail:
    conn_free(c);
    return NULL;
}

static int enqueue(qc_ws_client *c, int kind, const void *data, size_t len) {
    if (c->state == ST_GONE || c->close_requested || c->aborted) return -1;
    if (kind != Q_PING && c->queued + len > c->max_queued) return -1;
    qmsg *m = malloc(sizeof *m + LWS_PRE + len);
    if (!m) return -1;
    m->next = NULL;
    m->kind = kind;
    m->len = len;
    if (len) memcpy(m->buf + LWS_PRE, data, len);
    if (c->tail) c->tail->next = m;
    else c->head = m;
    c->tail = m;
    c->queued += len;
    if (c->state == ST_OPEN && c->wsi) lws_callback_on_writable(c->wsi);
    return 0;
}

int qc_ws_client_send(qc_ws_client *c, int text, const void *data, size_t len) {
    return enqueue(c, text ? Q_TEXT : Q_BINARY, data, len);
}

int qc_ws_client_ping(qc_ws_client *c, const void *data, size_t len) {
    if (len > 125) return -1;
    return enqueue(c, Q_PING, data, len);
}

size_t qc_ws_client_queued(const qc_ws_client *c) { return c->queued; }

int qc_ws_client_is_open(const qc_ws_client *c) { return c->state == ST_OPEN && !c->close_requested; }

void qc_ws_client_close(qc_ws_client *c, int code, const char *reason) {
    if (c->close_requested || c->state == ST_GONE || c->aborted) return;
    c->close_requested = 1;
    c->close_code = (code >= 1000 && code <= 4999) ? code : 0;
    snprintf(c->close_reason, sizeof c->close_reason, "%s", reason ? reason : "");
    if (c->state == ST_OPEN && c->wsi) lws_callback_on_writable(c->wsi);
    /* RESOLVING / WAIT_CONTEXT: start_connect reports it; CONNECTING: the Close goes out
     * right after the upgrade. */
}

void qc_ws_client_abort(qc_ws_client *c) {
    if (c->aborted) return;
    c->aborted = 1;
    free_queue(c);
    /* lws notices a timeout set from outside its callbacks only at its next event on the
     * wsi; asking for a writable callback makes that event come now (WRITEABLE returns -1
     * for an aborted connection). */
    if (c->wsi) {
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
        lws_callback_on_writable(c->wsi);
    }
    /* RESOLVING: on_resolved frees it; WAIT_CONTEXT: start_connect does. */
}

void qc_ws_client_shutdown(void) {
    for (qc_ws_client *c = G_all; c; c = c->next_all) qc_ws_client_abort(c);
    if (!G || G->phase == CTX_DESTROYING) return;
    G->phase = CTX_DESTROYING;
    lws_context_destroy(G->ctx); /* the first half: lws starts closing its handles */
    uv_idle_start(&G->check, on_check);
}

size_t qc_ws_client_count(void) { return G_conns; }

/* ---- lws' side ---------------------------------------------------------------------- */

static int write_next(qc_ws_client *c, struct lws *wsi) {
    qmsg *m = c->head;
    if (m) {
        c->head = m->next;
        if (!c->head) c->tail = NULL;
        c->queued -= m->len;
        enum lws_write_protocol wp = m->kind == Q_TEXT ? LWS_WRITE_TEXT : m->kind == Q_BINARY ? LWS_WRITE_BINARY : LWS_WRITE_PING;
        int n = lws_write(wsi, m->buf + LWS_PRE, m->len, wp);
        free(m);
        if (n < 0) {
            snprintf(c->fail_reason, sizeof c->fail_reason, "write failed");
            return -1;
        }
        if (c->head || c->close_requested) lws_callback_on_writable(wsi);
        else if (c->h.on_writable && !c->aborted) c->h.on_writable(c->ud, c);
        return c->aborted ? -1 : 0;
    }
    if (c->close_requested && !c->empty_close_sent) {
        if (!c->close_code) {
            /* An empty Close (as Egress ends a stream): lws only sends Close frames with a
             * code, so this one goes out as a plain write and the connection ends with it,
             * without waiting for the peer's answer (lws sends no second Close without a
             * reason set). */
            unsigned char buf[LWS_PRE + 1];
            lws_write(wsi, buf + LWS_PRE, 0, QC_LWS_WRITE_CLOSE);
            c->empty_close_sent = 1;
            return -1;
        }
        lws_close_reason(wsi, (enum lws_close_status)c->close_code, (unsigned char *)c->close_reason,
                         strlen(c->close_reason));
        return -1;
    }
    return 0;
}

static int receive(qc_ws_client *c, struct lws *wsi, const unsigned char *in, size_t len) {
    if (!c->rx_active) {
        c->rx_active = 1;
        c->rx_len = 0;
        c->rx_text = !lws_frame_is_binary(wsi);
    }
    if (len > c->max_message - c->rx_len) {
        static const char why[] = "message too large";
        c->close_requested = 1;
        c->close_code = 1009;
        snprintf(c->close_reason, sizeof c->close_reason, "%s", why);
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, (unsigned char *)why, sizeof why - 1);
        return -1;
    }
    if (c->rx_len + len > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 4096;
        while (cap < c->rx_len + len) cap *= 2;
        if (cap > c->max_message) cap = c->max_message;
        unsigned char *nb = realloc(c->rx, cap);
        if (!nb) {
            snprintf(c->fail_reason, sizeof c->fail_reason, "out of memory");
            return -1;
        }
        c->rx = nb;
        c->rx_cap = cap;
    }
    if (len) memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
        c->rx_active = 0;
        if (c->h.on_message && !c->aborted)
            c->h.on_message(c->ud, c, c->rx_text, c->rx ? c->rx : (const unsigned char *)"", c->rx_len);
        /* a large message's buffer is not kept for the connection's life */
        if (c->rx_cap > 65536) {
            free(c->rx);
            c->rx = NULL;
            c->rx_cap = 0;
        }
    }
    return c->aborted ? -1 : 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    (void)user;
    qc_ws_client *c = wsi ? lws_get_opaque_user_data(wsi) : NULL;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        if (!c) break;
        unsigned char **p = in, *end = *p + len;
        for (size_t i = 0; i < c->nheaders; i++) {
            const char *v = c->headers[2 * i + 1];
            if (lws_add_http_header_by_name(wsi, (const unsigned char *)c->headers[2 * i], (const unsigned char *)v,
                                            (int)strlen(v), p, end))
                return -1;
        }
        break;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!c) break;
        c->state = ST_OPEN;
        if (c->h.on_open && !c->aborted && !c->close_requested) c->h.on_open(c->ud, c);
        if (c->aborted) return -1;
        if (c->head || c->close_requested) lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (!c) break;
        return receive(c, wsi, in, len);
    case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
        if (c && c->h.on_pong && !c->aborted) c->h.on_pong(c->ud, c, in, len);
        return c && c->aborted ? -1 : 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (!c) break;
        if (c->aborted) return -1;
        return write_next(c, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (!c) break;
        if (len >= 2) {
            const unsigned char *b = in;
            c->peer_code = (b[0] << 8) | b[1];
            size_t rl = len - 2 < sizeof c->peer_reason - 1 ? len - 2 : sizeof c->peer_reason - 1;
            memcpy(c->peer_reason, b + 2, rl);
            c->peer_reason[rl] = 0;
        } else {
            c->peer_code = 1005;
        }
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (!c) break;
        c->http_status = (int)lws_http_client_http_response(wsi);
        snprintf(c->fail_reason, sizeof c->fail_reason, "%.*s", in ? (int)(len < 150 ? len : 150) : 0,
                 in ? (const char *)in : "");
        if (!c->fail_reason[0]) snprintf(c->fail_reason, sizeof c->fail_reason, "connection failed");
        c->peer_code = 0;
        c->close_requested = 0;
        if (!c->in_connect) report_close(c);
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (c && !c->in_connect) report_close(c);
        break;
    case LWS_CALLBACK_WSI_DESTROY:
        if (!c) break;
        lws_set_opaque_user_data(wsi, NULL);
        c->wsi = NULL;
        if (c->in_connect) {
            c->lws_gone = 1;
            break;
        }
        report_close(c);
        conn_free(c);
        break;
    default:
        break;
    }
    return 0;
}
