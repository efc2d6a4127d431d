/* SQLite storage: open with durable settings, a prepared-statement cache keyed by SQL text
 * (linear scan of 64 entries comparing lengths first, the last hit tried before the rest:
 * cheaper than hashing the text on every call), least recently used entry evicted. */
#include "store.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char *sql;
    size_t len;
    uint64_t used; /* s->clock at the last lookup; 0 = empty slot */
    sqlite3_stmt *stmt;
};

struct qc_store {
    sqlite3 *db;
    uint64_t clock;
    size_t hits, misses;
    size_t last; /* index of the last hit: a batch runs one statement many times over */
    int errcode;
    struct entry cache[QC_STORE_CACHE_SIZE];
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int fail(qc_store *s, int rc, char *err, size_t errlen, const char *msg) {
    s->errcode = rc;
    set_err(err, errlen, "store: %s", msg);
    return -1;
}

/* The one-row answer of a pragma, as text, into out. */
static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t outlen) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, outlen, "%s", t ? (const char *)t : "");
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Library-wide settings, before SQLite initialises itself on the first open. Memory
 * statistics take a global mutex on every allocation, and in the default serialized mode
 * every call takes the connection's mutex; a store is used by one thread (the loop's), so
 * both are pure cost: together about a fifth of an INSERT, measured. */
static void configure_library(void) {
    static int done;
    if (done) return;
    done = 1;
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); /* fails harmlessly if already initialised */
}

