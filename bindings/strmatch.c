/* string.find, match, gmatch and gsub on the stoppable matcher (runtime/host/strmatch.c). The
 * host installs them over the string library's own at start-up, so the time budget holds
 * inside pattern matching: the stock matcher runs in one C call where the budget's count
 * hook never fires. `require "qc.strmatch"` gives steps() and limit(n), for tests and
 * benchmarks. Argument checks and results follow lstrlib's, in its order. */
#define _POSIX_C_SOURCE 200809L
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>

#include "host/bindings.h"
#include "host/host.h"
#include "host/strmatch.h"

/* Shared by the functions of one Lua state (their first upvalue). */
typedef struct {
    unsigned long long steps; /* every match's steps, for tests and benchmarks */
    unsigned long long limit; /* steps one call may take; 0: no limit */
} ctl;

enum { STOP_BUDGET = 1, STOP_LIMIT = 2 };

typedef struct {
    lua_State *L;
    ctl *c;
} call;

static int check(void *ud, unsigned long long steps) {
    const call *k = ud;
    if (qc_host_budget_exceeded(k->L)) return STOP_BUDGET;
    if (k->c->limit && steps > k->c->limit) return STOP_LIMIT;
    return 0;
}

static void begin(lua_State *L, qc_strmatch *m, call *k, const char *s, size_t ls, const char *p,
                  size_t lp) {
    k->L = L;
    k->c = lua_touserdata(L, lua_upvalueindex(1));
    qc_strmatch_init(m, s, ls, p, lp, check, k);
}

static void account(const qc_strmatch *m) {
    ((call *)m->ud)->c->steps += qc_strmatch_steps(m);
}

static int raise_error(lua_State *L, const qc_strmatch *m) {
    account(m);
    if (m->err == QC_STRMATCH_ESTOPPED) {
        if (m->stop_code == STOP_BUDGET) return qc_host_budget_error(L);
        const ctl *c = ((const call *)m->ud)->c; /* not upvalue 1: gmatch's iterator has others */
        return luaL_error(L, "pattern step limit exceeded (%I steps)", (lua_Integer)c->limit);
    }
    return luaL_error(L, "%s", m->msg);
}

/* A 1-based start position, negative from the end, clipped at 1 (Lua's rule for init). */
static size_t start_at(lua_Integer pos, size_t len) {
    if (pos > 0) return (size_t)pos;
    if (pos == 0) return 1;
    if (pos < -(lua_Integer)len) return 1;
    return len + (size_t)pos + 1;
}

/* Capture i of a match from s to e; the whole match when there are no captures. */
static void push_capture(lua_State *L, const qc_strmatch *m, int i, const char *s, const char *e) {
    if (i >= m->level) {
        if (i != 0) luaL_error(L, "invalid capture index %%%d", i + 1);
        lua_pushlstring(L, s, (size_t)(e - s));
        return;
    }
    ptrdiff_t len = m->cap[i].len;
    if (len == QC_STRMATCH_CAP_UNFINISHED) luaL_error(L, "unfinished capture");
    if (len == QC_STRMATCH_CAP_POSITION)
        lua_pushinteger(L, (lua_Integer)(m->cap[i].init - m->src) + 1);
    else
        lua_pushlstring(L, m->cap[i].init, (size_t)len);
}

/* s == NULL (find): only the captures, none when there are none. */
static int push_captures(lua_State *L, const qc_strmatch *m, const char *s, const char *e) {
    int n = (m->level == 0 && s) ? 1 : m->level;
    luaL_checkstack(L, n, "too many captures");
    for (int i = 0; i < n; i++) push_capture(L, m, i, s, e);
    return n;
}

