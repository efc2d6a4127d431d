/* Configuration: defaults, then the environment, then a .env file (which never overrides
 * what the environment already set), then command-line flags (applied by main.c). */
#ifndef QC_CONFIG_H
#define QC_CONFIG_H

#include <stddef.h>

typedef struct {
    char listen_host[256];
    int listen_port;
    char policies_dir[1024];
    char scripts_dir[1024];
    char data_dir[1024];
    size_t max_body_bytes;       /* QC_MAX_BODY, bytes */
    long lua_budget_ms;          /* QC_LUA_BUDGET_MS, CPU milliseconds per call into Lua */
    size_t lua_memory_bytes;     /* QC_LUA_MEMORY_MB */
    double stop_timeout_s;       /* QC_STOP_TIMEOUT: graceful stop waits this long at most */
    char cors_origins[1024];     /* QC_CORS_ORIGINS: "*" or a comma-separated list */
    char admin_key[256];         /* QC_ADMIN_KEY: lets /admin/reload be called off loopback */
    char api_keys[2048];         /* QC_API_KEYS: comma-separated; empty = open (dev mode) */
    char livekit_url[512];       /* LIVEKIT_URL */
    char livekit_api_key[256];   /* LIVEKIT_API_KEY */
    char livekit_api_secret[512];/* LIVEKIT_API_SECRET */
    long livekit_timeout_ms;     /* QC_LIVEKIT_TIMEOUT_MS: every LiveKit API call, bounded */
    long request_timeout_ms;     /* QC_REQUEST_TIMEOUT_MS: head and body of a request arrive within it */
    long max_connections;        /* QC_MAX_CONNECTIONS: client connections; 0 = from the descriptor limit */
    int store_sync_full;         /* QC_STORE_SYNC: 0 normal, 1 full (qc_store_set_sync_full) */
    char store_url[1024];        /* QC_STORE_URL: "" = SQLite in data_dir, sqlite:PATH, postgres(ql)://... */
    int store_postgres;          /* store_url is a PostgreSQL URI */
    int store_pool;              /* QC_STORE_POOL: PostgreSQL query connections, 1..64 */
    /* Audio (issue 9). */
    char stt_engine[16];         /* QC_STT_ENGINE: local (default), elevenlabs, null */
    char stt_model[1024];        /* QC_STT_MODEL: pocketsphinx model directory (local engine) */
    char public_url[512];        /* QC_PUBLIC_URL: where LiveKit's egress reaches us; "" = the listen address */
    char elevenlabs_url[512];    /* QC_ELEVENLABS_URL: the realtime STT endpoint */
    char elevenlabs_api_key[256];/* ELEVENLABS_API_KEY */
    int resample_quality;        /* QC_RESAMPLE_QUALITY: speexdsp quality 0..10 */
    long ingest_token_ttl_s;     /* QC_INGEST_TOKEN_TTL: lifetime of the token in an egress's URL */
    long egress_retries;         /* QC_EGRESS_RETRIES: restarts of a failed track egress */
    size_t live_queue_bytes;     /* QC_LIVE_QUEUE_KB: unsent bytes a live client may hold before it is closed */
    long retention_days;         /* QC_RETENTION_DAYS: token and webhook rows older are purged; 0 = never */
    /* Windows and evaluation (issue 10). */
    char evaluator[16];          /* QC_EVALUATOR: analytics (default), openai, anthropic */
    char llm_base_url[512];      /* QC_LLM_BASE_URL: an OpenAI-compatible API, /v1 included */
    char llm_api_key[512];       /* QC_LLM_API_KEY */
    char llm_model[128];         /* QC_LLM_MODEL */
    char llm_temperature[16];    /* QC_LLM_TEMPERATURE: "" = not sent */
    char anthropic_api_key[512]; /* ANTHROPIC_API_KEY */
    char anthropic_url[512];     /* QC_ANTHROPIC_URL: the Messages API base, /v1 included */
    char anthropic_model[128];   /* QC_ANTHROPIC_MODEL */
    char anthropic_version[32];  /* QC_ANTHROPIC_VERSION: the anthropic-version header */
    long llm_timeout_ms;         /* QC_LLM_TIMEOUT_MS: one attempt of an evaluation request */
    long llm_retries;            /* QC_LLM_RETRIES: retries on 408/409/429/5xx and transport failures */
    long llm_concurrency;        /* QC_LLM_CONCURRENCY: requests at once per LLM server */
    long llm_max_tokens;         /* QC_LLM_MAX_TOKENS: the reply's token limit; 0 = not sent (OpenAI shape) */
    int dev_keys_remote;         /* LiveKit's dev secret on a remote LIVEKIT_URL, allowed by
                                    QC_ALLOW_DEV_KEYS=1 (otherwise qc_config_from_env fails) */
} qc_config;

/* Loads a .env file into the environment (KEY=VALUE lines, # comments, optional quotes,
 * optional `export `). Variables already set are kept. Missing file is not an error. */
int qc_config_load_dotenv(const char *path, char *err, size_t errlen);

/* Fills cfg from defaults and the environment. Fails, naming the variable, on a value it
 * cannot use, and on LiveKit's dev secret with a LIVEKIT_URL that is not this machine
 * unless QC_ALLOW_DEV_KEYS=1. */
int qc_config_from_env(qc_config *cfg, char *err, size_t errlen);

/* Walks a comma-separated setting (QC_API_KEYS, QC_CORS_ORIGINS): each call yields the
 * next item, trimmed of spaces, and returns 0 when there is none left. */
int qc_config_list_next(const char **cursor, const char **item, size_t *len);

/* Whether name is a setting quantcoach reads (the one list is in config.c). */
int qc_config_is_known(const char *name);

/* The known setting an unknown name most likely means (a table of common mistakes, then
 * the nearest by edit distance), or NULL when none is close. */
const char *qc_config_suggest(const char *name);

/* Calls fn for each NAME=VALUE entry of env (a NULL-terminated list such as environ) whose
 * NAME starts with QC_, LIVEKIT_ or ELEVENLABS_ and is not known; suggestion may be NULL.
 * Returns how many there were. */
int qc_config_each_unknown(char *const *env, void (*fn)(const char *name, const char *suggestion, void *ud),
                           void *ud);

/* Whether url is SCHEME://HOST[:PORT][/PATH] with a scheme of ws, wss, http or https (any
 * case) and a host: 0, or -1 with a message naming LIVEKIT_URL and the expected form. */
int qc_config_check_livekit_url(const char *url, char *err, size_t errlen);

/* Whether a URL's host is this machine (localhost, 127.0.0.0/8, ::1). */
int qc_config_url_is_loopback(const char *url);

/* Where `sub` (scripts, policies, web) is when QC_SCRIPTS / QC_POLICIES do not say:
 * PREFIX/share/quantcoach/SUB when the binary is PREFIX/bin/quantcoach and SUB holds
 * `marker` (an installed tree, wherever it was moved), else the compiled-in source tree. */
void qc_config_default_dir(const char *sub, const char *marker, char *out, size_t cap);

/* Just the installed layout: 0 and out filled, or -1 when the binary is not in one. */
int qc_config_installed_dir(const char *sub, const char *marker, char *out, size_t cap);

/* url with any password (a libpq URI's userinfo password, a password= parameter) replaced
 * by "***", for logs and /health. 0, or -1 when it does not fit in out. */
int qc_config_mask_url(const char *url, char *out, size_t cap);

/* Parses "host:port", ":port" or "port" into cfg. */
int qc_config_set_listen(qc_config *cfg, const char *value, char *err, size_t errlen);

#endif
