/* SQLite storage: one connection per qc_store, opened in WAL mode (synchronous=NORMAL, or FULL
 * with QC_STORE_SYNC=full, which main.c passes on), used from one thread, with a small LRU
 * cache of prepared statements keyed by SQL text. Knows nothing of Lua; bindings/store.c is its Lua face.
 * Calls block (up to the 5 s busy timeout when another connection holds the write lock). */
#ifndef QC_STORE_H
#define QC_STORE_H

#include <stddef.h>

#include <sqlite3.h>

/* How many distinct SQL texts keep a prepared statement. */
#define QC_STORE_CACHE_SIZE 64
#define QC_STORE_BUSY_TIMEOUT_MS 5000

typedef struct qc_store qc_store;

/* synchronous=FULL (1) or NORMAL (0, the default) for every store opened after this call;
 * main.c passes QC_STORE_SYNC on from the configuration. */
void qc_store_set_sync_full(int full);

/* Opens (creating if missing) the database at path; its directory must exist. Sets
 * journal_mode=WAL (fails unless SQLite accepts it; an in-memory database keeps "memory"),
 * synchronous NORMAL (FULL after qc_store_set_sync_full(1)), busy timeout 5 s,
 * foreign_keys=ON, extended result codes. NULL on failure, with the reason in err. */
qc_store *qc_store_open(const char *path, char *err, size_t errlen);

/* The connection, for stepping and reading statements. Owned by the store. */
sqlite3 *qc_store_db(qc_store *s);

/* A prepared statement for exactly one SQL statement (trailing whitespace, comments and
 * semicolons allowed; a second statement is an error: use qc_store_exec), from the cache
 * when this text was prepared before. It comes back reset with no bindings. Owned by the
 * store: do not finalize it; it stays valid until the next qc_store_prepare or
 * qc_store_close. Reset it once done, so it does not hold a read snapshot open.
 * NULL on failure (err filled, qc_store_errcode tells the kind). */
sqlite3_stmt *qc_store_prepare(qc_store *s, const char *sql, char *err, size_t errlen);

/* Runs one or more statements with no parameters (schema, BEGIN/COMMIT); rows are
 * discarded. 0 or -1 with err filled. */
int qc_store_exec(qc_store *s, const char *sql, char *err, size_t errlen);

/* Runs one statement with no parameters and no rows through the statement cache:
 * for BEGIN and COMMIT, which every group commit runs, and which qc_store_exec would parse
 * each time. 0 or -1 with err filled. */
int qc_store_run_cached(qc_store *s, const char *sql, char *err, size_t errlen);

/* Deferred writes (group commit): rows nobody reads back at once (issued tokens) are
 * queued with qc_store_defer and written together by qc_store_flush, in one transaction,
 * instead of one commit each. Whoever queues schedules the flush (the Lua binding: on the
 * next turn of the loop); qc_store_close flushes what is still queued. */
typedef struct {
    enum { QC_STORE_NULL, QC_STORE_INT, QC_STORE_FLOAT, QC_STORE_TEXT } type;
    long long i;
    double d;
    const char *text; /* QC_STORE_TEXT: copied by qc_store_defer */
    size_t len;
} qc_store_value;

/* Binds v to parameter i (1-based) of st. Text is bound without a copy: it must stay
 * valid until st is reset and its bindings cleared. An SQLite result code. */
int qc_store_bind(sqlite3_stmt *st, int i, const qc_store_value *v);

/* Queues one statement with its parameter values. The SQL is prepared now, so a bad
 * statement or a wrong number of values fails here, not at the flush. 0 or -1. */
int qc_store_defer(qc_store *s, const char *sql, const qc_store_value *values, int n, char *err,
                   size_t errlen);

/* Rows queued and not yet written. */
size_t qc_store_pending(const qc_store *s);

/* Writes every queued row in one transaction and empties the queue. On failure nothing of
 * the batch is written (rolled back), *rows tells how many rows it held and err says why.
 * When another connection held the write lock (qc_store_errcode is BUSY), the rows stay
 * queued for a later flush; after any other failure they are dropped. 0 or -1. */
int qc_store_flush(qc_store *s, size_t *rows, char *err, size_t errlen);

/* Drops every queued row unwritten (a batch whose callers were told it failed). */
void qc_store_discard(qc_store *s);

/* The SQLite extended result code of the last failed qc_store_prepare/qc_store_exec
 * (SQLITE_ERROR for "not exactly one statement", SQLITE_NOMEM for out of memory). */
int qc_store_errcode(const qc_store *s);

/* A stable name for an SQLite result code: "CONSTRAINT" (SQLITE_CONSTRAINT_*), "BUSY"
 * (SQLITE_BUSY_*, SQLITE_LOCKED_*: another connection holds a lock), else "SQL_ERROR". */
const char *qc_store_code_name(int rc);

/* Statement cache counters since open: lookups answered from the cache, and prepares. */
void qc_store_cache_stats(const qc_store *s, size_t *hits, size_t *misses);

/* Flushes deferred rows (a failure is lost with them: call qc_store_flush first to see
 * it), finalizes cached statements and closes the connection (a transaction still open is
 * rolled back). NULL is a no-op. */
void qc_store_close(qc_store *s);

#endif
