/* Configuration from the environment and .env; every value has a working default so
 * `quantcoach serve` starts with nothing configured. */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef QC_SOURCE_DIR
#define QC_SOURCE_DIR "."
#endif

/* Every QC_*, LIVEKIT_* and ELEVENLABS_* name quantcoach reads, wherever it reads it
 * (here, log.c, store.c, main.c, scripts/cli, the spec harness). This is the one list: a
 * name set in the environment or .env that is not here gets a start-up warning, so a new
 * setting must be added here as well as read. */
static const char *const known_settings[] = {
    "QC_LISTEN", "QC_POLICIES", "QC_SCRIPTS", "QC_DATA", "QC_API_KEYS", "QC_ADMIN_KEY",
    "QC_CORS_ORIGINS", "QC_MAX_BODY", "QC_LUA_BUDGET_MS", "QC_LUA_MEMORY_MB", "QC_STOP_TIMEOUT",
    "QC_LIVEKIT_TIMEOUT_MS", "QC_STORE_SYNC", "QC_LOG_LEVEL", "QC_LOG_FORMAT", "QC_ENV_FILE",
    "QC_ALLOW_DEV_KEYS", "QC_REQUEST_TIMEOUT_MS", "QC_MAX_CONNECTIONS", "LIVEKIT_URL",
    "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "QC_STT_ENGINE", "QC_STT_MODEL", "QC_PUBLIC_URL",
    "QC_ELEVENLABS_URL", "QC_RESAMPLE_QUALITY", "QC_INGEST_TOKEN_TTL", "QC_EGRESS_RETRIES",
    "QC_LIVE_QUEUE_KB", "QC_RETENTION_DAYS", "QC_EVALUATOR", "QC_LLM_BASE_URL", "QC_LLM_API_KEY", "QC_LLM_MODEL",
    "QC_LLM_TEMPERATURE", "QC_LLM_MAX_TOKENS", "QC_LLM_TIMEOUT_MS", "QC_LLM_RETRIES", "QC_LLM_CONCURRENCY",
    "QC_ANTHROPIC_URL", "QC_ANTHROPIC_MODEL", "QC_ANTHROPIC_VERSION", "QC_STORE_URL", "QC_STORE_POOL",
    /* the Anthropic evaluator's key, the name Anthropic's SDKs read */
    "ANTHROPIC_API_KEY",
    /* refused with its own message (it became QC_LUA_BUDGET_MS) */
    "QC_LUA_BUDGET",
    /* the ElevenLabs STT engine's key, the name ElevenLabs users already have */
    "ELEVENLABS_API_KEY",
    /* read by the spec harness and bench/ (ctest sets them for every spec it runs), so a
     * test run warns about nothing */
    "QC_BIN", "QC_SOURCE_DIR",
};

