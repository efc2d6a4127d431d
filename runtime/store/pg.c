/* PostgreSQL pool on the libuv loop (pg.h). Each connection is a small state machine
 * (dead -> connecting -> idle <-> busy) driven by one uv_poll_t on its socket. Requests are
 * owned here from qc_pg_send until their callback returned. Callbacks run only once the
 * connection's state is consistent again, since they resume Lua tasks that send more. */
#define _POSIX_C_SOURCE 200809L
#include "pg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../log.h"

enum kind { REQ_QUERY, REQ_BATCH };
enum cstate { C_DEAD, C_CONNECTING, C_IDLE, C_BUSY };

struct req {
    struct req *next;
    unsigned flags;
    enum kind kind;
    char *sql;
    int n;
    char **values;
    qc_pg_batch *batch;
    qc_pg_done cb;
    void *ud;
    uint64_t queued_at;
    int internal; /* the session's re-LISTEN after a reconnect */
    /* what came back */
    PGresult *last;
    PGresult *error;
    int syncs; /* batch: PGRES_PIPELINE_SYNC seen */
};

struct stmt {
    char *sql;
    int n;
    char **values;
};

struct qc_pg_batch {
    struct stmt *s;
    size_t n, cap;
};

struct conn;
struct pollh {
    uv_poll_t h; /* first; h.data points at the conn, never at itself (host.c's drain) */
    struct conn *c;
};
struct timerh {
    uv_timer_t h;
    qc_pg *pg;
    struct conn *c; /* NULL: the pool's wait tick */
};

struct queue {
    struct req *head, *tail;
    size_t n;
};

struct conn {
    qc_pg *pg;
    int index;
    int session;
    PGconn *pc;
    struct pollh *poll;
    int fd;
    int events;
    enum cstate state;
    struct req *cur;
    int want_write;
    int pinned;
    uint64_t gen;
    struct queue leased; /* requests on the lease waiting for cur */
    struct timerh *retry;
    int backoff_ms;
    int ever_up;
    int failed; /* the last attempt or connection failed */
    uint64_t connect_at;
};

