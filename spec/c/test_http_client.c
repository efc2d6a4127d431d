/* Unit test for runtime/net/http_client.c against a real HTTP/1.1 server on a loopback port,
 * running on the same libuv loop in this process. Prints one `ok`/`FAIL` line per check
 * and exits non-zero if any check failed. */
#define _POSIX_C_SOURCE 200809L
#include "net/http_client.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

static uv_loop_t loop;
static int failures;

static void check(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int cond, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf(cond ? "ok   " : "FAIL ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (!cond) failures++;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    return p;
}

/* ---- the server ---------------------------------------------------------------------- */

#define BIG_BODY ((size_t)2 * 1024 * 1024)

typedef struct conn conn;
typedef struct {
    uv_tcp_t listener;
    int port;
    int accepted;
    conn *conns;
    char last_method[16];
    char *last_body;
    size_t last_body_len;
} server;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t delay;
    server *s;
    char *buf;
    size_t len, cap;
    int busy; /* a delayed reply is pending: do not parse further requests yet */
    int closing, open_handles;
    conn *prev, *next;
};

typedef struct {
    uv_write_t req;
    conn *c;
    char *data;
    int close_after;
} reply_req;

static server srv;

static void on_conn_handle_closed(uv_handle_t *h) {
    conn *c = h->data;
    if (--c->open_handles == 0) {
        free(c->buf);
        free(c);
    }
}

static void conn_close(conn *c) {
    if (c->closing) return;
    c->closing = 1;
    if (c->prev) c->prev->next = c->next;
    else c->s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->delay, on_conn_handle_closed);
}

static void on_written(uv_write_t *w, int status) {
    reply_req *r = (reply_req *)w;
    if (status < 0 || r->close_after) conn_close(r->c);
    free(r->data);
    free(r);
}

static void reply(conn *c, const char *status, const char *extra_headers, const char *body,
                  size_t body_len, int with_length, int close_after) {
    if (c->closing) return;
    size_t cap = 512 + strlen(extra_headers) + body_len;
    reply_req *r = xmalloc(sizeof *r);
    r->c = c;
    r->close_after = close_after;
    r->data = xmalloc(cap);
    int n;
    if (with_length)
        n = snprintf(r->data, cap, "HTTP/1.1 %s\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                     body_len, extra_headers, close_after ? "Connection: close\r\n" : "");
    else
        n = snprintf(r->data, cap, "HTTP/1.1 %s\r\n%sConnection: close\r\n\r\n", status,
                     extra_headers);
    memcpy(r->data + n, body, body_len);
    uv_buf_t b = uv_buf_init(r->data, (unsigned)((size_t)n + body_len));
    if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(r->data);
        free(r);
        conn_close(c);
    }
}

static void on_delay(uv_timer_t *t) {
    conn *c = t->data;
    c->busy = 0;
    reply(c, "200 OK", "", "slow", 4, 1, 0);
}

static const char *find(const char *hay, size_t n, const char *needle) {
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0) return hay + i;
    return NULL;
}

static size_t content_length(const char *head, size_t n) {
    for (const char *p = head; p && p < head + n;) {
        const char *eol = find(p, (size_t)(head + n - p), "\r\n");
        if (!eol) break;
        if (eol - p > 15 && strncasecmp(p, "content-length:", 15) == 0)
            return (size_t)strtoul(p + 15, NULL, 10);
        p = eol + 2;
    }
    return 0;
}

static void handle_request(conn *c, const char *method, const char *path, const char *body,
                           size_t body_len) {
    if (strncmp(path, "/hello", 6) == 0) {
        reply(c, "200 OK", "X-Test: yes\r\nX-Dup: 1\r\nX-Dup: 2\r\nX-Folded: one\r\n  two\r\n",
              "hello world", 11, 1, 0);
    } else if (strcmp(path, "/echo") == 0) {
        snprintf(srv.last_method, sizeof srv.last_method, "%s", method);
        free(srv.last_body);
        srv.last_body = xmalloc(body_len);
        memcpy(srv.last_body, body, body_len);
        srv.last_body_len = body_len;
        reply(c, "200 OK", "", body, body_len, 1, 0);
    } else if (strcmp(path, "/slow") == 0) {
        c->busy = 1;
        uv_timer_start(&c->delay, on_delay, 2000, 0);
    } else if (strcmp(path, "/big") == 0 || strcmp(path, "/stream") == 0) {
        char *big = xmalloc(BIG_BODY);
        memset(big, 'x', BIG_BODY);
        int with_length = strcmp(path, "/big") == 0;
        reply(c, "200 OK", "", big, BIG_BODY, with_length, !with_length);
        free(big);
    } else {
        reply(c, "404 Not Found", "", "no", 2, 1, 0);
    }
}

