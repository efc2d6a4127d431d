/* The ElevenLabs engine (runtime/stt/elevenlabs.c) against the fake realtime server
 * (spec/support/fake_elevenlabs.js, run with node). The audio encodes words the fake
 * recognises: 100 ms of the constant sample k is the word "w<k>", zeros are silence. With
 * disconnects injected mid-stream (TCP drops, a drop mid-frame, closes 1000 and 1011, an
 * error message, a refused upgrade, a late session_started), the committed words must be
 * exactly the words of the audio, in order, at their true times: none lost, none doubled.
 * Fatal errors (auth in-band, a 401 upgrade) must end in FAILED without retrying. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/http_client.h"
#include "net/ws_client.h"
#include "stt/elevenlabs.h"
#include "stt/stt.h"
#include "tap.h"

extern char **environ;

#define KEY "test-key"
#define WORD_SAMPLES 1600   /* 100 ms */
#define UTTER_WORDS 5
#define PAUSE_SAMPLES 12800 /* 800 ms */
#define UTTERANCES 12
#define NWORDS (UTTER_WORDS * UTTERANCES)

static uv_loop_t loop;
static int fake_port;
static pid_t fake_pid;
static int fake_stdin = -1;

/* ---- the fake ---- */

static int start_fake(const char *order) {
    int out[2], in[2];
    if (pipe(out) || pipe(in)) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    char script[1024];
    snprintf(script, sizeof script, "%s/spec/support/fake_elevenlabs.js", QC_SOURCE_DIR);
    char *argv[] = {"node", script, "--port", "0", "--key", KEY, "--order", (char *)order, NULL};
    if (posix_spawnp(&fake_pid, "node", &fa, NULL, argv, environ) != 0) return -1;
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    close(in[0]);
    fake_stdin = in[1];
    FILE *f = fdopen(out[0], "r");
    char line[256];
    fake_port = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "listening %d", &fake_port) == 1) break;
    /* the fake keeps writing nothing else; leave its stdout open but unread */
    return fake_port ? 0 : -1;
}

static void stop_fake(void) {
    if (fake_pid > 0) {
        kill(fake_pid, SIGTERM);
        waitpid(fake_pid, NULL, 0);
        fake_pid = 0;
    }
    if (fake_stdin >= 0) close(fake_stdin);
    fake_stdin = -1;
}

/* ---- plain HTTP to the fake's control endpoints, on the loop ---- */

static qc_http_client *http;
static int http_done;
static char *http_body;

static void http_cb(const qc_http_result *res, void *ud) {
    (void)ud;
    http_done = 1;
    free(http_body);
    http_body = res->code ? NULL : strndup(res->body, res->body_len);
}

static json_t *control(const char *method, const char *path, const char *body) {
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", fake_port, path);
    qc_http_header h = {"Content-Type", "application/json"};
    qc_http_request req = {.method = method, .url = url, .headers = &h, .nheaders = 1, .body = body,
                           .body_len = body ? strlen(body) : 0, .timeout_ms = 5000};
    char err[200];
    http_done = 0;
    if (qc_http_client_start(http, &req, http_cb, NULL, err, sizeof err) != 0) return NULL;
    while (!http_done) uv_run(&loop, UV_RUN_ONCE);
    return http_body ? json_loads(http_body, 0, NULL) : NULL;
}

/* ---- a stream and what it reports ---- */

typedef struct {
    char words[NWORDS * 2][16];
    double starts[NWORDS * 2];
    size_t nwords;
    size_t finals, partials;
    int state;
    char detail[256];
    int closed;
} sink;

static void on_result(void *ud, const qc_stt_result *r) {
    sink *k = ud;
    if (!r->final) {
        k->partials++;
        return;
    }
    k->finals++;
    for (size_t i = 0; i < r->nwords && k->nwords < NWORDS * 2; i++) {
        snprintf(k->words[k->nwords], sizeof k->words[0], "%s", r->words[i].text);
        k->starts[k->nwords] = r->words[i].start_s;
        k->nwords++;
    }
}

