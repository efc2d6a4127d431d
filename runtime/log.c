/* Log lines go to stderr. Buffered mode exists for the server: the access log would
 * otherwise cost one write(2) per request. */
#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
        if (name && strcmp(name, level_names[i]) == 0) {
            if (ok) *ok = 1;
            return (qc_log_level)i;
        }
    }
    if (ok) *ok = 0;
    return QC_LOG_INFO;
}

void qc_log_init(void) {
    const char *fmt = getenv("QC_LOG_FORMAT");
    g_log.json = fmt && strcmp(fmt, "json") == 0;
    const char *lvl = getenv("QC_LOG_LEVEL");
    if (lvl && *lvl) g_log.min = qc_log_level_from_name(lvl, NULL);
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

/* Appends s to out as a JSON string body (no quotes). */
static size_t json_escape(char *out, size_t cap, const char *s) {
    size_t o = 0;
    for (; s && *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = 0;
    return o;
}

void qc_log_line(qc_log_level level, const char *component, const char *message, const char *kv) {
    if (!qc_log_enabled(level)) return;
    char line[8192];
    size_t n;
    if (!g_log.json) {
        /* Copies, not snprintf: this runs once per request for the access log. */
        const char *parts[] = {level_names[level], " ", component, " ", message, kv ? kv : ""};
        n = 0;
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            size_t l = strlen(parts[i]);
            if (l > sizeof line - 1 - n) l = sizeof line - 1 - n;
            memcpy(line + n, parts[i], l);
            n += l;
        }
        line[n++] = '\n';
    } else {
        char msg[2048], k[4096];
        json_escape(msg, sizeof msg, message);
        json_escape(k, sizeof k, kv && *kv == ' ' ? kv + 1 : kv);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int r = snprintf(line, sizeof line,
                         "{\"ts\":%lld.%03ld,\"level\":\"%s\",\"component\":\"%s\",\"message\":\"%s\",\"fields\":\"%s\"}\n",
                         (long long)ts.tv_sec, ts.tv_nsec / 1000000, level_names[level], component, msg, k);
        n = r < 0 ? 0 : (size_t)r;
        if (n >= sizeof line) {
            n = sizeof line - 1;
            line[n - 1] = '\n';
        }
    }
    emit(line, n);
}

void qc_log(qc_log_level level, const char *component, const char *message, const char *kvfmt, ...) {
    if (!qc_log_enabled(level)) return;
    char kv[4096];
    kv[0] = 0;
    if (kvfmt) {
        va_list ap;
        va_start(ap, kvfmt);
        vsnprintf(kv, sizeof kv, kvfmt, ap);
        va_end(ap);
    }
    qc_log_line(level, component, message, kv);
}
