/* qc.host: what the running host knows about itself (generation, reload state, config)
 * and the reload entry point for POST /admin/reload. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stddef.h>
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "host/bindings.h"
#include "host/host.h"
#include "host/task.h"
#include "net/http_error.h"
#include "jwt_hs256.h"

#ifndef QC_VERSION
#define QC_VERSION "0.0.0"
#endif

typedef struct {
    uv_timer_t timer; /* first: see task.h on handle ownership */
    qc_task *task;
} reload_req;

static void reload_closed(uv_handle_t *h) { free(h->data); }

/* Runs between events, on the loop, never inside a Lua call. */
static void reload_now(uv_timer_t *timer) {
    reload_req *r = timer->data;
    qc_task *t = r->task;
    qc_host *h = qc_task_host(t);
    uv_close((uv_handle_t *)timer, reload_closed);
    char err[2048];
    lua_State *co = qc_task_thread(t);
    if (qc_host_reload(h, err, sizeof err) == 0) {
        lua_pushinteger(co, qc_host_generation(h));
        lua_pushnil(co);
        lua_pushnil(co);
    } else {
        lua_pushnil(co);
        lua_pushstring(co, err);
        lua_pushstring(co, "POLICY_REJECTED");
    }
    qc_task_resume(t, 3);
}

/* qc.host.reload() -> generation | nil, message, "POLICY_REJECTED" */
static int l_reload(lua_State *L) {
    qc_task *t = qc_task_current(L);
    if (!t) return luaL_error(L, "qc.host.reload: must be called from a task");
    reload_req *r = malloc(sizeof *r);
    if (!r) return luaL_error(L, "qc.host.reload: out of memory");
    r->task = t;
    uv_timer_init(qc_task_loop(t), &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, reload_now, 0, 0);
    return qc_task_yield(L);
}

/* qc.host.health() -> generation, reloaded_at, reload_error|nil, started_at: what /health
 * reports, as values rather than a table (it is polled often). */
static int l_health(lua_State *L) {
    qc_host *h = qc_bindings_host(L);
    lua_pushinteger(L, qc_host_generation(h));
    lua_pushnumber(L, qc_host_reloaded_at(h));
    const char *e = qc_host_reload_error(h);
    if (*e) lua_pushstring(L, e);
    else lua_pushnil(L);
    lua_pushnumber(L, qc_host_started_at(h));
    return 4;
}

static int l_config(lua_State *L) {
    const qc_config *c = qc_host_config(qc_bindings_host(L));
    lua_createtable(L, 0, 8);
    lua_pushfstring(L, "%s:%d", c->listen_host, c->listen_port);
    lua_setfield(L, -2, "listen");
    lua_pushstring(L, c->data_dir);
    lua_setfield(L, -2, "data_dir");
    lua_pushstring(L, c->policies_dir);
    lua_setfield(L, -2, "policies_dir");
    lua_pushstring(L, c->scripts_dir);
    lua_setfield(L, -2, "scripts_dir");
    lua_pushstring(L, c->cors_origins);
    lua_setfield(L, -2, "cors_origins");
    lua_pushboolean(L, c->admin_key[0] != 0);
    lua_setfield(L, -2, "admin_key_set");
    lua_pushstring(L, QC_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, c->livekit_url);
    lua_setfield(L, -2, "livekit_url");
    lua_pushstring(L, c->livekit_api_key);
    lua_setfield(L, -2, "livekit_api_key");
    lua_pushstring(L, c->livekit_api_secret);
    lua_setfield(L, -2, "livekit_api_secret");
    lua_pushnumber(L, (double)c->livekit_timeout_ms / 1000.0);
    lua_setfield(L, -2, "livekit_timeout");
    lua_pushstring(L, c->stt_engine);
    lua_setfield(L, -2, "stt_engine");
    lua_pushstring(L, c->public_url);
    lua_setfield(L, -2, "public_url");
    lua_pushstring(L, c->listen_host);
    lua_setfield(L, -2, "listen_host");
    lua_pushinteger(L, c->listen_port);
    lua_setfield(L, -2, "listen_port");
    lua_pushinteger(L, c->ingest_token_ttl_s);
    lua_setfield(L, -2, "ingest_token_ttl");
    lua_pushinteger(L, c->egress_retries);
    lua_setfield(L, -2, "egress_retries");
    lua_pushinteger(L, (lua_Integer)c->live_queue_bytes);
    lua_setfield(L, -2, "live_queue_bytes");
    lua_pushinteger(L, c->resample_quality);
    lua_setfield(L, -2, "resample_quality");
    lua_pushinteger(L, c->retention_days);
    lua_setfield(L, -2, "retention_days");
    /* QC_STORE_URL as given (nil when unset: SQLite in data_dir), and the same with its
     * password masked, for /health and logs. */
    if (c->store_url[0]) {
        char shown[1200];
        lua_pushstring(L, c->store_url);
        lua_setfield(L, -2, "store_url");
        if (qc_config_mask_url(c->store_url, shown, sizeof shown) < 0) snprintf(shown, sizeof shown, "(too long)");
        lua_pushstring(L, shown);
        lua_setfield(L, -2, "store_url_masked");
    }
    lua_pushinteger(L, c->store_pool);
    lua_setfield(L, -2, "store_pool");
    /* Windows and evaluation: the evaluator and its LLM endpoint (keys included: the
     * evaluation runner sends them; policies never see qc.host). */
    static const struct { const char *name; size_t off; } strs[] = {
        {"evaluator", offsetof(qc_config, evaluator)},
        {"llm_base_url", offsetof(qc_config, llm_base_url)},
        {"llm_api_key", offsetof(qc_config, llm_api_key)},
        {"llm_model", offsetof(qc_config, llm_model)},
        {"llm_temperature", offsetof(qc_config, llm_temperature)},
        {"anthropic_api_key", offsetof(qc_config, anthropic_api_key)},
        {"anthropic_url", offsetof(qc_config, anthropic_url)},
        {"anthropic_model", offsetof(qc_config, anthropic_model)},
        {"anthropic_version", offsetof(qc_config, anthropic_version)},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        lua_pushstring(L, (const char *)c + strs[i].off);
        lua_setfield(L, -2, strs[i].name);
    }
    lua_pushinteger(L, c->llm_timeout_ms);
    lua_setfield(L, -2, "llm_timeout_ms");
    lua_pushinteger(L, c->llm_retries);
    lua_setfield(L, -2, "llm_retries");
    lua_pushinteger(L, c->llm_concurrency);
    lua_setfield(L, -2, "llm_concurrency");
    lua_pushinteger(L, c->llm_max_tokens);
    lua_setfield(L, -2, "llm_max_tokens");
    /* API keys are not handed out; qc.host.check_api_key compares them. */
    lua_pushboolean(L, c->api_keys[0] != 0);
    lua_setfield(L, -2, "api_keys_set");
    return 1;
}

