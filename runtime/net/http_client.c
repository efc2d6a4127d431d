/* libcurl multi-socket glue for libuv: curl tells us which sockets to watch (one uv_poll
 * each) and when to wake it (one uv_timer); we hand readiness back with
 * curl_multi_socket_action and collect finished transfers. */
#define _POSIX_C_SOURCE 200809L
#include "http_client.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 30000L
#define DEFAULT_MAX_BODY ((size_t)16 * 1024 * 1024)
/* curl caps single header lines itself; this caps the sum so a hostile server cannot make
 * us buffer without end before the body limit ever applies. */
#define MAX_HEADER_BYTES ((size_t)256 * 1024)

typedef struct transfer transfer;
typedef struct sock_ctx sock_ctx;

/* poll is deliberately not the first member: host.c's loop drain treats a handle whose
 * data points at itself as a block it may free, and this one is ours to free. */
struct sock_ctx {
    curl_socket_t fd;
    uv_poll_t poll;
    qc_http_client *c;
    int closing;
    sock_ctx *prev, *next;
};

struct transfer {
    qc_http_client *c;
    CURL *easy;
    struct curl_slist *req_headers;
    qc_http_done_cb cb;
    void *ud;
    size_t max_body;
    char *body;
    size_t body_len, body_cap;
    /* Response headers as "name\0value\0" pairs; pointers are built once, at the end,
     * because realloc moves the arena while headers arrive. */
    char *hdr;
    size_t hdr_len, hdr_cap, nhdr;
    enum { OVER_NONE, OVER_BODY, OVER_HEADERS } over;
    int nomem;
    char errbuf[CURL_ERROR_SIZE];
    transfer *prev, *next;
};

struct qc_http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    transfer *transfers;
    size_t ntransfers;
    sock_ctx *socks;  /* live poll handles; closing ones are off the list */
    int handles_open; /* uv handles whose close callback has not run yet */
    int depth;        /* >0 while we are inside curl_multi_socket_action or a done callback */
    int close_requested;
    int closing;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- lifetime of uv handles ---------------------------------------------------------- */

static void maybe_free(qc_http_client *c) {
    if (c->closing && c->handles_open == 0) free(c);
}

static void on_sock_closed(uv_handle_t *h) {
    sock_ctx *sc = h->data;
    qc_http_client *c = sc->c;
    free(sc);
    c->handles_open--;
    maybe_free(c);
}

/* Stops watching a socket. uv_close takes it out of epoll right now (so the fd number may
 * be reused at once), but libuv owns the memory until on_sock_closed. */
static void sock_release(qc_http_client *c, sock_ctx *sc) {
    if (sc->closing) return;
    sc->closing = 1;
    if (sc->prev) sc->prev->next = sc->next;
    else c->socks = sc->next;
    if (sc->next) sc->next->prev = sc->prev;
    sc->prev = sc->next = NULL;
    uv_close((uv_handle_t *)&sc->poll, on_sock_closed);
}

static void on_timer_closed(uv_handle_t *h) {
    qc_http_client *c = h->data;
    c->handles_open--;
    maybe_free(c);
}

/* ---- finishing transfers ------------------------------------------------------------- */

static void transfer_free(transfer *t) {
    if (t->easy) curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->req_headers);
    free(t->body);
    free(t->hdr);
    free(t);
}

static const char *code_for(CURLcode rc) {
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return "TIMEOUT";
    case CURLE_COULDNT_CONNECT:
        return "CONNECT";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "DNS";
    case CURLE_FILESIZE_EXCEEDED:
        return "TOO_LARGE";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
#if LIBCURL_VERSION_NUM >= 0x074d00
    case CURLE_SSL_CLIENTCERT:
#endif
        return "TLS";
    default:
        return "FAILED";
    }
}

/* Unlinks t from the client and the multi handle, reports to its owner, frees it.
 * rc is only looked at when cancelled is 0. */