static int find_or_match(lua_State *L, int find) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_at(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    qc_strmatch m;
    call k;
    if (find && (lua_toboolean(L, 4) || qc_strmatch_is_plain(p, lp))) {
        begin(L, &m, &k, s, ls, p, lp);
        const char *hit = qc_strmatch_plain(&m, s + init, ls - init, p, lp);
        if (m.err) return raise_error(L, &m);
        account(&m);
        if (hit) {
            lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
            lua_pushinteger(L, (lua_Integer)(hit - s) + (lua_Integer)lp);
            return 2;
        }
        luaL_pushfail(L);
        return 1;
    }
    int anchor = *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    begin(L, &m, &k, s, ls, p, lp);
    const char *at = s + init;
    const char *e = qc_strmatch_scan(&m, &at, p, anchor, NULL);
    if (m.err) return raise_error(L, &m);
    account(&m);
    if (e) {
        if (!find) return push_captures(L, &m, at, e);
        lua_pushinteger(L, (lua_Integer)(at - s) + 1);
        lua_pushinteger(L, (lua_Integer)(e - s));
        return push_captures(L, &m, NULL, NULL) + 2;
    }
    luaL_pushfail(L);
    return 1;
}

static int l_find(lua_State *L) { return find_or_match(L, 1); }
static int l_match(lua_State *L) { return find_or_match(L, 0); }

/* ---- gmatch ------------------------------------------------------------------------------ */

/* The subject and pattern stay alive as upvalues of the iterator, and Lua never moves a
 * string: their addresses are kept here instead of being fetched on every call. */
typedef struct {
    const char *s, *p;
    size_t ls, lp;
    ctl *c;
    size_t next; /* where the next search starts */
    size_t last; /* the end of the last match, or SIZE_MAX: an empty match there is skipped */
} gmatch_state;

/* Upvalues: subject, pattern, state. */
static int gmatch_next(lua_State *L) {
    gmatch_state *g = lua_touserdata(L, lua_upvalueindex(3));
    if (g->next > g->ls) return 0; /* init was past the end, or all is done */
    const char *s = g->s;
    qc_strmatch m;
    call k = {L, g->c};
    qc_strmatch_init(&m, s, g->ls, g->p, g->lp, check, &k);
    const char *at = s + g->next;
    const char *e = qc_strmatch_scan(&m, &at, g->p, 0, g->last == (size_t)-1 ? NULL : s + g->last);
    if (m.err) return raise_error(L, &m);
    account(&m);
    if (!e) {
        g->next = g->ls + 1;
        return 0;
    }
    g->next = g->last = (size_t)(e - s);
    return push_captures(L, &m, at, e);
}

static int l_gmatch(lua_State *L) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_at(luaL_optinteger(L, 3, 1), ls) - 1;
    lua_settop(L, 2);
    gmatch_state *g = lua_newuserdatauv(L, sizeof *g, 0);
    g->s = s;
    g->p = p;
    g->ls = ls;
    g->lp = lp;
    g->c = lua_touserdata(L, lua_upvalueindex(1));
    g->next = init > ls ? ls + 1 : init;
    g->last = (size_t)-1;
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

/* ---- gsub -------------------------------------------------------------------------------- */