static void parse_requests(conn *c) {
    while (!c->busy && !c->closing && c->len > 0) {
        if (c->buf[0] < 'A' || c->buf[0] > 'Z') { /* e.g. a TLS ClientHello */
            reply(c, "400 Bad Request", "", "", 0, 1, 1);
            c->len = 0;
            return;
        }
        const char *end = find(c->buf, c->len, "\r\n\r\n");
        if (!end) return;
        size_t head_len = (size_t)(end - c->buf) + 4;
        size_t body_len = content_length(c->buf, head_len);
        if (c->len - head_len < body_len) return;
        char method[16] = {0}, path[256] = {0};
        if (sscanf(c->buf, "%15s %255s", method, path) != 2) {
            conn_close(c);
            return;
        }
        handle_request(c, method, path, c->buf + head_len, body_len);
        size_t used = head_len + body_len;
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
    conn *c = h->data;
    (void)hint;
    if (c->cap - c->len < 65536) {
        c->cap = c->cap * 2 + 65536;
        char *nb = realloc(c->buf, c->cap);
        if (!nb) abort();
        c->buf = nb;
    }
    *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
    conn *c = st->data;
    (void)b;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)n;
    parse_requests(c);
}

static void on_connection(uv_stream_t *l, int status) {
    if (status < 0) return;
    conn *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->s = &srv;
    uv_tcp_init(&loop, &c->tcp);
    uv_timer_init(&loop, &c->delay);
    c->tcp.data = c->delay.data = c;
    c->open_handles = 2;
    c->next = srv.conns;
    if (srv.conns) srv.conns->prev = c;
    srv.conns = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    srv.accepted++;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static int server_start(void) {
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(&loop, &srv.listener);
    if (uv_tcp_bind(&srv.listener, (const struct sockaddr *)&addr, 0) != 0) return -1;
    if (uv_listen((uv_stream_t *)&srv.listener, 1024, on_connection) != 0) return -1;
    uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&bound, &len);
    srv.port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

static void server_stop(void) {
    uv_close((uv_handle_t *)&srv.listener, NULL);
    while (srv.conns) conn_close(srv.conns);
    free(srv.last_body);
    srv.last_body = NULL;
}

/* A port nothing listens on: bind, read the number, close. */
static int closed_port(void) {
    uv_tcp_t t;
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(&loop, &t);
    uv_tcp_bind(&t, (const struct sockaddr *)&addr, 0);
    uv_tcp_getsockname(&t, (struct sockaddr *)&bound, &len);
    int port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return port;
}

/* ---- client side helpers ------------------------------------------------------------- */

typedef struct {
    int done;
    char code[16];
    char message[512];
    long status;
    char *body;
    size_t body_len;
    char x_test[32], dups[32], folded[32];
    int lowercase;
} outcome;

static void record(const qc_http_result *res, void *ud) {
    outcome *o = ud;
    o->done++;
    snprintf(o->code, sizeof o->code, "%s", res->code ? res->code : "");
    snprintf(o->message, sizeof o->message, "%s", res->message ? res->message : "");
    o->status = res->status;
    o->body = xmalloc(res->body_len);
    memcpy(o->body, res->body, res->body_len);
    o->body_len = res->body_len;
    o->lowercase = 1;
    for (size_t i = 0; i < res->nheaders; i++) {
        const char *n = res->headers[i].name, *v = res->headers[i].value;
        for (const char *p = n; *p; p++)
            if (*p >= 'A' && *p <= 'Z') o->lowercase = 0;
        if (!strcmp(n, "x-test")) snprintf(o->x_test, sizeof o->x_test, "%s", v);
        if (!strcmp(n, "x-folded")) snprintf(o->folded, sizeof o->folded, "%s", v);
        if (!strcmp(n, "x-dup")) {
            size_t l = strlen(o->dups);
            snprintf(o->dups + l, sizeof o->dups - l, "%s%s", l ? "," : "", v);
        }
    }
}

static void outcome_free(outcome *o) {
    free(o->body);
    memset(o, 0, sizeof *o);
}

static int expired;
static void on_watchdog(uv_timer_t *t) {
    (void)t;
    expired = 1;
}

/* Runs the loop until *count reaches want, or 10 s pass. */
static int run_until(const int *count, int want) {
    uv_timer_t dog;
    expired = 0;
    uv_timer_init(&loop, &dog);
    uv_timer_start(&dog, on_watchdog, 10000, 0);
    while (*count < want && !expired) uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&dog, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *count >= want;
}

static char url_buf[256];
static const char *url(const char *path) {
    snprintf(url_buf, sizeof url_buf, "http://127.0.0.1:%d%s", srv.port, path);
    return url_buf;
}

static int fetch(qc_http_client *c, qc_http_request *req, outcome *o) {
    char err[256];
    memset(o, 0, sizeof *o);
    if (qc_http_client_start(c, req, record, o, err, sizeof err) != 0) {
        check(0, "start %s: %s", req->url, err);
        return -1;
    }
    if (!run_until(&o->done, 1)) {
        check(0, "request to %s finished within 10 s", req->url);
        return -1;
    }
    return 0;
}

static void count_active(uv_handle_t *h, void *arg) {
    if ((h->type == UV_POLL || h->type == UV_TIMER) && uv_is_active(h)) (*(int *)arg)++;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_get(qc_http_client *c) {
    outcome o;
    qc_http_request req = {.url = url("/hello")};
    if (fetch(c, &req, &o) != 0) return;
    check(o.status == 200 && o.code[0] == 0, "GET returns 200 (got %ld %s %s)", o.status, o.code,
          o.message);
    check(o.body_len == 11 && memcmp(o.body, "hello world", 11) == 0, "GET returns the body");
    check(!strcmp(o.x_test, "yes"), "GET returns a response header by lowercased name");
    check(o.lowercase, "all header names are lowercase");
    check(!strcmp(o.dups, "1,2"), "repeated headers are all kept, in order (got %s)", o.dups);
    check(!strcmp(o.folded, "one two"), "folded header lines are joined (got '%s')", o.folded);
    outcome_free(&o);
}

static void test_reuse(qc_http_client *c) {
    outcome o;
    qc_http_request req = {.url = url("/hello")};
    if (fetch(c, &req, &o) != 0) return;
    outcome_free(&o);
    int before = srv.accepted;
    if (fetch(c, &req, &o) != 0) return;
    check(o.status == 200 && srv.accepted == before,
          "a second request reuses the kept-alive connection");
    outcome_free(&o);
    int active = 0;
    uv_walk(&loop, count_active, &active);
    check(active == 0, "an idle client keeps no poll or timer active (got %d)", active);
}

/* A done callback may start the next transfer (a resumed Lua task calling qc.fetch again
 * does exactly that). */
static qc_http_client *chain_client;
static int chain_done;
static long chain_status;
static void on_chain(const qc_http_result *res, void *ud) {
    char err[128];
    chain_status = res->status;
    if (++chain_done < 3) {
        qc_http_request req = {.url = ud};
        if (qc_http_client_start(chain_client, &req, on_chain, ud, err, sizeof err) != 0)
            chain_done = 100;
    }
}

static void test_chain(qc_http_client *c) {
    char err[128], u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/hello", srv.port);
    chain_client = c;
    qc_http_request req = {.url = u};
    qc_http_client_start(c, &req, on_chain, u, err, sizeof err);
    run_until(&chain_done, 3);
    check(chain_done == 3 && chain_status == 200,
          "a done callback can start the next transfer (%d done)", chain_done);
}

#define NCONC 200
static int conc_done, conc_ok;
static void on_conc(const qc_http_result *res, void *ud) {
    (void)ud;
    conc_done++;
    if (!res->code && res->status == 200 && res->body_len == 11 &&
        !memcmp(res->body, "hello world", 11))
        conc_ok++;
}

static void test_concurrent(qc_http_client *c) {
    char err[256], u[256];
    int started = 0;
    for (int i = 0; i < NCONC; i++) {
        snprintf(u, sizeof u, "http://127.0.0.1:%d/hello?i=%d", srv.port, i);
        qc_http_request req = {.url = u, .timeout_ms = 10000};
        if (qc_http_client_start(c, &req, on_conc, NULL, err, sizeof err) == 0) started++;
    }
    check(started == NCONC && qc_http_client_pending(c) == NCONC, "%d requests start at once",
          NCONC);
    run_until(&conc_done, started);
    check(conc_done == NCONC && conc_ok == NCONC, "%d concurrent requests all complete (%d ok)",
          conc_done, conc_ok);
    check(qc_http_client_pending(c) == 0, "nothing is pending afterwards");
}

static void test_timeout(qc_http_client *c) {
    outcome o;
    qc_http_request req = {.url = url("/slow"), .timeout_ms = 200};
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    if (fetch(c, &req, &o) != 0) return;
    uint64_t ms = uv_now(&loop) - t0;
    check(!strcmp(o.code, "TIMEOUT") && ms < 1500, "a 200 ms timeout on a slow route gives "
          "TIMEOUT (got '%s' '%s' after %llu ms)", o.code, o.message, (unsigned long long)ms);
    outcome_free(&o);
}

static void test_connect(qc_http_client *c) {
    outcome o;
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/", closed_port());
    qc_http_request req = {.url = u, .timeout_ms = 5000};
    if (fetch(c, &req, &o) != 0) return;
    check(!strcmp(o.code, "CONNECT") && o.message[0],
          "a closed port gives CONNECT (got '%s' '%s')", o.code, o.message);
    outcome_free(&o);
}

static void test_dns(qc_http_client *c) {
    outcome o;
    qc_http_request req = {.url = "http://no-such-host.invalid/", .timeout_ms = 8000};
    if (fetch(c, &req, &o) != 0) return;
    check(!strcmp(o.code, "DNS"), "an unknown host gives DNS (got '%s' '%s')", o.code,
          o.message);
    outcome_free(&o);
}

static void test_tls(qc_http_client *c) {
    outcome o;
    char u[128];
    snprintf(u, sizeof u, "https://127.0.0.1:%d/hello", srv.port);
    qc_http_request req = {.url = u, .timeout_ms = 5000};
    if (fetch(c, &req, &o) != 0) return;
    check(!strcmp(o.code, "TLS"), "https to a plain-HTTP server gives TLS (got '%s' '%s')",
          o.code, o.message);
    outcome_free(&o);
}

static void test_post(qc_http_client *c) {
    outcome o;
    size_t n = 300 * 1000;
    char *body = xmalloc(n);
    for (size_t i = 0; i < n; i++) body[i] = (char)(i * 7 % 256); /* NULs included */
    qc_http_header h[] = {{"Content-Type", "application/octet-stream"}, {"X-Empty", ""}};
    qc_http_request req = {.method = "POST", .url = url("/echo"), .headers = h, .nheaders = 2,
                           .body = body, .body_len = n};
    if (fetch(c, &req, &o) == 0) {
        check(o.status == 200 && !strcmp(srv.last_method, "POST") && srv.last_body_len == n &&
                  !memcmp(srv.last_body, body, n),
              "a 300 kB binary POST body arrives at the server intact");
        check(o.body_len == n && !memcmp(o.body, body, n), "and comes back intact");
        outcome_free(&o);
    }
    free(body);

    qc_http_request patch = {.method = "PATCH", .url = url("/echo"), .body = "{}", .body_len = 2};
    if (fetch(c, &patch, &o) != 0) return;
    check(o.status == 200 && !strcmp(srv.last_method, "PATCH") && srv.last_body_len == 2,
          "another method with a body sends that method and body");
    outcome_free(&o);
}

static void test_too_large(qc_http_client *c) {
    outcome o;
    qc_http_request req = {.url = url("/big"), .max_body = 1024 * 1024};
    if (fetch(c, &req, &o) != 0) return;
    check(!strcmp(o.code, "TOO_LARGE"), "a body over max_body (Content-Length) gives TOO_LARGE "
          "(got '%s' '%s')", o.code, o.message);
    outcome_free(&o);

    qc_http_request stream = {.url = url("/stream"), .max_body = 1024 * 1024};
    if (fetch(c, &stream, &o) != 0) return;
    check(!strcmp(o.code, "TOO_LARGE"), "a body over max_body (no Content-Length) gives "
          "TOO_LARGE (got '%s' '%s')", o.code, o.message);
    outcome_free(&o);

    qc_http_request ok = {.url = url("/big")};
    if (fetch(c, &ok, &o) != 0) return;
    check(o.status == 200 && o.body_len == BIG_BODY, "the same body under the default cap "
          "arrives whole (got %ld, %zu bytes)", o.status, o.body_len);
    outcome_free(&o);
}

static void test_bad_input(qc_http_client *c) {
    char err[256] = "";
    outcome o = {0};
    qc_http_request m = {.method = "GET /x HTTP/1.1\r\nX:", .url = url("/hello")};
    int rc1 = qc_http_client_start(c, &m, record, &o, err, sizeof err);
    qc_http_header h[] = {{"X-Bad", "a\r\nInjected: 1"}};
    qc_http_request hv = {.url = url("/hello"), .headers = h, .nheaders = 1};
    int rc2 = qc_http_client_start(c, &hv, record, &o, err, sizeof err);
    uv_run(&loop, UV_RUN_NOWAIT);
    check(rc1 == -1 && rc2 == -1 && o.done == 0 && err[0],
          "a bad method or a CR/LF in a header value is refused (%s)", err);
}

/* Closing from inside a done callback: the other transfer is cancelled, and starting new
 * work on a closing client is refused. */
static qc_http_client *c2;
static int c2_done, c2_ok, c2_cancelled, c2_restart_rc;
static void on_c2(const qc_http_result *res, void *ud) {
    char err[128];
    (void)ud;
    c2_done++;
    if (!res->code && res->status == 200) c2_ok++;
    if (res->code && !strcmp(res->code, "CANCELLED")) {
        c2_cancelled++;
        qc_http_request req = {.url = url("/hello")};
        c2_restart_rc = qc_http_client_start(c2, &req, on_c2, NULL, err, sizeof err);
    }
    qc_http_client_close(c2);
}

static void test_close_from_callback(void) {
    char err[256];
    c2 = qc_http_client_new(&loop, err, sizeof err);
    if (!c2) {
        check(0, "second client: %s", err);
        return;
    }
    qc_http_request req = {.url = url("/hello")};
    qc_http_client_start(c2, &req, on_c2, NULL, err, sizeof err);
    qc_http_client_start(c2, &req, on_c2, NULL, err, sizeof err);
    run_until(&c2_done, 2);
    check(c2_done == 2 && c2_ok == 1 && c2_cancelled == 1 && c2_restart_rc == -1,
          "closing from a done callback cancels the rest and refuses new work");
}

static int close_done, close_cancelled;
static void on_closed_req(const qc_http_result *res, void *ud) {
    (void)ud;
    close_done++;
    if (res->code && !strcmp(res->code, "CANCELLED")) close_cancelled++;
}

static void test_close_pending(qc_http_client *c) {
    char err[256];
    qc_http_request req = {.url = url("/slow"), .timeout_ms = 10000};
    qc_http_client_start(c, &req, on_closed_req, NULL, err, sizeof err);
    qc_http_client_start(c, &req, on_closed_req, NULL, err, sizeof err);
    /* let them connect and send, so cancelling has live sockets to deal with */
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_watchdog, 150, 0);
    expired = 0;
    while (!expired) uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    check(srv.accepted > 0 && close_done == 0, "two slow requests are in flight");
    qc_http_client_close(c);
    check(close_done == 2 && close_cancelled == 2,
          "close with pending transfers reports CANCELLED before it returns");
    server_stop();
    int rc = uv_run(&loop, UV_RUN_DEFAULT);
    check(rc == 0, "the loop then runs to its end (uv_run returned %d)", rc);
    rc = uv_loop_close(&loop);
    check(rc == 0, "every handle was closed (uv_loop_close returned %d)", rc);
}

int main(void) {
    char err[256];
    signal(SIGPIPE, SIG_IGN); /* the server writes to clients that gave up */
    if (uv_loop_init(&loop) != 0 || server_start() != 0) {
        printf("FAIL cannot start the test server\n");
        return 1;
    }
    qc_http_client *c = qc_http_client_new(&loop, err, sizeof err);
    if (!c) {
        printf("FAIL client created: %s\n", err);
        return 1;
    }

    test_get(c);
    test_reuse(c);
    test_chain(c);
    test_concurrent(c);
    test_timeout(c);
    test_connect(c);
    test_dns(c);
    test_tls(c);
    test_post(c);
    test_too_large(c);
    test_bad_input(c);
    test_close_from_callback();
    test_close_pending(c);

    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
