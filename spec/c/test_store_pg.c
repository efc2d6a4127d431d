/* runtime/store/pg.c: the ? rewriting at its worst shapes, error codes, URI redaction, and
 * the pool on a real loop against a throwaway PostgreSQL this test starts itself
 * (spec/support/pg.sh, in a temp dir under /tmp, stopped and removed at the end). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "store/pg.h"

#include "tap.h"

static int rewrites(const char *in, const char *want, int want_n) {
    int n = -1;
    char *out = qc_pg_rewrite(in, strlen(in), &n);
    int good = out && strcmp(out, want) == 0 && n == want_n;
    if (!good) printf("# rewrite %s -> %s (%d)\n", in, out ? out : "(null)", n);
    free(out);
    return good;
}

struct got {
    int done;
    char code[32];
    char msg[256];
    char value[64];
    long long tuples;
    qc_pg_lease lease;
};

static void on_done(const qc_pg_outcome *o, void *ud) {
    struct got *g = ud;
    g->done = 1;
    snprintf(g->code, sizeof g->code, "%s", o->code ? o->code : "");
    snprintf(g->msg, sizeof g->msg, "%s", o->message ? o->message : "");
    g->value[0] = 0;
    if (o->res && PQntuples(o->res) > 0 && PQnfields(o->res) > 0)
        snprintf(g->value, sizeof g->value, "%s", PQgetvalue(o->res, 0, 0));
    g->tuples = o->res ? PQntuples(o->res) : -1;
    g->lease = o->lease;
}

static void run_until(uv_loop_t *loop, struct got *g) {
    for (int i = 0; i < 100000 && !g->done; i++) uv_run(loop, UV_RUN_ONCE);
}

static int sh(const char *cmd, char *out, size_t outlen) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = 0;
    return pclose(p);
}

static void live(void) {
    char dir[] = "/tmp/qc_test_pg_XXXXXX";
    if (!mkdtemp(dir)) {
        ok(0, "a temp dir for the cluster");
        return;
    }
    char cmd[512], out[512];
    snprintf(cmd, sizeof cmd, "sh %s/spec/support/pg.sh start %s 2>&1", QC_SOURCE_DIR, dir);
    int rc = sh(cmd, out, sizeof out);
    char *url = strstr(out, "postgres://");
    ok(rc == 0 && url, "a throwaway cluster starts");
    if (!url) {
        printf("# %s\n", out);
        return;
    }
    url[strcspn(url, "\n")] = 0;

    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];
    ok(qc_pg_open(&loop, url, 0, err, sizeof err) == NULL, "a pool of 0 is refused");
    ok(qc_pg_open(&loop, "postgres://[::1", 2, err, sizeof err) == NULL && strstr(err, "bad postgres URI"),
       "a malformed URI is refused at open");
    qc_pg *pg = qc_pg_open(&loop, url, 2, err, sizeof err);
    ok(pg != NULL, "the pool opens");

    struct got g = {0};
    const char *vals[] = {"41"};
    const char *code;
    ok(qc_pg_send(pg, NULL, 0, "SELECT $1::int + 1", 1, vals, on_done, &g, err, sizeof err, &code) == 0 && !g.done,
       "a query is queued, and its callback does not run inside the send");
    run_until(&loop, &g);
    ok(g.done && !g.code[0] && strcmp(g.value, "42") == 0, "a parameterised query answers");

    memset(&g, 0, sizeof g);
    qc_pg_send(pg, NULL, QC_PG_SIMPLE, "CREATE TABLE t(id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')", 0,
               NULL, on_done, &g, err, sizeof err, &code);
    run_until(&loop, &g);
    ok(g.done && !g.code[0], "several statements by the simple protocol");

    memset(&g, 0, sizeof g);
    const char *dup[] = {"1", NULL};
    qc_pg_send(pg, NULL, 0, "INSERT INTO t VALUES ($1, $2)", 2, dup, on_done, &g, err, sizeof err, &code);
    run_until(&loop, &g);
    ok(strcmp(g.code, "CONSTRAINT") == 0 && strncmp(g.msg, "store: duplicate key", 20) == 0,
       "a unique violation is CONSTRAINT with a store: message");

    /* a batch is all or nothing */
    qc_pg_batch *b = qc_pg_batch_new();
    const char *r2[] = {"2", "b"}, *r3[] = {"3", NULL};
    qc_pg_batch_add(b, "INSERT INTO t VALUES ($1, $2)", 2, r2);
    qc_pg_batch_add(b, "INSERT INTO t VALUES ($1, $2)", 2, r3);
    ok(qc_pg_batch_count(b) == 2, "a batch counts its statements");
    memset(&g, 0, sizeof g);
    qc_pg_send_batch(pg, b, on_done, &g, err, sizeof err, &code);
    run_until(&loop, &g);
    ok(g.done && !g.code[0], "a batch commits");
    b = qc_pg_batch_new();
    const char *r4[] = {"4", "d"};
    qc_pg_batch_add(b, "INSERT INTO t VALUES ($1, $2)", 2, r4);
    qc_pg_batch_add(b, "INSERT INTO t VALUES ($1, $2)", 2, dup);
    memset(&g, 0, sizeof g);
    qc_pg_send_batch(pg, b, on_done, &g, err, sizeof err, &code);
    run_until(&loop, &g);
    ok(strcmp(g.code, "CONSTRAINT") == 0, "a batch with a bad row fails as a whole");
    memset(&g, 0, sizeof g);
    qc_pg_send(pg, NULL, 0, "SELECT count(*) FROM t", 0, NULL, on_done, &g, err, sizeof err, &code);
    run_until(&loop, &g);
    ok(strcmp(g.value, "3") == 0, "the good batch is in, the bad one left nothing");
    memset(&g, 0, sizeof g);
    qc_pg_send(pg, NULL, 0, "SELECT 1", 0, NULL, on_done, &g, err, sizeof err, &code);
    run_until(&loop, &g);
    ok(g.done && !g.code[0], "the connection after a failed pipeline is usable");

    /* a lease: BEGIN pinned, statements on it, then the lease is stale after COMMIT */
    memset(&g, 0, sizeof g);
    qc_pg_send(pg, NULL, QC_PG_SIMPLE | QC_PG_PIN, "BEGIN", 0, NULL, on_done, &g, err, sizeof err, &code);
    run_until(&loop, &g);
    qc_pg_lease lease = g.lease;
    ok(g.done && !g.code[0] && lease.conn >= 0, "BEGIN pins a connection");
    qc_pg_status st;
    qc_pg_get_status(pg, &st);
    ok(strcmp(st.state, "ok") == 0 && st.busy == 1, "the pinned connection counts as busy");
    memset(&g, 0, sizeof g);
    qc_pg_send(pg, &lease, QC_PG_SIMPLE | QC_PG_UNPIN, "COMMIT", 0, NULL, on_done, &g, err, sizeof err, &code);
    run_until(&loop, &g);
    ok(g.done && !g.code[0], "COMMIT ends the lease");
    ok(qc_pg_send(pg, &lease, 0, "SELECT 1", 0, NULL, on_done, &g, err, sizeof err, &code) == -1 &&
           strcmp(code, "UNAVAILABLE") == 0,
       "a stale lease is refused at once");

    /* the session connection: its pid once used */
    ok(qc_pg_session_pid(pg) == 0, "no session connection before its first use");
    memset(&g, 0, sizeof g);
    const char *name[] = {"qc.room:x"};
    qc_pg_send(pg, NULL, QC_PG_SESSION, "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", 1, name, on_done, &g,
               err, sizeof err, &code);
    run_until(&loop, &g);
    ok(strcmp(g.value, "t") == 0 && qc_pg_session_pid(pg) > 0, "an advisory lock on the session connection");

    /* closing fails what is still pending, with closed set */
    struct got late = {0};
    qc_pg_send(pg, NULL, 0, "SELECT pg_sleep(5)", 0, NULL, on_done, &late, err, sizeof err, &code);
    uv_run(&loop, UV_RUN_NOWAIT);
    qc_pg_close(pg);
    ok(late.done && strcmp(late.code, "UNAVAILABLE") == 0, "close fails the request in flight");
    uv_run(&loop, UV_RUN_DEFAULT);
    ok(uv_loop_close(&loop) == 0, "every handle is closed after close");

    snprintf(cmd, sizeof cmd, "sh %s/spec/support/pg.sh stop %s --rm 2>&1", QC_SOURCE_DIR, dir);
    ok(sh(cmd, out, sizeof out) == 0, "the cluster stops");
}

