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

/* The length of the valid UTF-8 sequence of 2 to 4 bytes at s, or 0 when s[0] does not
 * start one (RFC 3629's table: no overlongs, no surrogates, nothing past U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t avail) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n = 0;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    if (n == 0 || n > avail || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return n;
}

/* Appends one byte of string content as JSON. Control bytes become escapes; a byte that does
 * not start a valid UTF-8 sequence becomes U+FFFD, so the line is UTF-8 any parser takes.
 * Returns the bytes of s consumed (a whole UTF-8 sequence at once), 0 when cut. */
static size_t put_json_char(line_buf *b, const unsigned char *s, size_t avail) {
    unsigned char c = s[0];
    char esc[8];
    size_t l, used = 1;
    if (c == '"' || c == '\\') {
        esc[0] = '\\', esc[1] = (char)c, l = 2;
    } else if (c == '\n') {
        memcpy(esc, "\\n", 2), l = 2;
    } else if (c == '\r') {
        memcpy(esc, "\\r", 2), l = 2;
    } else if (c == '\t') {
        memcpy(esc, "\\t", 2), l = 2;
    } else if (c < 0x20 || c == 0x7f) {
        l = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
    } else if (c < 0x80) {
        esc[0] = (char)c, l = 1;
    } else {
        size_t n = utf8_len(s, avail);
        if (n) memcpy(esc, s, n), l = n, used = n;
        else memcpy(esc, "\\ufffd", 6), l = 6;
    }
    put_whole(b, esc, l);
    return b->cut ? 0 : used;
}

/* Appends s as the body of a JSON string. An escape is written whole or not at all, so a
 * cut line is still valid JSON. */
static void put_json_n(line_buf *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    while (n > 0 && !b->cut) {
        size_t used = put_json_char(b, p, n);
        p += used;
        n -= used;
    }
}

static void put_json(line_buf *b, const char *s) {
    if (s) put_json_n(b, s, strlen(s));
}

/* ---- JSON lines: the key=value tail becomes members of the object ----
 * The tail is what text lines carry: ` key=value` fields, a value quoted when it holds a
 * space, `"`, `=` or a control byte, with \" \\ \n \r \t \xHH escapes (bindings/log.c).
 * C callers format some values themselves (`error="%s"` around a message that may hold
 * quotes), so the reader is lenient: a field ends only where ` key=` follows. */

static int key_byte(unsigned char c) { return c > ' ' && c != '=' && c != '"' && c != 0x7f; }

/* Does a field (` key=`) start at p, which points at a space? */
static int field_starts(const char *p, const char *end) {
    if (p >= end || *p != ' ') return 0;
    p++;
    const char *k = p;
    while (p < end && key_byte((unsigned char)*p)) p++;
    return p > k && p < end && *p == '=';
}

/* JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number(const char *s, size_t n) {
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i >= n) return 0;
    if (s[i] == '0') i++;
    else if (s[i] >= '1' && s[i] <= '9') while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    else return 0;
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == d) return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == d) return 0;
    }
    return i == n;
}

int qc_log_json_literal(const char *s, size_t n) {
    return json_number(s, n) || (n == 4 && memcmp(s, "true", 4) == 0) || (n == 5 && memcmp(s, "false", 5) == 0);
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Writes the unescaped content of a quoted value [s, e) as a JSON string body. */
static void put_json_unquoted(line_buf *b, const char *s, const char *e) {
    while (s < e && !b->cut) {
        const char *run = s;
        while (s < e && *s != '\\') s++;
        put_json_n(b, run, (size_t)(s - run));
        if (s >= e || b->cut) break;
        unsigned char d[1];
        size_t adv = 2;
        if (s + 1 >= e) d[0] = '\\', adv = 1;
        else if (s[1] == 'n') d[0] = '\n';
        else if (s[1] == 'r') d[0] = '\r';
        else if (s[1] == 't') d[0] = '\t';
        else if (s[1] == '"' || s[1] == '\\') d[0] = (unsigned char)s[1];
        else if (s[1] == 'x' && s + 3 < e && hexval((unsigned char)s[2]) >= 0 && hexval((unsigned char)s[3]) >= 0)
            d[0] = (unsigned char)(hexval((unsigned char)s[2]) * 16 + hexval((unsigned char)s[3])), adv = 4;
        else d[0] = '\\', adv = 1; /* a backslash that escapes nothing is itself */
        put_json_char(b, d, 1);
        s += adv;
    }
}

