/* qc.ws: WebSocket client connections for scripts and handlers, on runtime/net/ws_client.
 * Calls that wait (connect, receive, close) yield the task and are resumed from the loop.
 *
 *   local ws = require "qc.ws"
 *   local c, err, code = ws.connect("ws://127.0.0.1:8000/ingest?t=...", {
 *       headers = { ["Content-Type"] = "audio/x-raw" }, max_message = 1048576 })
 *   c:send('{"muted":false}')            -- true, or nil, "QUEUE_FULL" | "CLOSED"
 *   c:send_binary(pcm)
 *   local kind, data = c:receive(5)      -- "text" | "binary" | "pong", data; or
 *                                        -- nil, "timeout"; or nil, "closed", code, reason
 *   c:ping("x"); c:buffered()            -- bytes queued, for pacing
 *   c:close(1000, "bye")                 -- sends what is queued, then Close; waits for the end
 *
 * connect fails with nil, message, code: "HTTP_<status>" for a refused upgrade (HTTP_401),
 * "FAILED" otherwise. Messages that arrive before receive is called wait in the connection,
 * up to max_unread bytes (16 MiB): past that the connection is closed with 1008. */
#define _POSIX_C_SOURCE 200809L
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/task.h"
#include "net/ws_client.h"

#define MT "qc.ws.Client"
#define DEFAULT_MAX_UNREAD (16u << 20)

static const char builder_key = 'b';

typedef struct inmsg {
    struct inmsg *next;
    int kind; /* 0 text, 1 binary, 2 pong */
    size_t len;
    char data[];
} inmsg;

enum { W_NONE, W_OPEN, W_RECEIVE, W_CLOSE };

typedef struct wsconn wsconn;

/* The one timer of a connection: task.h's convention (the handle first, data pointing at
 * the block), so a loop drain can close it; owner is cleared when the userdata goes. */
typedef struct {
    uv_timer_t timer;
    wsconn *owner;
} wtimer;

struct wsconn {
    qc_ws_client *c; /* NULL once over (on_close ran) or dropped */
    wtimer *timer;
    inmsg *head, *tail;
    size_t unread, max_unread;
    qc_task *waiter;
    int wait_kind;
    uint64_t deadline; /* uv_now ms; 0 = none */
    int ref;           /* registry reference to the userdata while connect waits */
    int opened, closed, gone;
    int close_code, http_status;
    char close_reason[128];
};

static void timer_closed(uv_handle_t *h) { free(h->data); }

static void drop_messages(wsconn *k) {
    while (k->head) {
        inmsg *m = k->head;
        k->head = m->next;
        free(m);
    }
    k->tail = NULL;
    k->unread = 0;
}

static void on_timer(uv_timer_t *timer);

/* Wakes the waiting task from the loop on its next turn, never from inside lws' callback. */
static void wake(wsconn *k) {
    if (k->waiter && k->timer) uv_timer_start(&k->timer->timer, on_timer, 0, 0);
}

/* ---- results pushed under a protected call (see bindings/fetch.c) ---- */

static int push_message(lua_State *B) {
    inmsg *m = lua_touserdata(B, 1);
    lua_pushstring(B, m->kind == 0 ? "text" : m->kind == 1 ? "binary" : "pong");
    lua_pushlstring(B, m->data, m->len);
    return 2;
}

static int push_closed(lua_State *B) {
    wsconn *k = lua_touserdata(B, 1);
    lua_pushnil(B);
    lua_pushliteral(B, "closed");
    lua_pushinteger(B, k->close_code);
    lua_pushstring(B, k->close_reason);
    return 4;
}

static int push_timeout(lua_State *B) {
    lua_pushnil(B);
    lua_pushliteral(B, "timeout");
    return 2;
}

static int push_connect_failed(lua_State *B) {
    wsconn *k = lua_touserdata(B, 1);
    lua_pushnil(B);
    if (k->http_status)
        lua_pushfstring(B, "websocket upgrade refused: HTTP %d", k->http_status);
    else
        lua_pushfstring(B, "websocket connect failed: %s", k->close_reason);
    if (k->http_status) lua_pushfstring(B, "HTTP_%d", k->http_status);
    else lua_pushliteral(B, "FAILED");
    return 3;
}

static int push_close_done(lua_State *B) {
    wsconn *k = lua_touserdata(B, 1);
    lua_pushboolean(B, 1);
    lua_pushinteger(B, k->close_code);
    return 2;
}

