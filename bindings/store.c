/* qc.store: Lua face of runtime/store/store.c. A db userdata ("qc.store.DB") owns one qc_store;
 * queries bind Lua values, step to completion in C and always reset the cached statement,
 * so no read snapshot outlives a call. Calls block the caller (SQLite has no async API).
 * db:defer queues a write for the group commit that a zero timer runs on the next turn of
 * the loop; the answer of a request that deferred a write waits for that commit (a barrier,
 * runtime/host/task.h), so nothing is answered as done before it is on disk. */
#define _POSIX_C_SOURCE 200809L
#include "store/store.h"
#include "store_pg.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "../runtime/host/bindings.h"
#include "../runtime/host/host.h"
#include "../runtime/host/task.h"
#include "../runtime/log.h"

#define DB_MT "qc.store.DB"
#define TX_SAVEPOINT "qc_tx"

/* The group commit's timer. Heap-allocated apart from the userdata: libuv owns it until
 * its close callback, which may come after Lua collected the db. */
typedef struct {
    uv_timer_t timer; /* first: see task.h on handle ownership */
    qc_store *s;      /* NULL once the db closed */
    int scheduled;
    qc_barrier *b;    /* the requests whose answers wait for the next commit */
} flusher;

typedef struct {
    qc_store *s; /* NULL once closed */
    flusher *f;  /* created by the first db:defer */
} ldb;

#define MAX_DEFER_VALUES 64
#define DEFER_RETRY_MS 250

static const char *check_cstring(lua_State *L, int arg) {
    size_t len;
    const char *s = luaL_checklstring(L, arg, &len);
    luaL_argcheck(L, strlen(s) == len, arg, "must not contain NUL bytes");
    return s;
}

static qc_store *check_db(lua_State *L) {
    ldb *d = luaL_checkudata(L, 1, DB_MT);
    if (!d->s) luaL_error(L, "attempt to use a closed database");
    return d->s;
}

static int fail(lua_State *L, const char *msg, const char *code) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, code);
    return 3;
}

static int fail_rc(lua_State *L, sqlite3 *db, int rc) {
    lua_pushnil(L);
    lua_pushfstring(L, "store: %s", sqlite3_errmsg(db));
    lua_pushstring(L, qc_store_code_name(rc));
    return 3;
}

/* The Lua value at idx as an SQL value; strings are not copied (they stay on the stack or
 * in a table argument while used). Values SQL cannot hold are argument mistakes. */
static qc_store_value sql_value(lua_State *L, int idx, int arg) {
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return (qc_store_value){.type = QC_STORE_NULL};
    case LUA_TBOOLEAN: return (qc_store_value){.type = QC_STORE_INT, .i = lua_toboolean(L, idx)};
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) return (qc_store_value){.type = QC_STORE_INT, .i = lua_tointeger(L, idx)};
        return (qc_store_value){.type = QC_STORE_FLOAT, .d = lua_tonumber(L, idx)};
    case LUA_TSTRING: {
        size_t len;
        const char *t = lua_tolstring(L, idx, &len);
        return (qc_store_value){.type = QC_STORE_TEXT, .text = t, .len = len};
    }
    default:
        luaL_argerror(L, arg, lua_pushfstring(L, "cannot bind a %s", luaL_typename(L, idx)));
        return (qc_store_value){.type = QC_STORE_NULL}; /* not reached */
    }
}

/* Binds the Lua value at idx to parameter i. Text is bound without a copy: the statement is
 * stepped, reset and cleared before the string can go (do_statement; qc_store_prepare
 * clears too). */
static int bind_value(lua_State *L, sqlite3_stmt *st, int i, int idx, int arg) {
    qc_store_value v = sql_value(L, idx, arg);
    return qc_store_bind(st, i, &v);
}

/* Binds a table's fields to :name / @name / $name parameters. A key that names no parameter
 * is a typo, so it raises; a parameter with no key binds NULL (nil and absent are one). */