/* Keys already in the object, to rename a repeat (`k`, then `k_2`, `k_3`, ...). */
#define SEEN_MAX 1024
typedef struct {
    char arena[QC_LOG_FIELDS_MAX + 2048];
    size_t used;
    struct {
        unsigned off, len;
    } k[SEEN_MAX];
    int n;
} seen_keys;

static int seen_has(const seen_keys *sk, const char *k, size_t l) {
    for (int i = 0; i < sk->n; i++)
        if (sk->k[i].len == l && memcmp(sk->arena + sk->k[i].off, k, l) == 0) return 1;
    return 0;
}

/* Records key [k, k+l) under a name not yet used; returns it in *out (in the arena), or
 * 0 when the table is full. */
static int seen_add(seen_keys *sk, const char *k, size_t kl, const char **out, size_t *outl) {
    /* Stored as it will be written: a byte that is not UTF-8 as U+FFFD (3 bytes), so two
     * keys that differ only there are seen as the one key they print as. */
    if (sk->n >= SEEN_MAX || 3 * kl + 16 > sizeof sk->arena - sk->used) return 0;
    char *dst = sk->arena + sk->used;
    size_t l = 0;
    for (size_t i = 0; i < kl;) {
        unsigned char c = (unsigned char)k[i];
        size_t n = c < 0x80 ? 1 : utf8_len((const unsigned char *)k + i, kl - i);
        if (n) memcpy(dst + l, k + i, n), l += n, i += n;
        else memcpy(dst + l, "\xef\xbf\xbd", 3), l += 3, i++;
    }
    size_t nl = l;
    for (int suffix = 2; seen_has(sk, dst, nl); suffix++)
        nl = l + (size_t)snprintf(dst + l, 16, "_%d", suffix);
    sk->k[sk->n].off = (unsigned)sk->used;
    sk->k[sk->n].len = (unsigned)nl;
    sk->n++;
    sk->used += nl;
    *out = dst;
    *outl = nl;
    return 1;
}

#define JSON_CUT_MEMBER ",\"line_cut\":\"" CUT_MARK "\""

/* Writes the fields of tail kv as members. Returns 1 when the line was cut inside a string
 * value (the caller closes it with CUT_MARK), 0 otherwise. */
static int put_json_fields(line_buf *b, const char *kv, seen_keys *sk) {
    const char *p = kv, *end = kv + strlen(kv);
    int dropped = 0;
    while (p < end) {
        while (p < end && *p == ' ') p++;
        if (p >= end) break;
        const char *k = p;
        while (p < end && key_byte((unsigned char)*p)) p++;
        const char *ke = p;
        const char *vs, *ve;
        int quoted = 0;
        if (p < end && *p == '=' && ke > k) {
            p++;
            if (p < end && *p == '"') {
                /* Ends at the last `"` before a field start or the end of the tail. */
                const char *q = p + 1, *close = NULL;
                for (const char *r = q; r < end; r++) {
                    if (*r == '\\' && r + 1 < end) {
                        r++;
                        continue;
                    }
                    if (*r == '"' && (r + 1 == end || field_starts(r + 1, end))) {
                        close = r;
                        break;
                    }
                }
                if (close) {
                    vs = q, ve = close, quoted = 1, p = close + 1;
                } else {
                    vs = p;
                    while (p < end && !field_starts(p, end)) p++;
                    ve = p;
                }
            } else {
                vs = p;
                while (p < end && !field_starts(p, end)) p++;
                ve = p;
            }
        } else {
            /* Text that is not key=value (a C caller's free text): kept, under `text`. */
            p = k;
            while (p < end && !field_starts(p, end)) p++;
            vs = k, ve = p;
            k = "text", ke = k + 4;
        }
        const char *name;
        size_t nl;
        if (!seen_add(sk, k, (size_t)(ke - k), &name, &nl)) {
            dropped++;
            continue;
        }
        size_t mark = b->n;
        put_lit(b, ",\"");
        put_json_n(b, name, nl);
        put_lit(b, "\":");
        if (b->cut) {
            b->n = mark;
            return -1;
        }
        if (!quoted && qc_log_json_literal(vs, (size_t)(ve - vs))) {
            put_whole(b, vs, (size_t)(ve - vs));
            if (b->cut) {
                b->n = mark;
                return -1;
            }
            continue;
        }
        put_lit(b, "\"");
        if (quoted) put_json_unquoted(b, vs, ve);
        else put_json_n(b, vs, (size_t)(ve - vs));
        if (b->cut) return 1;
        put_lit(b, "\"");
        if (b->cut) {
            b->n = mark;
            return -1;
        }
    }
    if (dropped) {
        char m[48];
        int ml = snprintf(m, sizeof m, ",\"fields_cut\":%d", dropped);
        put_whole(b, m, (size_t)ml);
        if (b->cut) return -1;
    }
    return 0;
}

