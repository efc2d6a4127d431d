/* qc.log: structured one-line logs from Lua.
 *   qc.log.info("rooms", "room created", {room = "interview-7", max = 10})
 * Fields are written sorted by key, so the same call always gives the same line; with
 * QC_LOG_FORMAT=json each becomes a member of the line's object (runtime/log.h). Long values
 * are cut at QC_LOG_VALUE_MAX with a marker (runtime/log.h), never dropped unannounced. */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define CUT_VALUE "...[cut, %zu bytes]"

/* The fields tail is built in a C buffer on the C stack, not a luaL_Buffer: converting a
 * value pushes it on the Lua stack, and a luaL_Buffer must stay on top while it grows (a
 * value above it once made a grown buffer's box be freed under us). A C buffer also goes
 * with the frame when a __tostring raises, so nothing leaks. */
typedef struct {
    char p[QC_LOG_FIELDS_MAX];
    size_t n;
} tail_buf;

static void put(tail_buf *b, const char *s, size_t l) {
    memcpy(b->p + b->n, s, l); /* callers check room first */
    b->n += l;
}

static int needs_quotes(const char *s, size_t l) {
    if (l == 0) return 1;
    for (size_t i = 0; i < l; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '"' || c == '=' || c < 0x20 || c == 0x7f) return 1;
    }
    return 0;
}

/* Bytes a value takes once quoted and escaped. */
static size_t quoted_len(const char *s, size_t l) {
    size_t n = 2;
    for (size_t i = 0; i < l; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') n += 2;
        else if (c < 0x20 || c == 0x7f) n += 4;
        else n += 1;
    }
    return n;
}

/* Writes the opening quote and the escaped bytes; the caller closes the quotes. */
static void put_quoted(tail_buf *b, const char *s, size_t l) {
    b->p[b->n++] = '"';
    for (size_t i = 0; i < l; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': put(b, "\\\"", 2); break;
        case '\\': put(b, "\\\\", 2); break;
        case '\n': put(b, "\\n", 2); break;
        case '\r': put(b, "\\r", 2); break;
        case '\t': put(b, "\\t", 2); break;
        default:
            if (c < 0x20 || c == 0x7f) {
                static const char hex[] = "0123456789abcdef";
                char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
                put(b, e, 4);
            } else {
                b->p[b->n++] = (char)c;
            }
        }
    }
}

/* A key goes in as it is, except bytes that would make the line ambiguous to split. */
static void put_key(tail_buf *b, const char *k, size_t l) {
    for (size_t i = 0; i < l; i++) {
        unsigned char c = (unsigned char)k[i];
        b->p[b->n++] = (c <= ' ' || c == '=' || c == '"' || c == 0x7f) ? '_' : (char)c;
    }
}

/* Room always kept free: the fields_cut marker and the closing NUL. */
#define RESERVE 32

/* Appends ` key=value`; 0 when it does not fit in what is left of the buffer (then
 * nothing is written). */
static int put_field(tail_buf *b, const char *k, size_t kl, const char *v, size_t vl, int force_quotes) {
    char mark[48];
    size_t ml = 0, cut = vl;
    if (vl > QC_LOG_VALUE_MAX) {
        cut = QC_LOG_VALUE_MAX;
        /* end on a UTF-8 character boundary, not inside one */
        while (cut > 0 && ((unsigned char)v[cut] & 0xC0) == 0x80) cut--;
        ml = (size_t)snprintf(mark, sizeof mark, CUT_VALUE, vl);
    }
    int quoted = ml > 0 || force_quotes || needs_quotes(v, cut);
    size_t need = 2 + kl + (quoted ? quoted_len(v, cut) : cut) + ml;
    if (need > sizeof b->p - RESERVE - b->n) return 0;
    b->p[b->n++] = ' ';
    put_key(b, k, kl);
    b->p[b->n++] = '=';
    if (!quoted) {
        put(b, v, cut);
        return 1;
    }
    put_quoted(b, v, cut);
    if (ml) put(b, mark, ml);
    b->p[b->n++] = '"';
    return 1;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int log_at(lua_State *L, qc_log_level level) {
    const char *component = luaL_checkstring(L, 1);
    const char *message = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    if (!qc_log_enabled(level)) return 0;
    lua_settop(L, 3);
    tail_buf b;
    b.n = 0;
    if (lua_istable(L, 3)) {
        /* The keys go on the Lua stack, above the fields table (slot 3): there they stay
         * alive even if a __tostring edits the table. Their pointers are sorted in a C
         * array, or a userdata box for an unusually long list. */
        int n = 0;
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING) continue;
            luaL_checkstack(L, 3, "too many log fields");
            lua_pushvalue(L, -1); /* the copy stays; the original goes on to lua_next */
            lua_insert(L, -2);
            n++;
        }
        const char *small[64];
        const char **keys = n <= 64 ? small : lua_newuserdatauv(L, (size_t)n * sizeof *keys, 0);
        for (int i = 0; i < n; i++) keys[i] = lua_tostring(L, 4 + i);
        qsort(keys, (size_t)n, sizeof *keys, cmp_str);
        for (int i = 0; i < n; i++) {
            lua_getfield(L, 3, keys[i]);
            size_t vl;
            const char *v = luaL_tolstring(L, -1, &vl);
            /* In JSON lines an unquoted 42 or true is a number or a boolean: a Lua string
             * that reads as one is quoted, so it stays a string there. */
            int force = qc_log_is_json() && lua_type(L, -2) == LUA_TSTRING && qc_log_json_literal(v, vl);
            if (!put_field(&b, keys[i], strlen(keys[i]), v, vl, force)) {
                char mark[RESERVE];
                put(&b, mark, (size_t)snprintf(mark, sizeof mark, " fields_cut=%d", n - i));
                break;
            }
            lua_pop(L, 2);
        }
    }
    b.p[b.n] = 0;
    qc_log_line(level, component, message, b.p);
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
