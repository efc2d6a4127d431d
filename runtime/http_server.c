/* libwebsockets glue. Why one buffer per answer: lws on a foreign libuv loop costs two
 * sendto and several epoll_ctl per request when headers and body go out in separate
 * writable callbacks; a single lws_write from the HTTP callback costs one sendto. */
#define _POSIX_C_SOURCE 200809L
#include "http_server.h"

#include <arpa/inet.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunked.h"
#include "log.h"

#define MAX_HEADERS 96
#define MAX_ARGS 64

/* Peer addresses by socket, written when lws accepts the connection (its filter callback
 * carries the address), so no request pays for a getpeername. Per-session data cannot hold
 * it: lws re-creates that for every keep-alive transaction. */
#define PEER_SLOTS 1024
typedef struct {
    int fd; /* -1: empty */
    char addr[48];
} peer_slot;

struct qc_http_server {
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    qc_http_server_options opts;
    size_t inflight;
    int stopping;
    int shut;
    peer_slot peers[PEER_SLOTS];
};

struct qc_http_exchange {
    qc_http_server *srv;
    struct lws *wsi;   /* NULL once the connection is gone */
    int dispatched;    /* handed to on_request, answer owed */
    int responded;
    int in_callback;   /* respond() called while lws is inside our HTTP callback */
    int too_large;
    int close_after;
    int chunked; /* body framed with Transfer-Encoding: chunked, decoded by us */
    qc_chunked dechunk;
    uint64_t start_ns;
    char method[8];
    char *path, *query, *peer;
    qc_http_header headers[MAX_HEADERS];
    size_t nheaders;
    char *hdr_store; /* one allocation holding every header name/value */
    qc_http_header args[MAX_ARGS]; /* query arguments, name/value, already %-decoded */
    size_t nargs;
    char *args_store;
    char *body;
    size_t body_len, body_cap;
    unsigned char *out; /* LWS_PRE + response */
    size_t out_len;
};

struct pss {
    qc_http_exchange *ex;
};



static void exchange_free(qc_http_exchange *ex) {
    if (!ex) return;
    free(ex->path);
    free(ex->query);
    free(ex->peer);
    free(ex->hdr_store);
    free(ex->args_store);
    free(ex->body);
    free(ex->out);
    free(ex);
}

static const struct {
    enum lws_token_indexes tok;
    const char *name;
} method_tokens[] = {
    {WSI_TOKEN_GET_URI, "GET"},       {WSI_TOKEN_POST_URI, "POST"},   {WSI_TOKEN_PUT_URI, "PUT"},
    {WSI_TOKEN_PATCH_URI, "PATCH"},   {WSI_TOKEN_DELETE_URI, "DELETE"}, {WSI_TOKEN_OPTIONS_URI, "OPTIONS"},
    {WSI_TOKEN_HEAD_URI, "HEAD"},
};

static int is_method_token(int tok) {
    for (size_t i = 0; i < sizeof method_tokens / sizeof method_tokens[0]; i++)
        if ((int)method_tokens[i].tok == tok) return 1;
    return tok == WSI_TOKEN_HTTP_URI_ARGS;
}

/* Copies every known request header into ex (names lowercase, no colon), in one pass
 * over lws' token table: one allocation, sized after the copy. */
static int collect_headers(struct lws *wsi, qc_http_exchange *ex) {
    char stack[4096];
    char *buf = stack;
    size_t cap = sizeof stack, used = 0;
    size_t name_off[MAX_HEADERS], value_off[MAX_HEADERS];
    for (int t = 0; t < WSI_TOKEN_COUNT && ex->nheaders < MAX_HEADERS; t++) {
        int len = lws_hdr_total_length(wsi, (enum lws_token_indexes)t);
        if (len <= 0 || is_method_token(t)) continue;
        const char *name = (const char *)lws_token_to_string((enum lws_token_indexes)t);
        if (!name || name[0] == ':') continue; /* h2 pseudo headers */
        size_t nl = strlen(name);
        if (nl && name[nl - 1] == ':') nl--;
        if (nl == 0) continue;
        size_t need = nl + 1 + (size_t)len + 1;
        if (used + need > cap) {
            size_t ncap = cap * 2;
            while (ncap < used + need) ncap *= 2;
            char *nb = buf == stack ? malloc(ncap) : realloc(buf, ncap);
            if (!nb) {
                if (buf != stack) free(buf);
                return -1;
            }
            if (buf == stack) memcpy(nb, stack, used);
            buf = nb;
            cap = ncap;
        }
        memcpy(buf + used, name, nl);
        buf[used + nl] = 0;
        int got = lws_hdr_copy(wsi, buf + used + nl + 1, len + 1, (enum lws_token_indexes)t);
        if (got < 0) continue;
        name_off[ex->nheaders] = used;
        value_off[ex->nheaders] = used + nl + 1;
        ex->nheaders++;
        used += nl + 1 + (size_t)got + 1;
    }
    if (!ex->nheaders) {
        if (buf != stack) free(buf);
        return 0;
    }
    ex->hdr_store = buf == stack ? malloc(used) : buf;
    if (!ex->hdr_store) return -1;
    if (buf == stack) memcpy(ex->hdr_store, stack, used);
    for (size_t i = 0; i < ex->nheaders; i++) {
        ex->headers[i].name = ex->hdr_store + name_off[i];
        ex->headers[i].value = ex->hdr_store + value_off[i];
    }
    return 0;
}