static int bind_named(lua_State *L, sqlite3_stmt *st, int arg) {
    int n = sqlite3_bind_parameter_count(st);
    for (int i = 1; i <= n; i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        if (!name || name[0] == '?')
            return luaL_argerror(L, arg, "positional parameter in a statement bound by name");
        lua_getfield(L, arg, name + 1);
        int rc = bind_value(L, st, i, -1, arg);
        lua_pop(L, 1);
        if (rc != SQLITE_OK) return rc;
    }
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_argerror(L, arg, "parameter table keys must be names");
        const char *key = lua_tostring(L, -1);
        int found = 0;
        for (const char *p = ":@$"; *p && !found; p++) {
            lua_pushfstring(L, "%c%s", *p, key);
            found = sqlite3_bind_parameter_index(st, lua_tostring(L, -1)) > 0;
            lua_pop(L, 1);
        }
        if (!found)
            return luaL_argerror(L, arg, lua_pushfstring(L, "no parameter :%s in the statement", key));
    }
    return SQLITE_OK;
}

/* Arguments from `first` on: one table binds by name, otherwise one value per parameter. */
static int bind_params(lua_State *L, sqlite3_stmt *st, int first) {
    int nargs = lua_gettop(L) - first + 1;
    if (nargs == 1 && lua_type(L, first) == LUA_TTABLE) return bind_named(L, st, first);
    int n = sqlite3_bind_parameter_count(st);
    if (nargs != n)
        return luaL_error(L, "bad arguments: statement has %d parameter(s), got %d", n, nargs);
    for (int i = 1; i <= n; i++) {
        int rc = bind_value(L, st, i, first + i - 1, first + i - 1);
        if (rc != SQLITE_OK) return rc;
    }
    return SQLITE_OK;
}

static void push_row(lua_State *L, sqlite3_stmt *st) {
    int ncol = sqlite3_column_count(st);
    lua_createtable(L, 0, ncol);
    for (int c = 0; c < ncol; c++) {
        switch (sqlite3_column_type(st, c)) {
        case SQLITE_INTEGER: lua_pushinteger(L, sqlite3_column_int64(st, c)); break;
        case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(st, c)); break;
        case SQLITE_TEXT: {
            const char *t = (const char *)sqlite3_column_text(st, c);
            lua_pushlstring(L, t ? t : "", (size_t)sqlite3_column_bytes(st, c));
            break;
        }
        case SQLITE_BLOB: {
            const void *b = sqlite3_column_blob(st, c);
            lua_pushlstring(L, b ? b : "", (size_t)sqlite3_column_bytes(st, c));
            break;
        }
        default: continue; /* NULL: the field stays absent */
        }
        lua_setfield(L, -2, sqlite3_column_name(st, c));
    }
}

enum mode { ALL, FIRST, RUN };

struct step_ctx {
    sqlite3 *db;
    sqlite3_stmt *st;
    enum mode mode;
};

/* Steps a query and pushes its rows (ALL) or first row (FIRST). Run under lua_pcall so that
 * a memory error while building rows still lets the caller reset the statement. */
static int step_p(lua_State *L) {
    struct step_ctx *c = lua_touserdata(L, 1);
    lua_Integer n = 0;
    if (c->mode == ALL) lua_newtable(L);
    for (;;) {
        int rc = sqlite3_step(c->st);
        if (rc == SQLITE_DONE) break;
        if (rc != SQLITE_ROW) return fail_rc(L, c->db, rc);
        push_row(L, c->st);
        if (c->mode == FIRST) return 1;
        lua_rawseti(L, -2, ++n);
    }
    if (c->mode == FIRST) lua_pushnil(L);
    return 1;
}

/* db:run: steps to the end with no Lua call in between, so the statement is reset before
 * anything is pushed (a memory error then cannot leave it mid-step) and no pcall is needed. */