static void transfer_finish(transfer *t, CURLcode rc, int cancelled) {
    qc_http_client *c = t->c;
    curl_multi_remove_handle(c->multi, t->easy);
    if (t->prev) t->prev->next = t->next;
    else c->transfers = t->next;
    if (t->next) t->next->prev = t->prev;
    c->ntransfers--;

    qc_http_result res;
    memset(&res, 0, sizeof res);
    res.body = "";
    char msg[CURL_ERROR_SIZE + 64];
    qc_http_header *hdrs = NULL;

    if (!cancelled && rc == CURLE_OK) {
        if (t->nhdr > 0) {
            hdrs = calloc(t->nhdr, sizeof *hdrs);
            if (!hdrs) t->nomem = 1;
        }
    }
    if (cancelled) {
        res.code = "CANCELLED";
        snprintf(msg, sizeof msg, "http: cancelled, the client was closed");
    } else if (t->over == OVER_BODY || rc == CURLE_FILESIZE_EXCEEDED) {
        res.code = "TOO_LARGE";
        snprintf(msg, sizeof msg, "http: response body over %zu bytes", t->max_body);
    } else if (t->over == OVER_HEADERS) {
        res.code = "TOO_LARGE";
        snprintf(msg, sizeof msg, "http: response headers over %zu bytes", MAX_HEADER_BYTES);
    } else if (t->nomem) {
        res.code = "FAILED";
        snprintf(msg, sizeof msg, "http: out of memory");
    } else if (rc != CURLE_OK) {
        res.code = code_for(rc);
        snprintf(msg, sizeof msg, "http: %s", t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
    }

    if (res.code) {
        res.message = msg;
    } else {
        long status = 0;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
        res.status = status;
        const char *p = t->hdr;
        for (size_t i = 0; i < t->nhdr; i++) {
            hdrs[i].name = p;
            p += strlen(p) + 1;
            hdrs[i].value = p;
            p += strlen(p) + 1;
        }
        res.headers = hdrs;
        res.nheaders = t->nhdr;
        if (t->body) res.body = t->body;
        res.body_len = t->body_len;
    }

    t->cb(&res, t->ud);
    free(hdrs);
    transfer_free(t);
}

static void do_close(qc_http_client *c) {
    c->closing = 1;
    c->close_requested = 0;
    while (c->transfers) transfer_finish(c->transfers, CURLE_OK, 1);
    /* Closes cached connections; curl reports their sockets through the socket and
     * close-socket callbacks, which release the matching poll handles. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->socks) sock_release(c, c->socks);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void deliver_done(qc_http_client *c) {
    CURLMsg *m;
    int left;
    while (!c->close_requested && (m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result; /* m dies with curl_multi_remove_handle */
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        transfer_finish((transfer *)priv, rc, 0);
    }
}

/* Every entry from the loop goes through here, so a close requested from a done callback
 * waits until curl and our own iteration over finished transfers are out of the way. */
static void drive(qc_http_client *c, curl_socket_t fd, int flags) {
    int running = 0;
    c->depth++;
    curl_multi_socket_action(c->multi, fd, flags, &running);
    deliver_done(c);
    c->depth--;
    if (c->depth == 0 && c->close_requested) do_close(c);
}

/* ---- curl -> libuv ------------------------------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events) {
    sock_ctx *sc = h->data;
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    }
    drive(sc->c, sc->fd, flags);
}

static void on_timer(uv_timer_t *h) {
    drive(h->data, CURL_SOCKET_TIMEOUT, 0);
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
    qc_http_client *c = userp;
    sock_ctx *sc = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            sock_release(c, sc);
            if (c->multi) curl_multi_assign(c->multi, s, NULL);
        }
        return 0;
    }
    if (c->closing) return 0;
    if (!sc || sc->closing) {
        sc = calloc(1, sizeof *sc);
        if (!sc) return -1;
        if (uv_poll_init_socket(c->loop, &sc->poll, s) != 0) {
            free(sc);
            return -1;
        }
        sc->fd = s;
        sc->c = c;
        sc->poll.data = sc;
        sc->next = c->socks;
        if (c->socks) c->socks->prev = sc;
        c->socks = sc;
        c->handles_open++;
        curl_multi_assign(c->multi, s, sc);
    }
    int ev = 0;
    if (what & CURL_POLL_IN) ev |= UV_READABLE;
    if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
    if (ev) uv_poll_start(&sc->poll, ev, on_poll);
    else uv_poll_stop(&sc->poll);
    return 0;
}

/* curl announces CURL_POLL_REMOVE before closing a socket; this is the safety net for any
 * path that does not, because a poll handle left on a closed fd would, once the number is
 * reused by another handle, take that handle out of epoll when we finally close it. */
