/* libwebsockets glue. Why one buffer per answer: lws on a foreign libuv loop costs two
 * sendto and several epoll_ctl per request when headers and body go out in separate
 * writable callbacks; a single lws_write from the HTTP callback costs one sendto. */
#define _POSIX_C_SOURCE 200809L
#include "http_server.h"

#include <arpa/inet.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunked.h"
#include "http_error.h"
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

/* Finished exchanges kept for the next request, with their buffers: a request then
 * allocates nothing of ours unless it is larger than any before it. */
#define EXCHANGE_POOL 64
#define KEEP_BUFFER_MAX (64 * 1024) /* larger buffers go back to malloc with the exchange */

/* The request headers lws knows by name, from its token table once per server. */
typedef struct {
    enum lws_token_indexes tok;
    const char *name; /* lowercase, no colon */
} header_token;

struct qc_http_server {
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    qc_http_server_options opts;
    size_t inflight;
    int stopping;
    int shut;
    qc_http_exchange *pool[EXCHANGE_POOL];
    size_t npool;
    header_token tokens[WSI_TOKEN_COUNT];
    size_t ntokens;
    peer_slot peers[PEER_SLOTS];
};

struct qc_http_exchange {
    /* Reset for every request (zeroed up to `text`). */
    qc_http_server *srv;
    struct lws *wsi;   /* NULL once the connection is gone */
    int dispatched;    /* handed to on_request, answer owed */
    int responded;
    int in_callback;   /* respond() called while lws is inside our HTTP callback */
    int too_large;
    int close_after;
    int chunked; /* body framed with Transfer-Encoding: chunked, decoded by us */
    int answer_ready; /* out holds the whole answer */
    qc_chunked dechunk;
    uint64_t start_ns;
    char method[8];
    const char *path, *query, *peer;
    const char *origin, *content_length, *transfer_encoding; /* headers we read ourselves */
    size_t nheaders, nargs;
    size_t text_len, body_len, out_len;
    /* Kept across requests when the exchange is pooled. */
    char *text; /* path, query, peer, every header and argument, NUL-terminated, one buffer */
    size_t text_cap;
    char *body;
    size_t body_cap;
    unsigned char *out; /* LWS_PRE + response */
    size_t out_cap;
    qc_http_header headers[MAX_HEADERS];
    qc_http_header args[MAX_ARGS]; /* query arguments, name/value, already %-decoded */
};

struct pss {
    qc_http_exchange *ex;
};



static void exchange_destroy(qc_http_exchange *ex) {
    free(ex->text);
    free(ex->body);
    free(ex->out);
    free(ex);
}

/* Back to the pool, or to malloc when the pool is full or a buffer grew past the limit.
 * A dispatched exchange stops counting as in flight here, once its answer is written or its
 * client gone, not when the handler answers: a graceful stop that waits for no requests in
 * flight must not close a connection whose answer is still waiting to be written. */
static void exchange_free(qc_http_exchange *ex) {
    if (!ex) return;
    qc_http_server *srv = ex->srv;
    if (ex->dispatched && srv && srv->inflight) srv->inflight--;
    if (ex->text_cap > KEEP_BUFFER_MAX) {
        free(ex->text);
        ex->text = NULL;
        ex->text_cap = 0;
    }
    if (ex->body_cap > KEEP_BUFFER_MAX) {
        free(ex->body);
        ex->body = NULL;
        ex->body_cap = 0;
    }
    if (ex->out_cap > KEEP_BUFFER_MAX) {
        free(ex->out);
        ex->out = NULL;
        ex->out_cap = 0;
    }
    if (srv && !srv->shut && srv->npool < EXCHANGE_POOL) {
        srv->pool[srv->npool++] = ex;
        return;
    }
    exchange_destroy(ex);
}

static qc_http_exchange *exchange_get(qc_http_server *srv) {
    qc_http_exchange *ex = srv->npool ? srv->pool[--srv->npool] : calloc(1, sizeof *ex);
    if (!ex) return NULL;
    memset(ex, 0, offsetof(qc_http_exchange, text));
    ex->srv = srv;
    return ex;
}

/* Grows buf to hold n bytes (contents not kept); 0 or -1. */
static int reserve(void *bufp, size_t *cap, size_t n) {
    char **buf = bufp;
    if (n <= *cap) return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < n) c *= 2;
    char *nb = malloc(c);
    if (!nb) return -1;
    free(*buf);
    *buf = nb;
    *cap = c;
    return 0;
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

