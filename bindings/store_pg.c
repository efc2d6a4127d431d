/* qc.store on PostgreSQL: the Lua face of runtime/store/pg.c, part of the qc.store module
 * (store.open hands postgres:// and postgresql:// targets here). A db userdata
 * ("qc.store.PG") owns one qc_pg pool; every call sends, yields its task, and is resumed
 * from the loop with the result, which a private builder coroutine turns into Lua values
 * under lua_pcall (the task's own coroutine is suspended, and an allocation error outside a
 * protected call would take the server down). db:transaction is Lua (below, TX_LUA) over
 * C primitives: a C function calling lua_pcall could not let fn yield. */
#define _POSIX_C_SOURCE 200809L
#include "store_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "../runtime/host/bindings.h"
#include "../runtime/host/host.h"
#include "../runtime/host/task.h"
#include "../runtime/log.h"
#include "store/pg.h"

#define PG_MT "qc.store.PG"
#define TX_MT "qc.store.PGTX"
#define DEFAULT_POOL 4

static const char builder_key = 'b';

/* The group commit of db:defer: one batch collects per loop turn; once sent it waits with
 * its own barrier, while the next batch collects under a new one. */
typedef struct {
    uv_timer_t timer; /* first: see task.h on handle ownership; data points at the ldb */
    struct ldb *d;    /* NULL once the db closed */
    qc_pg_batch *batch;
    qc_barrier *b;
    int scheduled;
} flusher;

typedef struct ldb {
    qc_pg *pg; /* NULL once closed */
    qc_host *h;
    lua_State *B; /* the builder (anchored in the registry) */
    flusher *f;
    int cbref; /* registry: { channels = {name = fn}, reconnect = {fn, ...} } */
} ldb;

typedef struct {
    qc_pg_lease lease;
    int depth; /* 0: the transaction, n: savepoint qc_sp<n> */
    int done;
    const char *failed; /* the code of a statement that failed in it, or NULL */
} ltx;

enum mode { M_ALL, M_FIRST, M_RUN, M_EXEC, M_BOOL, M_LEASE, M_END };

typedef struct {
    qc_task *t;
    lua_State *B;
    enum mode mode;
    ltx *tx; /* a statement in a transaction: records a failure there */
} call;

static int in_task(lua_State *L) {
    if (!qc_task_current(L)) return luaL_error(L, "store: postgres calls must run in a task");
    return 0;
}

static ldb *check_db(lua_State *L, int idx) {
    ldb *d = luaL_checkudata(L, idx, PG_MT);
    if (!d->pg) luaL_error(L, "attempt to use a closed database");
    return d;
}

static int fail(lua_State *L, const char *msg, const char *code) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, code);
    return 3;
}

/* ---- results ------------------------------------------------------------------------- */

enum coltype { T_TEXT, T_INT, T_NUM, T_BOOL };

static enum coltype col_type(Oid oid) {
    switch (oid) {
    case 20: case 21: case 23: case 26: return T_INT; /* int8 int2 int4 oid */
    case 700: case 701: case 1700: return T_NUM;      /* float4 float8 numeric */
    case 16: return T_BOOL;
    default: return T_TEXT;
    }
}

static void push_value(lua_State *B, const PGresult *res, int r, int c, enum coltype t) {
    const char *v = PQgetvalue(res, r, c);
    switch (t) {
    case T_INT: {
        char *end;
        long long x = strtoll(v, &end, 10);
        if (*end) lua_pushstring(B, v);
        else lua_pushinteger(B, (lua_Integer)x);
        break;
    }
    case T_NUM: {
        /* numeric may not fit a double exactly: that is the documented mapping */
        if (!lua_stringtonumber(B, v)) {
            char *end;
            lua_pushnumber(B, strtod(v, &end)); /* NaN, Infinity */
        } else if (lua_isinteger(B, -1)) {
            lua_Number n = (lua_Number)lua_tointeger(B, -1);
            lua_pop(B, 1);
            lua_pushnumber(B, n);
        }
        break;
    }
    case T_BOOL: lua_pushboolean(B, v[0] == 't'); break;
    default: lua_pushlstring(B, v, (size_t)PQgetlength(res, r, c)); break;
    }
}

static void push_row(lua_State *B, const PGresult *res, int r, const enum coltype *types) {
    int ncol = PQnfields(res);
    lua_createtable(B, 0, ncol);
    for (int c = 0; c < ncol; c++) {
        if (PQgetisnull(res, r, c)) continue; /* NULL: the field stays absent */
        push_value(B, res, r, c, types[c]);
        lua_setfield(B, -2, PQfname(res, c));
    }
}

