/* qc_http_server without Lua: a real server on a loopback port, a client thread with blocking
 * sockets. Covers what the busted spec cannot see from outside: what the handler is given
 * (decoded path, arguments, headers), answers given later from the loop while requests are
 * pipelined behind them, the request deadline and the connection cap. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "net/http_server.h"

#include "tap.h"

static uv_loop_t loop;
static qc_http_server *srv;
static int port;
static uv_async_t stop_async;

/* /later: answered 50 ms later from a timer, as a handler waiting on I/O would. */
typedef struct {
    uv_timer_t t;
    qc_http_exchange *ex;
    char body[64];
} later;

static void later_closed(uv_handle_t *h) { free(h->data); }

static void later_fire(uv_timer_t *t) {
    later *l = t->data;
    qc_http_header h[] = {{"content-type", "text/plain"}};
    qc_http_exchange_respond(l->ex, 200, h, 1, l->body, strlen(l->body));
    uv_close((uv_handle_t *)&l->t, later_closed);
}

/* Everything else: the request as the handler sees it, one field a line. */
static void on_request(void *ud, qc_http_exchange *ex, const qc_http_incoming *req) {
    (void)ud;
    if (strcmp(req->path, "/later") == 0) {
        later *l = calloc(1, sizeof *l);
        l->ex = ex;
        snprintf(l->body, sizeof l->body, "later %s", req->query);
        uv_timer_init(&loop, &l->t);
        l->t.data = l;
        uv_timer_start(&l->t, later_fire, 50, 0);
        return;
    }
    if (strcmp(req->path, "/busy") == 0) { /* a handler that holds the loop for 500 ms */
        struct timespec ts = {0, 500 * 1000 * 1000};
        while (nanosleep(&ts, &ts) != 0) {}
        qc_http_exchange_respond(ex, 200, NULL, 0, "busy", 4);
        return;
    }
    if (strcmp(req->path, "/status") == 0) { /* the status the query names */
        qc_http_exchange_respond(ex, atoi(req->query), NULL, 0, "s", 1);
        return;
    }
    char body[4096];
    size_t n = (size_t)snprintf(body, sizeof body, "method=%s\npath=%s\nquery=%s\n", req->method, req->path, req->query);
    for (size_t i = 0; i < req->nargs && n < sizeof body; i++)
        n += (size_t)snprintf(body + n, sizeof body - n, "arg %s=%s\n", req->args[i].name, req->args[i].value);
    for (size_t i = 0; i < req->nheaders && n < sizeof body; i++)
        n += (size_t)snprintf(body + n, sizeof body - n, "header %s=%s\n", req->headers[i].name, req->headers[i].value);
    if (n < sizeof body) n += (size_t)snprintf(body + n, sizeof body - n, "body=%.*s\n", (int)req->body_len, req->body);
    if (n >= sizeof body) n = sizeof body - 1;
    qc_http_exchange_respond(ex, 200, NULL, 0, body, n);
}

/* ---- client side ------------------------------------------------------------------------ */

static int dial(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Reads until the server closes or `ms` pass without data; returns the text (static). */
static const char *read_all(int fd, int ms, int *closed) {
    static char buf[65536];
    size_t n = 0;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    *closed = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r == 0) {
            *closed = 1;
            break;
        }
        if (r < 0) break;
        n += (size_t)r;
    }
    buf[n] = 0;
    return buf;
}

static const char *exchange(const char *bytes, int shut, int ms, int *closed) {
    int fd = dial();
    if (fd < 0) return "";
    send(fd, bytes, strlen(bytes), 0);
    if (shut) shutdown(fd, SHUT_WR);
    const char *got = read_all(fd, ms, closed);
    close(fd);
    return got;
}

static int count_of(const char *hay, const char *needle) {
    int c = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) c++;
    return c;
}