struct qc_pg {
    uv_loop_t *loop;
    char *uri;
    int npool;
    struct conn *conns; /* npool pool connections, then the session one */
    struct queue q;     /* waiting for a pool connection */
    struct queue sq;    /* waiting for the session connection */
    struct timerh *tick;
    struct timerh *kick; /* dispatch on the next turn: never inside qc_pg_send */
    int handles; /* open uv handles: the struct is freed when closed and none remain */
    int closed;
    int session_started;
    int session_missed;
    int was_up;    /* a pool connection was up since the last "down" line */
    int down;      /* the "down" line was logged */
    int any_fail;
    char lasterr[256];
    char **channels;
    size_t nchannels;
    qc_pg_notify_fn notify;
    qc_pg_reconnect_fn reconnected;
    void *session_ud;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- small pieces -------------------------------------------------------------------- */

const char *qc_pg_code_name(const char *st) {
    if (!st || strlen(st) != 5) return "SQL_ERROR";
    if (st[0] == '2' && st[1] == '3') return "CONSTRAINT";
    if (!strcmp(st, "40001") || !strcmp(st, "40P01") || !strcmp(st, "55P03")) return "BUSY";
    /* connection exceptions, and the server shutting down under us */
    if ((st[0] == '0' && st[1] == '8') || !strncmp(st, "57P", 3)) return "UNAVAILABLE";
    return "SQL_ERROR";
}

/* Copies at most one line of libpq's message (they end in newlines, some have DETAIL lines). */
static void one_line(char *out, size_t outlen, const char *msg) {
    if (!msg || !*msg) msg = "unknown error";
    size_t i = 0;
    while (msg[i] && msg[i] != '\n' && i + 1 < outlen) {
        out[i] = msg[i] == '"' ? '\'' : msg[i];
        i++;
    }
    out[i] = 0;
}

char *qc_pg_rewrite(const char *sql, size_t len, int *count) {
    /* Every ? becomes at most "$" and 10 digits: size the output for the worst case. */
    size_t q = 0;
    for (size_t i = 0; i < len; i++) q += sql[i] == '?';
    if (q > (SIZE_MAX - len - 1) / 11) return NULL;
    char *out = malloc(len + q * 11 + 1);
    if (!out) return NULL;
    size_t o = 0, i = 0;
    int n = 0;
    while (i < len) {
        char ch = sql[i];
        if (ch == '\'') {
            /* E'...' takes backslash escapes; standard strings only '' */
            int esc = i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e') &&
                      (i < 2 || !(sql[i - 2] == '_' || (sql[i - 2] >= 'a' && sql[i - 2] <= 'z') ||
                                  (sql[i - 2] >= 'A' && sql[i - 2] <= 'Z') || (sql[i - 2] >= '0' && sql[i - 2] <= '9')));
            out[o++] = sql[i++];
            while (i < len) {
                if (esc && sql[i] == '\\' && i + 1 < len) {
                    out[o++] = sql[i++];
                    out[o++] = sql[i++];
                    continue;
                }
                if (sql[i] == '\'') {
                    out[o++] = sql[i++];
                    if (i < len && sql[i] == '\'') {
                        out[o++] = sql[i++];
                        continue;
                    }
                    break;
                }
                out[o++] = sql[i++];
            }
        } else if (ch == '"') {
            out[o++] = sql[i++];
            while (i < len) {
                if (sql[i] == '"') {
                    out[o++] = sql[i++];
                    if (i < len && sql[i] == '"') {
                        out[o++] = sql[i++];
                        continue;
                    }
                    break;
                }
                out[o++] = sql[i++];
            }
        } else if (ch == '-' && i + 1 < len && sql[i + 1] == '-') {
            while (i < len && sql[i] != '\n') out[o++] = sql[i++];
        } else if (ch == '/' && i + 1 < len && sql[i + 1] == '*') {
            int depth = 0;
            while (i < len) {
                if (sql[i] == '/' && i + 1 < len && sql[i + 1] == '*') {
                    depth++;
                    out[o++] = sql[i++];
                    out[o++] = sql[i++];
                } else if (sql[i] == '*' && i + 1 < len && sql[i + 1] == '/') {
                    depth--;
                    out[o++] = sql[i++];
                    out[o++] = sql[i++];
                    if (!depth) break;
                } else {
                    out[o++] = sql[i++];
                }
            }
        } else if (ch == '$') {
            /* $tag$ ... $tag$ (tag empty or an identifier not starting with a digit); $1 is
             * a parameter and is copied as it is. */
            size_t j = i + 1;
            while (j < len && (sql[j] == '_' || (sql[j] >= 'a' && sql[j] <= 'z') || (sql[j] >= 'A' && sql[j] <= 'Z') ||
                               (sql[j] & 0x80) || (j > i + 1 && sql[j] >= '0' && sql[j] <= '9')))
                j++;
            if (j < len && sql[j] == '$') {
                size_t taglen = j - i + 1;
                const char *tag = sql + i;
                memcpy(out + o, sql + i, taglen);
                o += taglen;
                i = j + 1;
                while (i < len) {
                    if (sql[i] == '$' && len - i >= taglen && memcmp(sql + i, tag, taglen) == 0) {
                        memcpy(out + o, sql + i, taglen);
                        o += taglen;
                        i += taglen;
                        break;
                    }
                    out[o++] = sql[i++];
                }
            } else {
                out[o++] = sql[i++];
            }
        } else if (ch == '?') {
            o += (size_t)sprintf(out + o, "$%d", ++n);
            i++;
        } else {
            out[o++] = sql[i++];
        }
    }
    out[o] = 0;
    *count = n;
    return out;
}

void qc_pg_redact(const char *uri, char *out, size_t outlen) {
    if (!outlen) return;
    const char *p = strstr(uri, "://");
    if (!p) {
        snprintf(out, outlen, "%s", uri);
        return;
    }
    p += 3;
    const char *end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *s = p; s < end; s++)
        if (*s == '@') at = s;
    const char *colon = NULL;
    if (at)
        for (const char *s = p; s < at; s++)
            if (*s == ':') {
                colon = s;
                break;
            }
    size_t o = 0;
    out[0] = 0;
#define PUT(str, n)                                                                                \
    do {                                                                                           \
        size_t _n = (n);                                                                           \
        if (o + _n >= outlen) _n = outlen - 1 - o;                                                 \
        memcpy(out + o, (str), _n);                                                                \
        o += _n;                                                                                   \
        out[o] = 0;                                                                                \
    } while (0)
    if (colon) {
        PUT(uri, (size_t)(colon + 1 - uri));
        PUT("***", 3);
        PUT(at, strlen(at));
    } else {
        PUT(uri, strlen(uri));
    }
    /* password=... among the query parameters */
    char *q = strstr(out, "password=");
    if (q) {
        char *v = q + 9;
        size_t vl = strcspn(v, "&#");
        char rest[512];
        snprintf(rest, sizeof rest, "%s", v + vl);
        *v = 0;
        o = strlen(out);
        PUT("***", 3);
        PUT(rest, strlen(rest));
    }
#undef PUT
}

/* ---- requests ------------------------------------------------------------------------ */

static void free_values(char **values, int n) {
    if (!values) return;
    for (int i = 0; i < n; i++) free(values[i]);
    free(values);
}

static char **copy_values(int n, const char *const *values, int *ok) {
    *ok = 1;
    if (n <= 0) return NULL;
    char **v = calloc((size_t)n, sizeof *v);
    if (!v) {
        *ok = 0;
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (!values[i]) continue;
        v[i] = strdup(values[i]);
        if (!v[i]) {
            free_values(v, n);
            *ok = 0;
            return NULL;
        }
    }
    return v;
}

static void req_free(struct req *r) {
    free(r->sql);
    free_values(r->values, r->n);
    qc_pg_batch_free(r->batch);
    PQclear(r->last);
    PQclear(r->error);
    free(r);
}

