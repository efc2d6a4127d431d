/* libFuzzer harness for JSON bodies into the Lua handlers: each input becomes one request
 * handed to the host (qc_host_handle_http, then generation.lua's dispatch, the real routes
 * and handlers), without sockets: the exchange is this file's own, standing in for
 * http_server.c's, so the fuzzer's time goes to Lua. The loop runs until the answer.
 * The first byte picks the request (low two bits) and whether it says
 * Content-Type: application/json (bit 2 clear) or nothing; the rest is the body:
 *   0: POST /tokens/generate
 *   1: POST /rooms/create (LiveKit is a closed port: a valid body gets a fast 503)
 *   2: POST /webhooks/livekit, signed by the harness for exactly this body, so the JSON
 *      decode and what follows it run
 *   3: POST /webhooks/livekit, the body's first line as the Authorization header
 * Properties: every answer has a status from 200 to 599; every error answer is the JSON
 * {"error":{"code":...,"message":...}}; and no answer is a 500: input the handlers do not
 * accept is the client's mistake (4xx), and a 500 means a handler raised on it. */
#include "fuzz_host.h"

#include <time.h>

struct qc_http_exchange {
    int responded;
    int status;
    int signed_webhook;
    const char *path;
};


/* Every exchange accessor the host calls is defined here, so the linker never pulls in
 * runtime/net/http_server.c, whose definitions would clash with these. */
const char *qc_http_exchange_path(const qc_http_exchange *ex) { return ex->path; }
const char *qc_http_exchange_method(const qc_http_exchange *ex) {
    (void)ex;
    return "POST";
}
const char *qc_http_exchange_header(const qc_http_exchange *ex, const char *name) {
    (void)ex, (void)name;
    return NULL;
}
void qc_http_exchange_set_route(qc_http_exchange *ex, const char *route) { (void)ex, (void)route; }

void qc_http_exchange_respond(qc_http_exchange *ex, int status, const qc_http_header *headers, size_t nheaders,
                              const char *body, size_t body_len) {
    if (ex->responded) fuzz_fail("%s answered twice", ex->path);
    ex->responded = 1;
    ex->status = status;
    if (status < 200 || status > 599) fuzz_fail("%s answered status %d", ex->path, status);
    if (status < 400) return;
    int json = 0;
    for (size_t i = 0; i < nheaders; i++)
        if (strcmp(headers[i].name, "content-type") == 0 && strstr(headers[i].value, "json")) json = 1;
    char *b = strndup(body, body_len);
    if (!b) abort();
    if (!json || strncmp(b, "{\"error\":{", 10) != 0 || !strstr(b, "\"code\":\"") || !strstr(b, "\"message\":"))
        fuzz_fail("%s answered %d with a body that is not a JSON error: %s", ex->path, status, b);
    if (status == 500) fuzz_fail("%s answered 500 %s: a handler raised on this input (see the log line above)", ex->path, b);
    free(b);
}

/* The upgraded-connection half of the server, which runtime/net/websocket.c calls: no request
 * here asks for a WebSocket, so none may reach these. Defined so the linker takes nothing of
 * http_server.c. */
qc_http_conn *qc_http_exchange_upgrade(qc_http_exchange *ex, const char *head, size_t head_len,
                                       const qc_http_upgrade_ops *h, void *ud) {
    (void)head, (void)head_len, (void)h, (void)ud;
    fuzz_fail("%s was upgraded, but no fuzz request asks for a WebSocket", ex->path);
    return NULL;
}
uv_stream_t *qc_http_conn_stream(qc_http_conn *c) { (void)c; abort(); }
void qc_http_conn_timer(qc_http_conn *c, uint64_t ms) { (void)c, (void)ms; abort(); }
void qc_http_conn_read(qc_http_conn *c, int on) { (void)c, (void)on; abort(); }
void qc_http_conn_close(qc_http_conn *c) { (void)c; abort(); }
const char *qc_http_conn_peer(const qc_http_conn *c) { (void)c; abort(); }

static uv_loop_t loop;
static qc_config cfg;
static qc_host *host;

static char *sign_webhook(const uint8_t *body, size_t len) {
    char sha[45], claims[256], err[256];
    if (qc_jwt_sha256_base64(body, len, sha) < 0) fuzz_fail("sha256 failed");
    long now = (long)time(NULL);
    snprintf(claims, sizeof claims, "{\"exp\":%ld,\"iss\":\"%s\",\"nbf\":%ld,\"sha256\":\"%s\"}", now + 600,
             FUZZ_LK_KEY, now - 10, sha);
    char *tok = NULL;
    if (qc_jwt_sign_object(claims, strlen(claims), FUZZ_LK_SECRET, &tok, err, sizeof err) < 0) fuzz_fail("%s", err);
    return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!host) host = fuzz_host_start(&loop, &cfg);
    if (size < 1) return 0;
    static const char *paths[] = {"/tokens/generate", "/rooms/create", "/webhooks/livekit", "/webhooks/livekit"};
    int which = data[0] & 3, no_ctype = data[0] & 4;
    data++, size--;

    qc_http_header headers[2];
    size_t nh = 0;
    if (!no_ctype) headers[nh++] = (qc_http_header){"content-type", "application/json"};
    char *auth = NULL;
    if (which == 2) {
        auth = sign_webhook(data, size);
    } else if (which == 3) {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t alen = nl ? (size_t)(nl - data) : size;
        auth = strndup((const char *)data, alen);
        data += nl ? alen + 1 : alen;
        size -= nl ? alen + 1 : alen;
    }
    if (auth) headers[nh++] = (qc_http_header){"authorization", auth};

    /* Its own allocation, so a read past the body is caught. */
    char *body = malloc(size + 1);
    memcpy(body, data, size);
    body[size] = 0;
    qc_http_exchange ex = {.path = paths[which], .signed_webhook = which == 2};
    qc_http_incoming req = {
        .method = "POST", .path = ex.path, .query = "", .headers = headers, .nheaders = nh,
        .body = body, .body_len = size, .peer = "127.0.0.1",
    };
    qc_host_handle_http(host, &ex, &req);
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    while (!ex.responded) {
        if (uv_run(&loop, UV_RUN_ONCE) == 0 && !ex.responded)
            fuzz_fail("%s: the request waits on nothing that can wake it", ex.path);
        if (uv_hrtime() > deadline) fuzz_fail("%s: no answer within 5 s", ex.path);
    }
    uv_run(&loop, UV_RUN_NOWAIT); /* the group commit of deferred writes */
    free(body);
    free(auth);
    return 0;
}
