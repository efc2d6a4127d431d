/* The JSON error body: exact output, escaping of every byte that needs it, bytes that are
 * not UTF-8, and cutting at every buffer size, each result read back by a strict JSON
 * string reader written for this test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/http_error.h"

#include "tap.h"

/* Appends code point cp as UTF-8. */
static size_t put_cp(char *out, unsigned long cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* One well-formed UTF-8 character at p (by code point arithmetic, not by table): its
 * length, or 0. */
static size_t utf8_char(const unsigned char *p) {
    size_t n;
    unsigned long cp, min;
    if (p[0] < 0x80) return 1;
    if ((p[0] & 0xE0) == 0xC0) n = 2, cp = p[0] & 0x1F, min = 0x80;
    else if ((p[0] & 0xF0) == 0xE0) n = 3, cp = p[0] & 0x0F, min = 0x800;
    else if ((p[0] & 0xF8) == 0xF0) n = 4, cp = p[0] & 0x07, min = 0x10000;
    else return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

/* Reads a JSON string (RFC 8259) at *pp into out, decoded; -1 on anything invalid. */
static int json_string(const char **pp, char *out, size_t cap, size_t *len) {
    const unsigned char *p = (const unsigned char *)*pp;
    size_t o = 0;
    if (*p++ != '"') return -1;
    for (;;) {
        if (o + 4 >= cap) return -1;
        if (*p == '"') break;
        if (*p < 0x20) return -1; /* NUL (the end) included */
        if (*p == '\\') {
            p++;
            const char *simple = "\"\\/bfnrt", *decoded = "\"\\/\b\f\n\r\t", *at = strchr(simple, *p);
            if (*p && at) {
                out[o++] = decoded[at - simple];
                p++;
            } else if (*p == 'u') {
                char hex[5] = {0};
                for (int i = 0; i < 4; i++) {
                    if (!strchr("0123456789abcdefABCDEF", p[1 + i]) || !p[1 + i]) return -1;
                    hex[i] = (char)p[1 + i];
                }
                unsigned long cp = strtoul(hex, NULL, 16);
                if (cp >= 0xD800 && cp <= 0xDFFF) return -1; /* we never need pairs */
                o += put_cp(out + o, cp);
                p += 5;
            } else {
                return -1;
            }
            continue;
        }
        size_t n = utf8_char(p);
        if (!n) return -1;
        memcpy(out + o, p, n);
        o += n;
        p += n;
    }
    out[o] = 0;
    *len = o;
    *pp = (const char *)p + 1;
    return 0;
}

static int literal(const char **pp, const char *lit) {
    size_t n = strlen(lit);
    if (strncmp(*pp, lit, n) != 0) return -1;
    *pp += n;
    return 0;
}

typedef struct {
    char code[8192], message[8192], field[8192];
    size_t code_len, message_len, field_len;
    int has_field;
} parsed;

/* The body must be exactly {"error":{"code":S,"message":S[,"field":S]}} and nothing more. */
static int parse(const char *body, parsed *r) {
    const char *p = body;
    r->has_field = 0;
    if (literal(&p, "{\"error\":{\"code\":") || json_string(&p, r->code, sizeof r->code, &r->code_len)) return -1;
    if (literal(&p, ",\"message\":") || json_string(&p, r->message, sizeof r->message, &r->message_len)) return -1;
    if (literal(&p, ",\"field\":") == 0) {
        if (json_string(&p, r->field, sizeof r->field, &r->field_len)) return -1;
        r->has_field = 1;
    }
    if (literal(&p, "}}") || *p) return -1;
    return 0;
}

/* got is original cut short: a prefix of it, followed by "..." */
static int cut_of(const char *got, size_t got_len, const char *original) {
    if (got_len < 3 || strcmp(got + got_len - 3, "...") != 0) return 0;
    return strncmp(got, original, got_len - 3) == 0 && got_len - 3 < strlen(original);
}

int main(void) {
    char buf[QC_HTTP_ERROR_MAX];
    parsed r;
    size_t n;

    n = qc_http_error_json(buf, sizeof buf, "NOT_FOUND", "no route for /x", NULL);
    ok(strcmp(buf, "{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"no route for /x\"}}") == 0 && n == strlen(buf),
       "renders code and message, and returns the length");

    n = qc_http_error_json(buf, sizeof buf, "VALIDATION_ERROR", "room_name: is required", "room_name");
    ok(strcmp(buf, "{\"error\":{\"code\":\"VALIDATION_ERROR\",\"message\":\"room_name: is required\","
                   "\"field\":\"room_name\"}}") == 0 && n == strlen(buf),
       "adds field after message when there is one");

    qc_http_error_json(buf, sizeof buf, "E", "say \"hi\" \\ now", "a\"b");
    ok(strcmp(buf, "{\"error\":{\"code\":\"E\",\"message\":\"say \\\"hi\\\" \\\\ now\",\"field\":\"a\\\"b\"}}") == 0,
       "escapes quotes and backslashes in every string");

    qc_http_error_json(buf, sizeof buf, "E", "a\nb\rc\td\be\ff\x01g\x1fh\x7fi/", NULL);
    ok(strcmp(buf, "{\"error\":{\"code\":\"E\",\"message\":\"a\\nb\\rc\\td\\be\\ff\\u0001g\\u001fh\x7fi/\"}}") == 0,
       "escapes control characters, short forms where JSON has them");

    int all = 1;
    for (int c = 1; c < 0x20; c++) {
        char msg[4] = {'<', (char)c, '>', 0};
        qc_http_error_json(buf, sizeof buf, "E", msg, msg);
        if (parse(buf, &r) || strcmp(r.message, msg) != 0 || strcmp(r.field, msg) != 0) all = 0;
    }
    ok(all, "every byte below 0x20 comes back as itself through a strict JSON reader");

    qc_http_error_json(buf, sizeof buf, "E", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", NULL);
    ok(strstr(buf, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") != NULL && parse(buf, &r) == 0,
       "keeps well-formed UTF-8 as it is");

    struct {
        const char *in, *why;
    } bad[] = {
        {"a\xff" "b", "a byte that is never UTF-8"},
        {"a\x80" "b", "a lone continuation byte"},
        {"a\xc0\xaf" "b", "an overlong form"},
        {"a\xed\xa0\x80" "b", "a UTF-16 surrogate"},
        {"a\xf4\x90\x80\x80" "b", "a code point past U+10FFFF"},
        {"a\xe2\x82", "a sequence cut at the end of the string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qc_http_error_json(buf, sizeof buf, "E", bad[i].in, NULL);
        char what[128];
        snprintf(what, sizeof what, "replaces %s with U+FFFD", bad[i].why);
        ok(parse(buf, &r) == 0 && strstr(buf, "\\ufffd") && r.message[0] == 'a', what);
    }

    qc_http_error_json(buf, sizeof buf, NULL, NULL, NULL);
    ok(strcmp(buf, "{\"error\":{\"code\":\"\",\"message\":\"\"}}") == 0, "writes a NULL code or message as \"\"");

    buf[0] = 'x';
    ok(qc_http_error_json(buf, QC_HTTP_ERROR_MIN - 1, "E", "m", "f") == 0 && buf[0] == 0,
       "returns 0 and an empty string when the frame itself does not fit");
    ok(qc_http_error_json(buf, QC_HTTP_ERROR_MIN, "CODE", "message", "field") > 0 && parse(buf, &r) == 0 &&
           r.has_field,
       "fits the frame, field included, in QC_HTTP_ERROR_MIN bytes");

    /* Cut at every size: a message that mixes ASCII, escapes and 2-, 3- and 4-byte UTF-8. */
    char message[600];
    size_t ml = 0;
    const char *piece = "x\"\xc3\xa9\n\xe2\x82\xac\x01\xf0\x9f\x98\x80\\";
    while (ml + strlen(piece) < sizeof message) {
        memcpy(message + ml, piece, strlen(piece));
        ml += strlen(piece);
    }
    message[ml] = 0;
    const char *code = "VALIDATION_ERROR", *field = "participant_identity";
    size_t full = qc_http_error_json(buf, sizeof buf, code, message, field);
    int valid = 1, bounded = 1, whole = 1, prefix = 1;
    for (size_t cap = QC_HTTP_ERROR_MIN; cap <= full + 1; cap++) {
        char *small = malloc(cap);
        n = qc_http_error_json(small, cap, code, message, field);
        if (n >= cap || n != strlen(small)) bounded = 0;
        if (parse(small, &r) != 0) {
            valid = 0;
            printf("# cap %zu: invalid: %s\n", cap, small);
        } else {
            if (cap == full + 1 && strcmp(r.message, message) != 0) whole = 0;
            if (cap <= full && !cut_of(r.message, r.message_len, message) && r.message_len > 0 &&
                strcmp(r.message, message) != 0)
                prefix = 0;
            /* Short strings keep their whole text while there is an even share for them. */
            if (cap >= QC_HTTP_ERROR_MIN + 3 * strlen(field) && (strcmp(r.code, code) || strcmp(r.field, field)))
                whole = 0;
        }
        free(small);
    }
    ok(valid, "is valid JSON of the same shape at every buffer size");
    ok(bounded, "never writes past the buffer and returns the length written");
    ok(prefix, "cuts the message at a character boundary and ends it with \"...\"");
    ok(whole, "keeps the code and field whole while there is room for a fair share");

    char long_code[3000];
    memset(long_code, 'C', sizeof long_code - 1);
    long_code[sizeof long_code - 1] = 0;
    char long_msg[3000];
    memset(long_msg, 'm', sizeof long_msg - 1);
    long_msg[sizeof long_msg - 1] = 0;
    n = qc_http_error_json(buf, sizeof buf, long_code, long_msg, NULL);
    ok(parse(buf, &r) == 0 && cut_of(r.code, r.code_len, long_code) && cut_of(r.message, r.message_len, long_msg) &&
           r.code_len > 1900 && r.message_len > 1900,
       "shares the room between a long code and a long message");

    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
