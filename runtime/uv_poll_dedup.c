/* libwebsockets' libuv plugin calls uv_poll_start on every poll-interest change, even
 * when the interest is what it already was, and libuv 1.44 answers every call with an
 * immediate EPOLL_CTL_DEL and a later EPOLL_CTL_ADD. lws also asks for POLLOUT once per
 * HTTP request (lws_http_transaction_completed waits for writability before it reads the
 * next request) and drops it again. Measured: 6 epoll_ctl and an extra epoll_wait round per
 * request. This definition interposes on libuv's (the binary exports its symbols with
 * -Wl,-E, so the plugin binds to it), on the libuv 1.44 we build against:
 *  - a call that changes nothing returns at once;
 *  - POLLOUT asked of a socket that is only being read is answered from this same loop
 *    turn when a zero-timeout poll() says the socket is writable (it nearly always is: the
 *    answer just went out), without telling epoll at all; otherwise epoll is told;
 *  - any other change is one EPOLL_CTL_MOD, the way libuv treats its own streams.
 * Result: one poll() per loop turn (for every socket promised in it) instead of 4-6
 * epoll_ctl per request, and no extra epoll_wait round.
 *
 * It changes every uv_poll_t in the process, not only lws' ones: runtime/http_client.c
 * drives libcurl's sockets with uv_poll_start too, so qc.fetch and the LiveKit client
 * run through this path as well (curl asks for POLLOUT while it sends a request on a
 * kept-alive connection). spec/poll_spec.lua runs many concurrent qc.fetch calls, with
 * large uploads, against the server; `make test` runs it with this file (release build)
 * and without it (ASan build, QC_POLL_DEDUP=OFF).
 *
 * It writes libuv-private fields, so it is built only against libuv 1.44 headers (CMake
 * leaves it out otherwise, and the check below stops a build that forces it in), and at run
 * time it steps aside unless the loaded libuv is the exact version it was compiled with. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <poll.h>
#include <string.h>
#include <uv.h>

#if UV_VERSION_MAJOR != 1 || UV_VERSION_MINOR != 44
#error "uv_poll_dedup.c writes libuv 1.44's private fields: configure with -DQC_POLL_DEDUP=OFF"
#endif

typedef int (*poll_start_fn)(uv_poll_t *, int, uv_poll_cb);

/* What libuv stores in io_watcher.pevents for a uv_poll_event mask (src/unix/poll.c). */
static unsigned int to_poll_bits(int events) {
    unsigned int bits = 0;
    if (events & UV_READABLE) bits |= POLLIN;
    if (events & UV_PRIORITIZED) bits |= POLLPRI;
    if (events & UV_WRITABLE) bits |= POLLOUT;
    if (events & UV_DISCONNECT) bits |= 0x2000; /* UV__POLLRDHUP */
    return bits;
}

/* libuv's intrusive queue (src/queue.h): a node is void *[2] = {next, prev}. */
typedef void *uvq[2];
#define Q_NEXT(q) (*(uvq **)&((*(q))[0]))
#define Q_PREV(q) (*(uvq **)&((*(q))[1]))

static int queue_empty(uvq *q) { return (uvq *)Q_NEXT(q) == q; }

static void queue_insert_tail(uvq *h, uvq *q) {
    Q_NEXT(q) = h;
    Q_PREV(q) = Q_PREV(h);
    Q_NEXT(Q_PREV(q)) = q;
    Q_PREV(h) = q;
}

/* The layout used below is libuv 1.44's, as compiled; a libuv loaded at run time that is
 * not the exact version of the headers takes the plain path for every call. */
static int same_libuv(void) {
    static int known = -1;
    if (known < 0) known = uv_version() == (unsigned)UV_VERSION_HEX;
    return known;
}

int qc_poll_dedup_active(void) { return same_libuv(); }

/* Handles promised a writable callback this loop turn. Delivered from a check handle,
 * which runs after the poll phase and before libuv frees any handle closed in this turn,
 * so every pointer here is still valid when it is used. */