/* qc.host.listen_address() -> host, port: where the HTTP server listens, with the port it
 * bound (the configured one may be 0); in scripts, the configured address. */
static int l_listen_address(lua_State *L) {
    qc_host *h = qc_bindings_host(L);
    lua_pushstring(L, qc_host_config(h)->listen_host);
    lua_pushinteger(L, qc_host_bound_port(h));
    return 2;
}

/* qc.host.shared(name) -> a table of this process, the same for every call with that name
 * from any policy generation: state that must survive a reload (the live sockets' rooms),
 * where a scripts/lib module, loaded once per generation, would otherwise start empty. */
static int l_shared(lua_State *L) {
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, "qc.host.shared");
    luaL_getsubtable(L, 2, lua_tostring(L, 1));
    return 1;
}

/* qc.host.is_admin(peer_ip, bearer_token_or_nil): loopback callers, or the admin key. */
static int l_is_admin(lua_State *L) {
    const char *peer = luaL_checkstring(L, 1);
    size_t tl = 0;
    const char *token = luaL_optlstring(L, 2, NULL, &tl);
    const qc_config *c = qc_host_config(qc_bindings_host(L));
    int loopback = strncmp(peer, "127.", 4) == 0 || strcmp(peer, "::1") == 0 ||
                   strcmp(peer, "::ffff:127.0.0.1") == 0;
    int key_ok = token && c->admin_key[0] && qc_const_time_equal(token, tl, c->admin_key, strlen(c->admin_key));
    lua_pushboolean(L, loopback || key_ok);
    return 1;
}

/* qc.host.check_api_key(token) -> key id | nil. Every configured key is compared, each in
 * constant time, so timing tells nothing about which or how much matched. The id is a
 * hash prefix: enough to record which key created a room, useless to an attacker. */
static int l_check_api_key(lua_State *L) {
    size_t tl;
    const char *token = luaL_checklstring(L, 1, &tl);
    const qc_config *c = qc_host_config(qc_bindings_host(L));
    int matched = 0;
    char match_id[45] = "";
    const char *cursor = c->api_keys, *key;
    size_t kl;
    while (qc_config_list_next(&cursor, &key, &kl)) {
        if (qc_const_time_equal(token, tl, key, kl) && !matched) {
            matched = 1;
            qc_jwt_sha256_base64((const unsigned char *)key, kl, match_id);
        }
    }
    if (!matched) return 0;
    match_id[12] = 0;
    lua_pushfstring(L, "key:%s", match_id);
    return 1;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* qc.host.list_dir(path, suffix?) -> sorted file names | nil, message */
static int l_list_dir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    const char *suffix = luaL_optstring(L, 2, "");
    DIR *d = opendir(path);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: cannot open directory", path);
        return 2;
    }
    char *names[512];
    int n = 0;
    struct dirent *e;
    size_t sl = strlen(suffix);
    while (n < 512 && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l < sl || strcmp(e->d_name + l - sl, suffix) != 0) continue;
        names[n] = strdup(e->d_name);
        if (names[n]) n++;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_names);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        free(names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* qc.host.spawn(fn, ...): runs fn(...) as a task of its own, concurrently with the caller. */
static int l_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (qc_host_spawn(qc_bindings_host(L), L, 1) < 0) return luaL_error(L, "qc.host.spawn: out of memory");
    return 0;
}

/* qc.host.error_body(code, message[, field]) -> the JSON error body, for the few answers
 * Lua must render itself (dispatch's 404, 405 and 400): one renderer for C and Lua. */
static int l_error_body(lua_State *L) {
    const char *code = luaL_checkstring(L, 1);
    const char *message = luaL_checkstring(L, 2);
    const char *field = luaL_optstring(L, 3, NULL);
    char body[QC_HTTP_ERROR_MAX];
    size_t n = qc_http_error_json(body, sizeof body, code, message, field);
    lua_pushlstring(L, body, n);
    return 1;
}

int luaopen_qc_host(lua_State *L) {
    static const luaL_Reg fns[] = {{"reload", l_reload},
                                   {"config", l_config},     {"is_admin", l_is_admin},
                                   {"list_dir", l_list_dir}, {"spawn", l_spawn},
                                   {"check_api_key", l_check_api_key},
                                   {"health", l_health},
                                   {"error_body", l_error_body},
                                   {"listen_address", l_listen_address},
                                   {"shared", l_shared},
                                   {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