static int on_close_socket(void *clientp, curl_socket_t fd) {
    qc_http_client *c = clientp;
    for (sock_ctx *sc = c->socks; sc; sc = sc->next) {
        if (sc->fd == fd) {
            sock_release(c, sc);
            if (c->multi) curl_multi_assign(c->multi, fd, NULL);
            break;
        }
    }
    return close(fd);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
    qc_http_client *c = userp;
    (void)multi;
    if (c->closing) return 0;
    /* A 0 timeout still goes through the loop: curl must not be re-entered from here. */
    if (timeout_ms < 0) uv_timer_stop(&c->timer);
    else uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- response data ------------------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    transfer *t = ud;
    size_t len = size * n; /* curl documents size as always 1 */
    if (len > t->max_body - t->body_len) {
        t->over = OVER_BODY;
        return 0;
    }
    size_t need = t->body_len + len;
    if (need > t->body_cap) {
        size_t cap = t->body_cap ? t->body_cap : 16 * 1024;
        while (cap < need && cap <= t->max_body / 2) cap *= 2;
        if (cap < need) cap = need;
        if (cap > t->max_body) cap = t->max_body;
        char *nb = realloc(t->body, cap);
        if (!nb) {
            t->nomem = 1;
            return 0;
        }
        t->body = nb;
        t->body_cap = cap;
    }
    memcpy(t->body + t->body_len, p, len);
    t->body_len = need;
    return len;
}

static int is_ows(char ch) {
    return ch == ' ' || ch == '\t';
}

static int hdr_reserve(transfer *t, size_t extra) {
    if (extra > MAX_HEADER_BYTES - t->hdr_len) {
        t->over = OVER_HEADERS;
        return -1;
    }
    size_t need = t->hdr_len + extra;
    if (need <= t->hdr_cap) return 0;
    size_t cap = t->hdr_cap ? t->hdr_cap : 1024;
    while (cap < need) cap *= 2;
    char *nh = realloc(t->hdr, cap);
    if (!nh) {
        t->nomem = 1;
        return -1;
    }
    t->hdr = nh;
    t->hdr_cap = cap;
    return 0;
}