static void resume_built(qc_task *t, lua_CFunction fn, void *arg, int nres) {
    lua_State *T = qc_task_thread(t);
    if (!lua_checkstack(T, nres + 2)) {
        qc_task_resume(t, 0);
        return;
    }
    lua_rawgetp(T, LUA_REGISTRYINDEX, &builder_key);
    lua_State *B = lua_tothread(T, -1);
    lua_pop(T, 1);
    if (B && lua_checkstack(B, nres + 2)) {
        lua_pushcfunction(B, fn);
        lua_pushlightuserdata(B, arg);
        if (lua_pcall(B, 1, nres, 0) == LUA_OK) {
            lua_xmove(B, T, nres);
            qc_task_resume(t, nres);
            return;
        }
        lua_pushnil(T);
        lua_xmove(B, T, 1); /* the error, usually "not enough memory" */
        qc_task_resume(t, 2);
        return;
    }
    lua_pushnil(T);
    qc_task_resume(t, 1);
}

static void on_timer(uv_timer_t *timer) {
    wtimer *w = (wtimer *)timer;
    wsconn *k = w->owner;
    if (!k || !k->waiter) return;
    qc_task *t = k->waiter;
    switch (k->wait_kind) {
    case W_OPEN:
        if (k->opened && !k->closed) {
            k->waiter = NULL;
            k->wait_kind = W_NONE;
            lua_State *T = qc_task_thread(t);
            if (!lua_checkstack(T, 1)) {
                qc_task_resume(t, 0);
                return;
            }
            lua_rawgeti(T, LUA_REGISTRYINDEX, k->ref);
            luaL_unref(T, LUA_REGISTRYINDEX, k->ref);
            k->ref = LUA_NOREF;
            qc_task_resume(t, 1);
        } else if (k->closed) {
            k->waiter = NULL;
            k->wait_kind = W_NONE;
            lua_State *T = qc_task_thread(t);
            luaL_unref(T, LUA_REGISTRYINDEX, k->ref);
            k->ref = LUA_NOREF;
            resume_built(t, push_connect_failed, k, 3);
        }
        return;
    case W_RECEIVE:
        if (k->head) {
            inmsg *m = k->head;
            k->head = m->next;
            if (!k->head) k->tail = NULL;
            k->unread -= m->len;
            k->waiter = NULL;
            k->wait_kind = W_NONE;
            resume_built(t, push_message, m, 2);
            free(m);
        } else if (k->closed) {
            k->waiter = NULL;
            k->wait_kind = W_NONE;
            resume_built(t, push_closed, k, 4);
        } else if (k->deadline) {
            uint64_t now = uv_now(timer->loop);
            if (now >= k->deadline) {
                k->waiter = NULL;
                k->wait_kind = W_NONE;
                resume_built(t, push_timeout, NULL, 2);
            } else {
                uv_timer_start(timer, on_timer, k->deadline - now, 0);
            }
        }
        return;
    case W_CLOSE:
        if (k->closed) {
            k->waiter = NULL;
            k->wait_kind = W_NONE;
            resume_built(t, push_close_done, k, 2);
        }
        return;
    default:
        return;
    }
}

/* ---- client callbacks ---- */

static void cb_open(void *ud, qc_ws_client *c) {
    (void)c;
    wsconn *k = ud;
    k->opened = 1;
    wake(k);
}

static void queue_in(wsconn *k, int kind, const uint8_t *data, size_t len) {
    if (len > k->max_unread - k->unread) {
        if (k->c) qc_ws_client_close(k->c, 1008, "messages not read");
        return;
    }
    inmsg *m = malloc(sizeof *m + (len ? len : 1));
    if (!m) {
        if (k->c) qc_ws_client_close(k->c, 1011, "out of memory");
        return;
    }
    m->next = NULL;
    m->kind = kind;
    m->len = len;
    if (len) memcpy(m->data, data, len);
    if (k->tail) k->tail->next = m;
    else k->head = m;
    k->tail = m;
    k->unread += len;
    wake(k);
}

static void cb_message(void *ud, qc_ws_client *c, int text, const uint8_t *data, size_t len) {
    (void)c;
    queue_in(ud, text ? 0 : 1, data, len);
}

static void cb_pong(void *ud, qc_ws_client *c, const uint8_t *data, size_t len) {
    (void)c;
    queue_in(ud, 2, data, len);
}

static void cb_close(void *ud, qc_ws_client *c, int code, int http_status, const char *reason) {
    (void)c;
    wsconn *k = ud;
    k->c = NULL;
    k->closed = 1;
    k->close_code = code;
    k->http_status = http_status;
    snprintf(k->close_reason, sizeof k->close_reason, "%s", reason ? reason : "");
    wake(k);
}

