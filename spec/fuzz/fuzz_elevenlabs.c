/* libFuzzer harness for what the ElevenLabs engine reads from the network
 * (runtime/stt/elevenlabs.c: the service's JSON messages, through jansson, and what the
 * engine does with them: acknowledgements, word times, errors, reconnects) and for the
 * WebSocket URL parser (runtime/net/ws_client.c). The input is records split at NUL bytes:
 * a record starting with 'A' is audio for the stream (its bytes as s16 samples), 'U' a URL
 * to take apart, anything else a message from the service. Properties besides the
 * sanitizers: every result has text, finals' words lie in order on the stream clock and
 * never before 0; a parsed URL has a host, a path starting with "/" and a port 1..65535.
 * The stream's connection never opens (port 1 on loopback): messages are handed in directly. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <string.h>
#include <uv.h>

#include "net/ws_client.h"
#include "stt/elevenlabs.h"
#include "fuzz_common.h"

static void on_result(void *ud, const qc_stt_result *r) {
    (void)ud;
    if (!r->text) fuzz_fail("a result without text");
    for (size_t i = 0; r->final && i < r->nwords; i++) {
        if (!r->words[i].text) fuzz_fail("a word without text");
        if (!(r->words[i].start_s == r->words[i].start_s)) fuzz_fail("a NaN word time");
    }
}

static void on_state(void *ud, qc_stt_state st, const char *detail) {
    (void)ud;
    (void)detail;
    if ((int)st < QC_STT_CONNECTING || st > QC_STT_CLOSED) fuzz_fail("state %d", (int)st);
}

static uv_loop_t loop;
static qc_stt_engine *engine;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!engine) {
        uv_loop_init(&loop);
        qc_stt_config cfg = {.engine = "elevenlabs", .url = "ws://127.0.0.1:1/v1/speech-to-text/realtime",
                             .api_key = "k", .language = "en"};
        char err[256];
        engine = qc_stt_elevenlabs_new(&loop, &cfg, err, sizeof err);
        if (!engine) fuzz_fail("engine: %s", err);
    }
    qc_stt_callbacks cb = {on_result, on_state};
    char err[256];
    qc_stt_stream *s = engine->ops->open(engine, &cb, NULL, err, sizeof err);
    if (!s) fuzz_fail("open: %s", err);
    /* as if the service had said hello: the engine then sends what it has */
    static const char hello[] = "{\"message_type\":\"session_started\",\"session_id\":\"x\"}";
    qc_stt_elevenlabs_receive(s, hello, sizeof hello - 1);

    size_t at = 0;
    while (at <= size) {
        const uint8_t *end = memchr(data + at, 0, size - at);
        size_t n = end ? (size_t)(end - (data + at)) : size - at;
        const uint8_t *rec = data + at;
        if (n && rec[0] == 'A') {
            int16_t samples[4096];
            size_t k = (n - 1) / 2 > 4096 ? 4096 : (n - 1) / 2;
            memcpy(samples, rec + 1, k * 2);
            /* stretched, so a few bytes make enough audio for the pause detector */
            for (int rep = 0; rep < 8; rep++) engine->ops->write(s, samples, k);
        } else if (n && rec[0] == 'U') {
            char url[2048];
            size_t m = n - 1 < sizeof url - 1 ? n - 1 : sizeof url - 1;
            memcpy(url, rec + 1, m);
            url[m] = 0;
            qc_ws_url u;
            if (qc_ws_url_parse(url, &u, err, sizeof err) == 0) {
                if (!u.host || !u.host[0] || !u.path || u.path[0] != '/' || u.port < 1 || u.port > 65535)
                    fuzz_fail("url %s parsed into host %s path %s port %d", url, u.host, u.path, u.port);
                qc_ws_url_free(&u);
            }
        } else {
            qc_stt_elevenlabs_receive(s, (const char *)rec, n);
        }
        at += n + 1;
    }
    engine->ops->abort(s);
    /* let the aborted connection's resolve finish, so nothing piles up across inputs */
    for (int i = 0; i < 1000 && qc_ws_client_count(); i++) uv_run(&loop, UV_RUN_NOWAIT);
    return 0;
}