static void push(struct queue *q, struct req *r) {
    r->next = NULL;
    if (q->tail) q->tail->next = r;
    else q->head = r;
    q->tail = r;
    q->n++;
}

static void push_front(struct queue *q, struct req *r) {
    r->next = q->head;
    q->head = r;
    if (!q->tail) q->tail = r;
    q->n++;
}

static struct req *pop(struct queue *q) {
    struct req *r = q->head;
    if (!r) return NULL;
    q->head = r->next;
    if (!q->head) q->tail = NULL;
    q->n--;
    r->next = NULL;
    return r;
}

/* Runs the callback and frees the request. */
static void finish(qc_pg *pg, struct req *r, const char *code, const char *message, const PGresult *res,
                   qc_pg_lease lease) {
    /* a session call (a LISTEN) failed before the session ever came up: its first coming
     * up then counts as a comeback, so the owner makes good what it missed */
    if (code && (r->flags & QC_PG_SESSION) && !r->internal) pg->session_missed = 1;
    if (r->cb) {
        qc_pg_outcome o = {.code = code, .message = message, .res = res, .lease = lease, .closed = pg->closed};
        r->cb(&o, r->ud);
    }
    req_free(r);
}

static void fail_req(qc_pg *pg, struct req *r, const char *code, const char *message) {
    finish(pg, r, code, message, NULL, (qc_pg_lease){-1, 0});
}

static void fail_queue(qc_pg *pg, struct queue *q, const char *code, const char *message) {
    struct queue all = *q;
    *q = (struct queue){0};
    struct req *r;
    while ((r = pop(&all))) fail_req(pg, r, code, message);
}

/* ---- connections --------------------------------------------------------------------- */

static void maybe_free(qc_pg *pg);
static void start_connect(struct conn *c);
static void dispatch(qc_pg *pg);
static void on_poll(uv_poll_t *h, int status, int events);

static void handle_closed(uv_handle_t *h) {
    qc_pg *pg;
    if (h->type == UV_POLL) pg = ((struct pollh *)h)->c->pg;
    else pg = ((struct timerh *)h)->pg;
    free(h);
    pg->handles--;
    maybe_free(pg);
}

static void poll_close(struct conn *c) {
    if (!c->poll) return;
    uv_close((uv_handle_t *)&c->poll->h, handle_closed);
    c->poll = NULL;
    c->fd = -1;
    c->events = 0;
}

/* Watches the connection's socket for `events`, re-creating the poll handle when libpq
 * moved to another socket (it does while trying hosts or SSL modes). */
static int poll_set(struct conn *c, int events) {
    int fd = c->pc ? PQsocket(c->pc) : -1;
    if (fd < 0) return -1;
    if (c->poll && c->fd != fd) poll_close(c);
    if (!c->poll) {
        struct pollh *p = calloc(1, sizeof *p);
        if (!p) return -1;
        if (uv_poll_init(c->pg->loop, &p->h, fd) != 0) {
            free(p);
            return -1;
        }
        p->c = c;
        p->h.data = c;
        c->poll = p;
        c->fd = fd;
        c->events = 0;
        c->pg->handles++;
    }
    if (c->events != events) {
        uv_poll_start(&c->poll->h, events, on_poll);
        c->events = events;
    }
    return 0;
}

static int pool_up(const qc_pg *pg) {
    for (int i = 0; i < pg->npool; i++)
        if (pg->conns[i].state == C_IDLE || pg->conns[i].state == C_BUSY) return 1;
    return 0;
}

static void retry_fire(uv_timer_t *t) {
    struct conn *c = ((struct timerh *)t)->c;
    if (c->pg->closed || c->state != C_DEAD) return;
    start_connect(c);
}

static void schedule_retry(struct conn *c) {
    if (c->pg->closed) return;
    if (!c->retry) {
        c->retry = calloc(1, sizeof *c->retry);
        if (!c->retry) return; /* no memory: the next send retries */
        uv_timer_init(c->pg->loop, &c->retry->h);
        c->retry->pg = c->pg;
        c->retry->c = c;
        c->retry->h.data = c;
        c->pg->handles++;
    }
    int ms = c->backoff_ms ? c->backoff_ms : QC_PG_BACKOFF_MIN_MS;
    uv_timer_start(&c->retry->h, retry_fire, (uint64_t)ms, 0);
    c->backoff_ms = ms * 2 > QC_PG_BACKOFF_MAX_MS ? QC_PG_BACKOFF_MAX_MS : ms * 2;
}