/* A server that accepts TCP (the kernel's backlog does) but never answers: a connection
 * attempt hangs in its startup until our own deadline, which libpq leaves to us. */
static void silent_server(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 8) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) < 0) {
        ok(0, "a silent listener");
        return;
    }
    char url[128];
    snprintf(url, sizeof url, "postgres://nobody@127.0.0.1:%d/db", ntohs(a.sin_port));
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];
    const char *code;
    qc_pg *pg = qc_pg_open(&loop, url, 1, err, sizeof err);
    struct got g = {0};
    qc_pg_send(pg, NULL, 0, "SELECT 1", 0, NULL, on_done, &g, err, sizeof err, &code);
    run_until(&loop, &g);
    ok(strcmp(g.code, "UNAVAILABLE") == 0 && strstr(g.msg, "store: postgres unavailable"),
       "a query waits for a connection, then fails UNAVAILABLE");
    qc_pg_status st;
    for (int i = 0; i < 100000; i++) {
        qc_pg_get_status(pg, &st);
        if (st.error) break;
        uv_run(&loop, UV_RUN_ONCE);
    }
    ok(strcmp(st.state, "down") == 0 && st.error && strstr(st.error, "connect timed out"),
       "a connection that never completes its startup times out");
    qc_pg_close(pg);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    close(fd);
}