/* Names people reach for that edit distance alone would not lead back to. */
static const char *const common_mistakes[][2] = {
    {"LIVEKIT_SECRET", "LIVEKIT_API_SECRET"}, {"LIVEKIT_KEY", "LIVEKIT_API_KEY"},
    {"LIVEKIT_HOST", "LIVEKIT_URL"},          {"LIVEKIT_WS_URL", "LIVEKIT_URL"},
    {"LIVEKIT_SERVER_URL", "LIVEKIT_URL"},    {"LIVEKIT_API_URL", "LIVEKIT_URL"},
    {"LIVEKIT_API_HOST", "LIVEKIT_URL"},      {"LIVEKIT_SERVER", "LIVEKIT_URL"},
    {"QC_PORT", "QC_LISTEN"},                 {"QC_HOST", "QC_LISTEN"},
    {"QC_ADDRESS", "QC_LISTEN"},              {"QC_BIND", "QC_LISTEN"},
    {"QC_DATA_DIR", "QC_DATA"},               {"QC_DB", "QC_DATA"},
    {"QC_POLICY_DIR", "QC_POLICIES"},         {"QC_POLICIES_DIR", "QC_POLICIES"},
    {"QC_LOG", "QC_LOG_LEVEL"},               {"QC_CORS", "QC_CORS_ORIGINS"},
    {"QC_ENV", "QC_ENV_FILE"},                {"QC_DOTENV", "QC_ENV_FILE"},
    {"QC_STT", "QC_STT_ENGINE"},              {"QC_ENGINE", "QC_STT_ENGINE"},
    {"QC_EXTERNAL_URL", "QC_PUBLIC_URL"},     {"QC_BASE_URL", "QC_PUBLIC_URL"},
    {"ELEVENLABS_KEY", "ELEVENLABS_API_KEY"}, {"ELEVENLABS_TOKEN", "ELEVENLABS_API_KEY"},
    {"QC_DATABASE_URL", "QC_STORE_URL"},      {"DATABASE_URL", "QC_STORE_URL"},
    {"QC_DB_URL", "QC_STORE_URL"},            {"QC_POSTGRES_URL", "QC_STORE_URL"},
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

int qc_config_is_known(const char *name) {
    for (size_t i = 0; i < NELEM(known_settings); i++)
        if (strcmp(name, known_settings[i]) == 0) return 1;
    return 0;
}

/* Optimal string alignment distance (Levenshtein plus swapping two neighbours), capped:
 * names are short, so three rows on the stack do. */
static size_t edit_distance(const char *a, const char *b) {
    enum { MAXN = 64 };
    size_t la = strlen(a), lb = strlen(b);
    if (la >= MAXN || lb >= MAXN) return (size_t)-1;
    size_t r0[MAXN], r1[MAXN], r2[MAXN]; /* rows i-2, i-1, i */
    for (size_t j = 0; j <= lb; j++) r1[j] = j;
    for (size_t i = 1; i <= la; i++) {
        r2[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t d = r1[j] + 1;
            if (r2[j - 1] + 1 < d) d = r2[j - 1] + 1;
            if (r1[j - 1] + cost < d) d = r1[j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && r0[j - 2] + 1 < d)
                d = r0[j - 2] + 1;
            r2[j] = d;
        }
        memcpy(r0, r1, sizeof r0);
        memcpy(r1, r2, sizeof r1);
    }
    return r1[lb];
}

const char *qc_config_suggest(const char *name) {
    for (size_t i = 0; i < NELEM(common_mistakes); i++)
        if (strcasecmp(name, common_mistakes[i][0]) == 0) return common_mistakes[i][1];
    const char *best = NULL;
    size_t best_d = (size_t)-1, len = strlen(name);
    /* A quarter of the name may be wrong, and at least two characters. */
    size_t limit = len / 4 > 2 ? len / 4 : 2;
    for (size_t i = 0; i < NELEM(known_settings); i++) {
        size_t d = edit_distance(name, known_settings[i]);
        if (d < best_d) best_d = d, best = known_settings[i];
    }
    return best_d <= limit ? best : NULL;
}

int qc_config_each_unknown(char *const *env, void (*fn)(const char *name, const char *suggestion, void *ud),
                           void *ud) {
    static const char *const prefixes[] = {"QC_", "LIVEKIT_", "ELEVENLABS_"};
    int unknown = 0;
    for (; env && *env; env++) {
        const char *eq = strchr(*env, '=');
        size_t nl = eq ? (size_t)(eq - *env) : strlen(*env);
        char name[128];
        if (nl >= sizeof name) nl = sizeof name - 1;
        memcpy(name, *env, nl);
        name[nl] = 0;
        int ours = 0;
        for (size_t i = 0; i < NELEM(prefixes); i++)
            if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0) ours = 1;
        if (!ours || qc_config_is_known(name)) continue;
        unknown++;
        if (fn) fn(name, qc_config_suggest(name), ud);
    }
    return unknown;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

int qc_config_load_dotenv(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        if (strncmp(s, "export ", 7) == 0) s = trim(s + 7);
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected KEY=VALUE", path, lineno);
            fclose(f);
            return -1;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
            val[vl - 1] = 0;
            val++;
        } else {
            char *hash = strstr(val, " #"); /* trailing comment on an unquoted value */
            if (hash) *hash = 0, val = trim(val);
        }
        if (!*key) continue;
        if (!getenv(key)) setenv(key, val, 0);
    }
    fclose(f);
    return 0;
}

