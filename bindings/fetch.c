/* qc.fetch: outbound HTTP(S) from a task. The calling coroutine yields while the transfer
 * runs on the loop (runtime/net/http_client.c) and is resumed with `status, headers, body` or
 * `nil, message, code`.
 *
 *   local fetch = require "qc.fetch"
 *   local status, headers, body = fetch{ method = "POST", url = "https://api.example/v1",
 *       headers = { ["Content-Type"] = "application/json" }, body = "{}", timeout = 5 }
 *
 * Options: url (required), method ("GET"), headers (name -> string or number), body
 * (string), timeout (seconds, may be fractional; 30), max_body (bytes; 16 MiB). Response
 * header names are lowercased; repeated headers are joined with ", " (set-cookie with
 * "\n", since cookie dates contain commas). Codes: TIMEOUT, CONNECT, DNS, TLS, TOO_LARGE,
 * CANCELLED, FAILED. `fetch.request(opts)` is the same function. */
#define _POSIX_C_SOURCE 200809L
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <string.h>

#include "host/task.h"
#include "net/http_client.h"

/* Registry keys (their addresses). The builder is a private coroutine that turns a result
 * into Lua values under lua_pcall: the task's own coroutine is suspended, so nothing can
 * be called on it, and an allocation error raised outside a protected call (a 16 MiB body
 * against a capped allocator) would abort the whole server. */
static const char builder_key = 'b';
static const char failed_key = 'f';

static int push_result(lua_State *B) {
    const qc_http_result *res = lua_touserdata(B, 1);
    if (res->code) {
        lua_pushnil(B);
        lua_pushstring(B, res->message ? res->message : res->code);
        lua_pushstring(B, res->code);
        return 3;
    }
    lua_pushinteger(B, (lua_Integer)res->status);
    lua_createtable(B, 0, res->nheaders > 64 ? 64 : (int)res->nheaders);
    for (size_t i = 0; i < res->nheaders; i++) {
        const char *name = res->headers[i].name;
        if (lua_getfield(B, -1, name) == LUA_TSTRING) {
            lua_pushstring(B, strcmp(name, "set-cookie") == 0 ? "\n" : ", ");
            lua_pushstring(B, res->headers[i].value);
            lua_concat(B, 3);
        } else {
            lua_pop(B, 1);
            lua_pushstring(B, res->headers[i].value);
        }
        lua_setfield(B, -2, name);
    }
    lua_pushlstring(B, res->body, res->body_len);
    return 3;
}

static void on_done(const qc_http_result *res, void *ud) {
    qc_task *t = ud;
    lua_State *T = qc_task_thread(t);
    if (!lua_checkstack(T, 4)) { /* no room for even a nil: resume with nothing */
        qc_task_resume(t, 0);
        return;
    }
    lua_rawgetp(T, LUA_REGISTRYINDEX, &builder_key);
    lua_State *B = lua_tothread(T, -1);
    lua_pop(T, 1); /* B stays anchored in the registry */
    if (B && lua_checkstack(B, 4)) {
        lua_pushcfunction(B, push_result);
        lua_pushlightuserdata(B, (void *)res);
        if (lua_pcall(B, 1, 3, 0) == LUA_OK) {
            lua_xmove(B, T, 3);
            qc_task_resume(t, 3);
            return;
        }
        /* Usually "not enough memory", an object Lua preallocates, so moving it is free;
         * the code string was interned at load time for the same reason. */
        lua_pushnil(T);
        lua_xmove(B, T, 1);
        lua_rawgetp(T, LUA_REGISTRYINDEX, &failed_key);
        qc_task_resume(t, 3);
        return;
    }
    lua_pushnil(T);
    qc_task_resume(t, 1);
}

/* Like luaL_argerror, but names the function: reached through __call, Lua would call it
 * '?'. */
static int arg_error(lua_State *L, const char *msg) {
    return luaL_error(L, "bad argument #1 to 'qc.fetch' (%s)", msg);
}

/* A string option without embedded NULs (C sees only up to the first one). */
static const char *opt_string(lua_State *L, int idx, const char *field, size_t *len) {
    if (lua_type(L, idx) != LUA_TSTRING) {
        arg_error(L, lua_pushfstring(L, "field '%s' must be a string", field));
        return NULL;
    }
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (len) *len = n;
    else if (strlen(s) != n)
        arg_error(L, lua_pushfstring(L, "field '%s' contains a NUL byte", field));
    return s;
}