static void on_state(void *ud, qc_stt_state st, const char *detail) {
    sink *k = ud;
    k->state = (int)st;
    if (detail) snprintf(k->detail, sizeof k->detail, "%s", detail);
    if (st == QC_STT_CLOSED) k->closed = 1;
}

static int16_t audio_at(size_t i) {
    size_t utter_len = UTTER_WORDS * 2 * WORD_SAMPLES + PAUSE_SAMPLES;
    size_t u = i / utter_len, r = i % utter_len;
    if (u >= UTTERANCES || r >= UTTER_WORDS * 2 * WORD_SAMPLES) return 0;
    size_t w = r / (2 * WORD_SAMPLES);
    if (r % (2 * WORD_SAMPLES) >= WORD_SAMPLES) return 0;
    return (int16_t)(1000 + u * UTTER_WORDS + w);
}

static double word_start(size_t n) {
    size_t utter_len = UTTER_WORDS * 2 * WORD_SAMPLES + PAUSE_SAMPLES;
    return (double)((n / UTTER_WORDS) * utter_len + (n % UTTER_WORDS) * 2 * WORD_SAMPLES) / QC_STT_RATE;
}

#define TOTAL_SAMPLES ((UTTER_WORDS * 2 * WORD_SAMPLES + PAUSE_SAMPLES) * UTTERANCES)

/* Through the ops table: runtime/stt/stt.c's dispatch belongs to the audio part. */
typedef struct {
    uv_timer_t t;
    qc_stt_engine *e;
    qc_stt_stream *s;
    size_t pos;
    int done;
} feeder;

/* 20 ms pieces, one per millisecond: twenty times real time, as a track hands them over. */
static void feed_tick(uv_timer_t *t) {
    feeder *f = (feeder *)t;
    int16_t buf[320];
    size_t n = TOTAL_SAMPLES - f->pos < 320 ? TOTAL_SAMPLES - f->pos : 320;
    for (size_t i = 0; i < n; i++) buf[i] = audio_at(f->pos + i);
    f->e->ops->write(f->s, buf, n); /* what a full or failed stream refuses is dropped, as a track does */
    f->pos += n;
    if (f->pos >= TOTAL_SAMPLES) {
        uv_timer_stop(t);
        f->e->ops->finish(f->s);
        f->done = 1;
    }
}

static void run_until(int *flag, double seconds) {
    uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);
    while (!*flag && uv_hrtime() < end) uv_run(&loop, UV_RUN_ONCE);
}

typedef struct {
    uv_timer_t t;
    int fired;
} waiter;

static void wait_tick(uv_timer_t *t) { ((waiter *)t)->fired = 1; }

