/* Registers every qc.* C module in package.preload, so `require "qc.fetch"` works in
 * scripts and the sandbox decides which of them a policy may reach. */
#ifndef QC_HOST_BINDINGS_H
#define QC_HOST_BINDINGS_H

#include <lua.h>

typedef struct qc_host qc_host;

void qc_bindings_preload(lua_State *L, qc_host *h);

/* The host that owns L (bindings that need it outside a task). */
qc_host *qc_bindings_host(lua_State *L);

int luaopen_qc_log(lua_State *L);
int luaopen_qc_time(lua_State *L);
int luaopen_qc_fetch(lua_State *L);
int luaopen_qc_host(lua_State *L);
int luaopen_qc_jwt(lua_State *L);
int luaopen_qc_store(lua_State *L);
int luaopen_qc_strmatch(lua_State *L);
int luaopen_qc_audio(lua_State *L);
int luaopen_qc_stt(lua_State *L);
int luaopen_qc_metrics(lua_State *L);
int luaopen_qc_static(lua_State *L);

/* req:accept_websocket{max_message, max_queued, idle_timeout_ms} (bindings/ws_server.c),
 * set on upgrade requests by the host. */
int qc_ws_server_accept(lua_State *L);
int luaopen_qc_ws_server(lua_State *L);
/* Closes (1001) and detaches every Lua-owned WebSocket of h: the host is going. */
void qc_ws_server_host_closing(qc_host *h);
int luaopen_qc_ws(lua_State *L);

/* Replaces string.find, match, gmatch and gsub with the stoppable matcher's. */
void qc_strmatch_install(lua_State *L);

#endif