/* The connection is gone (or never came): fail what it ran, break its lease, retry later. */
static void conn_lost(struct conn *c, const char *why) {
    qc_pg *pg = c->pg;
    char line[200], msg[300];
    one_line(line, sizeof line, why);
    snprintf(pg->lasterr, sizeof pg->lasterr, "postgres unavailable: %s", line);
    snprintf(msg, sizeof msg, "store: postgres unavailable: %s (retrying)", line);
    int was_connected = c->state == C_IDLE || c->state == C_BUSY;
    poll_close(c);
    if (c->pc) PQfinish(c->pc);
    c->pc = NULL;
    c->state = C_DEAD;
    c->failed = 1;
    pg->any_fail = 1;
    struct req *cur = c->cur;
    c->cur = NULL;
    c->want_write = 0;
    struct queue leased = c->leased;
    c->leased = (struct queue){0};
    if (c->pinned) {
        c->pinned = 0;
        c->gen++;
    }
    if (!c->session && !pool_up(pg) && !pg->down && (pg->was_up || !was_connected)) {
        qc_log(QC_LOG_WARN, "store", "postgres down", " error=\"%s\"", line);
        pg->down = 1;
        pg->was_up = 0;
    }
    schedule_retry(c);
    if (cur) fail_req(pg, cur, "UNAVAILABLE", msg);
    struct req *r;
    while ((r = pop(&leased))) fail_req(pg, r, "UNAVAILABLE", msg);
}

static void send_listens(struct conn *c, int tell);

/* NOTICEs (IF EXISTS ... skipping) would go to stderr unformatted: debug lines instead. */
static void on_notice(void *arg, const char *message) {
    (void)arg;
    char line[300];
    one_line(line, sizeof line, message);
    qc_log(QC_LOG_DEBUG, "store", "postgres notice", " notice=\"%s\"", line);
}

static void conn_ready(struct conn *c) {
    qc_pg *pg = c->pg;
    PQsetnonblocking(c->pc, 1);
    PQsetNoticeProcessor(c->pc, on_notice, NULL);
    int reconnect = c->ever_up;
    c->state = C_IDLE;
    c->backoff_ms = 0;
    c->failed = 0;
    c->ever_up = 1;
    if (!c->session && pg->down) {
        qc_log(QC_LOG_INFO, "store", "postgres back", NULL);
        pg->down = 0;
    }
    if (!c->session) pg->was_up = 1;
    if (!c->session || pool_up(pg)) pg->lasterr[0] = 0; /* status() shows no error of the past */
    /* After a loss the channels are LISTENed again before anything else, then the owner is
     * told. A first connection re-LISTENs what was asked before it came up, and tells if a
     * call on it had failed meanwhile. */
    if (c->session && (reconnect || pg->nchannels)) {
        send_listens(c, reconnect || pg->session_missed);
        pg->session_missed = 0;
    }
    poll_set(c, UV_READABLE);
}

static void start_connect(struct conn *c) {
    qc_pg *pg = c->pg;
    if (pg->closed) return; /* a callback closed the store under us */
    /* Defaults first: the URI, expanded from dbname, overrides them. Keepalives and a user
     * timeout notice a peer that vanished without a reset (a partition, a dead host) in
     * about half a minute, instead of the kernel's two hours. */
    const char *keys[] = {"application_name", "keepalives", "keepalives_idle", "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout", "dbname", NULL};
    const char *vals[] = {"quantcoach", "1", "10", "5", "3", "30000", pg->uri, NULL};
    c->pc = PQconnectStartParams(keys, vals, 1);
    c->connect_at = uv_now(pg->loop);
    if (!c->pc) {
        conn_lost(c, "out of memory");
        return;
    }
    if (PQstatus(c->pc) == CONNECTION_BAD) {
        conn_lost(c, PQerrorMessage(c->pc));
        return;
    }
    c->state = C_CONNECTING;
    /* The first poll wants the socket writable (libpq's documented start). */
    if (poll_set(c, UV_WRITABLE) < 0) conn_lost(c, "cannot watch the socket");
}

static void connect_step(struct conn *c) {
    PostgresPollingStatusType s = PQconnectPoll(c->pc);
    switch (s) {
    case PGRES_POLLING_READING:
        if (poll_set(c, UV_READABLE) < 0) conn_lost(c, "cannot watch the socket");
        break;
    case PGRES_POLLING_WRITING:
        if (poll_set(c, UV_WRITABLE) < 0) conn_lost(c, "cannot watch the socket");
        break;
    case PGRES_POLLING_OK:
        conn_ready(c);
        dispatch(c->pg);
        break;
    default:
        conn_lost(c, PQerrorMessage(c->pc));
        dispatch(c->pg); /* lets the tick time out what waits, if nothing is up */
        break;
    }
}

static struct queue *queue_of(struct conn *c) { return c->session ? &c->pg->sq : &c->pg->q; }