static void run_for(double seconds) {
    waiter w = {.fired = 0};
    uv_timer_init(&loop, &w.t);
    uv_timer_start(&w.t, wait_tick, (uint64_t)(seconds * 1000), 0);
    run_until(&w.fired, seconds + 5);
    uv_close((uv_handle_t *)&w.t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static qc_stt_engine *engine(const char *key) {
    char url[128], err[256];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/v1/speech-to-text/realtime", fake_port);
    qc_stt_config cfg = {.engine = "elevenlabs", .url = url, .api_key = key, .language = "en"};
    qc_stt_engine *e = qc_stt_elevenlabs_new(&loop, &cfg, err, sizeof err);
    if (!e) printf("# engine: %s\n", err);
    return e;
}

/* Streams the whole audio through a new stream; the sink has what came back. */
static void transcribe(qc_stt_engine *e, sink *k) {
    memset(k, 0, sizeof *k);
    qc_stt_callbacks cb = {on_result, on_state};
    char err[256];
    qc_stt_stream *s = e->ops->open(e, &cb, k, err, sizeof err);
    if (!s) {
        printf("# open: %s\n", err);
        return;
    }
    feeder f = {.e = e, .s = s};
    uv_timer_init(&loop, &f.t);
    uv_timer_start(&f.t, feed_tick, 1, 1);
    run_until(&k->closed, 120);
    if (!f.done) {
        uv_timer_stop(&f.t);
        if (!k->closed) e->ops->abort(s);
    }
    uv_close((uv_handle_t *)&f.t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static int words_exact(const sink *k, const char *what) {
    int good = k->nwords == NWORDS;
    double worst = 0;
    for (size_t i = 0; good && i < NWORDS; i++) {
        char want[16];
        snprintf(want, sizeof want, "w%zu", (size_t)1000 + i);
        if (strcmp(want, k->words[i]) != 0) {
            printf("# %s: word %zu is %s, want %s\n", what, i, k->words[i], want);
            good = 0;
        }
        double d = fabs(k->starts[i] - word_start(i));
        if (d > worst) worst = d;
    }
    if (k->nwords != NWORDS) printf("# %s: %zu words, want %d\n", what, k->nwords, NWORDS);
    char name[200];
    snprintf(name, sizeof name, "%s: every word once, in order", what);
    ok(good, name);
    snprintf(name, sizeof name, "%s: word times on the stream clock (worst error %.4f s)", what, worst);
    ok(good && worst < 0.002, name);
    return good;
}

static size_t nconnections(void) {
    json_t *c = control("GET", "/_fake/connections", NULL);
    size_t n = json_array_size(c);
    json_decref(c);
    return n;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    uv_loop_init(&loop);
    char err[256];
    http = qc_http_client_new(&loop, err, sizeof err);
    if (start_fake("alternate") < 0) {
        printf("not ok 1 - the fake ElevenLabs server starts (node spec/support/fake_elevenlabs.js)\n");
        return 1;
    }

    qc_stt_engine *e = engine(KEY);
    ok(e != NULL, "the engine is made with a key and a ws:// url");
    sink k;

    /* 1: no faults */
    transcribe(e, &k);
    ok(k.closed, "no faults: the stream finishes and reports CLOSED");
    words_exact(&k, "no faults");
    ok(k.partials > 0, "no faults: partials arrive while utterances are open");
    qc_stt_stats st;
    e->ops->stats(e, &st);
    ok(st.reconnects == 0 && st.replayed_s == 0, "no faults: no reconnect, nothing replayed");
    ok(st.streams == 0, "no faults: the finished stream is gone from the count");
    json_t *conns = control("GET", "/_fake/connections", NULL);
    json_t *c0 = json_array_get(conns, 0);
    ok(json_integer_value(json_object_get(c0, "commits")) >= UTTERANCES,
       "no faults: one commit per pause at least (manual commits at pauses)");
    json_t *q = json_object_get(c0, "query");
    ok(!strcmp(json_string_value(json_object_get(q, "commit_strategy")) ?: "", "manual") &&
           !strcmp(json_string_value(json_object_get(q, "include_timestamps")) ?: "", "true") &&
           !strcmp(json_string_value(json_object_get(q, "audio_format")) ?: "", "pcm_16000"),
       "no faults: the query asks for manual commits, timestamps and pcm_16000");
    ok(json_array_size(json_object_get(c0, "errors")) == 0, "no faults: the fake found no fault in our frames");
    json_decref(conns);

    /* 2: every kind of disconnect, one per connection */
    json_decref(control("POST", "/_fake/reset", "{}"));
    json_decref(control("POST", "/_fake/script",
                        "{\"refuse\":1,\"connections\":["
                        "{\"drop_after_chunks\":12},"
                        "{\"close_after_chunks\":9,\"code\":1011,\"reason\":\"internal\"},"
                        "{\"delay_session_ms\":700,\"error_after_chunks\":10,\"error\":\"transcriber_error\"},"
                        "{\"drop_mid_frame_after_chunks\":11},"
                        "{\"close_after_chunks\":14,\"code\":1000},"
                        "{\"error_after_chunks\":8,\"error\":\"resource_exhausted\"},"
                        "{}]}"));
    transcribe(e, &k);
    ok(k.closed, "disconnects: the stream still finishes");
    words_exact(&k, "disconnects");
    qc_stt_stats st2;
    e->ops->stats(e, &st2);
    ok(st2.reconnects >= 7, "disconnects: a reconnect for each injected loss and the refused upgrade");
    ok(st2.replayed_s > 0, "disconnects: audio not yet committed was replayed");
    conns = control("GET", "/_fake/connections", NULL);
    /* A connection after text was committed carries its tail (the fake may have sent a
     * commit the drop kept from us, so the one right after a loss may not). */
    int with_prev = 0, prev_ok = 1, errors = 0;
    for (size_t i = 0; i < json_array_size(conns); i++) {
        json_t *c = json_array_get(conns, i);
        errors += (int)json_array_size(json_object_get(c, "errors"));
        json_t *pt = json_object_get(c, "previous_text");
        if (json_is_string(pt)) {
            with_prev++;
            size_t n = strlen(json_string_value(pt));
            if (n == 0 || n >= 50 || json_string_value(pt)[0] == ' ') prev_ok = 0;
        }
    }
    prev_ok = prev_ok && with_prev + 2 >= (int)json_array_size(conns);
    ok(json_array_size(conns) >= 7 && prev_ok, "disconnects: each new connection starts with previous_text under 50 chars");
    ok(errors == 2, "disconnects: the fake saw no input_error of ours (only the two injected errors)");
    if (errors != 2) printf("# errors seen: %d\n", errors);
    json_decref(conns);

    /* 3: commits throttled on one connection: the text still all arrives, once */
    json_decref(control("POST", "/_fake/reset", "{}"));
    json_decref(control("POST", "/_fake/script", "{\"connections\":[{\"commit_throttle_ms\":300}]}"));
    transcribe(e, &k);
    words_exact(&k, "commit_throttled");

    /* 4: an in-band auth error fails the stream and is not retried */
    qc_stt_engine *bad = engine("wrong-key");
    json_decref(control("POST", "/_fake/reset", "{}"));
    transcribe(bad, &k);
    ok(k.closed && strstr(k.detail, "auth_error") != NULL, "auth_error: the stream ends FAILED with the service's error");
    run_for(1.5);
    ok(nconnections() == 1, "auth_error: no second connection after a fatal error");
    qc_stt_stats sb;
    bad->ops->stats(bad, &sb);
    ok(!strncmp(sb.state, "failed: auth_error", 18), "auth_error: the engine's state says failed and why");

    /* 5: a 401 upgrade fails the stream too */
    json_decref(control("POST", "/_fake/reset", "{}"));
    json_decref(control("POST", "/_fake/script", "{\"auth\":\"upgrade\"}"));
    transcribe(bad, &k);
    ok(k.closed && strstr(k.detail, "401") != NULL, "401 upgrade: the stream ends FAILED naming the status");
    run_for(1.5);
    ok(nconnections() == 0, "401 upgrade: no websocket was ever opened, and no retry");
    bad->ops->free(bad);
    printf("# connections left %zu\n", qc_ws_client_count());

    /* 6: abort mid-stream calls nothing more */
    json_decref(control("POST", "/_fake/reset", "{}"));
    memset(&k, 0, sizeof k);
    qc_stt_callbacks cb = {on_result, on_state};
    qc_stt_stream *s = e->ops->open(e, &cb, &k, err, sizeof err);
    int16_t tone[3200];
    for (int i = 0; i < 3200; i++) tone[i] = 1500;
    e->ops->write(s, tone, 3200);
    ok(qc_stt_elevenlabs_room(s) == 45 * 16000 - 3200, "room: the ring's free samples, less what is not yet acknowledged");
    run_for(0.3);
    size_t before = k.finals + k.partials;
    e->ops->abort(s);
    run_for(0.5);
    ok(k.finals + k.partials == before && !k.closed, "abort: no callback after it returns");
    printf("# connections left %zu\n", qc_ws_client_count());

    e->ops->free(e);
    qc_http_client_close(http);
    qc_ws_client_shutdown();
    /* the loop runs until lws' context and every handle are gone */
    for (int i = 0; i < 200 && uv_run(&loop, UV_RUN_NOWAIT); i++) uv_sleep(5);
    ok(qc_ws_client_count() == 0, "no websocket connection is left");
    int rc = uv_loop_close(&loop);
    ok(rc == 0, "the loop closes: nothing of lws or the engine is left on it");
    stop_fake();
    free(http_body);
    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
