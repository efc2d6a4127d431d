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
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "audio/ingest.h"
#include "host/host.h"
#include "net/http_server.h"
#include "net/ws_client.h"
#include "log.h"
#include "store/store.h"
#include "audio/transcribe.h"

#ifndef QC_VERSION
#define QC_VERSION "0.0.0"
#endif

/* Help texts stay within 80 columns: a terminal would wrap them mid-word. */
static const char *usage_text =
    "usage: quantcoach COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  serve              start the HTTP server\n"
    "  run SCRIPT [ARGS]  run a Lua script with every qc.* binding and the event loop\n"
    "  reload             make a running server reload its policies\n"
    "  check              load and check every policy without serving\n"
    "  token              print a LiveKit access token\n"
    "  transcribe FILES   speech to text of WAV files, one track per speaker\n"
    "\n"
    "options:\n"
    "  --help             show help (also after a command: quantcoach serve --help)\n"
    "  --version          print the version\n"
    "\n"
    "Configuration comes from the environment and a .env file in the current\n"
    "directory (QC_ENV_FILE names another). Usage errors exit with status 2.\n";

static const char *serve_help =
    "usage: quantcoach serve [--listen HOST:PORT] [--policies DIR] [--data DIR]\n"
    "\n"
    "  --listen HOST:PORT  address to listen on (QC_LISTEN, default 127.0.0.1:8000;\n"
    "                      port 0 picks a free port and logs it)\n"
    "  --policies DIR      policy directory (QC_POLICIES, default the shipped\n"
    "                      policies/)\n"
    "  --data DIR          data directory (QC_DATA, default ./data)\n"
    "\n"
    "Speech-to-text for /ingest: QC_STT_ENGINE=local (pocketsphinx, the default),\n"
    "elevenlabs (ELEVENLABS_API_KEY), or null: a sink that only counts the audio,\n"
    "for benchmarks (/health and /metrics show what it received).\n"
    "\n"
    "Signals: SIGHUP reloads policies; SIGINT/SIGTERM stop gracefully.\n";

static const char *check_help =
    "usage: quantcoach check [--policies DIR]\n"
    "\n"
    "  --policies DIR      policy directory (QC_POLICIES, default the shipped\n"
    "                      policies/)\n"
    "\n"
    "Loads every policy in DIR and runs its contract checks.\n"
    "Exit status: 0 when all pass, 1 otherwise.\n";

static const char *run_help =
    "usage: quantcoach run SCRIPT [ARGS...]\n"
    "\n"
    "Runs a Lua file inside a task, so calls that wait (qc.fetch, qc.time.sleep)\n"
    "yield to the event loop. The bindings are modules: local fetch = require\n"
    "\"qc.fetch\" (there is no global qc). `arg` and `...` hold the arguments.\n"
    "Exit status: the script's return value, an integer from 0 to 255 (true is 0,\n"
    "false 1), 0 when it returns nothing, 1 on an uncaught error (with a traceback\n"
    "on stderr) or on any other value (named on stderr).\n";

/* A usage error: one line naming the command and what was wrong, exit status 2. */
static int usage_error(const char *cmd, const char *what, const char *arg) {
    fprintf(stderr, "quantcoach%s%s: %s%s (see quantcoach%s%s --help)\n", cmd ? " " : "", cmd ? cmd : "", what,
            arg ? arg : "", cmd ? " " : "", cmd ? cmd : "");
    return 2;
}