/* On the builder, under lua_pcall: (outcome, mode) -> the call's results. */
static int build(lua_State *B) {
    const qc_pg_outcome *o = lua_touserdata(B, 1);
    enum mode mode = (enum mode)lua_tointeger(B, 2);
    lua_settop(B, 0);
    if (o->code) return fail(B, o->message, o->code);
    const PGresult *res = o->res;
    switch (mode) {
    case M_ALL:
    case M_FIRST: {
        int nrows = res ? PQntuples(res) : 0, ncol = res ? PQnfields(res) : 0;
        enum coltype *types = lua_newuserdatauv(B, sizeof *types * (size_t)(ncol ? ncol : 1), 0);
        for (int c = 0; c < ncol; c++) types[c] = col_type(PQftype(res, c));
        if (mode == M_FIRST) {
            if (nrows > 0) push_row(B, res, 0, types);
            else lua_pushnil(B);
            return 1;
        }
        lua_createtable(B, nrows, 0);
        for (int r = 0; r < nrows; r++) {
            push_row(B, res, r, types);
            lua_rawseti(B, -2, r + 1);
        }
        return 1;
    }
    case M_RUN: {
        const char *n = res ? PQcmdTuples((PGresult *)res) : "";
        lua_pushinteger(B, *n ? (lua_Integer)strtoll(n, NULL, 10) : 0);
        lua_pushnil(B);
        return 2;
    }
    case M_BOOL:
        lua_pushboolean(B, res && PQntuples(res) > 0 && PQgetvalue(res, 0, 0)[0] == 't');
        return 1;
    case M_LEASE:
        lua_pushinteger(B, o->lease.conn);
        lua_pushinteger(B, (lua_Integer)o->lease.gen);
        return 2;
    case M_END:
        /* COMMIT of a transaction that had failed answers ROLLBACK, not an error */
        if (res && !strcmp(PQcmdStatus((PGresult *)res), "ROLLBACK"))
            return fail(B, "store: transaction rolled back: a statement in it had failed", "SQL_ERROR");
        lua_pushboolean(B, 1);
        return 1;
    default: lua_pushboolean(B, 1); return 1;
    }
}

static void on_done(const qc_pg_outcome *o, void *ud) {
    call *c = ud;
    if (o->closed) { /* the store is closing under a waiting task: nothing to resume into */
        free(c);
        return;
    }
    if (o->code && c->tx && !c->tx->failed) c->tx->failed = o->code;
    qc_task *t = c->t;
    lua_State *T = qc_task_thread(t), *B = c->B;
    enum mode mode = c->mode;
    free(c);
    if (!lua_checkstack(T, 4)) {
        qc_task_resume(t, 0);
        return;
    }
    if (lua_checkstack(B, 8)) {
        int top = lua_gettop(B);
        lua_pushcfunction(B, build);
        lua_pushlightuserdata(B, (void *)o);
        lua_pushinteger(B, mode);
        if (lua_pcall(B, 2, LUA_MULTRET, 0) == LUA_OK) {
            int n = lua_gettop(B) - top;
            lua_xmove(B, T, n);
            qc_task_resume(t, n);
            return;
        }
        lua_pushnil(T);
        lua_xmove(B, T, 1); /* "not enough memory", preallocated */
        lua_pushliteral(T, "SQL_ERROR");
        qc_task_resume(t, 3);
        return;
    }
    lua_pushnil(T);
    qc_task_resume(t, 1);
}

/* ---- sending ------------------------------------------------------------------------- */

/* Lua values from index `first` as text parameters: pushed onto L (anchored there while
 * the request copies them) and pointed at by vals (malloc'd, n entries). */
static const char **param_values(lua_State *L, int first, int n) {
    luaL_checkstack(L, n + 4, "too many parameters");
    const char **vals = n ? lua_newuserdatauv(L, sizeof *vals * (size_t)n, 0) : NULL;
    for (int i = 0; i < n; i++) {
        int idx = first + i;
        switch (lua_type(L, idx)) {
        case LUA_TNIL: vals[i] = NULL; break;
        case LUA_TBOOLEAN: vals[i] = lua_toboolean(L, idx) ? "1" : "0"; break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx)) {
                vals[i] = lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
            } else {
                char buf[64];
                snprintf(buf, sizeof buf, "%.17g", (double)lua_tonumber(L, idx));
                vals[i] = lua_pushstring(L, buf);
            }
            break;
        case LUA_TSTRING: {
            size_t len;
            const char *s = lua_tolstring(L, idx, &len);
            if (strlen(s) != len) luaL_argerror(L, idx, "postgres text cannot hold NUL bytes");
            vals[i] = s;
            break;
        }
        default: luaL_argerror(L, idx, lua_pushfstring(L, "cannot bind a %s", luaL_typename(L, idx)));
        }
    }
    return vals;
}