static int env_long(const char *name, long def, long min, long *out, char *err, size_t errlen) {
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < min) {
        snprintf(err, errlen, "%s: expected an integer >= %ld, got \"%s\"", name, min, v);
        return -1;
    }
    *out = x;
    return 0;
}

static void env_str(const char *name, const char *def, char *dst, size_t cap) {
    const char *v = getenv(name);
    snprintf(dst, cap, "%s", v && *v ? v : def);
}

/* A setting that names one of a fixed set (exact case: these names also select code and file
 * names). choices ends with NULL; the error lists them as "a, b or c". */
static int env_choice(const char *name, const char *def, const char *const *choices, char *dst, size_t cap,
                      char *err, size_t errlen) {
    env_str(name, def, dst, cap);
    size_t n = 0;
    for (; choices[n]; n++)
        if (strcmp(dst, choices[n]) == 0) return 0;
    int off = snprintf(err, errlen, "%s: expected ", name);
    for (size_t i = 0; i < n && off >= 0 && (size_t)off < errlen; i++)
        off += snprintf(err + off, errlen - (size_t)off, "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ", choices[i]);
    if (off >= 0 && (size_t)off < errlen) snprintf(err + off, errlen - (size_t)off, ", got \"%s\"", dst);
    return -1;
}

/* A URL's host and port: what follows "SCHEME://" (or the whole URL without one) up to a
 * path, a query or a fragment, less any userinfo. Returns its start; *end is its end. */
static const char *url_hostport(const char *url, const char **end) {
    const char *sep = strstr(url, "://");
    const char *p = sep ? sep + 3 : url;
    *end = p + strcspn(p, "/?#");
    const char *at = memchr(p, '@', (size_t)(*end - p));
    return at ? at + 1 : p;
}

/* Whether url's host is this machine: localhost, 127.0.0.0/8 or ::1. A name other than
 * localhost counts as remote: it is not resolved here. */
int qc_config_url_is_loopback(const char *url) {
    const char *end, *p = url_hostport(url, &end);
    char host[256];
    size_t hl;
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close) return 0;
        p++;
        hl = (size_t)(close - p);
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        hl = (size_t)((colon ? colon : end) - p);
    }
    if (hl == 0 || hl >= sizeof host) return 0;
    memcpy(host, p, hl);
    host[hl] = 0;
    if (strcasecmp(host, "localhost") == 0) return 1;
    unsigned char a[16];
    if (inet_pton(AF_INET, host, a) == 1) return a[0] == 127;
    if (inet_pton(AF_INET6, host, a) == 1) {
        static const unsigned char one[16] = {[15] = 1};
        static const unsigned char v4mapped[12] = {[10] = 0xff, [11] = 0xff};
        return memcmp(a, one, 16) == 0 || (memcmp(a, v4mapped, 12) == 0 && a[12] == 127);
    }
    return 0;
}

static int env_flag(const char *name, int *out, char *err, size_t errlen) {
    const char *v = getenv(name);
    *out = 0;
    if (!v || !*v || strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0) return 0;
    if (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0) {
        *out = 1;
        return 0;
    }
    snprintf(err, errlen, "%s: expected 1 or 0, got \"%s\"", name, v);
    return -1;
}

/* LiveKit's dev secret signs tokens anyone can forge: fine against a LiveKit on this
 * machine (`livekit-server --dev`), a mistake against any other, usually a misspelt or
 * missing LIVEKIT_API_SECRET. */