/* Starts r on an idle connection. */
static void start_req(struct conn *c, struct req *r) {
    int ok;
    c->cur = r;
    c->state = C_BUSY;
    if (r->kind == REQ_BATCH) {
        ok = PQenterPipelineMode(c->pc);
        for (size_t i = 0; ok && i < r->batch->n; i++) {
            struct stmt *s = &r->batch->s[i];
            ok = PQsendQueryParams(c->pc, s->sql, s->n, NULL, (const char *const *)s->values, NULL, NULL, 0);
        }
        if (ok) ok = PQpipelineSync(c->pc);
    } else if (r->flags & QC_PG_SIMPLE) {
        ok = PQsendQuery(c->pc, r->sql);
    } else {
        ok = PQsendQueryParams(c->pc, r->sql, r->n, NULL, (const char *const *)r->values, NULL, NULL, 0);
    }
    if (!ok) {
        if (PQstatus(c->pc) == CONNECTION_BAD) {
            conn_lost(c, PQerrorMessage(c->pc));
            return;
        }
        /* e.g. a statement libpq refuses before sending: the connection is fine */
        char line[300], msg[320];
        one_line(line, sizeof line, PQerrorMessage(c->pc));
        snprintf(msg, sizeof msg, "store: %s", line);
        if (PQpipelineStatus(c->pc) != PQ_PIPELINE_OFF) {
            /* half a pipeline may be out: the connection's state is unknown, drop it */
            conn_lost(c, line);
            return;
        }
        c->cur = NULL;
        c->state = C_IDLE;
        fail_req(c->pg, r, "SQL_ERROR", msg);
        return;
    }
    int f = PQflush(c->pc);
    if (f < 0) {
        conn_lost(c, PQerrorMessage(c->pc));
        return;
    }
    c->want_write = f == 1;
    poll_set(c, UV_READABLE | (c->want_write ? UV_WRITABLE : 0));
}

/* Gives idle connections work: a pinned one takes from its lease's queue, the others from
 * the pool's (the session connection from its own). Also connects dead connections whose
 * retry is not pending when work waits (the session connection's first use). */
static void dispatch(qc_pg *pg) {
    if (pg->closed) return;
    for (int i = 0; i <= pg->npool; i++) {
        struct conn *c = &pg->conns[i];
        if (c->session && !pg->session_started) continue;
        if (c->state != C_IDLE) continue;
        struct req *r = c->pinned ? pop(&c->leased) : pop(queue_of(c));
        if (r) start_req(c, r);
    }
}

/* The request on c is complete (all its results read). */
static void req_done(struct conn *c) {
    qc_pg *pg = c->pg;
    struct req *r = c->cur;
    c->cur = NULL;
    c->state = C_IDLE;
    c->want_write = 0;
    poll_set(c, UV_READABLE);
    const char *code = NULL;
    char msg[400];
    msg[0] = 0;
    if (r->error) {
        const char *st = PQresultErrorField(r->error, PG_DIAG_SQLSTATE);
        code = qc_pg_code_name(st);
        char line[300];
        one_line(line, sizeof line, PQresultErrorMessage(r->error));
        if (!strncmp(line, "ERROR:  ", 8)) memmove(line, line + 8, strlen(line + 8) + 1);
        if (!strncmp(code, "UNAVAILABLE", 11)) snprintf(msg, sizeof msg, "store: postgres unavailable: %s", line);
        else snprintf(msg, sizeof msg, "store: %s", line);
    }
    if (PQstatus(c->pc) == CONNECTION_BAD) {
        /* the server ended the session (a shutdown) during or right after the request */
        char why[300];
        one_line(why, sizeof why, PQerrorMessage(c->pc));
        if (!code || strcmp(code, "UNAVAILABLE"))
            snprintf(msg, sizeof msg, "store: postgres unavailable: %s (retrying)", why);
        conn_lost(c, why); /* fails the lease's queue; r is ours alone now */
        fail_req(pg, r, "UNAVAILABLE", msg);
        dispatch(pg);
        return;
    }
    qc_pg_lease lease = {-1, 0};
    if (!code && (r->flags & QC_PG_PIN)) {
        c->pinned = 1;
        c->gen++;
        lease = (qc_pg_lease){c->index, c->gen};
    }
    if (r->flags & QC_PG_UNPIN) {
        c->pinned = 0;
        c->gen++;
    }
    if (c->pinned == 0 && c->leased.n) {
        /* requests sent on a lease that just ended */
        fail_queue(pg, &c->leased, "UNAVAILABLE", "store: transaction already ended");
    }
    PGresult *res = r->last;
    finish(pg, r, code, code ? msg : NULL, code ? NULL : res, lease);
    dispatch(pg);
}

/* Reads whatever results are complete. */
static void read_results(struct conn *c) {
    struct req *r = c->cur;
    while (c->cur == r && r && !PQisBusy(c->pc)) {
        PGresult *res = PQgetResult(c->pc);
        if (r->kind == REQ_BATCH) {
            if (!res) continue; /* the end of one statement's results */
            ExecStatusType st = PQresultStatus(res);
            if (st == PGRES_PIPELINE_SYNC) {
                PQclear(res);
                PQexitPipelineMode(c->pc);
                req_done(c);
                return;
            }
            if ((st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR) && !r->error) r->error = res;
            else PQclear(res);
            continue;
        }
        if (!res) {
            req_done(c);
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_FATAL_ERROR) {
            if (!r->error) r->error = res;
            else PQclear(res);
        } else {
            PQclear(r->last);
            r->last = res;
        }
    }
}