/* The statement with ? rewritten to $n, pushed on L (so nothing leaks if a later conversion
 * raises), after checking its parameter count against the arguments from `first`. Raises on
 * named parameters, a wrong count or no memory. */
static const char *rewrite_checked(lua_State *L, const char *sql, int first, int *n) {
    int nargs = lua_gettop(L) - first + 1;
    if (nargs == 1 && lua_type(L, first) == LUA_TTABLE)
        luaL_argerror(L, first, "named parameters are SQLite only: use ? placeholders");
    char *text = qc_pg_rewrite(sql, strlen(sql), n);
    if (!text) luaL_error(L, "store: out of memory");
    if (*n != nargs) {
        free(text);
        luaL_error(L, "bad arguments: statement has %d parameter(s), got %d", *n, nargs);
    }
    lua_pushstring(L, text);
    free(text);
    return lua_tostring(L, -1);
}

/* Rewrites ? to $n, checks the count against the arguments from `first`, and sends. */
static int send_stmt(lua_State *L, ldb *d, const qc_pg_lease *lease, ltx *tx, unsigned flags, const char *sql,
                     int first, enum mode mode) {
    int n;
    const char *q = rewrite_checked(L, sql, first, &n);
    const char **vals = param_values(L, first, n);
    call *c = malloc(sizeof *c);
    if (!c) return luaL_error(L, "store: out of memory");
    *c = (call){.t = qc_task_current(L), .B = d->B, .mode = mode, .tx = tx};
    char err[256];
    const char *code = NULL;
    if (qc_pg_send(d->pg, lease, flags, q, n, vals, on_done, c, err, sizeof err, &code) < 0) {
        free(c);
        if (tx && !tx->failed) tx->failed = code;
        return fail(L, err, code);
    }
    return qc_task_yield(L);
}

static int send_simple(lua_State *L, ldb *d, const qc_pg_lease *lease, ltx *tx, unsigned flags, const char *sql,
                       enum mode mode) {
    call *c = malloc(sizeof *c);
    if (!c) return luaL_error(L, "store: out of memory");
    *c = (call){.t = qc_task_current(L), .B = d->B, .mode = mode, .tx = tx};
    char err[256];
    const char *code = NULL;
    if (qc_pg_send(d->pg, lease, flags | QC_PG_SIMPLE, sql, 0, NULL, on_done, c, err, sizeof err, &code) < 0) {
        free(c);
        return fail(L, err, code);
    }
    return qc_task_yield(L);
}

static const char *check_cstring(lua_State *L, int arg) {
    size_t len;
    const char *s = luaL_checklstring(L, arg, &len);
    luaL_argcheck(L, strlen(s) == len, arg, "must not contain NUL bytes");
    return s;
}

static int db_stmt(lua_State *L, enum mode mode) {
    ldb *d = check_db(L, 1);
    const char *sql = check_cstring(L, 2);
    in_task(L);
    return send_stmt(L, d, NULL, NULL, 0, sql, 3, mode);
}

/* db:query(sql, ...) -> {row, ...} | nil, msg, code */
static int l_query(lua_State *L) { return db_stmt(L, M_ALL); }
/* db:first(sql, ...) -> row | nil  (nil, msg, code on failure) */
static int l_first(lua_State *L) { return db_stmt(L, M_FIRST); }
/* db:run(sql, ...) -> changes, nil | nil, msg, code */
static int l_run(lua_State *L) { return db_stmt(L, M_RUN); }

/* db:exec(sql) -> true | nil, msg, code (several statements, no parameters) */
static int l_exec(lua_State *L) {
    ldb *d = check_db(L, 1);
    const char *sql = check_cstring(L, 2);
    in_task(L);
    return send_simple(L, d, NULL, NULL, 0, sql, M_EXEC);
}

/* db:_begin() -> conn, gen | nil, msg, code: a pool connection pinned inside BEGIN. */
static int l_begin(lua_State *L) {
    ldb *d = check_db(L, 1);
    in_task(L);
    return send_simple(L, d, NULL, NULL, QC_PG_PIN, "BEGIN", M_LEASE);
}

