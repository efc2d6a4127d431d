/* Configuration from the environment and .env; every value has a working default so
 * `quantcoach serve` starts with nothing configured. */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef QC_SOURCE_DIR
#define QC_SOURCE_DIR "."
#endif

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

int qc_config_from_env(qc_config *cfg, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8000;
    const char *listen = getenv("QC_LISTEN");
    if (listen && *listen && qc_config_set_listen(cfg, listen, err, errlen) < 0) return -1;
    env_str("QC_POLICIES", QC_SOURCE_DIR "/policies", cfg->policies_dir, sizeof cfg->policies_dir);
    env_str("QC_SCRIPTS", QC_SOURCE_DIR "/scripts", cfg->scripts_dir, sizeof cfg->scripts_dir);
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
    if (getenv("QC_LUA_BUDGET")) { /* the former instruction count: say so rather than ignore it */
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