static int check_dev_keys(qc_config *cfg, char *err, size_t errlen) {
    if (strcmp(cfg->livekit_api_secret, "secret") != 0 || qc_config_url_is_loopback(cfg->livekit_url)) return 0;
    int allow;
    if (env_flag("QC_ALLOW_DEV_KEYS", &allow, err, errlen) < 0) return -1;
    if (allow) {
        cfg->dev_keys_remote = 1;
        return 0;
    }
    snprintf(err, errlen,
             "LIVEKIT_URL %s is not this machine, but LIVEKIT_API_KEY/LIVEKIT_API_SECRET are LiveKit's dev "
             "keys (%s/secret): set your project's key pair, or QC_ALLOW_DEV_KEYS=1 to start anyway",
             cfg->livekit_url, cfg->livekit_api_key);
    return -1;
}

/* Whether url starts with one of the NULL-terminated prefixes ("ws://", ...), in any case:
 * the scheme test every URL setting makes. */
static int has_scheme(const char *url, const char *const *prefixes) {
    for (; *prefixes; prefixes++)
        if (strncasecmp(url, *prefixes, strlen(*prefixes)) == 0) return 1;
    return 0;
}

static const char *const WS_SCHEMES[] = {"ws://", "wss://", NULL};
static const char *const HTTP_SCHEMES[] = {"http://", "https://", NULL};
static const char *const ANY_SCHEMES[] = {"ws://", "wss://", "http://", "https://", NULL};

int qc_config_check_livekit_url(const char *url, char *err, size_t errlen) {
    int scheme_ok = has_scheme(url, ANY_SCHEMES);
    /* The host must not be empty, or be only a port. */
    const char *end, *h = url_hostport(url, &end);
    int host_ok = h < end && *h != ':' && !(h[0] == '[' && (h[1] == ']' || !memchr(h, ']', (size_t)(end - h))));
    for (const char *c = h; host_ok && c < end; c++)
        if (isspace((unsigned char)*c) || iscntrl((unsigned char)*c)) host_ok = 0;
    if (scheme_ok && host_ok) return 0;
    snprintf(err, errlen,
             "LIVEKIT_URL: \"%s\" is not a URL LiveKit can be reached at: expected ws://HOST[:PORT] "
             "(or wss, http, https)",
             url);
    return -1;
}

int qc_config_set_listen(qc_config *cfg, const char *value, char *err, size_t errlen) {
    const char *colon = strrchr(value, ':');
    const char *port_s = colon ? colon + 1 : value;
    char *end;
    long port = strtol(port_s, &end, 10);
    if (!*port_s || *end || port < 0 || port > 65535) {
        snprintf(err, errlen, "listen address \"%s\": expected host:port", value);
        return -1;
    }
    if (colon) {
        size_t hl = (size_t)(colon - value);
        if (hl >= sizeof cfg->listen_host) {
            snprintf(err, errlen, "listen address \"%s\": host too long", value);
            return -1;
        }
        if (hl == 0) {
            snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
        } else {
            memcpy(cfg->listen_host, value, hl);
            cfg->listen_host[hl] = 0;
        }
    }
    cfg->listen_port = (int)port;
    return 0;
}

/* Whether url starts with one of the schemes a public URL may have (http, https, ws, wss)
 * and names a host. */
static int public_url_ok(const char *url) {
    if (!has_scheme(url, ANY_SCHEMES)) return 0;
    const char *end, *h = url_hostport(url, &end);
    return h < end && *h != ':';
}