static int fetch_request(lua_State *L) {
    if (lua_type(L, 1) != LUA_TTABLE)
        return arg_error(L, lua_pushfstring(L, "table expected, got %s", luaL_typename(L, 1)));
    lua_settop(L, 1);
    qc_task *task = qc_task_current(L);
    if (!task)
        return luaL_error(L, "qc.fetch: must be called from a task (a request handler or a "
                             "script)");

    qc_http_request req;
    memset(&req, 0, sizeof req);
    lua_getfield(L, 1, "url"); /* 2 */
    req.url = opt_string(L, 2, "url", NULL);
    if (lua_getfield(L, 1, "method") != LUA_TNIL) req.method = opt_string(L, 3, "method", NULL);
    if (lua_getfield(L, 1, "body") != LUA_TNIL) req.body = opt_string(L, 4, "body", &req.body_len);
    if (lua_getfield(L, 1, "timeout") != LUA_TNIL) { /* 5 */
        lua_Number s = lua_type(L, 5) == LUA_TNUMBER ? lua_tonumber(L, 5) : -1;
        /* the upper bound keeps the conversion to long defined (about 24 days) */
        if (!(s > 0 && s <= 2147483.0))
            return arg_error(L, "field 'timeout' must be a positive number of seconds");
        req.timeout_ms = (long)ceil(s * 1000.0);
    }
    if (lua_getfield(L, 1, "max_body") != LUA_TNIL) { /* 6 */
        int isint = 0;
        lua_Integer n = lua_type(L, 6) == LUA_TNUMBER ? lua_tointegerx(L, 6, &isint) : 0;
        if (!isint || n <= 0)
            return arg_error(L, "field 'max_body' must be a positive integer");
        req.max_body = (size_t)n;
    }

    /* Header strings are copied into an array table first: lua_next needs the stack top,
     * and the C pointers must stay valid until qc_http_client_start has copied them. */
    int htype = lua_getfield(L, 1, "headers"); /* 7 */
    if (htype != LUA_TNIL) {
        if (htype != LUA_TTABLE) return arg_error(L, "field 'headers' must be a table");
        lua_newtable(L); /* 8: name1, value1, name2, value2, ... */
        int n = 0;
        lua_pushnil(L);
        while (lua_next(L, 7) != 0) {
            if (lua_type(L, -2) != LUA_TSTRING)
                return arg_error(L, "header names must be strings");
            int vt = lua_type(L, -1);
            if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
                return arg_error(L, lua_pushfstring(L, "header '%s' must be a string",
                                                           lua_tostring(L, -2)));
            lua_pushvalue(L, -2);
            lua_rawseti(L, 8, ++n);
            lua_pushvalue(L, -1);
            lua_tostring(L, -1); /* numbers become strings (on the copy: lua_next is fine) */
            lua_rawseti(L, 8, ++n);
            lua_pop(L, 1);
        }
        size_t nh = (size_t)n / 2;
        qc_http_header *h = lua_newuserdatauv(L, (nh ? nh : 1) * sizeof *h, 0); /* 9 */
        luaL_checkstack(L, n, "too many headers");
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, 8, i);
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            if (strlen(s) != len) return arg_error(L, "header contains a NUL byte");
            if (i % 2) h[i / 2].name = s;
            else h[i / 2 - 1].value = s;
        }
        req.headers = h;
        req.nheaders = nh;
    }

    qc_http_client *client = qc_host_http_client(qc_task_host(task));
    if (!client) {
        lua_pushnil(L);
        lua_pushliteral(L, "qc.fetch: HTTP client unavailable");
        lua_pushliteral(L, "FAILED");
        return 3;
    }
    char err[256];
    if (qc_http_client_start(client, &req, on_done, task, err, sizeof err) != 0)
        return luaL_error(L, "qc.fetch: %s", strncmp(err, "http: ", 6) ? err : err + 6);
    return qc_task_yield(L);
}

/* fetch{...}: drop the module table that __call passes first. */
static int fetch_call(lua_State *L) {
    lua_remove(L, 1);
    return fetch_request(L);
}

int luaopen_qc_fetch(lua_State *L) {
    lua_newthread(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &builder_key);
    lua_pushliteral(L, "FAILED");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &failed_key);

    static const luaL_Reg funcs[] = {{"request", fetch_request}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, fetch_call);
    lua_setfield(L, -2, "__call");
    lua_setmetatable(L, -2);
    return 1;
}
