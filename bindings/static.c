/* qc.static: files of the web directory for scripts/lib/qc/handlers/static.lua
 * (runtime/net/static_file.h). The directory is the installed share/quantcoach/web beside
 * the binary, else the source tree's web/ (runtime/config.c, qc_config_default_dir). */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>

#include "../runtime/config.h"
#include "../runtime/net/static_file.h"

static char root[1024];

static const char *web_root(void) {
    if (!root[0]) qc_config_default_dir("web", "openapi.json", root, sizeof root);
    return root;
}

/* read(rel, want_data) -> data|false, size, mtime_ns; or nil, message, status (404, 500). */
static int l_read(lua_State *L) {
    size_t len;
    const char *rel = luaL_checklstring(L, 1, &len);
    int want = lua_toboolean(L, 2);
    qc_static_file f;
    char err[1200];
    int status = qc_static_read(web_root(), rel, len, want, &f, err, sizeof err);
    if (status) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushinteger(L, status);
        return 3;
    }
    if (want) {
        lua_pushlstring(L, f.data, f.size);
        free(f.data);
    } else {
        lua_pushboolean(L, 0);
    }
    lua_pushinteger(L, (lua_Integer)f.size);
    lua_pushinteger(L, (lua_Integer)f.mtime_ns);
    return 3;
}

/* root() -> the web directory. */
static int l_root(lua_State *L) {
    lua_pushstring(L, web_root());
    return 1;
}

int luaopen_qc_static(lua_State *L) {
    static const luaL_Reg fns[] = {{"read", l_read}, {"root", l_root}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
