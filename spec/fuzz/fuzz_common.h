/* What the libFuzzer harnesses share: a way to report a finding (a property broken without
 * a sanitizer noticing), and a Lua state with scripts/lib on package.path for the harnesses
 * that run our Lua directly. Header-only: each harness is one executable of one file. */
#ifndef QC_FUZZ_COMMON_H
#define QC_FUZZ_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef QC_SOURCE_DIR
#define QC_SOURCE_DIR "."
#endif

/* A finding: libFuzzer sees the abort as a crash and saves the input. */
__attribute__((noreturn, format(printf, 1, 2))) static inline void fuzz_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz: finding: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

#ifdef QC_FUZZ_LUA
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

/* Coverage of Lua code. The Lua VM comes from Debian, uninstrumented, so libFuzzer would
 * see none of what a Lua parser does. A line hook gives it that: each (function, line) pair
 * after the previous one bumps a counter in libFuzzer's extra-counters section, which it
 * reads as coverage edges like its own. */
#define FUZZ_LUA_EDGES (1u << 16)
__attribute__((section("__libfuzzer_extra_counters"), used)) static uint8_t fuzz_lua_edges[FUZZ_LUA_EDGES];
static uintptr_t fuzz_lua_prev;

static void fuzz_lua_line_hook(lua_State *L, lua_Debug *ar) {
    if (!lua_getinfo(L, "S", ar)) return;
    uintptr_t here = (uintptr_t)ar->source * 31u + (uintptr_t)ar->linedefined * 7919u + (uintptr_t)ar->currentline;
    here ^= here >> 15;
    here *= 0x2c1b3c6dU;
    here ^= here >> 12;
    uint8_t *c = &fuzz_lua_edges[(here ^ fuzz_lua_prev) & (FUZZ_LUA_EDGES - 1)];
    if (*c < 255) (*c)++;
    fuzz_lua_prev = here >> 1;
}

/* Lines of every thread later created from L are counted too (lua_newthread copies the
 * hook). */
static inline void fuzz_lua_cover(lua_State *L) { lua_sethook(L, fuzz_lua_line_hook, LUA_MASKLINE, 0); }

static int fuzz_traceback(lua_State *L) {
    luaL_traceback(L, L, luaL_tolstring(L, 1, NULL), 1);
    return 1;
}

/* A fresh state whose `chunk` (Lua source) returns the function each input goes to; the
 * function is kept in the registry under the returned reference. */
static inline lua_State *fuzz_lua_open(const char *chunk, const char *name, int *ref) {
    lua_State *L = luaL_newstate();
    if (!L) fuzz_fail("cannot create a Lua state");
    luaL_openlibs(L);
    fuzz_lua_cover(L);
    lua_getglobal(L, "package");
    lua_pushstring(L, QC_SOURCE_DIR "/scripts/lib/?.lua");
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    lua_pushcfunction(L, fuzz_traceback);
    if (luaL_loadbuffer(L, chunk, __builtin_strlen(chunk), name) != LUA_OK)
        fuzz_fail("%s: %s", name, lua_tostring(L, -1));
    lua_pushstring(L, QC_SOURCE_DIR); /* the chunk's `...` */
    if (lua_pcall(L, 1, 1, 1) != LUA_OK) fuzz_fail("%s: set-up failed: %s", name, lua_tostring(L, -1));
    if (!lua_isfunction(L, -1)) fuzz_fail("%s: set-up did not return a function", name);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return L;
}

/* Calls the harness function with the input as one Lua string; an error is a finding. */
static inline void fuzz_lua_run(lua_State *L, int ref, const uint8_t *data, size_t size) {
    lua_pushcfunction(L, fuzz_traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, -3) != LUA_OK) fuzz_fail("%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    /* Each input's garbage goes with it, so a leak would show as growth, not as noise. */
    lua_gc(L, LUA_GCSTEP, 0);
}
#endif

#endif