static int fail(const char *fmt, const char *a) {
    fprintf(stderr, "quantcoach: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return 2;
}

/* Options of serve and check, parsed before the configuration is read, so that --help
 * and usage errors answer even when the configuration is broken. */
enum { OPT_LISTEN = 1, OPT_POLICIES = 2, OPT_DATA = 4 };
typedef struct {
    const char *listen, *policies, *data;
    int help;
} cmd_flags;

/* Parses --flag VALUE / --flag=VALUE among `allowed`. Returns 0, or 2 after printing a
 * usage error. */
static int parse_flags(const char *cmd, int allowed, int argc, char **argv, cmd_flags *f) {
    static const struct {
        int bit;
        const char *name;
    } opts[] = {{OPT_LISTEN, "--listen"}, {OPT_POLICIES, "--policies"}, {OPT_DATA, "--data"}};
    memset(f, 0, sizeof *f);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            f->help = 1;
            continue;
        }
        if (a[0] != '-') return usage_error(cmd, "unexpected argument ", a);
        const char *val = NULL;
        int k = -1;
        for (int j = 0; j < 3 && k < 0; j++) {
            if (!(allowed & opts[j].bit)) continue;
            size_t nl = strlen(opts[j].name);
            if (strcmp(a, opts[j].name) == 0) {
                if (i + 1 >= argc) return usage_error(cmd, opts[j].name, " needs a value");
                val = argv[++i];
                k = j;
            } else if (strncmp(a, opts[j].name, nl) == 0 && a[nl] == '=') {
                val = a + nl + 1;
                k = j;
            }
        }
        if (k < 0) return usage_error(cmd, "unknown option ", a);
        if (!*val) return usage_error(cmd, opts[k].name, " needs a value");
        if (opts[k].bit == OPT_LISTEN) {
            qc_config probe;
            char err[512];
            if (qc_config_set_listen(&probe, val, err, sizeof err) < 0) {
                char what[600];
                snprintf(what, sizeof what, "--listen: %s", err);
                return usage_error(cmd, what, NULL);
            }
            f->listen = val;
        }
        if (opts[k].bit == OPT_POLICIES) f->policies = val;
        if (opts[k].bit == OPT_DATA) f->data = val;
    }
    return 0;
}

/* Flags win over the environment and .env. */
static void apply_flags(qc_config *cfg, const cmd_flags *f) {
    char err[512];
    if (f->listen) qc_config_set_listen(cfg, f->listen, err, sizeof err); /* checked when parsed */
    if (f->policies) snprintf(cfg->policies_dir, sizeof cfg->policies_dir, "%s", f->policies);
    if (f->data) snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", f->data);
}

/* ---- serve -------------------------------------------------------------------------- */

typedef struct {
    uv_loop_t *loop;
    qc_host *host;
    qc_http_server *srv;
    qc_ingest_hub *hub; /* the STT engine every ingest track shares */
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
    /* Before the host: no transcript event may reach a Lua state that is gone. */
    qc_ingest_hub_free(s->hub);
    s->hub = NULL;
    qc_host_free(s->host); /* answers what is still running with 503 */
    s->host = NULL;
    qc_host_close_owned_handles(s->loop);
    qc_http_server_shutdown(s->srv);
    /* The WebSocket client's lws context (the ElevenLabs engine's) keeps handles of its own
     * on the loop: without its teardown here the loop never runs dry, the signal handles
     * below are gone, and the process waits forever. */
    qc_ws_client_shutdown();
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
    /* Ingest tracks finish first: their open utterances become finals, stored by Lua, whose
     * event tasks must end too (on PostgreSQL their commits take loop turns). */
    int idle = qc_http_server_inflight(s->srv) == 0 && qc_ingest_hub_live(s->hub) == 0 &&
               qc_stt_events_running() == 0;
    if (idle || uv_now(s->loop) >= s->stop_deadline) finish_stop(s);
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
    qc_ingest_hub_stop(s->hub);
    s->stop_deadline = uv_now(s->loop) + (uint64_t)(qc_host_config(s->host)->stop_timeout_s * 1000);
    uv_timer_start(&s->stop_timer, stop_poll, 0, 20);
}

static int ensure_dir(const char *path) {
    if (mkdir(path, 0755) == 0 || errno == EEXIST) return 0;
    return -1;
}

/* What an operator checks first: where it talks, with which key id (never the secret),
 * how it transcribes and judges, where it keeps its data, and whether it is open. */