int qc_log_is_json(void) { return g_log.json; }

void qc_log_set_json(int on) { g_log.json = on; }

size_t qc_log_value(char *out, size_t cap, const char *v) {
    if (cap == 0) return 0;
    size_t n = 0, l = strlen(v);
    int quote = l == 0;
    for (size_t i = 0; i < l && !quote; i++) {
        unsigned char c = (unsigned char)v[i];
        quote = c == ' ' || c == '"' || c == '=' || c < 0x20 || c == 0x7f;
    }
    if (!quote) {
        snprintf(out, cap, "%s", v);
        return l < cap ? l : cap - 1;
    }
    /* Room for the worst escape (\xHH), the closing quote and the NUL. */
    if (cap < 8) {
        out[0] = 0;
        return 0;
    }
    out[n++] = '"';
    for (size_t i = 0; i < l && n + 7 < cap; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '"' || c == '\\') out[n++] = '\\', out[n++] = (char)c;
        else if (c == '\n') out[n++] = '\\', out[n++] = 'n';
        else if (c == '\r') out[n++] = '\\', out[n++] = 'r';
        else if (c == '\t') out[n++] = '\\', out[n++] = 't';
        else if (c < 0x20 || c == 0x7f) n += (size_t)snprintf(out + n, cap - n, "\\x%02x", c);
        else out[n++] = (char)c;
    }
    out[n++] = '"';
    out[n] = 0;
    return n;
}

size_t qc_log_format(char *line, qc_log_level level, const char *component, const char *message, const char *kv) {
    if (!g_log.json) {
        /* Reserve: the cut marker and the newline. */
        line_buf b = {line, QC_LOG_LINE_MAX - sizeof CUT_MARK - 1, 0, 0};
        /* Copies, not snprintf: this runs once per request for the access log. */
        put_str(&b, level_names[level]);
        put(&b, " ", 1);
        put_str(&b, component);
        put(&b, " ", 1);
        put_str(&b, message);
        put_str(&b, kv);
        put_cut_mark(&b);
        line[b.n++] = '\n';
        return b.n;
    }
    /* Reserve: the longest ending, a member saying the line was cut, `}` and the newline. */
    line_buf b = {line, QC_LOG_LINE_MAX - sizeof JSON_CUT_MEMBER - 2, 0, 0};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char head[64];
    int hl = snprintf(head, sizeof head, "{\"ts\":%lld.%03ld,\"level\":\"%s\",\"component\":\"", (long long)ts.tv_sec,
                      ts.tv_nsec / 1000000, level_names[level]);
    put(&b, head, hl > 0 && (size_t)hl < sizeof head ? (size_t)hl : 0);
    put_json(&b, component);
    if (!b.cut) put_lit(&b, "\",\"msg\":\"");
    put_json(&b, message);
    int in_string = b.cut; /* cut inside component or msg */
    if (!b.cut) {
        put_lit(&b, "\"");
        if (kv && *kv) {
            /* Not on the stack: 26 KiB more would be too much for small thread stacks. */
            static _Thread_local seen_keys sk;
            sk.used = 0;
            sk.n = 0;
            static const char *reserved[] = {"ts", "level", "component", "msg"};
            const char *name;
            size_t nl;
            for (size_t i = 0; i < 4; i++) seen_add(&sk, reserved[i], strlen(reserved[i]), &name, &nl);
            int r = put_json_fields(&b, kv, &sk);
            if (r == 1) in_string = 1;
            else if (r == -1) memcpy(line + b.n, JSON_CUT_MEMBER, sizeof JSON_CUT_MEMBER - 1), b.n += sizeof JSON_CUT_MEMBER - 1;
        }
    }
    if (in_string) {
        put_cut_mark(&b);
        line[b.n++] = '"';
    }
    line[b.n++] = '}';
    line[b.n++] = '\n';
    return b.n;
}

void qc_log_line(qc_log_level level, const char *component, const char *message, const char *kv) {
    if (!qc_log_enabled(level)) return;
    char line[QC_LOG_LINE_MAX];
    emit(line, qc_log_format(line, level, component, message, kv));
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
