/* qc.metrics: the metrics registry (runtime/metrics.h) for Lua-side events, and GET /metrics'
 * text. Labels come as a table of strings, written sorted by name so that one label set is
 * always one series. */
#define _POSIX_C_SOURCE 200809L /* uv.h, through host.h, needs pthread_rwlock_t */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/host/bindings.h"
#include "../runtime/host/host.h"
#include "../runtime/metrics.h"
#include "../runtime/net/http_server.h"

#define MAX_LABELS 8

typedef struct {
    const char *name, *value;
} pair;

static int by_name(const void *a, const void *b) { return strcmp(((const pair *)a)->name, ((const pair *)b)->name); }

/* Writes the labels table at `idx` (or nothing for nil) into buf. */
static void labels_of(lua_State *L, int idx, char *buf, size_t cap) {
    buf[0] = 0;
    if (lua_isnoneornil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    pair p[MAX_LABELS];
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (n == MAX_LABELS) luaL_argerror(L, idx, "at most 8 labels");
        if (lua_type(L, -2) != LUA_TSTRING) luaL_argerror(L, idx, "label names must be strings");
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            luaL_argerror(L, idx, "label values must be strings or numbers");
        p[n].name = lua_tostring(L, -2);
        /* A string copy of the value stays on the stack below the key, which anchors it. */
        luaL_checkstack(L, 2, "labels");
        lua_pushvalue(L, -1);
        p[n].value = lua_tostring(L, -1);
        lua_insert(L, -3);
        lua_pop(L, 1);
        n++;
    }
    qsort(p, (size_t)n, sizeof *p, by_name);
    for (int i = 0; i < n; i++)
        if (qc_metrics_label(buf, cap, p[i].name, p[i].value) < 0) luaL_argerror(L, idx, "bad label name or labels too long");
}

static qc_metric_series *series_arg(lua_State *L, qc_metric_type type) {
    const char *name = luaL_checkstring(L, 1);
    const char *help = luaL_optstring(L, 4, "");
    double bounds[QC_METRICS_MAX_BUCKETS];
    size_t nb = 0;
    if (type == QC_METRIC_HISTOGRAM) {
        luaL_checktype(L, 5, LUA_TTABLE);
        lua_Integer n = luaL_len(L, 5);
        luaL_argcheck(L, n > 0 && n <= QC_METRICS_MAX_BUCKETS, 5, "1 to 24 bucket bounds");
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, 5, i);
            bounds[nb++] = luaL_checknumber(L, -1);
            lua_pop(L, 1);
        }
    }
    int id = qc_metrics_family(name, type, help, bounds, nb);
    if (id < 0) luaL_error(L, "qc.metrics: bad metric %s (name, type clash, buckets or too many)", name);
    char labels[512];
    labels_of(L, 2, labels, sizeof labels);
    qc_metric_series *s = qc_metrics_series(id, labels);
    if (!s) luaL_error(L, "qc.metrics: out of memory");
    return s;
}

/* add(name, labels|nil, n, help): a counter goes up by n (>= 0). */
static int l_add(lua_State *L) {
    lua_Number v = luaL_checknumber(L, 3);
    luaL_argcheck(L, v >= 0, 3, "a counter only goes up");
    qc_metrics_add(series_arg(L, QC_METRIC_COUNTER), v);
    return 0;
}

/* set(name, labels|nil, v, help): a gauge's value. */
static int l_set(lua_State *L) {
    lua_Number v = luaL_checknumber(L, 3);
    qc_metrics_set(series_arg(L, QC_METRIC_GAUGE), v);
    return 0;
}

/* observe(name, labels|nil, v, help, bounds): into a histogram. */
static int l_observe(lua_State *L) {
    lua_Number v = luaL_checknumber(L, 3);
    qc_metrics_observe(series_arg(L, QC_METRIC_HISTOGRAM), v);
    return 0;
}

/* route(pattern): labels the running request's metrics with its route pattern. */
static int l_route(lua_State *L) {
    const char *route = luaL_checkstring(L, 1);
    qc_http_exchange *ex = qc_host_exchange(L);
    if (ex) qc_http_exchange_set_route(ex, route);
    return 0;
}

/* render() -> the registry as exposition text. */
static int l_render(lua_State *L) {
    size_t len;
    char *text = qc_metrics_render(&len);
    if (!text) return luaL_error(L, "qc.metrics: out of memory");
    lua_pushlstring(L, text, len);
    free(text);
    return 1;
}

/* lua_bytes() -> the memory the whole Lua state holds (every generation shares it). */
static int l_lua_bytes(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)lua_gc(L, LUA_GCCOUNT) * 1024 + lua_gc(L, LUA_GCCOUNTB));
    return 1;
}

int luaopen_qc_metrics(lua_State *L) {
    static const luaL_Reg fns[] = {{"add", l_add},     {"set", l_set},       {"observe", l_observe},
                                   {"route", l_route}, {"render", l_render}, {"lua_bytes", l_lua_bytes},
                                   {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