/* db:_tx(conn, gen) -> tx: the handle fn gets (its user value is the db). */
static int l_tx(lua_State *L) {
    check_db(L, 1);
    ltx *tx = lua_newuserdatauv(L, sizeof *tx, 1);
    tx->lease.conn = (int)luaL_checkinteger(L, 2);
    tx->lease.gen = (uint64_t)luaL_checkinteger(L, 3);
    tx->depth = 0;
    tx->done = 0;
    tx->failed = NULL;
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, TX_MT);
    return 1;
}

static ltx *check_tx(lua_State *L, ldb **d) {
    ltx *tx = luaL_checkudata(L, 1, TX_MT);
    lua_getiuservalue(L, 1, 1);
    *d = lua_touserdata(L, -1);
    lua_pop(L, 1); /* the tx anchors the db */
    if (!*d || !(*d)->pg) luaL_error(L, "attempt to use a closed database");
    if (tx->done) luaL_error(L, "store: transaction already ended");
    return tx;
}

static int tx_stmt(lua_State *L, enum mode mode) {
    ldb *d;
    ltx *tx = check_tx(L, &d);
    const char *sql = check_cstring(L, 2);
    in_task(L);
    return send_stmt(L, d, &tx->lease, tx, 0, sql, 3, mode);
}

static int t_query(lua_State *L) { return tx_stmt(L, M_ALL); }
static int t_first(lua_State *L) { return tx_stmt(L, M_FIRST); }
static int t_run(lua_State *L) { return tx_stmt(L, M_RUN); }
static int t_exec(lua_State *L) {
    ldb *d;
    ltx *tx = check_tx(L, &d);
    const char *sql = check_cstring(L, 2);
    in_task(L);
    return send_simple(L, d, &tx->lease, tx, 0, sql, M_EXEC);
}

/* tx:_sub() -> a handle for a savepoint one level down, on the same connection. */
static int t_sub(lua_State *L) {
    ldb *d;
    ltx *tx = check_tx(L, &d);
    ltx *sp = lua_newuserdatauv(L, sizeof *sp, 1);
    *sp = (ltx){.lease = tx->lease, .depth = tx->depth + 1};
    lua_getiuservalue(L, 1, 1);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, TX_MT);
    return 1;
}

/* sp:_savepoint() -> true | nil, msg, code (SAVEPOINT qc_sp<depth>) */
static int t_savepoint(lua_State *L) {
    ldb *d;
    ltx *tx = check_tx(L, &d);
    in_task(L);
    char sql[64];
    snprintf(sql, sizeof sql, "SAVEPOINT qc_sp%d", tx->depth);
    return send_simple(L, d, &tx->lease, NULL, 0, sql, M_EXEC);
}

/* tx:_commit() -> true | nil, msg, code: COMMIT (the lease ends) or RELEASE SAVEPOINT. */
static int t_commit(lua_State *L) {
    ldb *d;
    ltx *tx = check_tx(L, &d);
    in_task(L);
    tx->done = 1;
    if (tx->depth) {
        char sql[64];
        snprintf(sql, sizeof sql, "RELEASE SAVEPOINT qc_sp%d", tx->depth);
        return send_simple(L, d, &tx->lease, NULL, 0, sql, M_EXEC);
    }
    return send_simple(L, d, &tx->lease, NULL, QC_PG_UNPIN, "COMMIT", M_END);
}

/* tx:_abort() -> true | nil, msg, code: ROLLBACK (the lease ends) or ROLLBACK TO. */
static int t_abort(lua_State *L) {
    ldb *d;
    ltx *tx = check_tx(L, &d);
    in_task(L);
    tx->done = 1;
    if (tx->depth) {
        char sql[96];
        snprintf(sql, sizeof sql, "ROLLBACK TO SAVEPOINT qc_sp%d; RELEASE SAVEPOINT qc_sp%d", tx->depth, tx->depth);
        return send_simple(L, d, &tx->lease, NULL, 0, sql, M_EXEC);
    }
    return send_simple(L, d, &tx->lease, NULL, QC_PG_UNPIN, "ROLLBACK", M_EXEC);
}