static const char *header_value(const qc_http_exchange *ex, const char *name) {
    for (size_t i = 0; i < ex->nheaders; i++)
        if (strcmp(ex->headers[i].name, name) == 0) return ex->headers[i].value;
    return NULL;
}

const char *qc_http_exchange_path(const qc_http_exchange *ex) { return ex->path; }
const char *qc_http_exchange_header(const qc_http_exchange *ex, const char *name) {
    return header_value(ex, name);
}

/* The query: lws splits it at '&' into fragments and %-decodes each, so the pairs are
 * taken fragment by fragment (an encoded '&' or '=' inside a value stays inside it), and
 * req.query is those fragments joined with '&' again, for logs. */
static int collect_args(struct lws *wsi, qc_http_exchange *ex) {
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    size_t cap = total > 0 ? (size_t)total + MAX_ARGS + 1 : 1;
    ex->query = malloc(cap);
    ex->args_store = total > 0 ? malloc(cap + MAX_ARGS) : NULL;
    if (!ex->query || (total > 0 && !ex->args_store)) return -1;
    ex->query[0] = 0;
    size_t q = 0, a = 0;
    for (int f = 0; total > 0 && ex->nargs < MAX_ARGS; f++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, f);
        if (len <= 0) break;
        if (q + (size_t)len + 2 > cap) break;
        char *frag = ex->args_store + a;
        if (lws_hdr_copy_fragment(wsi, frag, len + 1, WSI_TOKEN_HTTP_URI_ARGS, f) < 0) break;
        if (q) ex->query[q++] = '&';
        memcpy(ex->query + q, frag, (size_t)len);
        q += (size_t)len;
        ex->query[q] = 0;
        char *eq = memchr(frag, '=', (size_t)len);
        if (eq) {
            *eq = 0;
            ex->args[ex->nargs].value = eq + 1;
        } else {
            ex->args[ex->nargs].value = frag + len; /* "flag" alone: empty value */
        }
        ex->args[ex->nargs].name = frag;
        if (*frag) ex->nargs++;
        a += (size_t)len + 1;
    }
    return 0;
}

static qc_http_exchange *exchange_new(qc_http_server *srv, struct lws *wsi, const char *uri) {
    qc_http_exchange *ex = calloc(1, sizeof *ex);
    if (!ex) return NULL;
    ex->srv = srv;
    ex->wsi = wsi;
    ex->start_ns = uv_hrtime();
    snprintf(ex->method, sizeof ex->method, "GET");
    for (size_t i = 0; i < sizeof method_tokens / sizeof method_tokens[0]; i++) {
        if (lws_hdr_total_length(wsi, method_tokens[i].tok) > 0) {
            snprintf(ex->method, sizeof ex->method, "%s", method_tokens[i].name);
            break;
        }
    }
    ex->path = strdup(uri && *uri ? uri : "/");
    if (collect_args(wsi, ex) < 0) {
        exchange_free(ex);
        return NULL;
    }
    int fd = (int)lws_get_socket_fd(wsi);
    peer_slot *slot = &srv->peers[(unsigned)fd % PEER_SLOTS];
    if (fd < 0 || slot->fd != fd) { /* slot taken by another socket: ask the kernel */
        char addr[48] = "";
        lws_get_peer_simple(wsi, addr, sizeof addr);
        ex->peer = strdup(addr);
    } else {
        ex->peer = strdup(slot->addr);
    }
    if (!ex->path || !ex->peer || collect_headers(wsi, ex) < 0) {
        exchange_free(ex);
        return NULL;
    }
    return ex;
}

