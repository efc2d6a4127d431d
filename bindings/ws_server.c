/* qc.ws.Server: a WebSocket a Lua route handler accepted (req:accept_websocket). Each
 * message and the close run their handler as a task of their own; the handle lives (a
 * registry reference) until on_close has been delivered, so C never calls into a freed
 * userdata, and dropping it in Lua does not close the connection: close() does, or the peer.
 *
 *   local conn = req:accept_websocket{ max_message = 65536, max_queued = 1048576 }
 *   conn:on_message(function(data, kind) conn:send(data) end)   -- kind: "text" | "binary"
 *   conn:on_close(function(code, reason) end)
 *   conn:send(text) / conn:send_binary(data) -> true | nil, "QUEUE_FULL" | "CLOSED"
 *   conn:close([code [, reason]]), conn:queued(), conn:is_open()
 */
#define _POSIX_C_SOURCE 200809L
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "host/bindings.h"
#include "host/host.h"
#include "net/websocket.h"

#define MT "qc.ws.Server"
/* Message tasks of one socket started and not yet finished: past this the socket is not read
 * until they catch up, so a client cannot pile up tasks faster than its handler runs them
 * (a handler that yields on the store, say); TCP then slows the client down. */
#define MAX_PENDING 32

typedef struct ws_handle ws_handle;
struct ws_handle {
    qc_ws_conn *c;  /* NULL once the connection is over (or cut loose at host stop) */
    qc_host *h;
    lua_State *main; /* the state's main thread: where events are built */
    int self_ref;    /* registry reference while the connection is open */
    int has_on_message;
    int pending;     /* message tasks not yet finished */
    int paused;      /* reading stopped at MAX_PENDING */
    ws_handle *prev, *next;
};

/* Open handles, so a host that stops can close and detach its own. */
static ws_handle *open_list;

static void list_remove(ws_handle *w) {
    if (w->prev) w->prev->next = w->next;
    else if (open_list == w) open_list = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* Lets the userdata go: after this, Lua alone decides when it is collected. */
static void release(ws_handle *w) {
    list_remove(w);
    w->c = NULL;
    if (w->self_ref != LUA_NOREF) {
        luaL_unref(w->main, LUA_REGISTRYINDEX, w->self_ref);
        w->self_ref = LUA_NOREF;
    }
}

/* The task of one message: fn(data, kind) under a protected call whose end, normal, raised or
 * after yields, is counted (msg_done). Stack: conn, fn, data, kind. */
static int msg_done(lua_State *L, int status, lua_KContext ctx) {
    (void)ctx;
    ws_handle *w = lua_touserdata(L, 1);
    if (--w->pending < MAX_PENDING / 2 && w->paused) {
        w->paused = 0;
        if (w->c) qc_ws_read(w->c, 1);
    }
    if (status != LUA_OK && status != LUA_YIELD) return lua_error(L); /* logged by the host */
    return 0;
}

static int run_message(lua_State *L) {
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 4);
    return msg_done(L, lua_pcallk(L, 2, 0, 0, 0, msg_done), 0);
}

/* Spawns uservalue `slot` of the handle (a function) with the values above it: run under
 * lua_pcall, so an allocation failure is an error, not a panic. Stack: w, nargs args. */
static int spawn_event(lua_State *L) {
    ws_handle *w = lua_touserdata(L, 1);
    int slot = (int)lua_tointeger(L, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->self_ref);
    if (lua_getiuservalue(L, -1, slot) != LUA_TFUNCTION) return 0;
    lua_remove(L, -2);
    lua_insert(L, 3); /* w, slot, fn, args... */
    if (slot == 1) { /* run_message(conn, fn, data, kind) */
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->self_ref);
        lua_insert(L, 3);
        lua_pushcfunction(L, run_message);
        lua_insert(L, 3);
        if (qc_host_spawn(w->h, L, 3) < 0) return luaL_error(L, "out of memory");
        if (++w->pending >= MAX_PENDING && !w->paused && w->c) {
            w->paused = 1;
            qc_ws_read(w->c, 0);
        }
        return 0;
    }
    if (qc_host_spawn(w->h, L, 3) < 0) return luaL_error(L, "out of memory");
    return 0;
}

static void event(ws_handle *w, int slot, const char *s1, size_t n1, const char *s2, lua_Integer i, int kind) {
    lua_State *L = w->main;
    int top = lua_gettop(L);
    lua_pushcfunction(L, spawn_event);
    lua_pushlightuserdata(L, w);
    lua_pushinteger(L, slot);
    if (kind == 0) { /* message: data, "text" | "binary" */
        lua_pushlstring(L, s1, n1);
        lua_pushstring(L, s2);
    } else { /* close: code, reason */
        lua_pushinteger(L, i);
        lua_pushstring(L, s1);
    }
    if (lua_pcall(L, 4, 0, 0) != LUA_OK) {
        /* Out of memory: the event is lost, the server goes on. */
        lua_settop(L, top);
        return;
    }
    lua_settop(L, top);
}

static void on_message(void *ud, qc_ws_conn *c, int text, const uint8_t *data, size_t len) {
    (void)c;
    ws_handle *w = ud;
    if (w->self_ref == LUA_NOREF || !w->has_on_message) return;
    event(w, 1, (const char *)data, len, text ? "text" : "binary", 0, 0);
}

static void on_close(void *ud, qc_ws_conn *c, int code, const char *reason) {
    (void)c;
    ws_handle *w = ud;
    if (w->self_ref == LUA_NOREF) return;
    w->c = NULL;
    event(w, 2, reason, 0, NULL, code, 1);
    release(w);
}

static const qc_ws_handlers handlers = {on_message, on_close, NULL};

