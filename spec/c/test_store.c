/* Unit tests for runtime/store/store.c on a real SQLite file in a temp dir: durable settings,
 * the statement cache (hits, LRU eviction), constraint codes, data surviving a reopen.
 * TAP-style output; exit status 1 on failure. */
#define _POSIX_C_SOURCE 200809L
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"

/* One pragma's integer or text answer through the cache. */
static long long pragma_int(qc_store *s, const char *sql) {
    char err[256];
    sqlite3_stmt *st = qc_store_prepare(s, sql, err, sizeof err);
    if (!st || sqlite3_step(st) != SQLITE_ROW) return -1;
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return v;
}

static int pragma_is(qc_store *s, const char *sql, const char *want) {
    char err[256];
    sqlite3_stmt *st = qc_store_prepare(s, sql, err, sizeof err);
    if (!st || sqlite3_step(st) != SQLITE_ROW) return 0;
    int same = strcmp((const char *)sqlite3_column_text(st, 0), want) == 0;
    sqlite3_reset(st);
    return same;
}

static int insert(qc_store *s, const char *email, sqlite3_stmt **used, int *rc) {
    char err[256];
    sqlite3_stmt *st = qc_store_prepare(s, "INSERT INTO users(email) VALUES (?)", err, sizeof err);
    *used = st;
    if (!st) return -1;
    sqlite3_bind_text(st, 1, email, -1, SQLITE_TRANSIENT);
    *rc = sqlite3_step(st);
    sqlite3_reset(st);
    return *rc == SQLITE_DONE ? 0 : -1;
}