static void dispatch(qc_http_exchange *ex) {
    qc_http_incoming in = {
        .method = ex->method,
        .path = ex->path,
        .query = ex->query,
        .args = ex->args,
        .nargs = ex->nargs,
        .headers = ex->headers,
        .nheaders = ex->nheaders,
        .body = ex->body ? ex->body : "",
        .body_len = ex->body_len,
        .peer = ex->peer,
    };
    ex->dispatched = 1;
    ex->srv->inflight++;
    ex->in_callback = 1;
    ex->srv->opts.on_request(ex->srv->opts.ud, ex, &in);
    ex->in_callback = 0;
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

/* Builds status line, headers and body in one buffer after LWS_PRE. Header text is
 * written by hand: lws_add_http_header_* would also work but costs a call per header and
 * the content-length helper arms lws' own body accounting, which we do not use. */
/* Text builders for the hot path: plain copies, no printf (whose formatting machinery
 * cost more per request than the copies it makes). */
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

static int build_response(qc_http_exchange *ex, int status, const qc_http_header *headers,
                          size_t nheaders, const char *body, size_t body_len) {
    const char *why = reason(status);
    size_t hlen = 96 + strlen(why);
    for (size_t i = 0; i < nheaders; i++) hlen += strlen(headers[i].name) + strlen(headers[i].value) + 4;
    ex->out = malloc(LWS_PRE + hlen + body_len);
    if (!ex->out) return -1;
    char *start = (char *)ex->out + LWS_PRE, *p = start;
    if (status < 100 || status > 999) status = 500;
    p = put_str(p, "HTTP/1.1 ", 9);
    p = put_uint(p, (unsigned)status);
    *p++ = ' ';
    p = put_str(p, why, strlen(why));
    p = put_str(p, "\r\n", 2);
    for (size_t i = 0; i < nheaders; i++) {
        /* CR/LF in a header value would split the response: drop such headers. */
        if (strpbrk(headers[i].name, "\r\n:") || strpbrk(headers[i].value, "\r\n")) continue;
        p = put_str(p, headers[i].name, strlen(headers[i].name));
        p = put_str(p, ": ", 2);
        p = put_str(p, headers[i].value, strlen(headers[i].value));
        p = put_str(p, "\r\n", 2);
    }
    p = put_str(p, "content-length: ", 16);
    p = put_uint(p, body_len);
    p = put_str(p, "\r\n", 2);
    if (ex->close_after) p = put_str(p, "connection: close\r\n", 19);
    p = put_str(p, "\r\n", 2);
    if (body_len) p = put_str(p, body, body_len);
    ex->out_len = (size_t)(p - start);
    return 0;
}

static void access_log(qc_http_exchange *ex, int status) {
    if (!qc_log_enabled(QC_LOG_INFO)) return;
    unsigned long long us = (uv_hrtime() - ex->start_ns) / 1000;
    char kv[1200], *p = kv;
    size_t pl = strlen(ex->path);
    if (pl > 1000) pl = 1000;
    p = put_str(p, " method=", 8);
    p = put_str(p, ex->method, strlen(ex->method));
    p = put_str(p, " path=", 6);
    p = put_str(p, ex->path, pl);
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

/* Writes the prepared answer; returns what the lws callback should return. */
static int write_out(qc_http_exchange *ex) {
    struct lws *wsi = ex->wsi;
    int close_after = ex->close_after;
    int w = lws_write(wsi, ex->out + LWS_PRE, ex->out_len, LWS_WRITE_HTTP_FINAL);
    struct pss *pss = lws_wsi_user(wsi);
    if (pss && pss->ex == ex) pss->ex = NULL;
    exchange_free(ex);
    if (w < 0 || close_after) return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

void qc_http_exchange_respond(qc_http_exchange *ex, int status, const qc_http_header *headers,
                              size_t nheaders, const char *body, size_t body_len) {
    if (ex->responded) return;
    ex->responded = 1;
    if (ex->dispatched && ex->srv->inflight) ex->srv->inflight--;
    access_log(ex, status);
    if (!ex->wsi) { /* the client left while the handler ran */
        exchange_free(ex);
        return;
    }
    if (ex->srv->stopping) ex->close_after = 1;
    if (build_response(ex, status, headers, nheaders, body, body_len) < 0) {
        qc_log(QC_LOG_ERROR, "http", "out of memory building response", NULL);
        ex->close_after = 1;
        ex->out = malloc(LWS_PRE + 1);
        ex->out_len = 0;
    }
    if (!ex->in_callback) lws_callback_on_writable(ex->wsi);
}

static void respond_error(qc_http_exchange *ex, int status, const char *code, const char *msg) {
    char body[256];
    int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, msg);
    qc_http_header h[] = {{"content-type", "application/json"}};
    qc_http_exchange_respond(ex, status, h, 1, body, (size_t)n);
}

static int finish_in_callback(qc_http_exchange *ex);

static int body_expected(qc_http_exchange *ex, long long *declared) {
    const char *cl = header_value(ex, "content-length");
    *declared = cl ? atoll(cl) : -1;
    if (cl) return *declared > 0;
    const char *te = header_value(ex, "transfer-encoding");
    ex->chunked = te && strstr(te, "chunked") != NULL;
    return ex->chunked;
}

/* Appends decoded body bytes, or marks the request too large. */
static void body_append(void *ud, const char *p, size_t len) {
    qc_http_exchange *ex = ud;
    if (ex->too_large) return;
    if (ex->body_len + len > ex->srv->opts.max_body_bytes) {
        ex->too_large = 1;
        free(ex->body);
        ex->body = NULL;
        ex->body_len = ex->body_cap = 0;
        return;
    }
    if (ex->body_len + len + 1 > ex->body_cap) {
        size_t cap = ex->body_cap ? ex->body_cap * 2 : 4096;
        while (cap < ex->body_len + len + 1) cap *= 2;
        char *nb = realloc(ex->body, cap);
        if (!nb) {
            ex->too_large = 1; /* answered as 413: we cannot hold it */
            return;
        }
        ex->body = nb;
        ex->body_cap = cap;
    }
    memcpy(ex->body + ex->body_len, p, len);
    ex->body_len += len;
    ex->body[ex->body_len] = 0;
}

/* The whole body is in: answer 413 or hand the request on. */
static int body_complete(qc_http_exchange *ex) {
    if (ex->too_large) {
        ex->in_callback = 1;
        respond_error(ex, 413, "PAYLOAD_TOO_LARGE", "request body is over the limit");
        ex->in_callback = 0;
        return finish_in_callback(ex);
    }
    dispatch(ex);
    return finish_in_callback(ex);
}

/* After respond() inside our own callback: write now (the cheap path). */
static int finish_in_callback(qc_http_exchange *ex) {
    if (ex->responded && ex->wsi && ex->out) return write_out(ex);
    return 0;
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len) {
    struct pss *pss = user;
    qc_http_server *srv = lws_context_user(lws_get_context(wsi));

    if (reason == LWS_CALLBACK_FILTER_NETWORK_CONNECTION) {
        /* Every accepted socket overwrites its slot, so an address never outlives its
         * connection into the next one that gets the same descriptor. */
        const struct lws_filter_network_conn_args *f = user;
        int fd = (int)(lws_intptr_t)in;
        if (fd < 0) return 0;
        peer_slot *slot = &srv->peers[(unsigned)fd % PEER_SLOTS];
        slot->fd = fd;
        slot->addr[0] = 0;
        if (f && f->cli_addr.ss_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)&f->cli_addr)->sin_addr, slot->addr, sizeof slot->addr);
        else if (f && f->cli_addr.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&f->cli_addr)->sin6_addr, slot->addr, sizeof slot->addr);
        else
            slot->fd = -1;
        return 0;
    }
    if (!pss) return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        qc_http_exchange *ex = exchange_new(srv, wsi, in);
        if (!ex) return -1;
        pss->ex = ex;
        long long declared;
        if (!body_expected(ex, &declared)) {
            dispatch(ex);
            return finish_in_callback(ex);
        }
        if (ex->chunked) {
            /* lws 4.1 reads a chunked body as an unframed one of up to 100 MiB, so after
             * the answer it would try to discard the rest: close instead of keep-alive. */
            ex->close_after = 1;
            qc_chunked_init(&ex->dechunk);
        }
        if (declared > 0 && (size_t)declared > srv->opts.max_body_bytes) {
            ex->too_large = 1;
            if ((size_t)declared / 16 > srv->opts.max_body_bytes) {
                /* Far too large to read and throw away: refuse now and close. */
                ex->close_after = 1;
                return body_complete(ex);
            }
            /* Otherwise read and discard it, so the 413 reaches a client still sending. */
        }
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY: {
        qc_http_exchange *ex = pss->ex;
        if (!ex || ex->dispatched || ex->responded) return 0;
        if (!ex->chunked) {
            body_append(ex, in, len);
            return 0;
        }
        size_t used = 0;
        int st = qc_chunked_feed(&ex->dechunk, in, len, &used, body_append, ex);
        if (st == QC_CHUNKED_ERROR) {
            ex->in_callback = 1;
            respond_error(ex, 400, "BAD_CHUNKED_BODY", "malformed chunked request body");
            ex->in_callback = 0;
            return finish_in_callback(ex);
        }
        if (st == QC_CHUNKED_DONE) return body_complete(ex);
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY_COMPLETION: {
        qc_http_exchange *ex = pss->ex;
        if (!ex || ex->dispatched || ex->responded) return 0;
        if (ex->chunked) { /* the peer stopped before the last chunk */
            ex->in_callback = 1;
            respond_error(ex, 400, "BAD_CHUNKED_BODY", "chunked request body ended early");
            ex->in_callback = 0;
            return finish_in_callback(ex);
        }
        return body_complete(ex);
    }
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        qc_http_exchange *ex = pss->ex;
        if (!ex || !ex->responded || !ex->out) return 0;
        return write_out(ex);
    }
    case LWS_CALLBACK_CLOSED_HTTP: {
        qc_http_exchange *ex = pss->ex;
        pss->ex = NULL;
        if (!ex) return 0;
        if (ex->dispatched && !ex->responded) {
            ex->wsi = NULL; /* the handler still owes an answer; it frees the exchange */
        } else {
            exchange_free(ex);
        }
        return 0;
    }
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {"http", callback_http, sizeof(struct pss), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_log_bridge(int level, const char *line) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", line);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    qc_log_line(level & LLL_ERR ? QC_LOG_ERROR : QC_LOG_WARN, "lws", msg, NULL);
}