#define MAX_READY 512
static struct {
    uv_loop_t *loop;
    uv_check_t check;
    uv_idle_t idle; /* active while something waits: keeps the poll phase from blocking */
    uv_poll_t *ready[MAX_READY];
    int n;
} g;

static void idle_noop(uv_idle_t *h) { (void)h; }

static void register_with_epoll(uv_poll_t *h) {
    uv__io_t *w = &h->io_watcher;
    if (queue_empty(&w->watcher_queue)) queue_insert_tail(&h->loop->watcher_queue, &w->watcher_queue);
}

static void deliver_ready(uv_check_t *c) {
    (void)c;
    uv_poll_t *list[MAX_READY];
    struct pollfd fds[MAX_READY];
    int n = g.n;
    memcpy(list, g.ready, (size_t)n * sizeof list[0]);
    g.n = 0;
    uv_idle_stop(&g.idle);
    if (n <= 0) return;
    /* One poll() for every socket promised this turn, not one each. */
    for (int i = 0; i < n; i++) {
        uv_poll_t *h = list[i];
        int live = !uv_is_closing((uv_handle_t *)h) && uv_is_active((uv_handle_t *)h) &&
                   (h->io_watcher.pevents & POLLOUT);
        fds[i] = (struct pollfd){.fd = live ? h->io_watcher.fd : -1, .events = POLLOUT, .revents = 0};
    }
    if (poll(fds, (nfds_t)n, 0) < 0)
        for (int i = 0; i < n; i++) fds[i].revents = POLLERR; /* let epoll report it */
    for (int i = 0; i < n; i++) {
        uv_poll_t *h = list[i];
        if (fds[i].fd < 0) continue; /* closed or no longer asking, at the time of the poll */
        /* An earlier callback of this loop may have closed h or dropped its interest. */
        if (uv_is_closing((uv_handle_t *)h) || !uv_is_active((uv_handle_t *)h) || !(h->io_watcher.pevents & POLLOUT))
            continue;
        if (fds[i].revents == POLLOUT) h->poll_cb(h, 0, UV_WRITABLE);
        else register_with_epoll(h); /* full, or an error: let epoll report it */
    }
}

/* Promises h a writable callback this turn; 0 when it cannot (then epoll is told). */
static int promise_writable(uv_poll_t *h) {
    if (!g.loop) {
        g.loop = h->loop;
        uv_check_init(g.loop, &g.check);
        uv_idle_init(g.loop, &g.idle);
        uv_check_start(&g.check, deliver_ready);
        uv_unref((uv_handle_t *)&g.check);
        uv_unref((uv_handle_t *)&g.idle);
    }
    if (h->loop != g.loop || g.n == MAX_READY || uv_is_closing((uv_handle_t *)&g.check)) return 0;
    g.ready[g.n++] = h;
    uv_idle_start(&g.idle, idle_noop);
    return 1;
}

int uv_poll_start(uv_poll_t *handle, int events, uv_poll_cb cb) {
    static poll_start_fn real;
    if (!real) {
        real = (poll_start_fn)dlsym(RTLD_NEXT, "uv_poll_start");
        if (!real) return UV_ENOSYS;
    }
    if (!same_libuv()) return real(handle, events, cb);
    uv__io_t *w = &handle->io_watcher;
    unsigned int bits = to_poll_bits(events);
    if (events == 0 || cb != handle->poll_cb || !uv_is_active((uv_handle_t *)handle) || w->events == 0)
        return real(handle, events, cb);
    if (w->pevents == bits) return 0;
    /* What uv__io_start/uv__io_stop do, minus the EPOLL_CTL_DEL. uv__io_poll masks what
     * epoll reports with pevents, so an event for an interest just dropped is not passed on. */
    w->pevents = bits;
    if (bits == w->events) return 0; /* epoll already watches exactly this */
    if (bits == (w->events | POLLOUT) && promise_writable(handle)) return 0;
    register_with_epoll(handle);
    return 0;
}