qc_store *qc_store_open(const char *path, char *err, size_t errlen) {
    configure_library();
    if (!path) {
        set_err(err, errlen, "store: no path");
        return NULL;
    }
    qc_store *s = calloc(1, sizeof *s);
    if (!s) {
        set_err(err, errlen, "store: out of memory");
        return NULL;
    }
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        set_err(err, errlen, "store: cannot open %s: %s", path,
                s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    /* Before journal_mode: switching to WAL needs a lock another process may hold. */
    sqlite3_busy_timeout(s->db, QC_STORE_BUSY_TIMEOUT_MS);

    char mode[32];
    rc = pragma_text(s->db, "PRAGMA journal_mode=WAL", mode, sizeof mode);
    if (rc != SQLITE_OK) {
        set_err(err, errlen, "store: cannot open %s: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    /* SQLite answers with the mode it ended up in rather than failing. */
    if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0) {
        set_err(err, errlen, "store: cannot open %s: journal_mode is %s, not wal", path, mode);
        goto fail;
    }
    char *msg = NULL;
    /* WAL with synchronous=NORMAL: a commit survives a crash of the process (it is in the
     * WAL, in the page cache) and costs no fsync; only a power loss may take the last
     * commits. FULL fsyncs every commit on the loop thread: measured here, 170 us of CPU
     * and a 0.3 ms stall of every connection per token issued. QC_STORE_SYNC=full restores
     * it for deployments that must survive power loss at that price. */
    const char *sync = getenv("QC_STORE_SYNC");
    int full = sync && strcmp(sync, "full") == 0;
    rc = sqlite3_exec(s->db, full ? "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON"
                                  : "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON",
                      NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        set_err(err, errlen, "store: cannot open %s: %s", path, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        goto fail;
    }
    return s;
fail:
    sqlite3_close_v2(s->db);
    free(s);
    return NULL;
}

sqlite3 *qc_store_db(qc_store *s) { return s ? s->db : NULL; }

int qc_store_errcode(const qc_store *s) { return s ? s->errcode : SQLITE_MISUSE; }

void qc_store_cache_stats(const qc_store *s, size_t *hits, size_t *misses) {
    if (hits) *hits = s ? s->hits : 0;
    if (misses) *misses = s ? s->misses : 0;
}

const char *qc_store_code_name(int rc) {
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: return "CONSTRAINT";
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return "BUSY";
    default: return "SQL_ERROR";
    }
}

/* 0 when what follows the first statement is only whitespace, comments and semicolons. */
static int tail_is_empty(sqlite3 *db, const char *tail) {
    while (*tail) {
        sqlite3_stmt *st = NULL;
        const char *next = NULL;
        int rc = sqlite3_prepare_v2(db, tail, -1, &st, &next);
        if (st) sqlite3_finalize(st);
        if (rc != SQLITE_OK || st) return 0;
        if (!next || next == tail) break;
        tail = next;
    }
    return 1;
}

static int holds(const struct entry *e, const char *sql, size_t len) {
    return e->stmt && e->len == len && memcmp(e->sql, sql, len) == 0;
}

/* The entry holding sql, or NULL with *victim set to the least recently used one. */
static struct entry *lookup(qc_store *s, const char *sql, size_t len, struct entry **victim) {
    if (holds(&s->cache[s->last], sql, len)) return &s->cache[s->last];
    *victim = &s->cache[0];
    for (size_t i = 0; i < QC_STORE_CACHE_SIZE; i++) {
        struct entry *c = &s->cache[i];
        if (holds(c, sql, len)) return c;
        if (c->used < (*victim)->used) *victim = c;
    }
    return NULL;
}

sqlite3_stmt *qc_store_prepare(qc_store *s, const char *sql, char *err, size_t errlen) {
    if (!s || !sql) {
        if (s) fail(s, SQLITE_MISUSE, err, errlen, "no SQL");
        else set_err(err, errlen, "store: no store");
        return NULL;
    }
    size_t len = strlen(sql);
    struct entry *victim = NULL, *e = lookup(s, sql, len, &victim);
    if (e) {
        e->used = ++s->clock;
        s->hits++;
        s->last = (size_t)(e - s->cache);
        sqlite3_reset(e->stmt);
        sqlite3_clear_bindings(e->stmt);
        return e->stmt;
    }

    s->misses++;
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK) {
        fail(s, rc, err, errlen, sqlite3_errmsg(s->db));
        return NULL;
    }
    if (!st) {
        fail(s, SQLITE_ERROR, err, errlen, "empty statement");
        return NULL;
    }
    if (!tail_is_empty(s->db, tail)) {
        sqlite3_finalize(st);
        fail(s, SQLITE_ERROR, err, errlen, "more than one statement (exec runs several)");
        return NULL;
    }
    char *copy = malloc(len + 1);
    if (!copy) {
        sqlite3_finalize(st);
        fail(s, SQLITE_NOMEM, err, errlen, "out of memory");
        return NULL;
    }
    memcpy(copy, sql, len + 1);
    if (victim->stmt) sqlite3_finalize(victim->stmt);
    free(victim->sql);
    *victim = (struct entry){.sql = copy, .len = len, .used = ++s->clock, .stmt = st};
    s->last = (size_t)(victim - s->cache);
    return st;
}

int qc_store_exec(qc_store *s, const char *sql, char *err, size_t errlen) {
    if (!s || !sql) {
        if (s) return fail(s, SQLITE_MISUSE, err, errlen, "no SQL");
        set_err(err, errlen, "store: no store");
        return -1;
    }
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        fail(s, rc, err, errlen, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int qc_store_run_cached(qc_store *s, const char *sql, char *err, size_t errlen) {
    sqlite3_stmt *st = qc_store_prepare(s, sql, err, errlen);
    if (!st) return -1;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return fail(s, rc, err, errlen, sqlite3_errmsg(s->db));
    return 0;
}

void qc_store_close(qc_store *s) {
    if (!s) return;
    for (size_t i = 0; i < QC_STORE_CACHE_SIZE; i++) {
        sqlite3_finalize(s->cache[i].stmt);
        free(s->cache[i].sql);
    }
    /* _v2: statements someone prepared on qc_store_db() outside the cache don't keep the
     * connection (and its WAL checkpoint) hanging; it closes when they are finalized. */
    sqlite3_close_v2(s->db);
    free(s);
}