int main(void) {
    char dir[] = "/tmp/qc_store_test.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char path[256], wal[300], shm[300];
    snprintf(path, sizeof path, "%s/qc.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    char err[256] = "";

    qc_store *s = qc_store_open(path, err, sizeof err);
    ok(s != NULL, "opens a new database file in an existing directory");
    if (!s) {
        printf("# %s\n", err);
        return 1;
    }
    ok(pragma_is(s, "PRAGMA journal_mode", "wal"), "journal_mode is wal");
    ok(pragma_int(s, "PRAGMA synchronous") == 1, "synchronous is NORMAL (WAL: durable across a process crash)");
    ok(pragma_int(s, "PRAGMA foreign_keys") == 1, "foreign keys are enforced");
    ok(pragma_int(s, "PRAGMA busy_timeout") == QC_STORE_BUSY_TIMEOUT_MS, "busy timeout is 5 s");

    ok(qc_store_exec(s, "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL);"
                        "CREATE TABLE notes(user_id INTEGER REFERENCES users(id), body TEXT)",
                     err, sizeof err) == 0,
       "exec runs several schema statements");

    size_t hits0, misses0, hits, misses;
    qc_store_cache_stats(s, &hits0, &misses0);
    sqlite3_stmt *first = NULL, *second = NULL;
    int rc = 0;
    ok(insert(s, "ada@example.com", &first, &rc) == 0, "inserts a row with a cached statement");
    ok(insert(s, "bob@example.com", &second, &rc) == 0, "inserts a second row");
    qc_store_cache_stats(s, &hits, &misses);
    ok(first == second && hits == hits0 + 1 && misses == misses0 + 1,
       "the second insert reuses the prepared statement (one miss, one hit)");
    struct stat sb;
    ok(stat(wal, &sb) == 0 && sb.st_size > 0, "commits go to the -wal file");

    ok(insert(s, "ada@example.com", &first, &rc) == -1 && rc == SQLITE_CONSTRAINT_UNIQUE &&
           strcmp(qc_store_code_name(rc), "CONSTRAINT") == 0,
       "a duplicate email is a UNIQUE constraint violation named CONSTRAINT");
    ok(qc_store_exec(s, "INSERT INTO notes VALUES (99, 'orphan')", err, sizeof err) == -1 &&
           qc_store_errcode(s) == SQLITE_CONSTRAINT_FOREIGNKEY &&
           strcmp(qc_store_code_name(qc_store_errcode(s)), "CONSTRAINT") == 0,
       "a dangling foreign key is refused with CONSTRAINT");
    ok(strcmp(qc_store_code_name(SQLITE_BUSY_SNAPSHOT), "BUSY") == 0 &&
           strcmp(qc_store_code_name(SQLITE_ERROR), "SQL_ERROR") == 0,
       "BUSY and SQL_ERROR codes");

    ok(qc_store_prepare(s, "SELEKT 1", err, sizeof err) == NULL && strstr(err, "syntax error") &&
           strcmp(qc_store_code_name(qc_store_errcode(s)), "SQL_ERROR") == 0,
       "a syntax error fails with SQLite's message");
    ok(qc_store_prepare(s, "SELECT 1; SELECT 2", err, sizeof err) == NULL &&
           strstr(err, "more than one statement"),
       "prepare refuses a second statement instead of ignoring it");
    ok(qc_store_prepare(s, "SELECT 1; -- trailing comment\n ;", err, sizeof err) != NULL,
       "trailing semicolons and comments are fine");
    ok(qc_store_prepare(s, "  -- nothing\n", err, sizeof err) == NULL, "an empty statement fails");

    /* Fill the cache with distinct texts: the insert, least recently used, is evicted. */
    qc_store_cache_stats(s, &hits0, &misses0);
    for (int i = 0; i < QC_STORE_CACHE_SIZE; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "SELECT %d", i);
        if (!qc_store_prepare(s, sql, err, sizeof err)) break;
    }
    qc_store_cache_stats(s, &hits, &misses);
    ok(misses - misses0 == QC_STORE_CACHE_SIZE && hits == hits0, "64 new texts are 64 misses");
    ok(insert(s, "cy@example.com", &first, &rc) == 0, "an evicted statement is prepared again");
    qc_store_cache_stats(s, &hits0, &misses0);
    ok(misses0 == misses + 1 && hits0 == hits, "...as a miss");
    ok(qc_store_prepare(s, "SELECT 63", err, sizeof err) != NULL, "recent text still cached");
    qc_store_cache_stats(s, &hits, &misses);
    ok(hits == hits0 + 1, "...as a hit");

    /* Leave a statement mid-step: close must still close (and the test must not leak). */
    sqlite3_stmt *st = qc_store_prepare(s, "SELECT email FROM users ORDER BY id", err, sizeof err);
    ok(st && sqlite3_step(st) == SQLITE_ROW, "a statement left mid-step");
    qc_store_close(s);

    s = qc_store_open(path, err, sizeof err);
    ok(s != NULL, "reopens the file");
    ok(s && pragma_int(s, "SELECT count(*) FROM users") == 3, "the three rows survived close");
    ok(s && pragma_is(s, "SELECT email FROM users WHERE id = 1", "ada@example.com"),
       "with their values");

    /* Deferred writes: queued, invisible until flushed, written in one batch. */
    ok(qc_store_exec(s, "CREATE TABLE log(id INTEGER PRIMARY KEY, msg TEXT, n INTEGER, f REAL, x)", err,
                     sizeof err) == 0,
       "creates a table for deferred rows");
    const char *ins = "INSERT INTO log(msg, n, f, x) VALUES (?, ?, ?, ?)";
    char msg[] = "first row, copied";
    qc_store_value v[4] = {{.type = QC_STORE_TEXT, .text = msg, .len = strlen(msg)},
                           {.type = QC_STORE_INT, .i = 42},
                           {.type = QC_STORE_FLOAT, .d = 1.5},
                           {.type = QC_STORE_NULL}};
    int queued = qc_store_defer(s, ins, v, 4, err, sizeof err) == 0;
    memset(msg, 'X', strlen(msg)); /* the caller's buffer may change: the queue has its copy */
    v[0].text = "second";
    v[0].len = 6;
    queued = queued && qc_store_defer(s, ins, v, 4, err, sizeof err) == 0;
    ok(queued && qc_store_pending(s) == 2, "queues two rows");
    ok(pragma_int(s, "SELECT count(*) FROM log") == 0, "nothing is written before the flush");
    ok(qc_store_defer(s, ins, v, 3, err, sizeof err) == -1 && strstr(err, "number of values"),
       "refuses a row whose values do not match the parameters");
    ok(qc_store_defer(s, "INSERT INTO nowhere VALUES (?)", v, 1, err, sizeof err) == -1 &&
           strstr(err, "no such table"),
       "refuses a statement that does not prepare, at once");
    ok(qc_store_pending(s) == 2, "a refused row is not queued");
    size_t rows = 0;
    ok(qc_store_flush(s, &rows, err, sizeof err) == 0 && rows == 2 && qc_store_pending(s) == 0,
       "flushes both rows and empties the queue");
    ok(pragma_int(s, "SELECT count(*) FROM log WHERE n = 42 AND f = 1.5 AND x IS NULL") == 2 &&
           pragma_is(s, "SELECT msg FROM log WHERE id = 1", "first row, copied") &&
           pragma_is(s, "SELECT msg FROM log WHERE id = 2", "second"),
       "with every value as queued");
    ok(qc_store_flush(s, &rows, err, sizeof err) == 0 && rows == 0, "an empty flush is a no-op");

    /* One bad row loses its batch, whole: nothing half-written. */
    qc_store_value good = {.type = QC_STORE_TEXT, .text = "zed@example.com", .len = 15};
    qc_store_value dup = {.type = QC_STORE_TEXT, .text = "ada@example.com", .len = 15};
    qc_store_defer(s, "INSERT INTO users(email) VALUES (?)", &good, 1, err, sizeof err);
    qc_store_defer(s, "INSERT INTO users(email) VALUES (?)", &dup, 1, err, sizeof err);
    ok(qc_store_flush(s, &rows, err, sizeof err) == -1 && rows == 2 && strstr(err, "UNIQUE"),
       "a constraint failure fails the flush, counting the rows lost");
    ok(pragma_int(s, "SELECT count(*) FROM users WHERE email = 'zed@example.com'") == 0 &&
           qc_store_pending(s) == 0,
       "rolls the batch back and empties the queue");
    ok(pragma_int(s, "SELECT count(*) FROM users") == 3, "the store is as it was");

    /* Another connection holds the write lock: the batch waits in the queue, then goes. */
    qc_store *other = qc_store_open(path, err, sizeof err);
    ok(other && qc_store_exec(other, "BEGIN IMMEDIATE", err, sizeof err) == 0, "a second connection takes the write lock");
    sqlite3_busy_timeout(qc_store_db(s), 20);
    qc_store_defer(s, "INSERT INTO users(email) VALUES (?)", &good, 1, err, sizeof err);
    ok(qc_store_flush(s, &rows, err, sizeof err) == -1 && strcmp(qc_store_code_name(qc_store_errcode(s)), "BUSY") == 0 &&
           qc_store_pending(s) == 1,
       "a busy write lock keeps the batch queued");
    qc_store_exec(other, "COMMIT", err, sizeof err);
    qc_store_close(other);
    ok(qc_store_flush(s, &rows, err, sizeof err) == 0 && rows == 1 &&
           pragma_int(s, "SELECT count(*) FROM users WHERE email = 'zed@example.com'") == 1,
       "and writes it once the lock is free");

    /* A batch whose callers were answered 503 is dropped, never written later. */
    qc_store_defer(s, "INSERT INTO users(email) VALUES (?)", &dup, 1, err, sizeof err);
    qc_store_discard(s);
    ok(qc_store_pending(s) == 0 && qc_store_flush(s, &rows, err, sizeof err) == 0 && rows == 0,
       "discard empties the queue");
    qc_store_discard(NULL);

    /* Close writes what is still queued. */
    v[0].text = "queued at close";
    v[0].len = strlen(v[0].text);
    qc_store_defer(s, ins, v, 4, err, sizeof err);
    qc_store_close(s);
    s = qc_store_open(path, err, sizeof err);
    ok(s && pragma_is(s, "SELECT msg FROM log WHERE id = 3", "queued at close"), "close flushes the queue");
    qc_store_close(s);
    qc_store_close(NULL);

    char bad[300];
    snprintf(bad, sizeof bad, "%s/missing/qc.db", dir);
    ok(qc_store_open(bad, err, sizeof err) == NULL && strstr(err, "cannot open"),
       "a missing directory fails to open");
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("this is not a database, it is a text file of some length.....", f);
        fclose(f);
    }
    unlink(wal);
    unlink(shm);
    ok(qc_store_open(path, err, sizeof err) == NULL && strstr(err, "not a database"),
       "a file that is not a database fails to open");

    unlink(path);
    unlink(wal);
    unlink(shm);
    rmdir(dir);
    printf("%d passed, %d failed\n", count - failures, failures);
    return failures ? 1 : 0;
}
