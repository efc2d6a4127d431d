/* Log lines go to stderr. Buffered mode exists for the server: the access log would
 * otherwise cost one write(2) per request. */
#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static struct {
    int json;
    qc_log_level min;
    int buffered;
    char buf[64 * 1024];
    size_t used;
} g_log = {0, QC_LOG_INFO, 0, {0}, 0};

static const char *level_names[] = {"debug", "info", "warn", "error"};

qc_log_level qc_log_level_from_name(const char *name, int *ok) {
    for (int i = 0; i < 4; i++) {
        if (name && strcasecmp(name, level_names[i]) == 0) {
            if (ok) *ok = 1;
            return (qc_log_level)i;
        }
    }
    if (ok) *ok = 0;
    return QC_LOG_INFO;
}

int qc_log_init(char *err, size_t errlen) {
    const char *fmt = getenv("QC_LOG_FORMAT");
    int json = 0;
    if (fmt && *fmt) {
        if (strcasecmp(fmt, "json") == 0) json = 1;
        else if (strcasecmp(fmt, "text") != 0) {
            snprintf(err, errlen, "QC_LOG_FORMAT: expected text or json, got \"%s\"", fmt);
            return -1;
        }
    }
    const char *lvl = getenv("QC_LOG_LEVEL");
    qc_log_level min = QC_LOG_INFO;
    if (lvl && *lvl) {
        int ok;
        min = qc_log_level_from_name(lvl, &ok);
        if (!ok) {
            snprintf(err, errlen, "QC_LOG_LEVEL: expected debug, info, warn or error, got \"%s\"", lvl);
            return -1;
        }
    }
    g_log.json = json;
    g_log.min = min;
    return 0;
}

int qc_log_enabled(qc_log_level level) { return level >= g_log.min; }

static void write_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w <= 0) return; /* stderr gone: nothing sensible left to do */
        p += w;
        n -= (size_t)w;
    }
}

void qc_log_flush(void) {
    if (g_log.used) write_all(g_log.buf, g_log.used);
    g_log.used = 0;
}

void qc_log_set_buffered(int on) {
    if (!on) qc_log_flush();
    g_log.buffered = on;
}

static void emit(const char *line, size_t n) {
    if (!g_log.buffered) {
        write_all(line, n);
        return;
    }
    if (g_log.used + n > sizeof g_log.buf) qc_log_flush();
    if (n > sizeof g_log.buf) {
        write_all(line, n);
        return;
    }
    memcpy(g_log.buf + g_log.used, line, n);
    g_log.used += n;
}

/* A line under construction in a fixed buffer. Appends that do not fit set `cut`; the
 * caller then ends the line with CUT_MARK, for which room is always kept. */
#define CUT_MARK "...[line cut]"
typedef struct {
    char *p;
    size_t cap; /* bytes usable before the reserve for CUT_MARK and the line's closing */
    size_t n;
    int cut;
} line_buf;

static void put(line_buf *b, const char *s, size_t l) {
    if (b->cut) return;
    if (l > b->cap - b->n) {
        l = b->cap - b->n;
        b->cut = 1;
    }
    memcpy(b->p + b->n, s, l);
    b->n += l;
}

static void put_str(line_buf *b, const char *s) {
    if (s) put(b, s, strlen(s));
}

/* Whole or not at all: half of `","message":"` or of an escape is not JSON. */
static void put_whole(line_buf *b, const char *s, size_t l) {
    if (l > b->cap - b->n) b->cut = 1;
    else put(b, s, l);
}

static void put_lit(line_buf *b, const char *s) { put_whole(b, s, strlen(s)); }

/* A line that was cut ends in CUT_MARK, in the room kept for it. */
static void put_cut_mark(line_buf *b) {
    if (!b->cut) return;
    memcpy(b->p + b->n, CUT_MARK, sizeof CUT_MARK - 1);
    b->n += sizeof CUT_MARK - 1;
}

/* Appends s as the body of a JSON string. An escape is written whole or not at all, so a
 * cut line is still valid JSON. */
static void put_json(line_buf *b, const char *s) {
    for (; s && *s && !b->cut; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        size_t l;
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c, l = 2;
        } else if (c < 0x20) {
            l = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
        } else {
            esc[0] = (char)c, l = 1;
        }
        put_whole(b, esc, l);
    }
}

void qc_log_line(qc_log_level level, const char *component, const char *message, const char *kv) {
    if (!qc_log_enabled(level)) return;
    char line[QC_LOG_LINE_MAX];
    /* Reserve: the cut marker, `"}` of a JSON line and the newline. */
    line_buf b = {line, sizeof line - sizeof CUT_MARK - 3, 0, 0};
    if (!g_log.json) {
        /* Copies, not snprintf: this runs once per request for the access log. */
        put_str(&b, level_names[level]);
        put(&b, " ", 1);
        put_str(&b, component);
        put(&b, " ", 1);
        put_str(&b, message);
        put_str(&b, kv);
        put_cut_mark(&b);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char head[64];
        int hl = snprintf(head, sizeof head, "{\"ts\":%lld.%03ld,\"level\":\"%s\",\"component\":\"", (long long)ts.tv_sec,
                          ts.tv_nsec / 1000000, level_names[level]);
        put(&b, head, hl > 0 ? (size_t)hl : 0);
        put_json(&b, component);
        put_lit(&b, "\",\"message\":\"");
        put_json(&b, message);
        put_lit(&b, "\",\"fields\":\"");
        put_json(&b, kv && *kv == ' ' ? kv + 1 : kv);
        /* A cut ends inside whichever string was being written: closing it and the
         * object still gives valid JSON. */
        put_cut_mark(&b);
        line[b.n++] = '"';
        line[b.n++] = '}';
    }
    line[b.n++] = '\n';
    emit(line, b.n);
}

void qc_log(qc_log_level level, const char *component, const char *message, const char *kvfmt, ...) {
    if (!qc_log_enabled(level)) return;
    char kv[QC_LOG_FIELDS_MAX];
    kv[0] = 0;
    if (kvfmt) {
        va_list ap;
        va_start(ap, kvfmt);
        vsnprintf(kv, sizeof kv, kvfmt, ap);
        va_end(ap);
    }
    qc_log_line(level, component, message, kv);
}