static const qc_ws_client_handlers handlers = {
    .on_open = cb_open, .on_message = cb_message, .on_pong = cb_pong, .on_close = cb_close};

/* ---- Lua side ---- */

static wsconn *check_conn(lua_State *L) {
    wsconn *k = luaL_checkudata(L, 1, MT);
    if (k->gone) luaL_error(L, "attempt to use a closed websocket");
    return k;
}

/* Drops the connection and everything it holds; idempotent (__gc, __close). */
static void conn_release(wsconn *k) {
    if (k->gone) return;
    k->gone = 1;
    if (k->c) qc_ws_client_abort(k->c);
    k->c = NULL;
    drop_messages(k);
    if (k->timer) {
        k->timer->owner = NULL;
        uv_close((uv_handle_t *)&k->timer->timer, timer_closed);
        k->timer = NULL;
    }
}

static int l_gc(lua_State *L) {
    conn_release(luaL_checkudata(L, 1, MT));
    return 0;
}

static qc_task *need_task(lua_State *L, const char *fn) {
    qc_task *t = qc_task_current(L);
    if (!t) luaL_error(L, "qc.ws.%s: must be called from a task (a request handler or a script)", fn);
    return t;
}

static int l_connect(lua_State *L) {
    const char *url = luaL_checkstring(L, 1);
    int has_opts = !lua_isnoneornil(L, 2);
    if (has_opts) luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    qc_task *t = need_task(L, "connect");

    qc_ws_client_options opt;
    memset(&opt, 0, sizeof opt);
    size_t max_unread = DEFAULT_MAX_UNREAD;
    const char **hv = NULL;
    if (has_opts) {
        const char *sizes[] = {"max_message", "max_queued", "max_unread"};
        for (int i = 0; i < 3; i++) {
            if (lua_getfield(L, 2, sizes[i]) != LUA_TNIL) {
                int isint = 0;
                lua_Integer n = lua_tointegerx(L, -1, &isint);
                if (!isint || n <= 0)
                    return luaL_argerror(L, 2, lua_pushfstring(L, "'%s' must be a positive integer", sizes[i]));
                if (i == 0) opt.max_message = (size_t)n;
                else if (i == 1) opt.max_queued = (size_t)n;
                else max_unread = (size_t)n;
            }
            lua_pop(L, 1);
        }
        if (lua_getfield(L, 2, "headers") != LUA_TNIL) { /* 3 */
            if (!lua_istable(L, 3)) return luaL_argerror(L, 2, "'headers' must be a table");
            lua_newtable(L); /* 4: name1, value1, ...: anchors the strings until connect copies them */
            int n = 0;
            lua_pushnil(L);
            while (lua_next(L, 3)) {
                if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
                    return luaL_argerror(L, 2, "headers must map names to strings");
                lua_pushvalue(L, -2);
                lua_rawseti(L, 4, ++n);
                lua_pushvalue(L, -1);
                lua_tostring(L, -1); /* a number becomes a string, on the copy */
                lua_rawseti(L, 4, ++n);
                lua_pop(L, 1);
            }
            hv = lua_newuserdatauv(L, ((size_t)n + 1) * sizeof *hv, 0); /* 5 */
            for (int i = 1; i <= n; i++) {
                lua_rawgeti(L, 4, i);
                size_t len;
                hv[i - 1] = lua_tolstring(L, -1, &len);
                if (strlen(hv[i - 1]) != len) return luaL_argerror(L, 2, "a header contains a NUL byte");
                lua_pop(L, 1);
            }
            opt.headers = hv;
            opt.nheaders = (size_t)n / 2;
        }
    }

    wsconn *k = lua_newuserdatauv(L, sizeof *k, 0);
    memset(k, 0, sizeof *k);
    k->ref = LUA_NOREF;
    k->max_unread = max_unread;
    luaL_setmetatable(L, MT);
    wtimer *w = malloc(sizeof *w);
    if (!w) return luaL_error(L, "qc.ws.connect: out of memory");
    uv_timer_init(qc_task_loop(t), &w->timer);
    w->timer.data = w;
    w->owner = k;
    k->timer = w;

    char err[256];
    k->c = qc_ws_client_connect(qc_task_loop(t), url, &opt, &handlers, k, err, sizeof err);
    if (!k->c) {
        conn_release(k);
        return luaL_error(L, "qc.ws.connect: %s", err);
    }
    k->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    k->waiter = t;
    k->wait_kind = W_OPEN;
    return qc_task_yield(L);
}