static void drain_notifies(struct conn *c) {
    PGnotify *n;
    while ((n = PQnotifies(c->pc))) {
        if (c->pg->notify && !c->pg->closed)
            c->pg->notify(n->relname, n->extra ? n->extra : "", n->be_pid, c->pg->session_ud);
        PQfreemem(n);
    }
}

static void on_poll(uv_poll_t *h, int status, int events) {
    struct conn *c = h->data;
    if (c->pg->closed) return;
    if (c->state == C_CONNECTING) {
        connect_step(c);
        return;
    }
    if (status < 0) {
        /* libuv says EBADF for POLLERR (a reset socket); reading lets libpq find the real
         * reason, which says more */
        const char *why = NULL;
        if (c->pc && !PQconsumeInput(c->pc)) why = PQerrorMessage(c->pc);
        conn_lost(c, why && *why ? why : uv_strerror(status));
        dispatch(c->pg);
        return;
    }
    if ((events & UV_WRITABLE) && c->want_write) {
        int f = PQflush(c->pc);
        if (f < 0) {
            conn_lost(c, PQerrorMessage(c->pc));
            dispatch(c->pg);
            return;
        }
        c->want_write = f == 1;
        poll_set(c, UV_READABLE | (c->want_write ? UV_WRITABLE : 0));
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(c->pc)) {
            conn_lost(c, PQerrorMessage(c->pc));
            dispatch(c->pg);
            return;
        }
        if (c->state == C_BUSY) read_results(c);
        if (c->pc && c->session) drain_notifies(c);
        if (c->pc && c->state == C_IDLE && PQstatus(c->pc) == CONNECTION_BAD) {
            conn_lost(c, PQerrorMessage(c->pc));
            dispatch(c->pg);
        }
    }
}

/* Requests that waited QC_PG_WAIT_MS with no connection up fail UNAVAILABLE. */
static void expire(qc_pg *pg, struct queue *q, int up) {
    if (up || !q->n) return;
    uint64_t now = uv_now(pg->loop);
    struct queue keep = {0}, gone = {0};
    struct req *r;
    while ((r = pop(q))) push(now - r->queued_at >= QC_PG_WAIT_MS ? &gone : &keep, r);
    *q = keep;
    char msg[320];
    snprintf(msg, sizeof msg, "store: %s (retrying)",
             pg->lasterr[0] ? pg->lasterr : "postgres unavailable: no connection");
    while ((r = pop(&gone))) fail_req(pg, r, "UNAVAILABLE", msg);
}

static void tick(uv_timer_t *t) {
    qc_pg *pg = ((struct timerh *)t)->pg;
    if (pg->closed) return;
    expire(pg, &pg->q, pool_up(pg));
    struct conn *s = &pg->conns[pg->npool];
    expire(pg, &pg->sq, s->state == C_IDLE || s->state == C_BUSY);
    if (pg->closed) return; /* a failed caller closed the store */
    /* libpq leaves connect_timeout to the application in asynchronous mode */
    uint64_t now = uv_now(pg->loop);
    for (int i = 0; i <= pg->npool; i++) {
        struct conn *c = &pg->conns[i];
        if (c->state == C_CONNECTING && now - c->connect_at > QC_PG_CONNECT_TIMEOUT_MS)
            conn_lost(c, "connect timed out");
    }
    /* a dead connection with work waiting and no retry pending (out of memory) */
    for (int i = 0; i <= pg->npool; i++) {
        struct conn *c = &pg->conns[i];
        if (c->session && !pg->session_started) continue;
        if (c->state == C_DEAD && (!c->retry || !uv_is_active((uv_handle_t *)&c->retry->h))) start_connect(c);
    }
}

/* ---- the session connection ----------------------------------------------------------- */

static int quote_ident(char *out, size_t outlen, const char *name) {
    size_t o = 0;
    if (outlen < 3) return -1;
    out[o++] = '"';
    for (const char *p = name; *p; p++) {
        if (o + 3 >= outlen) return -1;
        if (*p == '"') out[o++] = '"';
        out[o++] = *p;
    }
    out[o++] = '"';
    out[o] = 0;
    return 0;
}

static void relisten_done(const qc_pg_outcome *o, void *ud, int tell) {
    qc_pg *pg = ud;
    if (o->closed) return;
    if (o->code) {
        qc_log(QC_LOG_WARN, "store", "postgres re-listen failed", " error=\"%s\"", o->message);
        return; /* the connection is gone again: its next comeback retries */
    }
    if (tell && pg->reconnected) pg->reconnected(pg->session_ud);
}

static void relisten_tell(const qc_pg_outcome *o, void *ud) { relisten_done(o, ud, 1); }
static void relisten_quiet(const qc_pg_outcome *o, void *ud) { relisten_done(o, ud, 0); }