static void log_startup(const qc_config *cfg) {
    char url[1100], key[600], data[2100], pol[2100], scr[2100], store[1200], store_v[2500];
    /* The store it writes to, never its password (a PostgreSQL URI may carry one). */
    if (!cfg->store_url[0]) snprintf(store, sizeof store, "sqlite:%.1000s/quantcoach.db", cfg->data_dir);
    else if (qc_config_mask_url(cfg->store_url, store, sizeof store) < 0) snprintf(store, sizeof store, "(too long)");
    qc_log_value(store_v, sizeof store_v, store);
    qc_log_value(url, sizeof url, cfg->livekit_url);
    qc_log_value(key, sizeof key, cfg->livekit_api_key);
    qc_log_value(data, sizeof data, cfg->data_dir);
    qc_log_value(pol, sizeof pol, cfg->policies_dir);
    qc_log_value(scr, sizeof scr, cfg->scripts_dir);
    qc_log(QC_LOG_INFO, "server", "started",
           " livekit_url=%s livekit_api_key=%s stt_engine=%s evaluator=%s data=%s open=%s"
           " retention_days=%ld store=%s policies=%s scripts=%s",
           url, key, cfg->stt_engine, cfg->evaluator, data, cfg->api_keys[0] ? "false" : "true", cfg->retention_days,
           store_v, pol, scr);
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
    qc_stt_config stt = {.engine = cfg->stt_engine, .model_dir = cfg->stt_model, .url = cfg->elevenlabs_url,
                         .api_key = cfg->elevenlabs_api_key, .language = "en",
                         .spool_dir = cfg->data_dir};
    s.hub = qc_ingest_hub_new(&loop, &stt, cfg->resample_quality, err, sizeof err);
    if (!s.hub) {
        fprintf(stderr, "quantcoach: stt engine %s: %s\n", cfg->stt_engine, err);
        qc_host_free(s.host);
        qc_host_drain_loop(&loop);
        uv_loop_close(&loop);
        return 1;
    }
    qc_ingest_hub_set_default(s.hub);
    if (qc_host_reload(s.host, err, sizeof err) < 0) {
        fprintf(stderr, "quantcoach: policies rejected: %s\n", err);
        qc_ingest_hub_free(s.hub);
        qc_host_free(s.host);
        qc_host_drain_loop(&loop);
        uv_loop_close(&loop);
        return 1;
    }
    qc_http_server_options o = {
        .host = cfg->listen_host,
        .port = cfg->listen_port,
        .max_body_bytes = cfg->max_body_bytes,
        .request_timeout_ms = cfg->request_timeout_ms,
        .max_connections = (size_t)cfg->max_connections,
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
    qc_host_set_bound_port(s.host, qc_http_server_port(s.srv));

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

    qc_log(QC_LOG_INFO, "server", "listening", " address=%s port=%d version=%s pid=%ld",
           cfg->listen_host, qc_http_server_port(s.srv), QC_VERSION, (long)uv_os_getpid());
    if (!cfg->api_keys[0])
        qc_log(QC_LOG_WARN, "server", "open: no QC_API_KEYS, room and token endpoints need no key (dev mode)",
               " address=%s", cfg->listen_host);
    log_startup(cfg);
    /* Off the request path: purges old token and webhook rows a batch at a time. */
    if (qc_host_start_service(s.host, "qc.retention", err, sizeof err) < 0)
        qc_log(QC_LOG_ERROR, "server", "retention not started", " error=\"%s\"", err);
    /* Closes windows by time on the interview clock in a silence (no final moves it then). */
    if (qc_host_start_service(s.host, "qc.windows_clock", err, sizeof err) < 0)
        qc_log(QC_LOG_ERROR, "server", "windows clock not started", " error=\"%s\"", err);
    qc_log_set_buffered(1);
    uv_run(&loop, UV_RUN_DEFAULT);
    qc_log_set_buffered(0);

    qc_ingest_hub_free(s.hub);
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
    qc_log(QC_LOG_DEBUG, "main", "running script", " script=%s", script);
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

/* quantcoach transcribe --evaluate: the transcript as JSON into a private temporary file,
 * then scripts/evaluate_room.lua --transcript over it in this binary, as `quantcoach run`
 * would: one judgement of recorded files, by the same Lua policies as a live interview. */
static int transcribe_evaluate(qc_transcribe_opts *o, qc_config *cfg) {
    const char *dir = getenv("TMPDIR");
    char path[1024];
    int n = snprintf(path, sizeof path, "%s/quantcoach-transcript-XXXXXX", dir && dir[0] ? dir : "/tmp");
    if (n < 0 || (size_t)n >= sizeof path) return fprintf(stderr, "quantcoach transcribe: TMPDIR too long\n"), 1;
    int fd = mkstemp(path);
    if (fd < 0) return fprintf(stderr, "quantcoach transcribe: %s: %s\n", path, strerror(errno)), 1;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        fprintf(stderr, "quantcoach transcribe: %s: %s\n", path, strerror(errno));
        close(fd);
        unlink(path);
        return 1;
    }
    int md = !o->json;
    o->json = 1;
    o->out = f;
    int rc = qc_transcribe_run(o, cfg);
    if (fclose(f) != 0 && rc == 0) {
        fprintf(stderr, "quantcoach transcribe: %s: %s\n", path, strerror(errno));
        rc = 1;
    }
    if (rc == 0) {
        char script[1200];
        snprintf(script, sizeof script, "%s/evaluate_room.lua", cfg->scripts_dir);
        char *args[8];
        int na = 0;
        args[na++] = "--transcript";
        args[na++] = path;
        args[na++] = "--format";
        args[na++] = md ? "md" : "json";
        if (o->evaluator) args[na++] = "--evaluator", args[na++] = (char *)o->evaluator;
        if (o->policies) args[na++] = "--policies", args[na++] = (char *)o->policies;
        rc = run_lua(cfg, script, na, args);
    }
    unlink(path);
    return rc;
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

static void warn_unknown(const char *name, const char *suggestion, void *ud) {
    (void)ud;
    if (suggestion) qc_log(QC_LOG_WARN, "config", "unknown setting", " name=%s did_you_mean=%s", name, suggestion);
    else qc_log(QC_LOG_WARN, "config", "unknown setting", " name=%s", name);
}

extern char **environ;

/* Reads .env, the log settings and the configuration; 0, or the exit status to leave with.
 * Settings errors exit 2, like usage errors: the command could not be run as given. */
static int load_config(qc_config *cfg) {
    char err[2048];
    if (qc_log_init(err, sizeof err) < 0) return fail("%s", err);
    /* After .env went into the environment: one list covers both. */
    qc_config_each_unknown(environ, warn_unknown, NULL);
    if (qc_config_from_env(cfg, err, sizeof err) < 0) return fail("%s", err);
    qc_store_set_sync_full(cfg->store_sync_full);
    if (cfg->dev_keys_remote)
        qc_log(QC_LOG_WARN, "config", "LiveKit dev keys with a remote LIVEKIT_URL (QC_ALLOW_DEV_KEYS=1)",
               " url=%s key=%s", cfg->livekit_url, cfg->livekit_api_key);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN); /* a client that hangs up must not kill the server */
    char err[2048];
    const char *envfile = getenv("QC_ENV_FILE");
    if (qc_config_load_dotenv(envfile && *envfile ? envfile : ".env", err, sizeof err) < 0)
        return fail("%s", err);

    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    /* These take nothing after them: an extra word is a mistake to name, not to ignore. */
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        if (argc > 2) return usage_error(NULL, "unexpected argument ", argv[2]);
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        if (argc > 2) return usage_error(NULL, "unexpected argument ", argv[2]);
        printf("quantcoach %s\n", QC_VERSION);
        return 0;
    }
    qc_config cfg;
    cmd_flags f;
    int rc;
    if (strcmp(cmd, "serve") == 0 || strcmp(cmd, "check") == 0) {
        int serve = cmd[0] == 's';
        if ((rc = parse_flags(cmd, serve ? OPT_LISTEN | OPT_POLICIES | OPT_DATA : OPT_POLICIES, argc - 2, argv + 2, &f)))
            return rc;
        if (f.help) return fputs(serve ? serve_help : check_help, stdout), 0;
        if ((rc = load_config(&cfg))) return rc;
        apply_flags(&cfg, &f);
        return serve ? cmd_serve(&cfg) : cmd_check(&cfg);
    }
    if (strcmp(cmd, "run") == 0) {
        if (argc < 3) {
            fputs(run_help, stderr);
            return 2;
        }
        if (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0) {
            if (argc > 3) return usage_error("run", "unexpected argument ", argv[3]);
            return fputs(run_help, stdout), 0;
        }
        /* Options of the script come after SCRIPT; before it there are none. */
        if (argv[2][0] == '-' && argv[2][1]) return usage_error("run", "unknown option ", argv[2]);
        if ((rc = load_config(&cfg))) return rc;
        return run_lua(&cfg, argv[2], argc - 3, argv + 3);
    }
    if (strcmp(cmd, "transcribe") == 0) {
        qc_transcribe_opts o;
        if ((rc = qc_transcribe_parse(argc - 2, argv + 2, &o))) return rc;
        if (o.help) return fputs(qc_transcribe_help, stdout), 0;
        if ((rc = load_config(&cfg))) return rc;
        if (!o.evaluate) return qc_transcribe_run(&o, &cfg);
        return transcribe_evaluate(&o, &cfg);
    }
    if (strcmp(cmd, "reload") == 0 || strcmp(cmd, "token") == 0) {
        if ((rc = load_config(&cfg))) return rc;
        char script[1200];
        snprintf(script, sizeof script, "%s/cli/%s.lua", cfg.scripts_dir, cmd);
        return run_lua(&cfg, script, argc - 2, argv + 2);
    }
    char quoted[300];
    snprintf(quoted, sizeof quoted, "\"%s\"", cmd);
    return usage_error(NULL, "unknown command ", quoted);
}
