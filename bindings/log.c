/* qc.log: structured one-line logs from Lua.
 *   qc.log.info("rooms", "room created", {room = "interview-7", max = 10})
 * Fields are written sorted by key, so the same call always gives the same line. */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static int needs_quotes(const char *s) {
    if (!*s) return 1;
    for (; *s; s++)
        if (*s == ' ' || *s == '"' || *s == '=' || (unsigned char)*s < 0x20) return 1;
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int log_at(lua_State *L, qc_log_level level) {
    const char *component = luaL_checkstring(L, 1);
    const char *message = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    if (!qc_log_enabled(level)) return 0;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (lua_istable(L, 3)) {
        const char *keys[64];
        int n = 0;
        lua_pushnil(L);
        while (n < 64 && lua_next(L, 3)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TSTRING) keys[n++] = lua_tostring(L, -1);
        }
        if (n == 64) lua_pop(L, 1);
        qsort(keys, (size_t)n, sizeof keys[0], cmp_str);
        for (int i = 0; i < n; i++) {
            lua_getfield(L, 3, keys[i]);
            const char *v = luaL_tolstring(L, -1, NULL);
            lua_remove(L, -2);
            /* the buffer may sit on the stack: keep v on top until added */
            luaL_addchar(&b, ' ');
            luaL_addstring(&b, keys[i]);
            luaL_addchar(&b, '=');
            if (needs_quotes(v)) {
                luaL_addchar(&b, '"');
                for (const char *p = v; *p; p++) {
                    if (*p == '"' || *p == '\\') luaL_addchar(&b, '\\');
                    if (*p == '\n') luaL_addstring(&b, "\\n");
                    else luaL_addchar(&b, *p);
                }
                luaL_addchar(&b, '"');
            } else {
                luaL_addstring(&b, v);
            }
            lua_pop(L, 1);
        }
    }
    luaL_pushresult(&b);
    qc_log_line(level, component, message, lua_tostring(L, -1));
    return 0;
}

static int l_debug(lua_State *L) { return log_at(L, QC_LOG_DEBUG); }
static int l_info(lua_State *L) { return log_at(L, QC_LOG_INFO); }
static int l_warn(lua_State *L) { return log_at(L, QC_LOG_WARN); }
static int l_error(lua_State *L) { return log_at(L, QC_LOG_ERROR); }

int luaopen_qc_log(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"debug", l_debug}, {"info", l_info}, {"warn", l_warn}, {"error", l_error}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