/* After the session connection came back: LISTEN again on every channel, then tell. */
static void send_listens(struct conn *c, int tell) {
    qc_pg *pg = c->pg;
    size_t cap = 32;
    for (size_t i = 0; i < pg->nchannels; i++) cap += strlen(pg->channels[i]) * 2 + 16;
    char *sql = malloc(cap);
    struct req *r = calloc(1, sizeof *r);
    if (!sql || !r) {
        free(sql);
        free(r);
        return;
    }
    size_t o = 0;
    sql[0] = 0;
    for (size_t i = 0; i < pg->nchannels; i++) {
        char q[600];
        if (quote_ident(q, sizeof q, pg->channels[i]) < 0) continue;
        o += (size_t)snprintf(sql + o, cap - o, "LISTEN %s;", q);
    }
    if (!o) snprintf(sql, cap, "SELECT 1");
    r->kind = REQ_QUERY;
    r->flags = QC_PG_SIMPLE | QC_PG_SESSION;
    r->sql = sql;
    r->cb = tell ? relisten_tell : relisten_quiet;
    r->ud = pg;
    r->internal = 1;
    r->queued_at = uv_now(pg->loop);
    push_front(&pg->sq, r);
}

void qc_pg_on_session(qc_pg *pg, qc_pg_notify_fn notify, qc_pg_reconnect_fn reconnected, void *ud) {
    pg->notify = notify;
    pg->reconnected = reconnected;
    pg->session_ud = ud;
}

int qc_pg_remember_channel(qc_pg *pg, const char *channel) {
    for (size_t i = 0; i < pg->nchannels; i++)
        if (!strcmp(pg->channels[i], channel)) return 0;
    char **c = realloc(pg->channels, (pg->nchannels + 1) * sizeof *c);
    if (!c) return -1;
    pg->channels = c;
    c[pg->nchannels] = strdup(channel);
    if (!c[pg->nchannels]) return -1;
    pg->nchannels++;
    return 0;
}

int qc_pg_session_pid(const qc_pg *pg) {
    const struct conn *s = &pg->conns[pg->npool];
    if (s->state != C_IDLE && s->state != C_BUSY) return 0;
    return PQbackendPID(s->pc);
}

/* ---- the pool ------------------------------------------------------------------------ */

qc_pg *qc_pg_open(uv_loop_t *loop, const char *uri, int pool, char *err, size_t errlen) {
    if (pool < 1 || pool > QC_PG_POOL_MAX) {
        set_err(err, errlen, "store: pool size %d is out of range (1..%d)", pool, QC_PG_POOL_MAX);
        return NULL;
    }
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(uri, &perr);
    if (!opts) {
        char line[200];
        one_line(line, sizeof line, perr ? perr : "out of memory");
        set_err(err, errlen, "store: bad postgres URI: %s", line);
        PQfreemem(perr);
        return NULL;
    }
    PQconninfoFree(opts);
    qc_pg *pg = calloc(1, sizeof *pg);
    if (!pg) goto oom;
    pg->loop = loop;
    pg->npool = pool;
    pg->uri = strdup(uri);
    pg->conns = calloc((size_t)pool + 1, sizeof *pg->conns);
    pg->tick = calloc(1, sizeof *pg->tick);
    pg->kick = calloc(1, sizeof *pg->kick);
    if (!pg->uri || !pg->conns || !pg->tick || !pg->kick) goto oom;
    for (int i = 0; i <= pool; i++) {
        struct conn *c = &pg->conns[i];
        c->pg = pg;
        c->index = i;
        c->session = i == pool;
        c->fd = -1;
    }
    uv_timer_init(loop, &pg->tick->h);
    pg->tick->pg = pg;
    pg->tick->h.data = pg;
    uv_timer_init(loop, &pg->kick->h);
    pg->kick->pg = pg;
    pg->kick->h.data = pg;
    pg->handles += 2;
    uv_timer_start(&pg->tick->h, tick, 100, 100);
    for (int i = 0; i < pool; i++) start_connect(&pg->conns[i]);
    return pg;
oom:
    if (pg) {
        free(pg->uri);
        free(pg->conns);
        free(pg->tick);
        free(pg->kick);
        free(pg);
    }
    set_err(err, errlen, "store: out of memory");
    return NULL;
}

static void kick(uv_timer_t *t) {
    qc_pg *pg = ((struct timerh *)t)->pg;
    dispatch(pg);
}

static int enqueue(qc_pg *pg, const qc_pg_lease *lease, struct req *r, char *err, size_t errlen, const char **code) {
    if (pg->closed) {
        set_err(err, errlen, "store: database closed");
        *code = "SQL_ERROR";
        req_free(r);
        return -1;
    }
    r->queued_at = uv_now(pg->loop);
    if (lease) {
        struct conn *c = lease->conn >= 0 && lease->conn < pg->npool ? &pg->conns[lease->conn] : NULL;
        if (!c || !c->pinned || c->gen != lease->gen) {
            set_err(err, errlen, "store: postgres unavailable: the transaction's connection was lost");
            *code = "UNAVAILABLE";
            req_free(r);
            return -1;
        }
        push(&c->leased, r);
    } else if (r->flags & QC_PG_SESSION) {
        push(&pg->sq, r);
        if (!pg->session_started) {
            pg->session_started = 1;
            start_connect(&pg->conns[pg->npool]);
        }
    } else {
        push(&pg->q, r);
    }
    /* Not dispatched here: a send that fails at once would run the callback inside this
     * call, resuming a task that has not yielded yet. */
    if (!uv_is_active((uv_handle_t *)&pg->kick->h)) uv_timer_start(&pg->kick->h, kick, 0, 0);
    return 0;
}

