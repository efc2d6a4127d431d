/* quantcoach: the command line. serve | run SCRIPT | reload | check | token.
 * Commands whose work is mostly HTTP and JSON (reload, token) are Lua scripts under
 * scripts/cli/, run by the same host as `quantcoach run`. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "config.h"
#include "host/host.h"
#include "http_server.h"
#include "log.h"

#ifndef QC_VERSION
#define QC_VERSION "0.0.0"
#endif

static const char *usage_text =
    "usage: quantcoach COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  serve              start the HTTP server\n"
    "  run SCRIPT [ARGS]  run a Lua script with every qc.* binding and the event loop\n"
    "  reload             make a running server reload its policies\n"
    "  check              load and check every policy without serving\n"
    "  token              print a LiveKit access token\n"
    "\n"
    "options:\n"
    "  --help             show help (also after a command)\n"
    "  --version          print the version\n"
    "\n"
    "Configuration comes from the environment and a .env file in the current directory.\n";

static const char *serve_help =
    "usage: quantcoach serve [--listen HOST:PORT] [--policies DIR] [--data DIR]\n"
    "\n"
    "  --listen HOST:PORT  address to listen on (QC_LISTEN, default 127.0.0.1:8000; port 0 picks one)\n"
    "  --policies DIR      policy directory (QC_POLICIES, default the shipped policies/)\n"
    "  --data DIR          data directory (QC_DATA, default ./data)\n"
    "\n"
    "Signals: SIGHUP reloads policies; SIGINT/SIGTERM stop gracefully.\n";

static const char *check_help =
    "usage: quantcoach check [--policies DIR]\n"
    "\n"
    "Loads every policy in DIR and runs its contract checks. Exit 0 when all pass, 1 otherwise.\n";

static const char *run_help =
    "usage: quantcoach run SCRIPT [ARGS...]\n"
    "\n"
    "Runs a Lua file inside a task: qc.fetch, qc.time.sleep and friends work from it.\n"
    "`arg` holds the arguments. Exit status: the script's integer return value, 0 when it\n"
    "returns nothing, 1 on an uncaught error (with a traceback on stderr).\n";

static int fail(const char *fmt, const char *a) {
    fprintf(stderr, "quantcoach: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return 2;
}

/* Parses --flag VALUE / --flag=VALUE options shared by serve/check/reload. Returns the
 * number of argv entries consumed, 0 when argv[i] is not one of them, -1 on error. */
static int common_flag(qc_config *cfg, int argc, char **argv, int i, int *help) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        *help = 1;
        return 1;
    }
    static const char *names[] = {"--listen", "--policies", "--data"};
    for (int k = 0; k < 3; k++) {
        size_t nl = strlen(names[k]);
        const char *val = NULL;
        int used = 0;
        if (strcmp(a, names[k]) == 0) {
            if (i + 1 >= argc) {
                fail("%s needs a value", names[k]);
                return -1;
            }
            val = argv[i + 1];
            used = 2;
        } else if (strncmp(a, names[k], nl) == 0 && a[nl] == '=') {
            val = a + nl + 1;
            used = 1;
        } else {
            continue;
        }
        char err[256];
        if (k == 0 && qc_config_set_listen(cfg, val, err, sizeof err) < 0) {
            fail("%s", err);
            return -1;
        }
        if (k == 1) snprintf(cfg->policies_dir, sizeof cfg->policies_dir, "%s", val);
        if (k == 2) snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", val);
        return used;
    }
    return 0;
}

static int parse_flags(qc_config *cfg, int argc, char **argv, int *help) {
    for (int i = 0; i < argc;) {
        int used = common_flag(cfg, argc, argv, i, help);
        if (used < 0) return -1;
        if (used == 0) {
            fail("unknown option %s (see --help)", argv[i]);
            return -1;
        }
        i += used;
    }
    return 0;
}

/* ---- serve -------------------------------------------------------------------------- */

typedef struct {
    uv_loop_t *loop;
    qc_host *host;
    qc_http_server *srv;
    uv_signal_t sigint, sigterm, sighup;
    uv_prepare_t log_flush;
    uv_timer_t stop_timer;
    uint64_t stop_deadline;
    int stopping;
} server_state;