/* A transaction handle collected unfinished (its task died): roll back, free the connection. */
static int t_gc(lua_State *L) {
    ltx *tx = luaL_checkudata(L, 1, TX_MT);
    if (tx->done || tx->depth) return 0;
    tx->done = 1;
    lua_getiuservalue(L, 1, 1);
    ldb *d = lua_touserdata(L, -1);
    if (d && d->pg)
        qc_pg_send(d->pg, &tx->lease, QC_PG_SIMPLE | QC_PG_UNPIN, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0, NULL);
    return 0;
}

/* tx:_db() -> the db it belongs to */
static int t_db(lua_State *L) {
    luaL_checkudata(L, 1, TX_MT);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

static int t_backend(lua_State *L) {
    lua_pushliteral(L, "postgres");
    return 1;
}

/* ---- defer --------------------------------------------------------------------------- */

struct batch_wait {
    qc_barrier *b;
    size_t rows;
};

static void batch_done(const qc_pg_outcome *o, void *ud) {
    struct batch_wait *w = ud;
    if (!o->code) {
        qc_barrier_pass(w->b, NULL, NULL);
    } else {
        qc_log(QC_LOG_ERROR, "store", "deferred write failed", " rows=%zu answers_503=%zu error=\"%s\"", w->rows,
               qc_barrier_waiting(w->b), o->message);
        qc_barrier_pass(w->b, "STORE_UNAVAILABLE", "the record of this request could not be written");
    }
    qc_barrier_free(w->b);
    free(w);
}

/* Sends the batch collected so far; the next defers collect under a new barrier. */
static void flush_batch(flusher *f) {
    f->scheduled = 0;
    if (!f->d || !f->batch || !qc_pg_batch_count(f->batch)) return;
    struct batch_wait *w = malloc(sizeof *w);
    qc_pg_batch *batch = f->batch;
    qc_barrier *b = f->b;
    f->batch = NULL;
    f->b = NULL;
    if (!w) {
        qc_pg_batch_free(batch);
        qc_barrier_pass(b, "STORE_UNAVAILABLE", "the record of this request could not be written");
        qc_barrier_free(b);
        return;
    }
    w->b = b;
    w->rows = qc_pg_batch_count(batch);
    char err[256];
    const char *code;
    if (qc_pg_send_batch(f->d->pg, batch, batch_done, w, err, sizeof err, &code) < 0) {
        qc_log(QC_LOG_ERROR, "store", "deferred write failed", " rows=%zu error=\"%s\"", w->rows, err);
        qc_barrier_pass(b, "STORE_UNAVAILABLE", "the record of this request could not be written");
        qc_barrier_free(b);
        free(w);
    }
}

static void flush_now(uv_timer_t *timer) { flush_batch((flusher *)timer); }

/* The host is stopping: send what collected (the answers are released by the host). */
static void flush_for_host(void *ud) {
    flusher *f = ud;
    uv_timer_stop(&f->timer);
    flush_batch(f);
}

static void flusher_closed(uv_handle_t *h) { free(h); }

/* db:defer(sql, ...) -> true | nil, msg, code. The write goes in one pipelined transaction
 * with everything deferred in this turn of the loop; the caller's answer waits for it. */
static int l_defer(lua_State *L) {
    ldb *d = check_db(L, 1);
    const char *sql = check_cstring(L, 2);
    int n;
    const char *q = rewrite_checked(L, sql, 3, &n);
    const char **vals = param_values(L, 3, n);
    if (!d->f) {
        flusher *f = calloc(1, sizeof *f);
        if (!f) return luaL_error(L, "store: out of memory");
        uv_timer_init(qc_host_loop(d->h), &f->timer);
        f->timer.data = d;
        f->d = d;
        d->f = f;
    }
    flusher *f = d->f;
    if (!f->batch) f->batch = qc_pg_batch_new();
    if (!f->b) f->b = qc_barrier_new(d->h, flush_for_host, f);
    if (!f->batch || !f->b) return luaL_error(L, "store: out of memory");
    if (qc_pg_batch_add(f->batch, q, n, vals) < 0) return luaL_error(L, "store: out of memory");
    if (qc_barrier_join(f->b, qc_task_current(L)) < 0) return luaL_error(L, "store: out of memory");
    if (!f->scheduled) {
        f->scheduled = 1;
        uv_timer_start(&f->timer, flush_now, 0, 0);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- session: listen, locks ---------------------------------------------------------- */

/* On the builder, under lua_pcall: spawns fn(payload, channel, pid) for a notification. */
static int spawn_notify(lua_State *B) {
    ldb *d = lua_touserdata(B, 1);
    const char *channel = lua_tostring(B, 2);
    lua_rawgeti(B, LUA_REGISTRYINDEX, d->cbref);
    lua_getfield(B, -1, "channels");
    lua_getfield(B, -1, channel);
    if (!lua_isfunction(B, -1)) return 0;
    int first = lua_gettop(B);
    lua_pushvalue(B, 3); /* payload */
    lua_pushvalue(B, 2); /* channel */
    lua_pushvalue(B, 4); /* pid */
    if (qc_host_spawn(d->h, B, first) < 0) qc_log(QC_LOG_ERROR, "store", "notification dropped", " channel=%s", channel);
    return 0;
}

static void on_notify(const char *channel, const char *payload, int pid, void *ud) {
    ldb *d = ud;
    lua_State *B = d->B;
    if (!d->pg || d->cbref == LUA_NOREF || !lua_checkstack(B, 12)) return;
    int top = lua_gettop(B);
    lua_pushcfunction(B, spawn_notify);
    lua_pushlightuserdata(B, d);
    lua_pushstring(B, channel);
    lua_pushstring(B, payload);
    lua_pushinteger(B, pid);
    if (lua_pcall(B, 4, 0, 0) != LUA_OK)
        qc_log(QC_LOG_ERROR, "store", "notification dropped", " channel=%s error=\"%s\"", channel,
               lua_tostring(B, -1) ? lua_tostring(B, -1) : "?");
    lua_settop(B, top);
}

static int spawn_reconnect(lua_State *B) {
    ldb *d = lua_touserdata(B, 1);
    lua_rawgeti(B, LUA_REGISTRYINDEX, d->cbref);
    lua_getfield(B, -1, "reconnect");
    lua_Integer n = luaL_len(B, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(B, 3, i);
        if (qc_host_spawn(d->h, B, lua_gettop(B)) < 0) qc_log(QC_LOG_ERROR, "store", "on_reconnect dropped", NULL);
    }
    return 0;
}

static void on_reconnected(void *ud) {
    ldb *d = ud;
    lua_State *B = d->B;
    qc_log(QC_LOG_INFO, "store", "postgres session back", NULL);
    if (!d->pg || d->cbref == LUA_NOREF || !lua_checkstack(B, 8)) return;
    int top = lua_gettop(B);
    lua_pushcfunction(B, spawn_reconnect);
    lua_pushlightuserdata(B, d);
    if (lua_pcall(B, 1, 0, 0) != LUA_OK)
        qc_log(QC_LOG_ERROR, "store", "on_reconnect dropped", " error=\"%s\"",
               lua_tostring(B, -1) ? lua_tostring(B, -1) : "?");
    lua_settop(B, top);
}

/* db:listen(channel, fn) -> true | nil, msg, code */
static int l_listen(lua_State *L) {
    ldb *d = check_db(L, 1);
    const char *channel = check_cstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    luaL_argcheck(L, *channel && strlen(channel) < 64, 2, "a channel name is 1 to 63 bytes");
    in_task(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->cbref);
    lua_getfield(L, -1, "channels");
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, channel);
    lua_pop(L, 2);
    if (qc_pg_remember_channel(d->pg, channel) < 0) return luaL_error(L, "store: out of memory");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "LISTEN \"");
    for (const char *p = channel; *p; p++) {
        if (*p == '"') luaL_addchar(&b, '"');
        luaL_addchar(&b, *p);
    }
    luaL_addchar(&b, '"');
    luaL_pushresult(&b);
    return send_simple(L, d, NULL, NULL, QC_PG_SESSION, lua_tostring(L, -1), M_EXEC);
}

/* db:on_reconnect(fn) -> true */
static int l_on_reconnect(lua_State *L) {
    ldb *d = check_db(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->cbref);
    lua_getfield(L, -1, "reconnect");
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, luaL_len(L, -2) + 1);
    lua_pushboolean(L, 1);
    return 1;
}

