/* qc.jwt: Lua face of runtime/jwt.c. Claims cross the boundary as JSON, encoded and decoded
 * with lua-cjson (fetched once at open time and kept as upvalues, so a policy's sandboxed
 * _ENV without `require` still works). */
#include "jwt_hs256.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#define DEFAULT_LEEWAY 60
#define ENCODE_UPVALUE lua_upvalueindex(1)
#define DECODE_UPVALUE lua_upvalueindex(2)

/* A string argument that C will read up to its first NUL: one with a NUL inside would be
 * silently shortened, so that is an argument mistake. */
static const char *check_cstring(lua_State *L, int arg) {
    size_t len;
    const char *s = luaL_checklstring(L, arg, &len);
    luaL_argcheck(L, strlen(s) == len, arg, "must not contain NUL bytes");
    return s;
}

static int push_owned_string_p(lua_State *L) {
    lua_pushstring(L, (const char *)lua_touserdata(L, 1));
    return 1;
}

/* Pushes a malloc'd string and frees it, even when pushing raises (out of memory). */
static void push_owned_string(lua_State *L, char *s) {
    lua_pushcfunction(L, push_owned_string_p);
    lua_pushlightuserdata(L, s);
    int status = lua_pcall(L, 1, 1, 0);
    free(s);
    if (status != LUA_OK) lua_error(L);
}

/* Reads an optional integer field of the opts table at `arg`. */
static lua_Integer opt_int_field(lua_State *L, int arg, const char *name, lua_Integer dflt) {
    if (lua_isnoneornil(L, arg)) return dflt;
    lua_getfield(L, arg, name);
    lua_Integer v = dflt;
    if (!lua_isnil(L, -1)) {
        int isint = 0;
        v = lua_tointegerx(L, -1, &isint);
        if (!isint) luaL_argerror(L, arg, lua_pushfstring(L, "opts.%s must be an integer", name));
    }
    lua_pop(L, 1);
    return v;
}

/* opts.now and opts.leeway as the C long the runtime takes. */
static void check_time_opts(lua_State *L, int arg, long *now, long *leeway) {
    if (!lua_isnoneornil(L, arg)) luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer lw = opt_int_field(L, arg, "leeway", DEFAULT_LEEWAY);
    lua_Integer n = opt_int_field(L, arg, "now", (lua_Integer)time(NULL));
    luaL_argcheck(L, lw >= 0, arg, "opts.leeway must not be negative");
#if LUA_MAXINTEGER > LONG_MAX
    luaL_argcheck(L, lw <= LONG_MAX && n >= LONG_MIN && n <= LONG_MAX, arg,
                  "opts.now or opts.leeway out of range");
#endif
    *now = (long)n;
    *leeway = (long)lw;
}

static int fail(lua_State *L, const char *msg, const char *code) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, code ? code : "INTERNAL");
    return 3;
}

/* jwt.sign(claims, secret) -> token. claims: a table (encoded with cjson) or a JSON object
 * text. Everything that can go wrong here is the caller's mistake or out of memory, so
 * failures raise rather than return nil. */
static int l_sign(lua_State *L) {
    const char *payload;
    int from_table = lua_type(L, 1) == LUA_TTABLE;
    if (from_table) {
        lua_pushvalue(L, ENCODE_UPVALUE);
        lua_pushvalue(L, 1);
        lua_call(L, 1, 1); /* cjson raises on what JSON cannot hold (functions, sparse arrays) */
        lua_replace(L, 1);
    } else if (lua_type(L, 1) != LUA_TSTRING) {
        return luaL_typeerror(L, 1, "table or JSON string");
    }
    payload = check_cstring(L, 1);
    const char *secret = check_cstring(L, 2);
    char err[256];
    char *token = NULL;
    /* cjson's encoding of a table needs no second parse; text from the caller does. An
     * array-like table encodes as [...] and is refused by the brace check. */
    int rc = from_table ? qc_jwt_sign_object(payload, lua_rawlen(L, 1), secret, &token, err, sizeof err)
                        : qc_jwt_sign(payload, secret, &token, err, sizeof err);
    if (rc < 0) return luaL_error(L, "%s", err);
    push_owned_string(L, token);
    return 1;
}

/* jwt.sign_json(text, secret) -> token, for claims JSON the caller assembled itself (hot
 * paths that skip building a table): only the outer braces are checked, nothing parsed. */