int qc_pg_send(qc_pg *pg, const qc_pg_lease *lease, unsigned flags, const char *sql, int n,
               const char *const *values, qc_pg_done cb, void *ud, char *err, size_t errlen,
               const char **code) {
    static const char *ignored;
    if (!code) code = &ignored;
    *code = "SQL_ERROR";
    struct req *r = calloc(1, sizeof *r);
    if (!r) goto oom;
    r->kind = REQ_QUERY;
    r->flags = flags;
    r->cb = cb;
    r->ud = ud;
    r->sql = strdup(sql);
    int ok;
    r->values = copy_values(n, values, &ok);
    r->n = ok ? n : 0;
    if (!r->sql || !ok) goto oom;
    return enqueue(pg, lease, r, err, errlen, code);
oom:
    if (r) req_free(r);
    set_err(err, errlen, "store: out of memory");
    return -1;
}

qc_pg_batch *qc_pg_batch_new(void) { return calloc(1, sizeof(qc_pg_batch)); }

int qc_pg_batch_add(qc_pg_batch *b, const char *sql, int n, const char *const *values) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        struct stmt *s = realloc(b->s, cap * sizeof *s);
        if (!s) return -1;
        b->s = s;
        b->cap = cap;
    }
    struct stmt *s = &b->s[b->n];
    int ok;
    s->sql = strdup(sql);
    s->values = copy_values(n, values, &ok);
    s->n = ok ? n : 0;
    if (!s->sql || !ok) {
        free(s->sql);
        free_values(s->values, s->n);
        return -1;
    }
    b->n++;
    return 0;
}

size_t qc_pg_batch_count(const qc_pg_batch *b) { return b ? b->n : 0; }

void qc_pg_batch_free(qc_pg_batch *b) {
    if (!b) return;
    for (size_t i = 0; i < b->n; i++) {
        free(b->s[i].sql);
        free_values(b->s[i].values, b->s[i].n);
    }
    free(b->s);
    free(b);
}

int qc_pg_send_batch(qc_pg *pg, qc_pg_batch *b, qc_pg_done cb, void *ud, char *err, size_t errlen,
                     const char **code) {
    static const char *ignored;
    if (!code) code = &ignored;
    *code = "SQL_ERROR";
    struct req *r = calloc(1, sizeof *r);
    if (!r) {
        qc_pg_batch_free(b);
        set_err(err, errlen, "store: out of memory");
        return -1;
    }
    r->kind = REQ_BATCH;
    r->batch = b;
    r->cb = cb;
    r->ud = ud;
    return enqueue(pg, NULL, r, err, errlen, code);
}

void qc_pg_get_status(const qc_pg *pg, qc_pg_status *st) {
    memset(st, 0, sizeof *st);
    for (int i = 0; i < pg->npool; i++) {
        const struct conn *c = &pg->conns[i];
        if (c->state == C_IDLE || c->state == C_BUSY) st->connections++;
        if (c->state == C_BUSY || c->pinned) st->busy++;
    }
    st->waiting = pg->q.n;
    if (st->connections) st->state = "ok";
    else if (pg->any_fail) st->state = "down";
    else st->state = "connecting";
    st->error = pg->lasterr[0] ? pg->lasterr : NULL;
}

static void maybe_free(qc_pg *pg) {
    if (!pg->closed || pg->handles) return;
    for (size_t i = 0; i < pg->nchannels; i++) free(pg->channels[i]);
    free(pg->channels);
    free(pg->conns);
    free(pg->uri);
    free(pg);
}

void qc_pg_close(qc_pg *pg) {
    if (!pg || pg->closed) return;
    pg->closed = 1;
    const char *msg = "store: database closed";
    fail_queue(pg, &pg->q, "UNAVAILABLE", msg);
    fail_queue(pg, &pg->sq, "UNAVAILABLE", msg);
    for (int i = 0; i <= pg->npool; i++) {
        struct conn *c = &pg->conns[i];
        poll_close(c);
        if (c->pc) PQfinish(c->pc);
        c->pc = NULL;
        c->state = C_DEAD;
        struct req *r = c->cur;
        c->cur = NULL;
        if (r) fail_req(pg, r, "UNAVAILABLE", msg);
        fail_queue(pg, &c->leased, "UNAVAILABLE", msg);
        if (c->retry) {
            uv_close((uv_handle_t *)&c->retry->h, handle_closed);
            c->retry = NULL;
        }
    }
    uv_close((uv_handle_t *)&pg->tick->h, handle_closed);
    uv_close((uv_handle_t *)&pg->kick->h, handle_closed);
    pg->tick = pg->kick = NULL;
    maybe_free(pg);
}
