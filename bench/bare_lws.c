/* Bench peer: the floor for GET /health. A bare libwebsockets 4.1 HTTP server answering a
 * fixed JSON body shaped like ours, no Lua, no routing, no logging, so bench/health.sh can
 * tell what lws itself costs from what our runtime adds on top.
 *   bench_bare_lws [--uv] [--port P]     (P = 0: pick one; prints "listening <port>")
 * --uv runs lws on our own uv_loop_t through foreign_loops, as runtime/net/http_server.c does;
 * without it lws runs its own poll loop (lws_service). Headers and body leave in one
 * lws_write(LWS_WRITE_HTTP_FINAL) from LWS_CALLBACK_HTTP: the cheap pattern (DEBIAN12.md). */
#define _POSIX_C_SOURCE 200809L
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* Same bytes and shape as our /health answer (114-byte body). */
#define HEALTH_BODY                                                                                    \
    "{\"status\":\"ok\",\"uptime_s\":1.01,\"version\":\"0.1.0\",\"policies\":{\"reloaded_at\":"      \
    "\"2026-11-23T11:08:42Z\",\"generation\":1}}"
#define NOT_FOUND_BODY "{\"error\":{\"code\":\"not_found\",\"message\":\"no such route\"}}"

/* Full answers, status line to body, built once at start-up; each is copied after LWS_PRE
 * into a per-request stack buffer because lws_write may scribble in front of the data. */
static char health_resp[512], not_found_resp[256];
static size_t health_len, not_found_len;

static volatile sig_atomic_t interrupted;

static size_t build(char *out, size_t cap, const char *status, const char *body) {
    int n = snprintf(out, cap,
                     "HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n\r\n%s",
                     status, strlen(body), body);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "bench_bare_lws: response buffer too small\n");
        exit(1);
    }
    return (size_t)n;
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len) {
    if (reason == LWS_CALLBACK_HTTP) {
        const char *path = in;
        int health = path && strcmp(path, "/health") == 0 && lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
        const char *src = health ? health_resp : not_found_resp;
        size_t n = health ? health_len : not_found_len;
        unsigned char buf[LWS_PRE + sizeof health_resp];
        memcpy(buf + LWS_PRE, src, n);
        if (lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_HTTP_FINAL) != (int)n) return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* 4.1 has no LWS_PROTOCOL_LIST_TERM. */
static const struct lws_protocols protocols[] = {
    {"http", callback_http, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void on_poll_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static void on_uv_signal(uv_signal_t *h, int signum) {
    (void)signum;
    uv_stop(h->loop);
}

static void usage(void) {
    fprintf(stderr, "usage: bench_bare_lws [--uv] [--port P]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int use_uv = 0, port = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--uv") == 0) {
            use_uv = 1;
        } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            char *end;
            long p = strtol(argv[++i], &end, 10);
            if (*end || p < 0 || p > 65535) usage();
            port = (int)p;
        } else {
            usage();
        }
    }
    health_len = build(health_resp, sizeof health_resp, "200 OK", HEALTH_BODY);
    not_found_len = build(not_found_resp, sizeof not_found_resp, "404 Not Found", NOT_FOUND_BODY);

    signal(SIGPIPE, SIG_IGN);
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);

    uv_loop_t loop;
    void *foreign_loops[1] = {&loop};
    uv_signal_t sigint, sigterm;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    /* port 0 asks lws for an ephemeral port; CONTEXT_PORT_NO_LISTEN is -1 in 4.1. */
    info.port = port;
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.keepalive_timeout = 30;
    info.timeout_secs = 60;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    if (use_uv) {
        uv_loop_init(&loop);
        uv_signal_init(&loop, &sigint);
        uv_signal_init(&loop, &sigterm);
        uv_signal_start(&sigint, on_uv_signal, SIGINT);
        uv_signal_start(&sigterm, on_uv_signal, SIGTERM);
        info.options |= LWS_SERVER_OPTION_LIBUV;
        info.foreign_loops = foreign_loops;
    } else {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_poll_signal; /* no SA_RESTART: poll() returns EINTR and we look */
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
    }

    struct lws_context *ctx = lws_create_context(&info);
    if (!ctx) {
        fprintf(stderr, "bench_bare_lws: cannot create context%s\n",
                use_uv ? " (is libwebsockets-evlib-uv installed?)" : "");
        return 1;
    }
    struct lws_vhost *vh = lws_get_vhost_by_name(ctx, "default");
    printf("listening %d\n", vh ? lws_get_vhost_listen_port(vh) : port);
    fflush(stdout);

    if (use_uv) {
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_close((uv_handle_t *)&sigint, NULL);
        uv_close((uv_handle_t *)&sigterm, NULL);
        lws_context_destroy(ctx);
        uv_run(&loop, UV_RUN_DEFAULT); /* lws closes its own handles on the loop */
        if (uv_loop_close(&loop) != 0) fprintf(stderr, "bench_bare_lws: loop still busy at exit\n");
    } else {
        while (!interrupted && lws_service(ctx, 0) >= 0) {
        }
        lws_context_destroy(ctx);
    }
    return 0;
}