static int l_sign_json(lua_State *L) {
    size_t len;
    const char *payload = luaL_checklstring(L, 1, &len);
    const char *secret = check_cstring(L, 2);
    char err[256];
    char *token = NULL;
    if (qc_jwt_sign_object(payload, len, secret, &token, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    push_owned_string(L, token);
    return 1;
}

/* jwt.verify(token, secret [, {iss=, leeway=60, now=os.time()}]) -> claims | nil, msg, code */
static int l_verify(lua_State *L) {
    size_t toklen;
    const char *token = luaL_checklstring(L, 1, &toklen);
    const char *secret = check_cstring(L, 2);
    const char *iss = NULL;
    long now, leeway;
    check_time_opts(L, 3, &now, &leeway);
    if (!lua_isnoneornil(L, 3)) {
        lua_getfield(L, 3, "iss");
        if (!lua_isnil(L, -1)) {
            /* Type first: lua_tolstring would quietly turn a number into a string. */
            size_t isslen = 0;
            if (lua_type(L, -1) == LUA_TSTRING) iss = lua_tolstring(L, -1, &isslen);
            luaL_argcheck(L, iss && strlen(iss) == isslen, 3,
                          "opts.iss must be a string without NUL bytes");
        }
        /* Left on the stack: keeps iss alive until we return. */
    }
    /* The token is untrusted input (an HTTP header), so a NUL in it is a bad token, not a
     * bad argument. */
    if (strlen(token) != toklen) return fail(L, "jwt: token contains a NUL byte", "MALFORMED");

    char err[256];
    const char *code = NULL;
    char *payload = NULL;
    if (qc_jwt_verify(token, iss, secret, now, leeway, &payload, err, sizeof err, &code) < 0)
        return fail(L, err, code);
    push_owned_string(L, payload);
    lua_pushvalue(L, DECODE_UPVALUE);
    lua_insert(L, -2);
    /* jansson accepted it, but cjson has its own limits (nesting depth); the token is
     * authentic, yet its text is still data, so a refusal is a result, not a crash. */
    int status = lua_pcall(L, 1, 1, 0);
    if (status == LUA_ERRMEM) return lua_error(L);
    if (status != LUA_OK) {
        return fail(L, lua_pushfstring(L, "jwt: cannot decode claims: %s", lua_tostring(L, -1)),
                    "MALFORMED");
    }
    return 1;
}

/* jwt.verify_webhook(authorization, body, api_key, secret [, {leeway=60, now=}])
 *   -> true | nil, msg, code. authorization may be nil (header absent): "MISSING". */
static int l_verify_webhook(lua_State *L) {
    size_t authlen = 0, bodylen = 0;
    const char *auth = luaL_optlstring(L, 1, NULL, &authlen);
    const char *body = luaL_checklstring(L, 2, &bodylen);
    const char *api_key = check_cstring(L, 3);
    const char *secret = check_cstring(L, 4);
    long now, leeway;
    check_time_opts(L, 5, &now, &leeway);
    if (auth && strlen(auth) != authlen)
        return fail(L, "jwt: Authorization header contains a NUL byte", "MALFORMED");

    char err[256];
    const char *code = NULL;
    if (qc_jwt_verify_webhook(auth, (const unsigned char *)body, bodylen, api_key, secret, now,
                              leeway, err, sizeof err, &code) < 0)
        return fail(L, err, code);
    lua_pushboolean(L, 1);
    return 1;
}

/* jwt.sha256_base64(s) -> standard padded base64 of SHA-256(s) */
static int l_sha256_base64(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char out[45];
    if (qc_jwt_sha256_base64((const unsigned char *)s, len, out) < 0)
        return luaL_error(L, "jwt: SHA-256 failed");
    lua_pushstring(L, out);
    return 1;
}

static const luaL_Reg funcs[] = {
    {"sign", l_sign},
    {"sign_json", l_sign_json},
    {"verify", l_verify},
    {"verify_webhook", l_verify_webhook},
    {"sha256_base64", l_sha256_base64},
    {NULL, NULL},
};

/* Pushes the cjson module: already loaded, or through the real global `require` (the
 * registry's globals, not the caller's _ENV). */
static void push_cjson(lua_State *L) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "cjson");
    lua_remove(L, -2);
    if (lua_istable(L, -1)) return;
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_getfield(L, -1, "require");
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) luaL_error(L, "qc.jwt needs lua-cjson, and `require` is missing");
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    if (!lua_istable(L, -1)) luaL_error(L, "qc.jwt: require \"cjson\" did not return a table");
}

int luaopen_qc_jwt(lua_State *L) {
    luaL_newlibtable(L, funcs);
    push_cjson(L);
    lua_getfield(L, -1, "encode");
    lua_getfield(L, -2, "decode");
    lua_remove(L, -3);
    if (!lua_isfunction(L, -1) || !lua_isfunction(L, -2))
        return luaL_error(L, "qc.jwt: cjson has no encode/decode");
    luaL_setfuncs(L, funcs, 2);
    return 1;
}