static int audio_settings(qc_config *cfg, char *err, size_t errlen) {
    static const char *const engines[] = {"local", "elevenlabs", "null", NULL};
    if (env_choice("QC_STT_ENGINE", "local", engines, cfg->stt_engine, sizeof cfg->stt_engine, err, errlen) < 0)
        return -1;
    env_str("QC_STT_MODEL", "/usr/share/pocketsphinx/model/en-us", cfg->stt_model, sizeof cfg->stt_model);
    env_str("ELEVENLABS_API_KEY", "", cfg->elevenlabs_api_key, sizeof cfg->elevenlabs_api_key);
    env_str("QC_ELEVENLABS_URL", "wss://api.elevenlabs.io/v1/speech-to-text/realtime", cfg->elevenlabs_url,
            sizeof cfg->elevenlabs_url);
    if (strcmp(cfg->stt_engine, "elevenlabs") == 0 && !cfg->elevenlabs_api_key[0]) {
        snprintf(err, errlen, "QC_STT_ENGINE=elevenlabs needs ELEVENLABS_API_KEY");
        return -1;
    }
    if (!has_scheme(cfg->elevenlabs_url, WS_SCHEMES)) {
        snprintf(err, errlen, "QC_ELEVENLABS_URL: expected ws:// or wss://, got \"%s\"", cfg->elevenlabs_url);
        return -1;
    }
    env_str("QC_PUBLIC_URL", "", cfg->public_url, sizeof cfg->public_url);
    if (cfg->public_url[0] && !public_url_ok(cfg->public_url)) {
        snprintf(err, errlen, "QC_PUBLIC_URL: expected http(s)://HOST[:PORT] or ws(s)://HOST[:PORT], got \"%s\"",
                 cfg->public_url);
        return -1;
    }
    long v;
    if (env_long("QC_RESAMPLE_QUALITY", 3, 0, &v, err, errlen) < 0) return -1;
    if (v > 10) {
        snprintf(err, errlen, "QC_RESAMPLE_QUALITY: expected 0 to 10 (speexdsp), got %ld", v);
        return -1;
    }
    cfg->resample_quality = (int)v;
    if (env_long("QC_INGEST_TOKEN_TTL", 600, 10, &v, err, errlen) < 0) return -1;
    cfg->ingest_token_ttl_s = v;
    if (env_long("QC_EGRESS_RETRIES", 3, 0, &v, err, errlen) < 0) return -1;
    cfg->egress_retries = v;
    if (env_long("QC_LIVE_QUEUE_KB", 1024, 16, &v, err, errlen) < 0) return -1;
    cfg->live_queue_bytes = (size_t)v * 1024;
    return 0;
}

/* The installed layout: PREFIX/bin/quantcoach next to PREFIX/share/quantcoach. Found from
 * /proc/self/exe, so a binary copied with its share/ tree works from anywhere; a build tree
 * has no share/ beside it and falls back to the sources it was built from. */
int qc_config_installed_dir(const char *sub, const char *marker, char *out, size_t cap) {
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return -1;
    exe[n] = 0;
    /* PREFIX is two levels up from the binary: strip "/quantcoach", then "/bin". */
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(exe, '/');
        if (!slash) return -1;
        *slash = 0;
    }
    char probe[2048];
    int l = snprintf(probe, sizeof probe, "%s/share/quantcoach/%s/%s", exe, sub, marker);
    if (l < 0 || (size_t)l >= sizeof probe || access(probe, R_OK) != 0) return -1;
    l = snprintf(out, cap, "%s/share/quantcoach/%s", exe, sub);
    return l < 0 || (size_t)l >= cap ? -1 : 0;
}

void qc_config_default_dir(const char *sub, const char *marker, char *out, size_t cap) {
    if (qc_config_installed_dir(sub, marker, out, cap) == 0) return;
    snprintf(out, cap, "%s/%s", QC_SOURCE_DIR, sub);
}