int main(void) {
    ok(rewrites("SELECT ?", "SELECT $1", 1), "one placeholder");
    ok(rewrites("?,?,?", "$1,$2,$3", 3), "placeholders side by side");
    ok(rewrites("'?' ? 'it''s ?' ?", "'?' $1 'it''s ?' $2", 2), "string literals with doubled quotes");
    ok(rewrites("E'\\'?' ?", "E'\\'?' $1", 1), "escape strings with backslash-quote");
    ok(rewrites("name'?' ?", "name'?' $1", 1), "a quote after an identifier ending in e is not E''");
    ok(rewrites("\"a?\"\"b?\" ?", "\"a?\"\"b?\" $1", 1), "quoted identifiers with doubled quotes");
    ok(rewrites("-- ?\n?", "-- ?\n$1", 1), "line comments");
    ok(rewrites("/* ? /* ? */ ? */ ?", "/* ? /* ? */ ? */ $1", 1), "nested block comments");
    ok(rewrites("$$?$$ $a$ ? $$ ? $a$ ?", "$$?$$ $a$ ? $$ ? $a$ $1", 1), "dollar quotes with and without tags");
    ok(rewrites("$1 ?", "$1 $1", 1), "a $n is copied, not taken for a dollar quote");
    ok(rewrites("'unterminated ?", "'unterminated ?", 0), "an unterminated literal runs to the end");
    ok(rewrites("/* unterminated ?", "/* unterminated ?", 0), "an unterminated comment runs to the end");
    ok(rewrites("$tag$ unterminated ?", "$tag$ unterminated ?", 0), "an unterminated dollar quote runs to the end");
    ok(rewrites("", "", 0), "empty text");
    ok(rewrites("E'\\", "E'\\", 0), "a backslash at the very end");
    {
        size_t n = 20000;
        char *big = malloc(n + 1);
        memset(big, '?', n);
        big[n] = 0;
        int count = 0;
        char *out = qc_pg_rewrite(big, n, &count);
        ok(out && count == 20000 && strstr(out, "$20000") && strlen(out) > n * 2, "20000 placeholders");
        free(out);
        free(big);
    }

    ok(strcmp(qc_pg_code_name("23505"), "CONSTRAINT") == 0, "23505 is CONSTRAINT");
    ok(strcmp(qc_pg_code_name("23503"), "CONSTRAINT") == 0, "23503 is CONSTRAINT");
    ok(strcmp(qc_pg_code_name("40001"), "BUSY") == 0 && strcmp(qc_pg_code_name("40P01"), "BUSY") == 0 &&
           strcmp(qc_pg_code_name("55P03"), "BUSY") == 0,
       "serialization failure, deadlock and lock_not_available are BUSY");
    ok(strcmp(qc_pg_code_name("57P01"), "UNAVAILABLE") == 0 && strcmp(qc_pg_code_name("08006"), "UNAVAILABLE") == 0,
       "admin shutdown and connection failures are UNAVAILABLE");
    ok(strcmp(qc_pg_code_name("42601"), "SQL_ERROR") == 0 && strcmp(qc_pg_code_name(NULL), "SQL_ERROR") == 0 &&
           strcmp(qc_pg_code_name("2"), "SQL_ERROR") == 0,
       "anything else is SQL_ERROR");

    char red[256];
    qc_pg_redact("postgres://qc:s3cret@db.example:5432/qc", red, sizeof red);
    ok(strcmp(red, "postgres://qc:***@db.example:5432/qc") == 0, "the password in the userinfo is hidden");
    qc_pg_redact("postgresql://qc@h/db?sslmode=require&password=x&a=b", red, sizeof red);
    ok(strcmp(red, "postgresql://qc@h/db?sslmode=require&password=***&a=b") == 0,
       "a password parameter is hidden");
    qc_pg_redact("postgres://h/db", red, sizeof red);
    ok(strcmp(red, "postgres://h/db") == 0, "a URI with no password is unchanged");
    qc_pg_redact("postgres://u:p@h/db", red, 12);
    ok(strlen(red) == 11 && !strstr(red, ":p@"), "a short buffer truncates, never shows the password");

    live();
    silent_server();
    return failures != 0;
}