/* The headers lws knows by name, lowercase, without the colon: built once per server. */
static int header_tokens_init(qc_http_server *srv) {
    for (int t = 0; t < WSI_TOKEN_COUNT; t++) {
        if (is_method_token(t)) continue;
        const char *name = (const char *)lws_token_to_string((enum lws_token_indexes)t);
        if (!name || name[0] == ':') continue; /* h2 pseudo headers */
        size_t nl = strlen(name);
        if (nl && name[nl - 1] == ':') nl--;
        if (nl == 0) continue;
        char *copy = malloc(nl + 1);
        if (!copy) return -1;
        memcpy(copy, name, nl);
        copy[nl] = 0;
        srv->tokens[srv->ntokens++] = (header_token){(enum lws_token_indexes)t, copy};
    }
    return 0;
}

/* Copies path, query, arguments, peer and every known request header into the exchange's
 * one text buffer, sized first so that no pointer into it moves. The query: lws splits it
 * at '&' into fragments and %-decodes each, so pairs are taken fragment by fragment (an
 * encoded '&' or '=' inside a value stays inside it), and req.query is those fragments
 * joined with '&' again, for logs. */
static int collect_request(struct lws *wsi, qc_http_exchange *ex, const char *uri, const char *peer) {
    qc_http_server *srv = ex->srv;
    struct {
        unsigned short token; /* index into srv->tokens */
        int len;
    } present[MAX_HEADERS];
    size_t npresent = 0;
    if (!uri || !*uri) uri = "/";
    size_t path_len = strlen(uri), peer_len = strlen(peer);
    int query_total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    size_t query_cap = query_total > 0 ? (size_t)query_total + MAX_ARGS + 1 : 1;
    size_t need = path_len + 1 + peer_len + 1 + 2 * query_cap;
    for (size_t i = 0; i < srv->ntokens && npresent < MAX_HEADERS; i++) {
        int len = lws_hdr_total_length(wsi, srv->tokens[i].tok);
        if (len <= 0) continue;
        present[npresent].token = (unsigned short)i;
        present[npresent++].len = len;
        need += (size_t)len + 1;
    }
    if (reserve(&ex->text, &ex->text_cap, need) < 0) return -1;
    char *p = ex->text;

    memcpy(p, uri, path_len + 1);
    ex->path = p;
    p += path_len + 1;
    memcpy(p, peer, peer_len + 1);
    ex->peer = p;
    p += peer_len + 1;

    char *query = p, *args = p + query_cap;
    size_t q = 0, a = 0;
    query[0] = 0;
    for (int f = 0; query_total > 0 && ex->nargs < MAX_ARGS; f++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, f);
        if (len <= 0 || q + (size_t)len + 2 > query_cap) break;
        char *frag = args + a;
        if (lws_hdr_copy_fragment(wsi, frag, len + 1, WSI_TOKEN_HTTP_URI_ARGS, f) < 0) break;
        if (q) query[q++] = '&';
        memcpy(query + q, frag, (size_t)len);
        q += (size_t)len;
        query[q] = 0;
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
    ex->query = query;
    p += 2 * query_cap;

    for (size_t i = 0; i < npresent; i++) {
        const header_token *ht = &srv->tokens[present[i].token];
        int got = lws_hdr_copy(wsi, p, present[i].len + 1, ht->tok);
        if (got < 0) continue;
        ex->headers[ex->nheaders].name = ht->name;
        ex->headers[ex->nheaders++].value = p;
        if (ht->tok == WSI_TOKEN_ORIGIN) ex->origin = p;
        else if (ht->tok == WSI_TOKEN_HTTP_CONTENT_LENGTH) ex->content_length = p;
        else if (ht->tok == WSI_TOKEN_HTTP_TRANSFER_ENCODING) ex->transfer_encoding = p;
        p += (size_t)got + 1;
    }
    ex->text_len = (size_t)(p - ex->text);
    return 0;
}

static const char *header_value(const qc_http_exchange *ex, const char *name) {
    if (strcmp(name, "origin") == 0) return ex->origin;
    for (size_t i = 0; i < ex->nheaders; i++)
        if (strcmp(ex->headers[i].name, name) == 0) return ex->headers[i].value;
    return NULL;
}