static int busy(lua_State *L, wsconn *k) {
    if (k->waiter) return luaL_error(L, "qc.ws: another task is waiting on this connection");
    return 0;
}

static int send_kind(lua_State *L, int text) {
    wsconn *k = check_conn(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (!k->c || k->closed) {
        lua_pushnil(L);
        lua_pushliteral(L, "CLOSED");
        return 2;
    }
    if (qc_ws_client_send(k->c, text, data, len) != 0) {
        lua_pushnil(L);
        if (qc_ws_client_is_open(k->c) || !k->opened) lua_pushliteral(L, "QUEUE_FULL");
        else lua_pushliteral(L, "CLOSED");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_send(lua_State *L) { return send_kind(L, 1); }
static int l_send_binary(lua_State *L) { return send_kind(L, 0); }

static int l_ping(lua_State *L) {
    wsconn *k = check_conn(L);
    size_t len = 0;
    const char *data = luaL_optlstring(L, 2, "", &len);
    luaL_argcheck(L, len <= 125, 2, "a ping carries at most 125 bytes");
    if (!k->c || qc_ws_client_ping(k->c, data, len) != 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "CLOSED");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_receive(lua_State *L) {
    wsconn *k = check_conn(L);
    lua_Number timeout = luaL_optnumber(L, 2, -1);
    luaL_argcheck(L, timeout < 0 || timeout <= 2147483.0, 2, "timeout too large");
    busy(L, k);
    if (k->head) {
        inmsg *m = k->head;
        lua_pushstring(L, m->kind == 0 ? "text" : m->kind == 1 ? "binary" : "pong");
        lua_pushlstring(L, m->data, m->len);
        k->head = m->next;
        if (!k->head) k->tail = NULL;
        k->unread -= m->len;
        free(m);
        return 2;
    }
    if (k->closed) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        lua_pushinteger(L, k->close_code);
        lua_pushstring(L, k->close_reason);
        return 4;
    }
    qc_task *t = need_task(L, "receive");
    if (timeout == 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    k->waiter = t;
    k->wait_kind = W_RECEIVE;
    k->deadline = 0;
    if (timeout > 0) {
        uint64_t ms = (uint64_t)ceil(timeout * 1000.0);
        k->deadline = uv_now(qc_task_loop(t)) + ms;
        uv_timer_start(&k->timer->timer, on_timer, ms, 0);
    }
    return qc_task_yield(L);
}

static int l_close(lua_State *L) {
    wsconn *k = check_conn(L);
    lua_Integer code = luaL_optinteger(L, 2, 1000);
    const char *reason = luaL_optstring(L, 3, "");
    luaL_argcheck(L, code == 0 || (code >= 1000 && code <= 4999), 2, "close code must be 1000..4999 (0: none)");
    luaL_argcheck(L, strlen(reason) <= 123, 3, "a close reason has at most 123 bytes");
    busy(L, k);
    if (k->closed) {
        lua_pushboolean(L, 1);
        lua_pushinteger(L, k->close_code);
        return 2;
    }
    qc_ws_client_close(k->c, (int)code, reason);
    qc_task *t = qc_task_current(L);
    if (!t) {
        lua_pushboolean(L, 1);
        return 1;
    }
    k->waiter = t;
    k->wait_kind = W_CLOSE;
    return qc_task_yield(L);
}

static int l_buffered(lua_State *L) {
    wsconn *k = check_conn(L);
    lua_pushinteger(L, k->c ? (lua_Integer)qc_ws_client_queued(k->c) : 0);
    return 1;
}

static int l_is_open(lua_State *L) {
    wsconn *k = luaL_checkudata(L, 1, MT);
    lua_pushboolean(L, !k->gone && k->c && qc_ws_client_is_open(k->c));
    return 1;
}

static int l_tostring(lua_State *L) {
    wsconn *k = luaL_checkudata(L, 1, MT);
    lua_pushfstring(L, "qc.ws.Client (%s)", k->gone ? "released" : k->closed ? "closed" : "open");
    return 1;
}

int luaopen_qc_ws(lua_State *L) {
    lua_newthread(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &builder_key);
    static const luaL_Reg methods[] = {
        {"send", l_send},         {"send_binary", l_send_binary}, {"ping", l_ping},
        {"receive", l_receive},   {"close", l_close},             {"buffered", l_buffered},
        {"is_open", l_is_open},   {NULL, NULL},
    };
    static const luaL_Reg meta[] = {{"__gc", l_gc}, {"__close", l_gc}, {"__tostring", l_tostring}, {NULL, NULL}};
    if (luaL_newmetatable(L, MT)) {
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {{"connect", l_connect}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