static int eval_settings(qc_config *cfg, char *err, size_t errlen) {
    static const char *const evaluators[] = {"analytics", "openai", "anthropic", NULL};
    if (env_choice("QC_EVALUATOR", "analytics", evaluators, cfg->evaluator, sizeof cfg->evaluator, err, errlen) < 0)
        return -1;
    env_str("QC_LLM_BASE_URL", "https://api.openai.com/v1", cfg->llm_base_url, sizeof cfg->llm_base_url);
    env_str("QC_LLM_API_KEY", "", cfg->llm_api_key, sizeof cfg->llm_api_key);
    env_str("QC_LLM_MODEL", "gpt-4o-mini", cfg->llm_model, sizeof cfg->llm_model);
    env_str("QC_LLM_TEMPERATURE", "", cfg->llm_temperature, sizeof cfg->llm_temperature);
    env_str("ANTHROPIC_API_KEY", "", cfg->anthropic_api_key, sizeof cfg->anthropic_api_key);
    env_str("QC_ANTHROPIC_URL", "https://api.anthropic.com/v1", cfg->anthropic_url, sizeof cfg->anthropic_url);
    env_str("QC_ANTHROPIC_MODEL", "claude-sonnet-4-5", cfg->anthropic_model, sizeof cfg->anthropic_model);
    env_str("QC_ANTHROPIC_VERSION", "2023-06-01", cfg->anthropic_version, sizeof cfg->anthropic_version);
    if (!has_scheme(cfg->llm_base_url, HTTP_SCHEMES)) {
        snprintf(err, errlen, "QC_LLM_BASE_URL: expected http(s)://HOST[:PORT]/v1, got \"%s\"", cfg->llm_base_url);
        return -1;
    }
    if (!has_scheme(cfg->anthropic_url, HTTP_SCHEMES)) {
        snprintf(err, errlen, "QC_ANTHROPIC_URL: expected http(s)://HOST[:PORT]/v1, got \"%s\"", cfg->anthropic_url);
        return -1;
    }
    if (cfg->llm_temperature[0]) {
        char *end;
        double t = strtod(cfg->llm_temperature, &end);
        if (*end || !(t >= 0 && t <= 2)) {
            snprintf(err, errlen, "QC_LLM_TEMPERATURE: expected a number from 0 to 2, got \"%s\"", cfg->llm_temperature);
            return -1;
        }
    }
    if (strcmp(cfg->evaluator, "anthropic") == 0 && !cfg->anthropic_api_key[0]) {
        snprintf(err, errlen, "QC_EVALUATOR=anthropic needs ANTHROPIC_API_KEY");
        return -1;
    }
    long v;
    if (env_long("QC_LLM_TIMEOUT_MS", 30000, 100, &v, err, errlen) < 0) return -1;
    cfg->llm_timeout_ms = v;
    if (env_long("QC_LLM_RETRIES", 2, 0, &v, err, errlen) < 0) return -1;
    cfg->llm_retries = v > 10 ? 10 : v;
    if (env_long("QC_LLM_CONCURRENCY", 4, 1, &v, err, errlen) < 0) return -1;
    cfg->llm_concurrency = v;
    if (env_long("QC_LLM_MAX_TOKENS", 1000, 0, &v, err, errlen) < 0) return -1;
    cfg->llm_max_tokens = v;
    return 0;
}

/* Appends n bytes of src to out (at *off, capacity cap); -1 when they do not fit. */
static int append(char *out, size_t cap, size_t *off, const char *src, size_t n) {
    if (*off + n >= cap) return -1;
    memcpy(out + *off, src, n);
    *off += n;
    out[*off] = 0;
    return 0;
}

int qc_config_mask_url(const char *url, char *out, size_t cap) {
    size_t off = 0;
    if (cap == 0) return -1;
    out[0] = 0;
    const char *sep = strstr(url, "://");
    const char *p = url;
    if (sep) {
        /* userinfo: from the first ':' to the last '@' of the whole URL. libpq ends it at the
         * first '@' or '/', but a password with a raw '@', '/' or '?' (which should have been
         * percent-encoded) must not show either: masking a port and path too now and then
         * (an '@' in a query parameter) only hides more of a line meant for display. */
        const char *auth = sep + 3, *at = strrchr(auth, '@');
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon) {
            if (append(out, cap, &off, url, (size_t)(colon + 1 - url)) < 0 || append(out, cap, &off, "***", 3) < 0)
                return -1;
            p = at;
        }
    }
    /* query parameters: password=... */
    const char *q = strchr(p, '?');
    if (!q) return append(out, cap, &off, p, strlen(p));
    if (append(out, cap, &off, p, (size_t)(q + 1 - p)) < 0) return -1;
    for (const char *c = q + 1;;) {
        size_t n = strcspn(c, "&#");
        if (n >= 9 && strncasecmp(c, "password=", 9) == 0) {
            if (append(out, cap, &off, c, 9) < 0 || append(out, cap, &off, "***", 3) < 0) return -1;
        } else if (append(out, cap, &off, c, n) < 0) {
            return -1;
        }
        c += n;
        if (*c != '&') return append(out, cap, &off, c, strlen(c));
        if (append(out, cap, &off, "&", 1) < 0) return -1;
        c++;
    }
}

