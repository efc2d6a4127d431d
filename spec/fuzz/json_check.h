/* A strict JSON checker for what runtime/log.c writes: one object per line, valid UTF-8,
 * no raw control bytes, and no key twice at the top level. Header-only, shared by
 * fuzz_log.c and spec/c/test_log.c. Returns NULL when s[0..n) is one valid object, else
 * what is wrong. */
#ifndef QC_JSON_CHECK_H
#define QC_JSON_CHECK_H

#include <stddef.h>
#include <string.h>

typedef struct {
    const unsigned char *p, *end;
    const char *why;
    /* top-level keys, as spans of the raw (escaped) text; our writer never escapes a key
     * two ways, so comparing raw text finds repeats */
    const unsigned char *keys[8192];
    size_t key_len[8192];
    int nkeys;
} json_check;

static int jc_fail(json_check *c, const char *why) {
    if (!c->why) c->why = why;
    return -1;
}

static void jc_ws(json_check *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int jc_hex4(json_check *c, unsigned *out) {
    if (c->end - c->p < 4) return jc_fail(c, "short \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char h = c->p[i];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= h - '0';
        else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
        else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
        else return jc_fail(c, "bad hex in \\u escape");
    }
    c->p += 4;
    *out = v;
    return 0;
}

static int jc_string(json_check *c) {
    if (c->p >= c->end || *c->p != '"') return jc_fail(c, "expected a string");
    c->p++;
    while (c->p < c->end) {
        unsigned char ch = *c->p;
        if (ch == '"') {
            c->p++;
            return 0;
        }
        if (ch < 0x20) return jc_fail(c, "raw control byte in a string");
        if (ch == '\\') {
            c->p++;
            if (c->p >= c->end) return jc_fail(c, "escape at the end");
            unsigned char e = *c->p++;
            if (e == 'u') {
                unsigned v;
                if (jc_hex4(c, &v) < 0) return -1;
                if (v >= 0xD800 && v <= 0xDFFF) return jc_fail(c, "lone surrogate escape");
            } else if (!strchr("\"\\/bfnrt", e)) {
                return jc_fail(c, "bad escape");
            }
            continue;
        }
        if (ch < 0x80) {
            c->p++;
            continue;
        }
        size_t n = 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (ch >= 0xC2 && ch <= 0xDF) n = 2;
        else if (ch >= 0xE0 && ch <= 0xEF) n = 3, lo = ch == 0xE0 ? 0xA0 : 0x80, hi = ch == 0xED ? 0x9F : 0xBF;
        else if (ch >= 0xF0 && ch <= 0xF4) n = 4, lo = ch == 0xF0 ? 0x90 : 0x80, hi = ch == 0xF4 ? 0x8F : 0xBF;
        else return jc_fail(c, "invalid UTF-8 lead byte");
        if ((size_t)(c->end - c->p) < n || c->p[1] < lo || c->p[1] > hi) return jc_fail(c, "invalid UTF-8 sequence");
        for (size_t i = 2; i < n; i++)
            if ((c->p[i] & 0xC0) != 0x80) return jc_fail(c, "invalid UTF-8 continuation");
        c->p += n;
    }
    return jc_fail(c, "unterminated string");
}

static int jc_digits(json_check *c) {
    const unsigned char *s = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    return c->p > s ? 0 : jc_fail(c, "expected digits");
}

static int jc_number(json_check *c) {
    if (c->p < c->end && *c->p == '-') c->p++;
    if (c->p < c->end && *c->p == '0') c->p++;
    else if (jc_digits(c) < 0) return -1;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (jc_digits(c) < 0) return -1;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
        if (jc_digits(c) < 0) return -1;
    }
    return 0;
}

static int jc_value(json_check *c, int depth);

static int jc_object(json_check *c, int depth) {
    c->p++; /* { */
    jc_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return 0;
    }
    for (;;) {
        jc_ws(c);
        const unsigned char *k = c->p;
        if (jc_string(c) < 0) return -1;
        if (depth == 0) {
            size_t kl = (size_t)(c->p - k);
            for (int i = 0; i < c->nkeys; i++)
                if (c->key_len[i] == kl && memcmp(c->keys[i], k, kl) == 0) return jc_fail(c, "a key twice");
            if (c->nkeys < 8192) c->keys[c->nkeys] = k, c->key_len[c->nkeys++] = kl;
        }
        jc_ws(c);
        if (c->p >= c->end || *c->p != ':') return jc_fail(c, "expected ':'");
        c->p++;
        if (jc_value(c, depth + 1) < 0) return -1;
        jc_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == '}') {
            c->p++;
            return 0;
        }
        return jc_fail(c, "expected ',' or '}'");
    }
}

static int jc_value(json_check *c, int depth) {
    jc_ws(c);
    if (c->p >= c->end) return jc_fail(c, "expected a value");
    unsigned char ch = *c->p;
    if (ch == '{') return depth > 64 ? jc_fail(c, "too deep") : jc_object(c, depth);
    if (ch == '"') return jc_string(c);
    if (ch == '-' || (ch >= '0' && ch <= '9')) return jc_number(c);
    static const char *lits[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(lits[i]);
        if ((size_t)(c->end - c->p) >= l && memcmp(c->p, lits[i], l) == 0) {
            c->p += l;
            return 0;
        }
    }
    return jc_fail(c, "unexpected byte");
}

/* c is large (64 KiB of key spans): callers keep one static. */
static const char *json_check_object(json_check *c, const char *s, size_t n) {
    c->p = (const unsigned char *)s;
    c->end = c->p + n;
    c->why = NULL;
    c->nkeys = 0;
    jc_ws(c);
    if (c->p >= c->end || *c->p != '{') return "not an object";
    if (jc_object(c, 0) < 0) return c->why;
    jc_ws(c);
    return c->p == c->end ? NULL : "bytes after the object";
}

#endif
