/* libwebsockets' libuv plugin calls uv_poll_start on every poll-interest change, even
 * when the interest is what it already was, and libuv 1.44 answers every call with an
 * immediate EPOLL_CTL_DEL and a later EPOLL_CTL_ADD. lws also toggles POLLOUT on and off
 * once per HTTP request (lws_http_transaction_completed waits for writability). Measured:
 * 6 epoll_ctl per request. This definition interposes on libuv's (the binary exports its
 * symbols with -Wl,-E, so the plugin binds to it): a call that changes nothing returns at
 * once, and on the libuv we were built against a change of an active handle becomes one
 * EPOLL_CTL_MOD, the way libuv treats its own streams. Result: 2 epoll_ctl per request. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <poll.h>
#include <uv.h>

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

/* The layout used below is libuv 1.44's; any other runtime version takes the plain path. */
static int same_libuv(void) {
    static int known = -1;
    if (known < 0) known = uv_version() == (unsigned)UV_VERSION_HEX && UV_VERSION_MAJOR == 1 && UV_VERSION_MINOR == 44;
    return known;
}

int uv_poll_start(uv_poll_t *handle, int events, uv_poll_cb cb) {
    static poll_start_fn real;
    if (!real) {
        real = (poll_start_fn)dlsym(RTLD_NEXT, "uv_poll_start");
        if (!real) return UV_ENOSYS;
    }
    uv__io_t *w = &handle->io_watcher;
    unsigned int bits = to_poll_bits(events);
    if (events == 0 || cb != handle->poll_cb || !uv_is_active((uv_handle_t *)handle) || w->events == 0)
        return real(handle, events, cb);
    if (w->pevents == bits) return 0;
    if (!same_libuv()) return real(handle, events, cb);
    /* What uv__io_start/uv__io_stop do, minus the EPOLL_CTL_DEL: the next loop turn sends
     * EPOLL_CTL_MOD, and uv__io_poll masks delivered events with pevents, so an event for
     * an interest just dropped is not passed on. */
    w->pevents = bits;
    if (queue_empty(&w->watcher_queue)) queue_insert_tail(&handle->loop->watcher_queue, &w->watcher_queue);
    return 0;
}