/* QC_STORE_URL and QC_STORE_POOL. The schemes are libpq's own URI prefixes, in its case:
 * libpq would not take "POSTGRES://" as a URI, so neither do we. */
static int store_settings(qc_config *cfg, char *err, size_t errlen) {
    const char *raw = getenv("QC_STORE_URL");
    if (raw && strlen(raw) >= sizeof cfg->store_url) {
        snprintf(err, errlen, "QC_STORE_URL: longer than %zu bytes", sizeof cfg->store_url - 1);
        return -1;
    }
    env_str("QC_STORE_URL", "", cfg->store_url, sizeof cfg->store_url);
    const char *u = cfg->store_url;
    char shown[1100];
    if (qc_config_mask_url(u, shown, sizeof shown) < 0) snprintf(shown, sizeof shown, "(too long)");
    int ctl = 0;
    for (const char *c = u; *c; c++)
        if (iscntrl((unsigned char)*c)) ctl = 1;
    if (!u[0]) {
        cfg->store_postgres = 0;
    } else if (ctl) {
        snprintf(err, errlen, "QC_STORE_URL: holds a control character");
        return -1;
    } else if (strncmp(u, "sqlite:", 7) == 0) {
        if (!u[7]) {
            snprintf(err, errlen, "QC_STORE_URL: sqlite: needs a file path (sqlite:/var/lib/quantcoach/qc.db)");
            return -1;
        }
        cfg->store_postgres = 0;
    } else if (strncmp(u, "postgres://", 11) == 0 || strncmp(u, "postgresql://", 13) == 0) {
        cfg->store_postgres = 1;
    } else {
        snprintf(err, errlen,
                 "QC_STORE_URL: expected sqlite:PATH, postgres://... or postgresql://..., got \"%s\"", shown);
        return -1;
    }
    long v;
    if (env_long("QC_STORE_POOL", 4, 1, &v, err, errlen) < 0) return -1;
    if (v > 64) {
        snprintf(err, errlen, "QC_STORE_POOL: expected 1 to 64 connections, got %ld", v);
        return -1;
    }
    cfg->store_pool = (int)v;
    return 0;
}

