/* The list of qc.* C modules. A new binding is one line here and one file in bindings/. */
#include "bindings.h"

#include <lauxlib.h>

static const luaL_Reg modules[] = {
    {"qc.log", luaopen_qc_log},   {"qc.time", luaopen_qc_time}, {"qc.fetch", luaopen_qc_fetch},
    {"qc.host", luaopen_qc_host}, {"qc.jwt", luaopen_qc_jwt},   {"qc.store", luaopen_qc_store},
    {"qc.strmatch", luaopen_qc_strmatch}, {"qc.audio", luaopen_qc_audio}, {"qc.stt", luaopen_qc_stt},
    {"qc.ws", luaopen_qc_ws}, {"qc.metrics", luaopen_qc_metrics},
    {"qc.static", luaopen_qc_static}, {NULL, NULL},
};

void qc_bindings_preload(lua_State *L, qc_host *h) {
    (void)h;
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const luaL_Reg *m = modules; m->name; m++) {
        lua_pushcfunction(L, m->func);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
    /* Before any policy copies the string table: the budget must hold in pattern matching. */
    qc_strmatch_install(L);
}

qc_host *qc_bindings_host(lua_State *L) {
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}
