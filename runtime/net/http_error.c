/* The JSON error body, written by hand: it is three strings in a fixed frame, sent from
 * places (the HTTP layer, out of memory) where building a JSON document with a library
 * would need allocations that may fail. Escaping and cutting are the parts to get right. */
#include "http_error.h"

#include <string.h>

#define HEAD "{\"error\":{\"code\":\""
#define MID "\",\"message\":\""
#define FIELD "\",\"field\":\""
#define TAIL "\"}}"
#define ELLIPSIS "..."

_Static_assert(QC_HTTP_ERROR_MIN == sizeof HEAD - 1 + sizeof MID - 1 + sizeof FIELD - 1 + sizeof TAIL - 1 + 1,
               "QC_HTTP_ERROR_MIN is the frame with field and the NUL");

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates,
 * nothing past U+10FFFF) starting at s, or 0 when none starts there. Stops at a NUL. */
static size_t utf8_seq(const unsigned char *s) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;      /* overlong */
        else if (c == 0xED) hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;      /* overlong */
        else if (c == 0xF4) hi = 0x8F; /* past U+10FFFF */
    } else {
        return 0;
    }
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return n;
}

/* The JSON text of the character at s, into out (at most 6 bytes): returns its length and
 * sets *used to the input bytes it stands for. It is the unit a cut never splits. */
static size_t unit(const unsigned char *s, char *out, size_t *used) {
    static const char hex[] = "0123456789abcdef";
    unsigned char c = *s;
    *used = 1;
    if (c == '"' || c == '\\') {
        out[0] = '\\';
        out[1] = (char)c;
        return 2;
    }
    if (c < 0x20) {
        const char *short_form = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (short_form) {
            memcpy(out, short_form, 2);
            return 2;
        }
        memcpy(out, "\\u00", 4);
        out[4] = hex[c >> 4];
        out[5] = hex[c & 15];
        return 6;
    }
    size_t n = utf8_seq(s);
    if (n == 0) { /* a stray byte: JSON text must be UTF-8 */
        memcpy(out, "\\ufffd", 6);
        return 6;
    }
    memcpy(out, s, n);
    *used = n;
    return n;
}

static size_t escaped_len(const char *s) {
    size_t total = 0, used;
    char tmp[6];
    for (const unsigned char *p = (const unsigned char *)s; *p; p += used) total += unit(p, tmp, &used);
    return total;
}

/* Writes s escaped into dst, at most `allow` bytes; when all of it does not fit, whole
 * units up to room for "..." and then "...", or nothing when even "..." does not fit (a
 * cut without its mark would pass for the whole value). Returns the bytes written. */
static size_t put_escaped(char *dst, size_t allow, const char *s, size_t need) {
    size_t o = 0, used, mark = sizeof ELLIPSIS - 1;
    int cut = need > allow;
    if (cut && allow < mark) return 0;
    size_t limit = cut ? allow - mark : allow;
    char u[6];
    for (const unsigned char *p = (const unsigned char *)s; *p; p += used) {
        size_t n = unit(p, u, &used);
        if (o + n > limit) break;
        memcpy(dst + o, u, n);
        o += n;
    }
    if (cut) {
        memcpy(dst + o, ELLIPSIS, mark);
        o += mark;
    }
    return o;
}

/* Shares `room` among n strings that need more in total: the shortest first, each taking
 * what it needs up to an even share of what is left, so a long message cannot push out a
 * short code and a long code cannot push out the message. */
static void fair_share(const size_t *need, size_t *allow, size_t n, size_t room) {
    size_t order[3] = {0, 1, 2};
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && need[order[j]] < need[order[j - 1]]; j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (size_t k = 0; k < n; k++) {
        size_t share = room / (n - k);
        size_t give = need[order[k]] < share ? need[order[k]] : share;
        allow[order[k]] = give;
        room -= give;
    }
}

static char *put(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}

size_t qc_http_error_json(char *buf, size_t cap, const char *code, const char *message, const char *field) {
    if (!buf || cap < QC_HTTP_ERROR_MIN) {
        if (buf && cap) buf[0] = 0;
        return 0;
    }
    const char *s[3] = {code ? code : "", message ? message : "", field};
    size_t n = field ? 3 : 2;
    size_t frame = sizeof HEAD - 1 + sizeof MID - 1 + sizeof TAIL - 1 + (field ? sizeof FIELD - 1 : 0);
    size_t room = cap - 1 - frame, need[3] = {0}, allow[3] = {0}, total = 0;
    for (size_t i = 0; i < n; i++) {
        need[i] = escaped_len(s[i]);
        total += need[i];
    }
    if (total <= room) memcpy(allow, need, sizeof need);
    else fair_share(need, allow, n, room);

    char *p = put(buf, HEAD, sizeof HEAD - 1);
    p += put_escaped(p, allow[0], s[0], need[0]);
    p = put(p, MID, sizeof MID - 1);
    p += put_escaped(p, allow[1], s[1], need[1]);
    if (field) {
        p = put(p, FIELD, sizeof FIELD - 1);
        p += put_escaped(p, allow[2], s[2], need[2]);
    }
    p = put(p, TAIL, sizeof TAIL - 1);
    *p = 0;
    return (size_t)(p - buf);
}