static int run_statement(lua_State *L, sqlite3 *db, sqlite3_stmt *st) {
    sqlite3_int64 before = sqlite3_total_changes64(db);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) continue;
    char msg[512];
    if (rc != SQLITE_DONE) snprintf(msg, sizeof msg, "store: %s", sqlite3_errmsg(db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) return fail(L, msg, qc_store_code_name(rc));
    /* sqlite3_changes keeps the last INSERT/UPDATE/DELETE's count, so a statement that
     * changed nothing (a SELECT, DDL) would report an older one. */
    int changed = sqlite3_total_changes64(db) != before;
    lua_pushinteger(L, changed ? sqlite3_changes64(db) : 0);
    lua_pushinteger(L, sqlite3_last_insert_rowid(db));
    return 2;
}

static int do_statement(lua_State *L, enum mode mode) {
    qc_store *s = check_db(L);
    const char *sql = check_cstring(L, 2);
    char err[512];
    sqlite3_stmt *st = qc_store_prepare(s, sql, err, sizeof err);
    if (!st) return fail(L, err, qc_store_code_name(qc_store_errcode(s)));
    struct step_ctx c = {qc_store_db(s), st, mode};
    /* Nothing is stepped before binding succeeds, so raising here leaves no reader open. */
    int rc = bind_params(L, st, 3);
    if (rc != SQLITE_OK) return fail_rc(L, c.db, rc);
    if (mode == RUN) return run_statement(L, c.db, st);
    int top = lua_gettop(L);
    lua_pushcfunction(L, step_p);
    lua_pushlightuserdata(L, &c);
    int status = lua_pcall(L, 1, LUA_MULTRET, 0);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (status != LUA_OK) return lua_error(L);
    return lua_gettop(L) - top;
}

/* db:query(sql, ...) -> {row, ...} | nil, msg, code */
static int l_query(lua_State *L) { return do_statement(L, ALL); }

/* db:first(sql, ...) -> row | nil  (nil, msg, code on failure) */
static int l_first(lua_State *L) { return do_statement(L, FIRST); }

/* db:run(sql, ...) -> changes, last_insert_rowid | nil, msg, code */
static int l_run(lua_State *L) { return do_statement(L, RUN); }

/* db:exec(sql) -> true | nil, msg, code. Several statements, no parameters. */
static int l_exec(lua_State *L) {
    qc_store *s = check_db(L);
    const char *sql = check_cstring(L, 2);
    char err[512];
    if (qc_store_exec(s, sql, err, sizeof err) < 0)
        return fail(L, err, qc_store_code_name(qc_store_errcode(s)));
    lua_pushboolean(L, 1);
    return 1;
}

static void rollback(qc_store *s, int nested) {
    char err[256];
    /* Fails harmlessly when SQLite already rolled back (IOERR, FULL, NOMEM do). */
    qc_store_exec(s, nested ? "ROLLBACK TO " TX_SAVEPOINT "; RELEASE " TX_SAVEPOINT : "ROLLBACK",
                  err, sizeof err);
}

/* db:transaction(fn) -> true, fn's results | nil, msg, code (BEGIN or COMMIT failed).
 * fn(db) runs inside BEGIN IMMEDIATE ... COMMIT (a savepoint when already in a
 * transaction). An error in fn rolls back and is raised again. fn cannot yield: a write
 * lock held across a yield would stall every other writer, and other coroutines using this
 * connection would write into our transaction. */