static int lock_call(lua_State *L, const char *sql) {
    ldb *d = check_db(L, 1);
    check_cstring(L, 2);
    lua_settop(L, 2);
    in_task(L);
    return send_stmt(L, d, NULL, NULL, QC_PG_SESSION, sql, 2, M_BOOL);
}

/* db:try_lock(name) -> true | false | nil, msg, code */
static int l_try_lock(lua_State *L) { return lock_call(L, "SELECT pg_try_advisory_lock(hashtextextended(?, 0))"); }
/* db:unlock(name) -> true | false */
static int l_unlock(lua_State *L) { return lock_call(L, "SELECT pg_advisory_unlock(hashtextextended(?, 0))"); }

/* db:pid() -> the session connection's backend pid, or nil */
static int l_pid(lua_State *L) {
    ldb *d = check_db(L, 1);
    int pid = qc_pg_session_pid(d->pg);
    if (pid) lua_pushinteger(L, pid);
    else lua_pushnil(L);
    return 1;
}

static int l_backend(lua_State *L) {
    check_db(L, 1);
    lua_pushliteral(L, "postgres");
    return 1;
}

/* db:status() -> { backend, state, error, connections, busy, waiting } */
static int l_status(lua_State *L) {
    ldb *d = check_db(L, 1);
    qc_pg_status st;
    qc_pg_get_status(d->pg, &st);
    lua_createtable(L, 0, 6);
    lua_pushliteral(L, "postgres");
    lua_setfield(L, -2, "backend");
    lua_pushstring(L, st.state);
    lua_setfield(L, -2, "state");
    if (st.error) {
        lua_pushfstring(L, "store: %s", st.error);
        lua_setfield(L, -2, "error");
    }
    lua_pushinteger(L, st.connections);
    lua_setfield(L, -2, "connections");
    lua_pushinteger(L, st.busy);
    lua_setfield(L, -2, "busy");
    lua_pushinteger(L, (lua_Integer)st.waiting);
    lua_setfield(L, -2, "waiting");
    return 1;
}