int qc_config_from_env(qc_config *cfg, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8000;
    const char *listen = getenv("QC_LISTEN");
    if (listen && *listen && qc_config_set_listen(cfg, listen, err, errlen) < 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, errlen, "QC_LISTEN: %s", why);
        return -1;
    }
    char def[1024];
    qc_config_default_dir("policies", "routes.lua", def, sizeof def);
    env_str("QC_POLICIES", def, cfg->policies_dir, sizeof cfg->policies_dir);
    qc_config_default_dir("scripts", "lib/qc/generation.lua", def, sizeof def);
    env_str("QC_SCRIPTS", def, cfg->scripts_dir, sizeof cfg->scripts_dir);
    env_str("QC_DATA", "./data", cfg->data_dir, sizeof cfg->data_dir);
    env_str("QC_CORS_ORIGINS", "*", cfg->cors_origins, sizeof cfg->cors_origins);
    env_str("QC_ADMIN_KEY", "", cfg->admin_key, sizeof cfg->admin_key);
    env_str("QC_API_KEYS", "", cfg->api_keys, sizeof cfg->api_keys);
    /* LiveKit's own dev-mode defaults (`livekit-server --dev`). */
    env_str("LIVEKIT_URL", "ws://127.0.0.1:7880", cfg->livekit_url, sizeof cfg->livekit_url);
    env_str("LIVEKIT_API_KEY", "devkey", cfg->livekit_api_key, sizeof cfg->livekit_api_key);
    env_str("LIVEKIT_API_SECRET", "secret", cfg->livekit_api_secret, sizeof cfg->livekit_api_secret);
    long v;
    if (env_long("QC_MAX_BODY", 1024 * 1024, 1, &v, err, errlen) < 0) return -1;
    cfg->max_body_bytes = (size_t)v;
    const char *former = getenv("QC_LUA_BUDGET");
    if (former && *former) { /* the former instruction count: say so rather than ignore it */
        snprintf(err, errlen, "QC_LUA_BUDGET is now QC_LUA_BUDGET_MS: CPU milliseconds per call into Lua");
        return -1;
    }
    if (env_long("QC_LUA_BUDGET_MS", 1000, 1, &v, err, errlen) < 0) return -1;
    cfg->lua_budget_ms = v;
    if (env_long("QC_LUA_MEMORY_MB", 512, 8, &v, err, errlen) < 0) return -1;
    cfg->lua_memory_bytes = (size_t)v * 1024 * 1024;
    if (env_long("QC_STOP_TIMEOUT", 10, 0, &v, err, errlen) < 0) return -1;
    cfg->stop_timeout_s = (double)v;
    if (env_long("QC_LIVEKIT_TIMEOUT_MS", 10000, 100, &v, err, errlen) < 0) return -1;
    cfg->livekit_timeout_ms = v;
    if (env_long("QC_REQUEST_TIMEOUT_MS", 15000, 100, &v, err, errlen) < 0) return -1;
    cfg->request_timeout_ms = v;
    if (env_long("QC_MAX_CONNECTIONS", 0, 0, &v, err, errlen) < 0) return -1;
    cfg->max_connections = v;
    /* SQLite's names, in any case, as QC_LOG_LEVEL takes its; anything else would start
     * with a durability the operator did not ask for. */
    const char *sync = getenv("QC_STORE_SYNC");
    if (sync && *sync && strcasecmp(sync, "normal") != 0 && strcasecmp(sync, "full") != 0) {
        snprintf(err, errlen, "QC_STORE_SYNC: expected normal or full, got \"%s\"", sync);
        return -1;
    }
    cfg->store_sync_full = sync && strcasecmp(sync, "full") == 0;
    if (store_settings(cfg, err, errlen) < 0) return -1;
    /* 0 keeps every row; the upper bound only keeps the cutoff's arithmetic sane. */
    if (env_long("QC_RETENTION_DAYS", 90, 0, &v, err, errlen) < 0) return -1;
    if (v > 36500) {
        snprintf(err, errlen, "QC_RETENTION_DAYS: expected 0 (keep forever) to 36500 days, got %ld", v);
        return -1;
    }
    cfg->retention_days = v;
    if (audio_settings(cfg, err, errlen) < 0) return -1;
    if (eval_settings(cfg, err, errlen) < 0) return -1;
    /* Before the dev-keys rule, whose message would otherwise blame the keys for a URL
     * that is not one. */
    if (qc_config_check_livekit_url(cfg->livekit_url, err, errlen) < 0) return -1;
    if (check_dev_keys(cfg, err, errlen) < 0) return -1;
    return 0;
}

int qc_config_list_next(const char **cursor, const char **item, size_t *len) {
    const char *p = *cursor;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        const char *start = p;
        p = e ? e + 1 : p + l;
        while (l && *start == ' ') start++, l--;
        while (l && start[l - 1] == ' ') l--;
        if (l) {
            *cursor = p;
            *item = start;
            *len = l;
            return 1;
        }
    }
    *cursor = p;
    return 0;
}