static int l_transaction(lua_State *L) {
    qc_store *s = check_db(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    int nested = !sqlite3_get_autocommit(qc_store_db(s));
    char err[512];
    if (qc_store_run_cached(s, nested ? "SAVEPOINT " TX_SAVEPOINT : "BEGIN IMMEDIATE", err, sizeof err) < 0)
        return fail(L, err, qc_store_code_name(qc_store_errcode(s)));
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    int status = lua_pcall(L, 1, LUA_MULTRET, 0);
    ldb *d = lua_touserdata(L, 1);
    if (!d->s) {
        /* fn closed the database; closing rolled the transaction back. */
        if (status != LUA_OK) return lua_error(L);
        return luaL_error(L, "store: database closed inside its transaction (rolled back)");
    }
    if (status != LUA_OK) {
        rollback(s, nested);
        return lua_error(L);
    }
    if (qc_store_run_cached(s, nested ? "RELEASE " TX_SAVEPOINT : "COMMIT", err, sizeof err) < 0) {
        /* e.g. a deferred foreign key still violated: the transaction stays open. */
        const char *code = qc_store_code_name(qc_store_errcode(s));
        rollback(s, nested);
        return fail(L, err, code);
    }
    lua_pushboolean(L, 1);
    lua_insert(L, 3);
    return lua_gettop(L) - 2;
}

static void flush_now(uv_timer_t *timer);

/* Drops the queued batch and answers 503 to everyone who waits for it: only whole batches
 * are all-or-nothing. */
static void drop_batch(flusher *f) {
    qc_store_discard(f->s);
    qc_barrier_pass(f->b, "STORE_UNAVAILABLE", "the record of this request could not be written");
}

/* The group commit, then the answers that waited for it: sent if it committed, 503 if not
 * (and then the batch is dropped, since its callers were told it failed). */
static void flush_batch(flusher *f) {
    f->scheduled = 0;
    if (!f->s) return;
    size_t rows = 0;
    char err[512];
    if (qc_store_flush(f->s, &rows, err, sizeof err) == 0) {
        qc_barrier_pass(f->b, NULL, NULL);
        return;
    }
    size_t waiting = qc_barrier_waiting(f->b);
    if (!waiting && qc_store_pending(f->s)) { /* the write lock was busy: try again shortly */
        qc_log(QC_LOG_WARN, "store", "deferred write delayed", " rows=%zu error=\"%s\"", rows, err);
        f->scheduled = 1;
        uv_timer_start(&f->timer, flush_now, DEFER_RETRY_MS, 0);
        return;
    }
    qc_log(QC_LOG_ERROR, "store", "deferred write failed", " rows=%zu answers_503=%zu error=\"%s\"", rows, waiting,
           err);
    drop_batch(f);
}

/* On the loop turn after the first db:defer of a batch. */
static void flush_now(uv_timer_t *timer) { flush_batch((flusher *)timer); }

/* Commit and answer now: the host is stopping, or the db closing. */
static void flush_for_host(void *ud) {
    flusher *f = ud;
    uv_timer_stop(&f->timer);
    flush_batch(f);
}

static void flusher_closed(uv_handle_t *h) { free(h); }

/* db:defer(sql, ...) -> true | nil, msg, code. Queues the write (values as for db:run,
 * positional only) for one transaction with everything else queued in this turn of the
 * loop; a failure then is logged, not returned. A bad statement fails here. */
static int l_defer(lua_State *L) {
    qc_store *s = check_db(L);
    ldb *d = lua_touserdata(L, 1);
    const char *sql = check_cstring(L, 2);
    int n = lua_gettop(L) - 2;
    luaL_argcheck(L, n <= MAX_DEFER_VALUES, MAX_DEFER_VALUES + 3, "too many values");
    qc_store_value v[MAX_DEFER_VALUES];
    for (int i = 0; i < n; i++) v[i] = sql_value(L, i + 3, i + 3); /* qc_store_defer copies text */
    if (!d->f) {
        flusher *f = calloc(1, sizeof *f);
        if (!f) return luaL_error(L, "store: out of memory");
        qc_host *h = qc_bindings_host(L);
        f->b = qc_barrier_new(h, flush_for_host, f);
        if (!f->b) {
            free(f);
            return luaL_error(L, "store: out of memory");
        }
        uv_timer_init(qc_host_loop(h), &f->timer);
        f->timer.data = f;
        f->s = s;
        d->f = f;
    }
    char err[512];
    if (qc_store_defer(s, sql, v, n, err, sizeof err) < 0)
        return fail(L, err, qc_store_code_name(qc_store_errcode(s)));
    /* The caller's answer now waits for the commit of this row. */
    if (qc_barrier_join(d->f->b, qc_task_current(L)) < 0) {
        drop_batch(d->f);
        return luaL_error(L, "store: out of memory");
    }
    if (!d->f->scheduled) {
        d->f->scheduled = 1;
        uv_timer_start(&d->f->timer, flush_now, 0, 0);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* The one close: db:close(), __gc and __close. Idempotent. */
static int l_close(lua_State *L) {
    ldb *d = luaL_checkudata(L, 1, DB_MT);
    if (d->f) { /* commit what is queued, and answer whoever waits for it */
        flush_for_host(d->f);
        qc_barrier_free(d->f->b);
        d->f->b = NULL;
        d->f->s = NULL;
        uv_close((uv_handle_t *)&d->f->timer, flusher_closed);
        d->f = NULL;
    }
    qc_store_close(d->s);
    d->s = NULL;
    return 0;
}

static int l_tostring(lua_State *L) {
    ldb *d = luaL_checkudata(L, 1, DB_MT);
    if (d->s) lua_pushfstring(L, "qc.store.DB (%p)", (void *)d);
    else lua_pushliteral(L, "qc.store.DB (closed)");
    return 1;
}

/* SQLite handles answer the cluster calls too, so callers need no branches: one process
 * owns its file's rooms (try_lock is always true), there is no one to listen to. */
static int l_backend(lua_State *L) {
    check_db(L);
    lua_pushliteral(L, "sqlite");
    return 1;
}

static int l_status(lua_State *L) {
    check_db(L);
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "sqlite");
    lua_setfield(L, -2, "backend");
    lua_pushliteral(L, "ok");
    lua_setfield(L, -2, "state");
    return 1;
}

static int l_true(lua_State *L) {
    check_db(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_pid(lua_State *L) {
    check_db(L);
    lua_pushnil(L);
    return 1;
}

/* store.open(path | "sqlite:" path | postgres URI [, {pool = n}]) -> db | nil, msg, "OPEN_FAILED" */
static int l_open(lua_State *L) {
    const char *path = check_cstring(L, 1);
    if (qc_store_pg_is_uri(path)) {
        int pool = 0;
        if (lua_type(L, 2) == LUA_TTABLE) {
            lua_getfield(L, 2, "pool");
            if (!lua_isnil(L, -1)) {
                lua_Integer p = luaL_checkinteger(L, -1);
                luaL_argcheck(L, p >= 1 && p <= 64, 2, "pool must be 1..64");
                pool = (int)p;
            }
            lua_pop(L, 1);
        }
        return qc_store_pg_open(L, path, pool);
    }
    if (!strncmp(path, "sqlite:", 7)) path += 7;
    ldb *d = lua_newuserdatauv(L, sizeof *d, 0);
    d->s = NULL;
    d->f = NULL;
    luaL_setmetatable(L, DB_MT);
    char err[512];
    d->s = qc_store_open(path, err, sizeof err);
    if (!d->s) return fail(L, err, "OPEN_FAILED");
    return 1;
}

static const luaL_Reg db_methods[] = {
    {"exec", l_exec},   {"query", l_query},       {"first", l_first}, {"run", l_run},
    {"transaction", l_transaction}, {"defer", l_defer}, {"close", l_close},
    {"backend", l_backend}, {"status", l_status}, {"try_lock", l_true}, {"unlock", l_true},
    {"listen", l_true}, {"on_reconnect", l_true}, {"pid", l_pid}, {NULL, NULL},
};

static const luaL_Reg db_meta[] = {
    {"__gc", l_close},
    {"__close", l_close},
    {"__tostring", l_tostring},
    {"__index", NULL},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"open", l_open},
    {"redact", qc_store_pg_redact},
    {NULL, NULL},
};

int luaopen_qc_store(lua_State *L) {
    if (luaL_newmetatable(L, DB_MT)) {
        luaL_setfuncs(L, db_meta, 0);
        luaL_newlib(L, db_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    qc_store_pg_register(L);
    luaL_newlib(L, funcs);
    return 1;
}