/* curl hands over one complete header line per call, status lines included. */
static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    transfer *t = ud;
    size_t len = size * n, l = len;
    while (l > 0 && (p[l - 1] == '\r' || p[l - 1] == '\n')) l--;
    if (l == 0) return len;
    /* A new status line starts a new header block: interim 1xx replies and proxy CONNECT
     * answers come first, and only the final response's headers are reported. */
    if (l >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        t->hdr_len = 0;
        t->nhdr = 0;
        return len;
    }
    if (is_ows(p[0])) {
        /* obs-fold continuation: glue onto the previous value */
        if (t->nhdr == 0) return len;
        size_t a = 0;
        while (a < l && is_ows(p[a])) a++;
        if (hdr_reserve(t, 1 + (l - a)) != 0) return 0;
        t->hdr[t->hdr_len - 1] = ' '; /* was the value's NUL */
        memcpy(t->hdr + t->hdr_len, p + a, l - a);
        t->hdr_len += l - a;
        t->hdr[t->hdr_len++] = '\0';
        return len;
    }
    const char *colon = memchr(p, ':', l);
    if (!colon || colon == p) return len;
    size_t nlen = (size_t)(colon - p);
    while (nlen > 0 && is_ows(p[nlen - 1])) nlen--;
    const char *v = colon + 1, *end = p + l;
    while (v < end && is_ows(*v)) v++;
    while (end > v && is_ows(end[-1])) end--;
    size_t vlen = (size_t)(end - v);
    if (hdr_reserve(t, nlen + vlen + 2) != 0) return 0;
    char *dst = t->hdr + t->hdr_len;
    for (size_t i = 0; i < nlen; i++) {
        char ch = p[i];
        dst[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    dst[nlen] = '\0';
    memcpy(dst + nlen + 1, v, vlen);
    dst[nlen + 1 + vlen] = '\0';
    t->hdr_len += nlen + vlen + 2;
    t->nhdr++;
    return len;
}

/* ---- public API ---------------------------------------------------------------------- */

qc_http_client *qc_http_client_new(uv_loop_t *loop, char *err, size_t errlen) {
    static int curl_ready;
    if (!loop) {
        set_err(err, errlen, "http: no loop");
        return NULL;
    }
    if (!curl_ready) {
        CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
        if (rc != CURLE_OK) {
            set_err(err, errlen, "http: curl_global_init: %s", curl_easy_strerror(rc));
            return NULL;
        }
        curl_ready = 1;
    }
    qc_http_client *c = calloc(1, sizeof *c);
    if (!c) {
        set_err(err, errlen, "http: out of memory");
        return NULL;
    }
    c->loop = loop;
    c->multi = curl_multi_init();
    if (!c->multi) {
        free(c);
        set_err(err, errlen, "http: curl_multi_init failed");
        return NULL;
    }
    int rc = uv_timer_init(loop, &c->timer);
    if (rc != 0) {
        curl_multi_cleanup(c->multi);
        free(c);
        set_err(err, errlen, "http: uv_timer_init: %s", uv_strerror(rc));
        return NULL;
    }
    c->timer.data = c;
    c->handles_open = 1;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    return c;
}

size_t qc_http_client_pending(const qc_http_client *c) {
    return c ? c->ntransfers : 0;
}

void qc_http_client_close(qc_http_client *c) {
    if (!c || c->closing || c->close_requested) return;
    if (c->depth > 0) c->close_requested = 1;
    else do_close(c);
}

/* RFC 9110 token characters: keeps CR/LF and spaces out of the request line. */
static int is_token(const char *s) {
    if (!s || !*s) return 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            continue;
        if (!strchr("!#$%&'*+-.^_`|~", ch)) return 0;
    }
    return 1;
}

static int is_header_value(const char *s) {
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n') return 0;
    }
    return 1;
}

static int name_is(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = *a, y = *b;
        if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (char)(y - 'A' + 'a');
        if (x != y) return 0;
    }
    return *a == *b;
}

static int add_header(struct curl_slist **list, const char *line) {
    struct curl_slist *n = curl_slist_append(*list, line);
    if (!n) return -1;
    *list = n;
    return 0;
}

/* Builds the curl header list. curl treats "Name:" as "remove this header", so an empty
 * value is sent with curl's "Name;" spelling instead. */
static int build_headers(const qc_http_request *req, int has_body, struct curl_slist **out,
                         char *err, size_t errlen) {
    struct curl_slist *list = NULL;
    int has_ctype = 0, has_expect = 0;
    char *line = NULL;
    size_t linecap = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        const char *name = req->headers[i].name, *value = req->headers[i].value;
        if (!is_token(name)) {
            set_err(err, errlen, "http: bad header name");
            goto fail;
        }
        if (!value) value = "";
        if (!is_header_value(value)) {
            set_err(err, errlen, "http: header %s has CR or LF in its value", name);
            goto fail;
        }
        size_t need = strlen(name) + strlen(value) + 3;
        if (need > linecap) {
            char *nl = realloc(line, need);
            if (!nl) goto nomem;
            line = nl;
            linecap = need;
        }
        if (*value) snprintf(line, linecap, "%s: %s", name, value);
        else snprintf(line, linecap, "%s;", name);
        if (add_header(&list, line) != 0) goto nomem;
        if (name_is(name, "content-type")) has_ctype = 1;
        if (name_is(name, "expect")) has_expect = 1;
    }
    /* Without these curl would label every body form-urlencoded and, for big bodies, wait
     * for a 100 Continue that many servers never send. */
    if (has_body && !has_ctype && add_header(&list, "Content-Type:") != 0) goto nomem;
    if (has_body && !has_expect && add_header(&list, "Expect:") != 0) goto nomem;
    free(line);
    *out = list;
    return 0;
