/* libFuzzer harness for the whole HTTP server in-process: runtime/net/http_server.c (libuv and
 * http-parser: framing, request collection, chunked bodies) with the host dispatching through the real
 * policies/routes.lua and scripts/lib/qc/router.lua. Each input is written, as it is, to a
 * fresh loopback TCP connection to the server; a trailing NUL byte is not sent but means
 * "then half-close" (shutdown SHUT_WR), so both a client that waits and one that hangs up
 * are tried. The loop runs until the server closes the connection, or until it has nothing
 * left to do: no request in flight, no socket ready, no timer due.
 * Per input the loop runs for 1 s of this thread's CPU time at most (or 5 s of wall clock):
 * a server still busy after that is a hang, reported as a finding (a spin inside one loop
 * turn is caught by libFuzzer's -timeout instead). CPU time, because CI machines are
 * shared: a process that waits for a core is not a server that spins.
 * Properties: every answer starts "HTTP/1.1 " with a status from 100 to 599, its framing
 * is right (content-length, none on 1xx and 204), and no answer is a 500 (a handler raised
 * on the request). */
#define _GNU_SOURCE /* memmem */
#include "fuzz_host.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <time.h>

#include "net/http_server.h"

/* Per-input bound: 1 s of CPU (or QC_FUZZ_HANG_MS), and five times that of wall clock. */
static uint64_t hang_ns = 1000000000ull;

static uint64_t cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

typedef struct {
    uint64_t cpu, wall;
} bound;

static bound bound_start(void) { return (bound){cpu_ns() + hang_ns, uv_hrtime() + 5 * hang_ns}; }
static int bound_passed(const bound *b) { return cpu_ns() > b->cpu || uv_hrtime() > b->wall; }

static uv_loop_t loop;
static qc_config cfg;
static qc_host *host;
static qc_http_server *srv;
static int port;

static void start(void) {
    host = fuzz_host_start(&loop, &cfg);
    qc_http_server_options o = {
        .host = "127.0.0.1", .port = 0, .max_body_bytes = 64 * 1024,
        .on_request = qc_host_handle_http, .ud = host,
    };
    char err[512];
    srv = qc_http_server_new(&loop, &o, err, sizeof err);
    if (!srv) fuzz_fail("server: %s", err);
    port = qc_http_server_port(srv);
    const char *ms = getenv("QC_FUZZ_HANG_MS");
    if (ms && atoi(ms) > 0) hang_ns = (uint64_t)atoi(ms) * 1000000ull;
}

/* Nothing for the loop to do now: no request in flight, no descriptor ready, no idle or
 * pending callback. */
static int loop_quiet(void) {
    if (qc_http_server_inflight(srv) != 0) return 0;
    if (uv_backend_timeout(&loop) == 0) return 0;
    struct pollfd p = {.fd = uv_backend_fd(&loop), .events = POLLIN};
    return poll(&p, 1, 0) == 0;
}

/* Why the loop is not quiet, for a hang's report. */
static const char *loop_state(void) {
    static char s[128];
    struct pollfd p = {.fd = uv_backend_fd(&loop), .events = POLLIN};
    snprintf(s, sizeof s, "requests in flight %zu, next timer %d ms, descriptor ready %d",
             qc_http_server_inflight(srv), uv_backend_timeout(&loop), poll(&p, 1, 0));
    return s;
}

/* Checks the status lines of what came back (answers are whole: one write each). Every
 * answer is ours: HTTP/1.1, never a 500. A 1xx, a 204 and the answer to a HEAD have no body;
 * the harness does not track which requests were HEADs, but none of our bodies starts with
 * a status line, so an answer followed at once by the next status line had none. */
static void check_answers(const char *buf, size_t n) {
    const char *p = buf, *end = buf + n;
    while (p < end) {
        if ((size_t)(end - p) < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0)
            fuzz_fail("an answer that does not start with a status line: %.*s", (int)(end - p > 80 ? 80 : end - p), p);
        int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        if (status < 100 || status > 599) fuzz_fail("status %.3s", p + 9);
        if (status == 500) fuzz_fail("answered 500: a handler raised on this request (see the log line above)");
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend) return; /* cut short: the connection went */
        const char *next = hend + 4;
        const char *cl = memmem(p, (size_t)(hend - p), "content-length: ", 16);
        if (status < 200 || status == 204) {
            if (cl) fuzz_fail("a %d answer with content-length", status);
        } else if (!cl) {
            fuzz_fail("an answer without content-length");
        } else if (!((size_t)(end - next) >= 9 && memcmp(next, "HTTP/1.1 ", 9) == 0)) {
            next += strtoul(cl + 16, NULL, 10);
        }
        p = next;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!srv) start();
    int half_close = size > 0 && data[size - 1] == 0;
    if (half_close) size--;

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* The kernel completes the connection from the listen backlog, before the server accepts, so
     * waiting here needs no loop turn. Signals (libFuzzer's timer, the Lua watchdog) can
     * interrupt the wait: the connection goes on, and poll says when it is made. */
    if (fd < 0) fuzz_fail("socket: %s", strerror(errno));
    fcntl(fd, F_SETFL, O_NONBLOCK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (errno != EINPROGRESS && errno != EINTR) fuzz_fail("connect: %s", strerror(errno));
        struct pollfd pw = {.fd = fd, .events = POLLOUT};
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        while (poll(&pw, 1, 5000) < 0 && errno == EINTR) {}
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr)
            fuzz_fail("connect: %s", strerror(soerr ? soerr : errno));
    }

    static char buf[1 << 20];
    size_t got = 0, sent = 0;
    int closed = 0, quiet = 0;
    bound deadline = bound_start();
    while (!closed) {
        if (sent < size) {
            ssize_t w = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (w > 0) sent += (size_t)w;
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) break; /* the server hung up on us */
            if (sent == size && half_close) shutdown(fd, SHUT_WR);
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
        if (r > 0) {
            got += (size_t)r;
            quiet = 0;
            continue;
        }
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            closed = 1;
            break;
        }
        if (sent == size && loop_quiet()) {
            if (++quiet >= 3) break;
        } else {
            quiet = 0;
        }
        if (bound_passed(&deadline))
            fuzz_fail("hang: after 1 s the server has neither closed the connection nor gone quiet "
                      "(%zu of %zu bytes sent, %zu received; %s)",
                      sent, size, got, loop_state());
    }
    check_answers(buf, got);
    close(fd);
    /* Let the server see the close and free the connection before the next input. */
    deadline = bound_start();
    for (int q = 0; q < 3;) {
        uv_run(&loop, UV_RUN_NOWAIT);
        q = loop_quiet() ? q + 1 : 0;
        if (bound_passed(&deadline)) fuzz_fail("hang: the server is still busy 1 s after the client closed (%s)", loop_state());
    }
    return 0;
}