/* A replacement string: "%0".."%9" are captures, "%%" is '%'. */
static void add_string(lua_State *L, luaL_Buffer *b, const qc_strmatch *m, const char *s, const char *e) {
    size_t l;
    const char *r = lua_tolstring(L, 3, &l);
    const char *pct;
    while ((pct = memchr(r, '%', l)) != NULL) {
        luaL_addlstring(b, r, (size_t)(pct - r));
        char d = pct[1]; /* the NUL after the string when '%' is last: an error below */
        if (d == '%') {
            luaL_addchar(b, '%');
        } else if (d == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (d >= '1' && d <= '9') {
            int i = d - '1';
            if (i < m->level && m->cap[i].len != QC_STRMATCH_CAP_POSITION &&
                m->cap[i].len != QC_STRMATCH_CAP_UNFINISHED) {
                luaL_addlstring(b, m->cap[i].init, (size_t)m->cap[i].len);
            } else {
                push_capture(L, m, i, s, e);
                luaL_addvalue(b);
            }
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", '%');
        }
        l -= (size_t)(pct + 2 - r);
        r = pct + 2;
    }
    luaL_addlstring(b, r, l);
}

/* Adds the replacement of the match s..e; 0 when the text was kept as it was. */
static int add_value(lua_State *L, luaL_Buffer *b, const qc_strmatch *m, const char *s, const char *e, int tr) {
    if (tr == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = push_captures(L, m, s, e);
        lua_call(L, n, 1);
    } else if (tr == LUA_TTABLE) {
        push_capture(L, m, 0, s, e);
        lua_gettable(L, 3);
    } else {
        add_string(L, b, m, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1)) return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return 1;
}

static int l_gsub(lua_State *L) {
    size_t ls, lp;
    const char *src = luaL_checklstring(L, 1, &ls);
    const char *s = src;
    const char *p = luaL_checklstring(L, 2, &lp);
    int tr = lua_type(L, 3);
    lua_Integer max_n = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
                     "string/function/table");
    int anchor = *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    qc_strmatch m;
    call k;
    begin(L, &m, &k, src, ls, p, lp);
    const char *last = NULL;
    lua_Integer n = 0;
    int changed = 0;
    while (n < max_n) {
        qc_strmatch_reset(&m);
        const char *e = qc_strmatch_at(&m, s, p);
        if (m.err) return raise_error(L, &m);
        if (e && e != last) {
            n++;
            changed |= add_value(L, &b, &m, s, e, tr);
            s = last = e;
        } else if (s < m.src_end) {
            luaL_addchar(&b, *s++);
        } else {
            break;
        }
        if (anchor) break;
    }
    account(&m);
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, s, (size_t)(m.src_end - s));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

/* ---- the module ---------------------------------------------------------------------------- */

static int l_steps(lua_State *L) {
    const ctl *c = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushinteger(L, (lua_Integer)c->steps);
    return 1;
}

/* limit(n): a call that takes more than about n steps raises; 0 lifts it. Returns the old. */
static int l_limit(lua_State *L) {
    ctl *c = lua_touserdata(L, lua_upvalueindex(1));
    lua_Integer old = (lua_Integer)c->limit;
    if (!lua_isnoneornil(L, 1)) {
        lua_Integer n = luaL_checkinteger(L, 1);
        luaL_argcheck(L, n >= 0, 1, "must not be negative");
        c->limit = (unsigned long long)n;
    }
    lua_pushinteger(L, old);
    return 1;
}

static const luaL_Reg string_funcs[] = {
    {"find", l_find}, {"match", l_match}, {"gmatch", l_gmatch}, {"gsub", l_gsub}, {NULL, NULL},
};

static const luaL_Reg module_funcs[] = {{"steps", l_steps}, {"limit", l_limit}, {NULL, NULL}};

#define CTL_KEY "qc.strmatch.ctl"

/* The state the string functions share, made once per Lua state, left on the stack. */
static void push_ctl(lua_State *L) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, CTL_KEY) == LUA_TUSERDATA) return;
    lua_pop(L, 1);
    ctl *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, CTL_KEY);
}

#define STOCK_KEY "qc.strmatch.stock"

/* The module has only the knobs, and the stock functions for benchmarks (bench/strmatch.lua):
 * the matcher itself is reached as string.find and friends, so error messages name them
 * "string.find", not a second home. Policies cannot require it. */
int luaopen_qc_strmatch(lua_State *L) {
    luaL_newlibtable(L, module_funcs);
    push_ctl(L);
    luaL_setfuncs(L, module_funcs, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, STOCK_KEY);
    lua_setfield(L, -2, "stock");
    return 1;
}

void qc_strmatch_install(lua_State *L) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, LUA_STRLIBNAME);
    lua_createtable(L, 0, 4);
    for (const luaL_Reg *f = string_funcs; f->name; f++) {
        lua_getfield(L, -2, f->name);
        lua_setfield(L, -2, f->name);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, STOCK_KEY);
    push_ctl(L);
    luaL_setfuncs(L, string_funcs, 1);
    lua_pop(L, 2);
}