nomem:
    set_err(err, errlen, "http: out of memory");
fail:
    free(line);
    curl_slist_free_all(list);
    return -1;
}

int qc_http_client_start(qc_http_client *c, const qc_http_request *req, qc_http_done_cb cb,
                         void *ud, char *err, size_t errlen) {
    if (!c || !req || !cb || !req->url || !*req->url) {
        set_err(err, errlen, "http: missing client, url or callback");
        return -1;
    }
    if (c->closing || c->close_requested) {
        set_err(err, errlen, "http: client is closed");
        return -1;
    }
    const char *method = req->method ? req->method : "GET";
    if (!is_token(method)) {
        set_err(err, errlen, "http: bad method");
        return -1;
    }
    if (req->timeout_ms < 0) {
        set_err(err, errlen, "http: negative timeout");
        return -1;
    }
    if (req->nheaders > 0 && !req->headers) {
        set_err(err, errlen, "http: nheaders without headers");
        return -1;
    }
    /* Servers answer 411 to a body-less POST/PUT/PATCH without Content-Length. */
    const char *body = req->body;
    size_t body_len = req->body_len;
    int is_head = strcmp(method, "HEAD") == 0;
    if (!body && !is_head &&
        (!strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH"))) {
        body = "";
        body_len = 0;
    }
    if (is_head) body = NULL;

    transfer *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, errlen, "http: out of memory");
        return -1;
    }
    t->c = c;
    t->cb = cb;
    t->ud = ud;
    t->max_body = req->max_body ? req->max_body : DEFAULT_MAX_BODY;
    if (build_headers(req, body != NULL, &t->req_headers, err, errlen) != 0) {
        free(t);
        return -1;
    }
    t->easy = curl_easy_init();
    if (!t->easy) {
        set_err(err, errlen, "http: curl_easy_init failed");
        transfer_free(t);
        return -1;
    }
    CURL *e = t->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                          \
    do {                                                                                       \
        if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val);                                \
    } while (0)
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PRIVATE, (void *)t);
    SET(CURLOPT_ERRORBUFFER, t->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)t);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)t);
    SET(CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    SET(CURLOPT_CLOSESOCKETDATA, (void *)c);
    SET(CURLOPT_TIMEOUT_MS, req->timeout_ms ? req->timeout_ms : DEFAULT_TIMEOUT_MS);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)t->max_body);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    /* Scripts choose URLs: keep file://, gopher:// and friends out of reach. */
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SET(CURLOPT_USERAGENT, "quantcoach");
    SET(CURLOPT_HTTPHEADER, t->req_headers);
    if (is_head) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (body) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        SET(CURLOPT_COPYPOSTFIELDS, body); /* copies body_len bytes: binary-safe */
        if (strcmp(method, "POST") != 0) SET(CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") != 0) {
        SET(CURLOPT_CUSTOMREQUEST, method);
    }
#undef SET
    if (rc != CURLE_OK) {
        set_err(err, errlen, "http: %s", curl_easy_strerror(rc));
        transfer_free(t);
        return -1;
    }
    CURLMcode mrc = curl_multi_add_handle(c->multi, e);
    if (mrc != CURLM_OK) {
        set_err(err, errlen, "http: %s", curl_multi_strerror(mrc));
        transfer_free(t);
        return -1;
    }
    t->next = c->transfers;
    if (c->transfers) c->transfers->prev = t;
    c->transfers = t;
    c->ntransfers++;
    return 0;
}