const char *qc_http_exchange_path(const qc_http_exchange *ex) { return ex->path; }
const char *qc_http_exchange_method(const qc_http_exchange *ex) { return ex->method; }
const char *qc_http_exchange_header(const qc_http_exchange *ex, const char *name) {
    return header_value(ex, name);
}

static qc_http_exchange *exchange_new(qc_http_server *srv, struct lws *wsi, const char *uri) {
    qc_http_exchange *ex = exchange_get(srv);
    if (!ex) return NULL;
    ex->wsi = wsi;
    ex->start_ns = uv_hrtime();
    const char *method = "GET";
    for (size_t i = 0; i < sizeof method_tokens / sizeof method_tokens[0]; i++) {
        if (lws_hdr_total_length(wsi, method_tokens[i].tok) > 0) {
            method = method_tokens[i].name;
            break;
        }
    }
    memcpy(ex->method, method, strlen(method) + 1); /* the longest, OPTIONS, fits */
    int fd = (int)lws_get_socket_fd(wsi);
    peer_slot *slot = &srv->peers[(unsigned)fd % PEER_SLOTS];
    char addr[48] = "";
    if (fd < 0 || slot->fd != fd) /* slot taken by another socket: ask the kernel */
        lws_get_peer_simple(wsi, addr, sizeof addr);
    if (collect_request(wsi, ex, uri, fd >= 0 && slot->fd == fd ? slot->addr : addr) < 0) {
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
        .body = ex->body_len ? ex->body : "",
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
    if (reserve(&ex->out, &ex->out_cap, LWS_PRE + hlen + body_len) < 0) return -1;
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
    ex->answer_ready = 1;
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
    int w = ex->answer_ready ? lws_write(wsi, ex->out + LWS_PRE, ex->out_len, LWS_WRITE_HTTP_FINAL) : -1;
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
    access_log(ex, status);
    if (!ex->wsi) { /* the client left while the handler ran */
        exchange_free(ex);
        return;
    }
    if (ex->srv->stopping) ex->close_after = 1;
    if (build_response(ex, status, headers, nheaders, body, body_len) < 0) {
        qc_log(QC_LOG_ERROR, "http", "out of memory building response", NULL);
        ex->close_after = 1; /* nothing to send: the connection is closed */
    }
    if (!ex->in_callback) lws_callback_on_writable(ex->wsi);
}

static void respond_error(qc_http_exchange *ex, int status, const char *code, const char *msg) {
    char body[QC_HTTP_ERROR_MAX];
    size_t n = qc_http_error_json(body, sizeof body, code, msg, NULL);
    qc_http_header h[] = {{"content-type", "application/json"}};
    qc_http_exchange_respond(ex, status, h, 1, body, n);
}

static int finish_in_callback(qc_http_exchange *ex);

static int body_expected(qc_http_exchange *ex, long long *declared) {
    const char *cl = ex->content_length;
    *declared = cl ? atoll(cl) : -1;
    if (cl) return *declared > 0;
    const char *te = ex->transfer_encoding;
    ex->chunked = te && strstr(te, "chunked") != NULL;
    return ex->chunked;
}

/* Appends decoded body bytes, or marks the request too large. */
static void body_append(void *ud, const char *p, size_t len) {
    qc_http_exchange *ex = ud;
    if (ex->too_large) return;
    if (ex->body_len + len > ex->srv->opts.max_body_bytes) {
        ex->too_large = 1;
        ex->body_len = 0;
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
    if (ex->responded && ex->wsi) return write_out(ex);
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
        if (!ex || !ex->responded) return 0;
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

/* What the server owns besides the lws context. */
static void server_release(qc_http_server *s) {
    for (size_t i = 0; i < s->npool; i++) exchange_destroy(s->pool[i]);
    for (size_t i = 0; i < s->ntokens; i++) free((char *)s->tokens[i].name);
    free(s);
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
    if (header_tokens_init(s) < 0) {
        snprintf(err, errlen, "out of memory");
        server_release(s);
        return NULL;
    }
    _Static_assert(QC_LWS_LOG_LEVELS == (LLL_ERR | LLL_WARN), "QC_LWS_LOG_LEVELS is LLL_ERR | LLL_WARN");
    lws_set_log_level(QC_LWS_LOG_LEVELS, lws_log_bridge);

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
        server_release(s);
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
        server_release(s);
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
    server_release(s);
}