void qc_ws_server_host_closing(qc_host *h) {
    ws_handle *w = open_list;
    while (w) {
        ws_handle *next = w->next;
        if (w->h == h) {
            if (w->c) {
                qc_ws_set_handlers(w->c, NULL, NULL);
                qc_ws_close(w->c, 1001, "server stopping");
            }
            release(w);
        }
        w = next;
    }
}

static ws_handle *check(lua_State *L) { return luaL_checkudata(L, 1, MT); }

static lua_Integer opt_size(lua_State *L, int t, const char *name, lua_Integer def, lua_Integer max) {
    lua_getfield(L, t, name);
    lua_Integer v = luaL_optinteger(L, -1, def);
    lua_pop(L, 1);
    if (v < 0 || v > max) luaL_error(L, "accept_websocket: %s must be from 0 to %I", name, max);
    return v;
}

/* req:accept_websocket([opts]) -> conn | nil, message, "CLOSED" */
int qc_ws_server_accept(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    qc_ws_limits lim = {0};
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lim.max_message = (size_t)opt_size(L, 2, "max_message", 65536, (lua_Integer)64 << 20);
        lim.max_queued_bytes = (size_t)opt_size(L, 2, "max_queued", 1 << 20, (lua_Integer)256 << 20);
        lim.idle_timeout_ms = (long)opt_size(L, 2, "idle_timeout_ms", 0, (lua_Integer)24 * 3600 * 1000);
    }
    lua_settop(L, 1);
    luaopen_qc_ws_server(L); /* the metatable, made on first use */
    lua_pop(L, 1);
    ws_handle *w = lua_newuserdatauv(L, sizeof *w, 2);
    memset(w, 0, sizeof *w);
    w->self_ref = LUA_NOREF;
    luaL_setmetatable(L, MT);
    /* Taken only once every check that can raise has passed: a raise after it would
     * leave the exchange unanswered. */
    qc_http_exchange *ex = qc_host_take_exchange(L, 1);
    if (!ex) return luaL_error(L, "accept_websocket: not a WebSocket upgrade request of this task, or already answered");
    w->h = qc_bindings_host(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    w->main = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    w->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    w->next = open_list;
    if (open_list) open_list->prev = w;
    open_list = w;
    w->c = qc_ws_accept(ex, &handlers, w, &lim);
    if (!w->c) {
        release(w);
        lua_pushnil(L);
        lua_pushliteral(L, "the client has gone");
        lua_pushliteral(L, "CLOSED");
        return 3;
    }
    return 1;
}

static int send_kind(lua_State *L, int text) {
    ws_handle *w = check(L);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (w->c && qc_ws_send(w->c, text, s, n) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, w->c && qc_ws_is_open(w->c) ? "QUEUE_FULL" : "CLOSED");
    return 2;
}

static int l_send(lua_State *L) { return send_kind(L, 1); }
static int l_send_binary(lua_State *L) { return send_kind(L, 0); }

static int l_close(lua_State *L) {
    ws_handle *w = check(L);
    lua_Integer code = luaL_optinteger(L, 2, 1000);
    size_t rl = 0;
    const char *reason = luaL_optlstring(L, 3, "", &rl);
    luaL_argcheck(L, code == 1000 || qc_ws_close_code_valid((int)code), 2, "not a close code one may send");
    luaL_argcheck(L, rl <= 123, 3, "a close reason has at most 123 bytes");
    if (w->c) qc_ws_close(w->c, (int)code, reason);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_queued(lua_State *L) {
    ws_handle *w = check(L);
    lua_pushinteger(L, w->c ? (lua_Integer)qc_ws_queued(w->c) : 0);
    return 1;
}

static int l_is_open(lua_State *L) {
    ws_handle *w = check(L);
    lua_pushboolean(L, w->c && qc_ws_is_open(w->c));
    return 1;
}

static int set_handler(lua_State *L, int slot) {
    check(L);
    if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    lua_setiuservalue(L, 1, slot);
    lua_settop(L, 1);
    return 1;
}

static int l_on_message(lua_State *L) {
    ws_handle *w = check(L);
    w->has_on_message = !lua_isnoneornil(L, 2);
    return set_handler(L, 1);
}
static int l_on_close(lua_State *L) { return set_handler(L, 2); }

/* __close: a `local conn <close>` closes it normally when its scope ends. __gc runs only
 * once the connection is over (the registry holds the handle until then), or when the state
 * closes: then the connection is cut loose with a 1001. */
static int l_gc(lua_State *L) {
    ws_handle *w = check(L);
    if (w->c) {
        qc_ws_set_handlers(w->c, NULL, NULL);
        qc_ws_close(w->c, 1001, "server stopping");
        list_remove(w);
        w->c = NULL;
    }
    return 0;
}

static int l_close_scope(lua_State *L) {
    ws_handle *w = check(L);
    if (w->c) qc_ws_close(w->c, 1000, "");
    return 0;
}

static int l_tostring(lua_State *L) {
    ws_handle *w = check(L);
    lua_pushfstring(L, "qc.ws.Server (%s)", w->c ? "open" : "closed");
    return 1;
}

static const luaL_Reg methods[] = {
    {"send", l_send},       {"send_binary", l_send_binary}, {"close", l_close},
    {"queued", l_queued},   {"is_open", l_is_open},         {"on_message", l_on_message},
    {"on_close", l_on_close}, {NULL, NULL},
};

/* The metatable, made when the module is opened (the host opens it at start). */
int luaopen_qc_ws_server(lua_State *L) {
    if (luaL_newmetatable(L, MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_close_scope);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "qc.ws.Server");
        lua_setfield(L, -2, "__metatable");
    }
    return 1;
}