static void *client(void *arg) {
    (void)arg;
    int closed;
    const char *got;

    got = exchange("GET /a/./b/../c//d%20e?x=1&y=a%26b&z&p=1+2 HTTP/1.1\r\nHost: h\r\nX-Twice: 1\r\n"
                   "x-twice: 2\r\nConnection: close\r\n\r\n",
                   0, 2000, &closed);
    ok(strstr(got, "path=/a/c/d e\n") != NULL, "decodes the path and removes dot segments and empty ones");
    ok(strstr(got, "arg x=1\narg y=a&b\narg z=\narg p=1 2\n") != NULL,
       "splits arguments before decoding them (an encoded & stays in its value; + is a space)");
    ok(strstr(got, "header x-twice=1\nheader x-twice=2\n") != NULL, "lowercases header names and keeps repeats");
    ok(closed, "closes after Connection: close");

    got = exchange("GET /../../etc/passwd HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 0, 2000, &closed);
    ok(strstr(got, "path=/etc/passwd\n") != NULL, "keeps .. from climbing above the root");

    got = exchange("GET /a%00b HTTP/1.1\r\nHost: h\r\n\r\n", 0, 2000, &closed);
    ok(strncmp(got, "HTTP/1.1 400 ", 13) == 0 && closed, "refuses a NUL byte in the path with 400 and closes");

    got = exchange("GET /later?1 HTTP/1.1\r\nHost: h\r\n\r\n"
                   "POST /now HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                   "GET /later?3 HTTP/1.1\r\nHost: h\r\n\r\n",
                   1, 3000, &closed);
    const char *a = strstr(got, "later 1"), *b = strstr(got, "body=abc"), *c = strstr(got, "later 3");
    ok(a && b && c && a < b && b < c, "answers pipelined requests in order when the first is answered later");
    ok(closed, "closes once a half-closed client has every answer");

    got = exchange("HEAD /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 0, 2000, &closed);
    ok(strstr(got, "content-length: ") != NULL && strstr(got, "method=") == NULL,
       "answers HEAD with the length of the body and not the body");

    /* The deadline (200 ms here) counts from the first byte of the request. */
    int fd = dial();
    send(fd, "GET /x HTTP/1.1\r\nHo", 19, 0);
    got = read_all(fd, 2000, &closed);
    ok(strncmp(got, "HTTP/1.1 408 ", 13) == 0 && strstr(got, "REQUEST_TIMEOUT") && closed,
       "answers 408 to a head that does not arrive in time, and closes");
    close(fd);

    /* The cap is 4: four idle connections, then a fifth that must be served. */
    int idle[4];
    for (int i = 0; i < 4; i++) {
        idle[i] = dial();
        send(idle[i], "GET /x HTTP/1.1\r\nHost: h\r\n\r\n", 28, 0);
        read_all(idle[i], 300, &closed); /* answered, now idle on keep-alive */
    }
    got = exchange("GET /fifth HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 0, 2000, &closed);
    ok(strstr(got, "path=/fifth") != NULL, "serves a new connection at the cap");
    read_all(idle[0], 500, &closed);
    ok(closed, "by closing the oldest idle connection");
    read_all(idle[3], 200, &closed);
    ok(!closed, "and not the newest");
    for (int i = 0; i < 4; i++) close(idle[i]);

    ok(count_of(exchange("GET /x HTTP/1.1\r\nHost: h\r\n\r\nGET /y HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 0,
                         2000, &closed),
                "HTTP/1.1 200 ") == 2,
       "answers two pipelined requests sent in one write");

    /* A request that arrives whole while a handler holds the loop past its deadline waits on
     * us, not the other way round: it is answered, not refused with 408 or dropped. */
    int waiting = dial();
    int held = dial();
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL); /* both accepted: the deadline of `waiting` runs */
    const char *busy = "GET /busy HTTP/1.1\r\nHost: h\r\n\r\n";
    send(held, busy, strlen(busy), 0);
    nanosleep(&pause, NULL); /* the loop is in /busy now */
    const char *w = "GET /w HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    send(waiting, w, strlen(w), 0);
    got = read_all(waiting, 3000, &closed);
    ok(strstr(got, "HTTP/1.1 200 ") == got && strstr(got, "path=/w"), "answers a request the server kept waiting past its deadline");
    close(waiting);
    close(held);

    for (int i = 0; i < 3; i++) {
        static const char *const bad[] = {"101", "100", "99999"};
        char line[96];
        snprintf(line, sizeof line, "GET /status?%s HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", bad[i]);
        got = exchange(line, 0, 2000, &closed);
        ok(strncmp(got, "HTTP/1.1 500 ", 13) == 0, "sends 500 for a status a handler may not give (1xx, > 599)");
    }

    uv_async_send(&stop_async);
    return NULL;
}

static void on_stop(uv_async_t *a) {
    qc_http_server_shutdown(srv);
    uv_close((uv_handle_t *)a, NULL);
}

int main(void) {
    uv_loop_init(&loop);
    qc_http_server_options o = {
        .host = "127.0.0.1",
        .port = 0,
        .max_body_bytes = 1024,
        .request_timeout_ms = 200,
        .max_connections = 4,
        .on_request = on_request,
    };
    char err[256];
    srv = qc_http_server_new(&loop, &o, err, sizeof err);
    if (!srv) {
        printf("not ok - server: %s\n", err);
        return 1;
    }
    port = qc_http_server_port(srv);
    uv_async_init(&loop, &stop_async, on_stop);
    pthread_t th;
    pthread_create(&th, NULL, client, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    qc_http_server_free(srv);
    ok(uv_loop_close(&loop) == 0, "leaves no handle behind");
    printf("%d passed, %d failed\n", count - failures, failures);
    return failures ? 1 : 0;
}