/* ---- open, close --------------------------------------------------------------------- */

static int l_close(lua_State *L) {
    ldb *d = luaL_checkudata(L, 1, PG_MT);
    if (!d->pg) return 0;
    if (d->f) {
        flusher *f = d->f;
        uv_timer_stop(&f->timer);
        flush_batch(f); /* sent before the pool closes, which fails it: 503s, not silence */
        if (f->b) {
            qc_barrier_free(f->b);
            f->b = NULL;
        }
        qc_pg_batch_free(f->batch);
        f->batch = NULL;
        f->d = NULL;
        uv_close((uv_handle_t *)&f->timer, flusher_closed);
        d->f = NULL;
    }
    qc_pg *pg = d->pg;
    d->pg = NULL;
    qc_pg_close(pg);
    if (d->cbref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, d->cbref);
    d->cbref = LUA_NOREF;
    return 0;
}

static int l_tostring(lua_State *L) {
    ldb *d = luaL_checkudata(L, 1, PG_MT);
    if (d->pg) lua_pushfstring(L, "qc.store.PG (%p)", (void *)d);
    else lua_pushliteral(L, "qc.store.PG (closed)");
    return 1;
}

/* store.redact(uri) -> the URI with its password replaced by *** (for logs and /health) */
int qc_store_pg_redact(lua_State *L) {
    size_t len;
    const char *uri = luaL_checklstring(L, 1, &len);
    char *out = lua_newuserdatauv(L, len + 8, 0);
    qc_pg_redact(uri, out, len + 8);
    lua_pushstring(L, out);
    return 1;
}

int qc_store_pg_is_uri(const char *target) {
    return !strncmp(target, "postgres://", 11) || !strncmp(target, "postgresql://", 13);
}

int qc_store_pg_open(lua_State *L, const char *uri, int pool) {
    if (pool <= 0) pool = DEFAULT_POOL;
    ldb *d = lua_newuserdatauv(L, sizeof *d, 0);
    memset(d, 0, sizeof *d);
    d->cbref = LUA_NOREF;
    luaL_setmetatable(L, PG_MT);
    d->h = qc_bindings_host(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &builder_key);
    d->B = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_newtable(L);
    lua_setfield(L, -2, "channels");
    lua_newtable(L);
    lua_setfield(L, -2, "reconnect");
    d->cbref = luaL_ref(L, LUA_REGISTRYINDEX);
    char err[512];
    d->pg = qc_pg_open(qc_host_loop(d->h), uri, pool, err, sizeof err);
    if (!d->pg) return fail(L, err, "OPEN_FAILED");
    qc_pg_on_session(d->pg, on_notify, on_reconnected, d);
    return 1;
}

/* db:transaction(fn) and tx:transaction(fn), in Lua so that fn may yield. While fn runs, the
 * same task's calls on the db itself (db:run inside db:transaction, as scripts written for
 * SQLite do) go to the transaction's connection: on another pool connection they would
 * not see its writes, and would wait forever on its row locks. A nested db:transaction
 * becomes a savepoint, as on SQLite. */
