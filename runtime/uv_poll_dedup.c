/* libwebsockets' libuv plugin calls uv_poll_start on every poll-interest change, even
 * when the interest is what it already was, and libuv 1.44 answers each call with an
 * immediate EPOLL_CTL_DEL and a later EPOLL_CTL_ADD. Measured: ~6 epoll_ctl per HTTP
 * request. This definition interposes on libuv's (the binary exports its symbols with
 * -Wl,-E, so the plugin binds to it) and skips calls that would change nothing. */
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

int uv_poll_start(uv_poll_t *handle, int events, uv_poll_cb cb) {
    static poll_start_fn real;
    if (!real) {
        real = (poll_start_fn)dlsym(RTLD_NEXT, "uv_poll_start");
        if (!real) return UV_ENOSYS;
    }
    if (events != 0 && cb == handle->poll_cb && uv_is_active((uv_handle_t *)handle) &&
        handle->io_watcher.pevents == to_poll_bits(events))
        return 0;
    return real(handle, events, cb);
}