static void flush_logs(uv_prepare_t *p) {
    (void)p;
    qc_log_flush();
}

/* Tears everything down from inside the loop and lets the loop run dry: libwebsockets
 * finishes destroying its context only as libuv closes its handles. */
static void finish_stop(server_state *s) {
    size_t left = qc_http_server_inflight(s->srv);
    if (left) qc_log(QC_LOG_WARN, "server", "stop deadline passed", " unanswered=%zu", left);
    qc_host_free(s->host); /* answers what is still running with 503 */
    s->host = NULL;
    qc_host_close_owned_handles(s->loop);
    qc_http_server_shutdown(s->srv);
    /* A second signal during the wind-down must not kill us with the default action. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sighup, NULL);
    uv_close((uv_handle_t *)&s->stop_timer, NULL);
    uv_close((uv_handle_t *)&s->log_flush, NULL);
}

static void stop_poll(uv_timer_t *t) {
    server_state *s = t->data;
    if (!s->host) return;
    if (qc_http_server_inflight(s->srv) == 0 || uv_now(s->loop) >= s->stop_deadline) finish_stop(s);
}

static void on_signal(uv_signal_t *sig, int signum) {
    server_state *s = sig->data;
    if (signum == SIGHUP) {
        char err[2048];
        qc_host_reload(s->host, err, sizeof err);
        return;
    }
    if (s->stopping) return;
    s->stopping = 1;
    qc_log(QC_LOG_INFO, "server", "stopping", " signal=%s inflight=%zu", signum == SIGINT ? "INT" : "TERM",
           qc_http_server_inflight(s->srv));
    qc_http_server_stop_accepting(s->srv);
    s->stop_deadline = uv_now(s->loop) + (uint64_t)(qc_host_config(s->host)->stop_timeout_s * 1000);
    uv_timer_start(&s->stop_timer, stop_poll, 0, 20);
}

static int ensure_dir(const char *path) {
    if (mkdir(path, 0755) == 0 || errno == EEXIST) return 0;
    return -1;
}

static int cmd_serve(qc_config *cfg) {
    char err[2048];
    if (ensure_dir(cfg->data_dir) < 0) return fail("cannot create data directory %s", cfg->data_dir), 1;
    uv_loop_t loop;
    uv_loop_init(&loop);
    server_state s;
    memset(&s, 0, sizeof s);
    s.loop = &loop;
    s.host = qc_host_new(&loop, cfg, QC_HOST_SERVE, err, sizeof err);
    if (!s.host) {
        fprintf(stderr, "quantcoach: %s\n", err);
        return 1;
    }
    if (qc_host_reload(s.host, err, sizeof err) < 0) {
        fprintf(stderr, "quantcoach: policies rejected: %s\n", err);
        qc_host_free(s.host);
        qc_host_drain_loop(&loop);
        uv_loop_close(&loop);
        return 1;
    }
    qc_http_server_options o = {
        .host = cfg->listen_host,
        .port = cfg->listen_port,
        .max_body_bytes = cfg->max_body_bytes,
        .on_request = qc_host_handle_http,
        .ud = s.host,
    };
    s.srv = qc_http_server_new(&loop, &o, err, sizeof err);
    if (!s.srv) {
        fprintf(stderr, "quantcoach: %s\n", err);
        qc_host_free(s.host);
        qc_host_drain_loop(&loop);
        uv_loop_close(&loop);
        return 1;
    }

    uv_signal_init(&loop, &s.sigint);
    uv_signal_init(&loop, &s.sigterm);
    uv_signal_init(&loop, &s.sighup);
    s.sigint.data = s.sigterm.data = s.sighup.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_signal_start(&s.sighup, on_signal, SIGHUP);
    uv_timer_init(&loop, &s.stop_timer);
    s.stop_timer.data = &s;
    uv_prepare_init(&loop, &s.log_flush);
    uv_prepare_start(&s.log_flush, flush_logs);
    uv_unref((uv_handle_t *)&s.log_flush);

    qc_log(QC_LOG_INFO, "server", "listening", " address=%s port=%d version=%s pid=%ld", cfg->listen_host,
           qc_http_server_port(s.srv), QC_VERSION, (long)uv_os_getpid());
    if (!cfg->api_keys[0])
        qc_log(QC_LOG_WARN, "server", "open: no QC_API_KEYS, room and token endpoints need no key (dev mode)",
               " address=%s", cfg->listen_host);
    qc_log_set_buffered(1);
    uv_run(&loop, UV_RUN_DEFAULT);
    qc_log_set_buffered(0);

    if (s.host) qc_host_free(s.host);
    qc_http_server_free(s.srv);
    qc_host_drain_loop(&loop);
    int rc = uv_loop_close(&loop);
    qc_log(QC_LOG_INFO, "server", "stopped", rc ? " loop=busy" : NULL);
    return 0;
}

/* ---- run / check -------------------------------------------------------------------- */

static int run_lua(qc_config *cfg, const char *script, int argc, char **argv) {
    char err[2048];
    uv_loop_t loop;
    uv_loop_init(&loop);
    qc_host *h = qc_host_new(&loop, cfg, QC_HOST_SCRIPT, err, sizeof err);
    if (!h) {
        fprintf(stderr, "quantcoach: %s\n", err);
        return 1;
    }
    int status = 1;
    qc_host_run_script(h, script, argc, argv, &status);
    qc_host_free(h);
    qc_host_drain_loop(&loop);
    uv_loop_close(&loop);
    return status;
}

static int cmd_check(qc_config *cfg) {
    char err[2048];
    uv_loop_t loop;
    uv_loop_init(&loop);
    qc_host *h = qc_host_new(&loop, cfg, QC_HOST_SERVE, err, sizeof err);
    if (!h) {
        fprintf(stderr, "quantcoach: %s\n", err);
        return 1;
    }
    int rc = qc_host_check(h, err, sizeof err);
    if (rc == 0) printf("ok: policies in %s pass their checks\n", cfg->policies_dir);
    else fprintf(stderr, "quantcoach: policies rejected: %s\n", err);
    qc_host_free(h);
    qc_host_drain_loop(&loop);
    uv_loop_close(&loop);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN); /* a client that hangs up must not kill the server */
    char err[2048];
    const char *envfile = getenv("QC_ENV_FILE");
    if (qc_config_load_dotenv(envfile && *envfile ? envfile : ".env", err, sizeof err) < 0)
        return fail("%s", err);
    if (qc_log_init(err, sizeof err) < 0) return fail("%s", err); /* after .env: it may set QC_LOG_* */
    qc_config cfg;
    if (qc_config_from_env(&cfg, err, sizeof err) < 0) return fail("%s", err);

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("quantcoach %s\n", QC_VERSION);
        return 0;
    }
    const char *cmd = argv[1];
    int help = 0;
    if (strcmp(cmd, "serve") == 0) {
        if (parse_flags(&cfg, argc - 2, argv + 2, &help) < 0) return 2;
        if (help) return fputs(serve_help, stdout), 0;
        return cmd_serve(&cfg);
    }
    if (strcmp(cmd, "check") == 0) {
        if (parse_flags(&cfg, argc - 2, argv + 2, &help) < 0) return 2;
        if (help) return fputs(check_help, stdout), 0;
        return cmd_check(&cfg);
    }
    if (strcmp(cmd, "run") == 0) {
        if (argc < 3 || strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0) {
            fputs(run_help, argc < 3 ? stderr : stdout);
            return argc < 3 ? 2 : 0;
        }
        return run_lua(&cfg, argv[2], argc - 3, argv + 3);
    }
    if (strcmp(cmd, "reload") == 0 || strcmp(cmd, "token") == 0) {
        char script[1200];
        snprintf(script, sizeof script, "%s/cli/%s.lua", cfg.scripts_dir, cmd);
        return run_lua(&cfg, script, argc - 2, argv + 2);
    }
    return fail("unknown command \"%s\" (see quantcoach --help)", cmd);
}
