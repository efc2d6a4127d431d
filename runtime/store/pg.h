/* PostgreSQL storage through libpq's asynchronous API, driven by the libuv loop: a pool of
 * connections for queries (FIFO queue of requests waiting for a free one), connections that
 * a caller pins for a transaction (a lease), deferred-write batches sent as one pipeline in
 * one implicit transaction, and one session connection (lazily opened) for LISTEN and
 * advisory locks. Nothing here blocks the loop: connects use PQconnectStartParams and
 * PQconnectPoll, queries PQsendQueryParams, reads PQconsumeInput/PQisBusy/PQgetResult, all
 * on a uv_poll_t on PQsocket. Knows nothing of Lua; bindings/store_pg.c is its Lua face.
 *
 * A connection lost fails the request it was running with "UNAVAILABLE" (never retried: it
 * may have committed), and is reconnected with backoff (100 ms doubling to 5 s). Requests
 * queued while no connection is up wait up to QC_PG_WAIT_MS for one, then fail UNAVAILABLE. */
#ifndef QC_STORE_PG_H
#define QC_STORE_PG_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>
#include <uv.h>

#define QC_PG_WAIT_MS 5000
#define QC_PG_BACKOFF_MIN_MS 100
#define QC_PG_BACKOFF_MAX_MS 5000
#define QC_PG_POOL_MAX 64
#define QC_PG_CONNECT_TIMEOUT_MS 10000

typedef struct qc_pg qc_pg;

/* A pinned connection, as the caller holds it: the connection's index and its lease
 * generation. A lease whose connection dropped (or was released) is stale: requests on it
 * fail UNAVAILABLE at once. */
typedef struct {
    int conn;
    uint64_t gen;
} qc_pg_lease;

/* What a request ended with, valid only during the callback. code NULL: success, and res
 * holds the last result of the statement (NULL for a batch). Otherwise code is
 * "CONSTRAINT" | "BUSY" | "UNAVAILABLE" | "SQL_ERROR" and message starts with "store: ".
 * closed: the store is closing and the caller's waiter may be gone (do not resume it). */
typedef struct {
    const char *code;
    const char *message;
    const PGresult *res;
    qc_pg_lease lease; /* QC_PG_PIN requests: the connection now pinned */
    int closed;
} qc_pg_outcome;

typedef void (*qc_pg_done)(const qc_pg_outcome *o, void *ud);

/* Request flags. */
enum {
    QC_PG_SIMPLE = 1,  /* the simple query protocol: several statements, no parameters */
    QC_PG_PIN = 2,     /* on success, the connection stays pinned to the caller (o->lease) */
    QC_PG_UNPIN = 4,   /* after this request (whatever its outcome) the lease ends */
    QC_PG_SESSION = 8, /* on the session connection (opened on first use) */
};

/* Opens a pool of `pool` connections (1..QC_PG_POOL_MAX) to a libpq URI and starts
 * connecting at once; the pool is usable immediately (requests wait for a connection).
 * NULL when the URI does not parse, with the reason in err (the password never appears). */
qc_pg *qc_pg_open(uv_loop_t *loop, const char *uri, int pool, char *err, size_t errlen);

/* Sends a request: sql with n text parameters ($1..$n; values[i] NULL is SQL NULL) on a
 * pool connection (lease NULL), on a pinned one (lease), or on the session connection
 * (QC_PG_SESSION). Everything is copied. cb runs later from the loop, never inside this
 * call. -1 with err (and *code) when it cannot be queued (stale lease, closed store, out of
 * memory): cb will not run. */
int qc_pg_send(qc_pg *pg, const qc_pg_lease *lease, unsigned flags, const char *sql, int n,
               const char *const *values, qc_pg_done cb, void *ud, char *err, size_t errlen,
               const char **code);

/* A batch: statements with parameters sent as one pipeline, in one implicit transaction
 * (all or nothing), on a pool connection. Build with _new/_add, hand over with
 * qc_pg_send_batch (which takes ownership, even when it fails). */
typedef struct qc_pg_batch qc_pg_batch;
qc_pg_batch *qc_pg_batch_new(void);
int qc_pg_batch_add(qc_pg_batch *b, const char *sql, int n, const char *const *values);
size_t qc_pg_batch_count(const qc_pg_batch *b);
void qc_pg_batch_free(qc_pg_batch *b);
int qc_pg_send_batch(qc_pg *pg, qc_pg_batch *b, qc_pg_done cb, void *ud, char *err, size_t errlen,
                     const char **code);

/* The session connection: notifications on channels it LISTENs on, and a callback after it
 * came back from a loss (LISTENs re-issued first). Advisory locks taken on it die with it. */
typedef void (*qc_pg_notify_fn)(const char *channel, const char *payload, int pid, void *ud);
typedef void (*qc_pg_reconnect_fn)(void *ud);
void qc_pg_on_session(qc_pg *pg, qc_pg_notify_fn notify, qc_pg_reconnect_fn reconnected, void *ud);
/* Remembers a channel to re-LISTEN on after a reconnect (the caller sends the first LISTEN
 * itself). 0 or -1 (out of memory). */
int qc_pg_remember_channel(qc_pg *pg, const char *channel);
/* The session connection's backend pid, or 0 when it is not up. */
int qc_pg_session_pid(const qc_pg *pg);

/* "ok" (a connection is up), "connecting" (none up yet, none failed) or "down". */
typedef struct {
    const char *state;
    const char *error; /* the last connection error, or NULL */
    int connections;   /* pool connections up */
    int busy;          /* pool connections running a request or pinned */
    size_t waiting;    /* requests queued for a pool connection */
} qc_pg_status;
void qc_pg_get_status(const qc_pg *pg, qc_pg_status *st);

/* A stable code for a SQLSTATE: class 23 "CONSTRAINT"; 40001, 40P01, 55P03 "BUSY"; else
 * "SQL_ERROR". NULL sqlstate is "SQL_ERROR". */
const char *qc_pg_code_name(const char *sqlstate);

/* Rewrites `?` placeholders to $1, $2, ... outside string literals ('...', E'...',
 * $tag$...$tag$), quoted identifiers and comments (--, nested block comments). Returns a
 * malloc'd string (*count set to the number of placeholders), or NULL (out of memory). */
char *qc_pg_rewrite(const char *sql, size_t len, int *count);

/* The URI with its password replaced by ***, into out (for logs and /health). */
void qc_pg_redact(const char *uri, char *out, size_t outlen);

/* Whether libpq takes uri as connection parameters (checked at start, so a URI it refuses
 * stops the server instead of leaving it degraded). 0, or -1 with libpq's reason (one line;
 * it names the parameter, never its value). */
int qc_pg_check_uri(const char *uri, char *err, size_t errlen);

/* Fails every pending request (closed=1), closes the connections; handles are freed by
 * their close callbacks. NULL is a no-op. */
void qc_pg_close(qc_pg *pg);

#endif