qc_http_server *qc_http_server_new(uv_loop_t *loop, const qc_http_server_options *opts, char *err,
                                   size_t errlen) {
    qc_http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->opts = *opts;
    for (int i = 0; i < PEER_SLOTS; i++) s->peers[i].fd = -1;
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_bridge);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    void *foreign_loops[1] = {loop};
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.foreign_loops = foreign_loops;
    info.user = s;
    info.timeout_secs = 60;
    s->ctx = lws_create_context(&info);
    if (!s->ctx) {
        snprintf(err, errlen, "libwebsockets: cannot create context (is libwebsockets-evlib-uv installed?)");
        free(s);
        return NULL;
    }

    struct lws_context_creation_info vinfo;
    memset(&vinfo, 0, sizeof vinfo);
    vinfo.port = opts->port; /* 0: lws binds an ephemeral port (qc_http_server_port tells) */
    vinfo.iface = (opts->host && strcmp(opts->host, "0.0.0.0") != 0) ? opts->host : NULL;
    vinfo.protocols = protocols;
    vinfo.keepalive_timeout = 30;
    vinfo.timeout_secs = 60;
    vinfo.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    s->vhost = lws_create_vhost(s->ctx, &vinfo);
    if (!s->vhost) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or not available)",
                 opts->host ? opts->host : "0.0.0.0", opts->port);
        lws_context_destroy(s->ctx);
        free(s);
        return NULL;
    }
    return s;
}

int qc_http_server_port(const qc_http_server *s) { return lws_get_vhost_listen_port(s->vhost); }

size_t qc_http_server_inflight(const qc_http_server *s) { return s->inflight; }

void qc_http_server_stop_accepting(qc_http_server *s) {
    if (s->stopping) return;
    s->stopping = 1;
    lws_context_deprecate(s->ctx, NULL);
}

void qc_http_server_shutdown(qc_http_server *s) {
    if (!s || s->shut) return;
    s->shut = 1;
    lws_context_destroy(s->ctx);
}

/* On a foreign loop lws finishes its destroy only after libuv closed its handles; the
 * second lws_context_destroy then frees what is left. */
void qc_http_server_free(qc_http_server *s) {
    if (!s) return;
    if (!s->shut) lws_context_destroy(s->ctx);
    lws_context_destroy(s->ctx);
    free(s);
}