static const char TX_LUA[] =
    "local PG, TX = ...\n"
    "local pcall, error, running, type = pcall, error, coroutine.running, type\n"
    "local active = setmetatable({}, { __mode = 'k' }) -- task -> { db, tx }\n"
    "local function finish(co, prev, tx, ok, ...)\n"
    "  active[co] = prev\n"
    "  if not ok then\n"
    "    local e = ...\n"
    "    tx:_abort()\n"
    "    error(e, 0)\n"
    "  end\n"
    "  local cok, err, code = tx:_commit()\n"
    "  if not cok then return nil, err, code end\n"
    "  return true, ...\n"
    "end\n"
    "local function run(db, tx, fn)\n"
    "  local co = running()\n"
    "  local prev = active[co]\n"
    "  active[co] = { db = db, tx = tx }\n"
    "  return finish(co, prev, tx, pcall(fn, tx))\n"
    "end\n"
    "function TX.transaction(tx, fn)\n"
    "  if type(fn) ~= 'function' then error(\"bad argument #1 to 'transaction' (function expected)\", 2) end\n"
    "  local sp = tx:_sub()\n"
    "  local ok, err, code = sp:_savepoint()\n"
    "  if not ok then return nil, err, code end\n"
    "  local cur = active[running()]\n"
    "  return run(cur and cur.db, sp, fn)\n"
    "end\n"
    "function PG.transaction(db, fn)\n"
    "  local cur = active[running()]\n"
    "  if cur and cur.db == db then return TX.transaction(cur.tx, fn) end\n"
    "  if type(fn) ~= 'function' then error(\"bad argument #1 to 'transaction' (function expected)\", 2) end\n"
    "  local conn, gen, code = db:_begin()\n"
    "  if not conn then return nil, gen, code end\n"
    "  return run(db, db:_tx(conn, gen), fn)\n"
    "end\n"
    "-- on SQLite fn gets the db itself: what else a script may call on it\n"
    "for _, m in ipairs { 'defer', 'status', 'try_lock', 'unlock', 'listen', 'on_reconnect', 'pid' } do\n"
    "  TX[m] = function(tx, ...) local db = tx:_db(); return db[m](db, ...) end\n"
    "end\n"
    "for _, m in ipairs { 'query', 'first', 'run', 'exec' } do\n"
    "  local direct, on_tx = PG[m], TX[m]\n"
    "  PG[m] = function(db, ...)\n"
    "    local cur = active[running()]\n"
    "    if cur and cur.db == db then return on_tx(cur.tx, ...) end\n"
    "    return direct(db, ...)\n"
    "  end\n"
    "end\n";

static const luaL_Reg pg_methods[] = {
    {"query", l_query},   {"first", l_first},   {"run", l_run},         {"exec", l_exec},
    {"defer", l_defer},   {"close", l_close},   {"backend", l_backend}, {"status", l_status},
    {"listen", l_listen}, {"on_reconnect", l_on_reconnect}, {"try_lock", l_try_lock},
    {"unlock", l_unlock}, {"pid", l_pid},       {"_begin", l_begin},    {"_tx", l_tx},
    {NULL, NULL},
};

static const luaL_Reg tx_methods[] = {
    {"query", t_query},   {"first", t_first},         {"run", t_run},       {"exec", t_exec},
    {"_commit", t_commit}, {"_abort", t_abort}, {"_savepoint", t_savepoint}, {"_sub", t_sub}, {"_db", t_db}, {"backend", t_backend},
    {NULL, NULL},
};

void qc_store_pg_register(lua_State *L) {
    if (luaL_newmetatable(L, PG_MT)) {
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
        luaL_newlib(L, pg_methods);
        lua_setfield(L, -2, "__index");
    }
    if (luaL_newmetatable(L, TX_MT)) {
        lua_pushcfunction(L, t_gc);
        lua_setfield(L, -2, "__gc");
        luaL_newlib(L, tx_methods);
        lua_setfield(L, -2, "__index");
    }
    /* stack: PG_MT, TX_MT */
    if (luaL_loadbuffer(L, TX_LUA, sizeof TX_LUA - 1, "=qc.store.pg") != LUA_OK) lua_error(L);
    lua_getfield(L, -3, "__index");
    lua_getfield(L, -3, "__index");
    lua_call(L, 2, 0);
    lua_pop(L, 2);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &builder_key) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_newthread(L);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &builder_key);
    } else {
        lua_pop(L, 1);
    }
}
