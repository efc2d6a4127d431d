/* The WebSocket frame parser: every framing rule of RFC 6455, each input split at every
 * byte offset; masking; UTF-8 across pieces and fragments; the message bound taken from a
 * frame's header before its payload; Close payloads; and the handshake's accept key. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/websocket.h"

#include "tap.h"

/* What the parser reported, as text: "T:hello|" for a text message, "B:<n>|" for binary,
 * "P:<payload>|" ping, "O:|" pong, "C:<code>:<reason>|" close. */
typedef struct {
    char log[8192];
    size_t n;
    uint8_t msg[70000];
    size_t msg_len;
    int pieces, zero_copy;
    int stop_after_control;
} rec;

static void logf_(rec *r, const char *s, size_t n) {
    if (r->n + n < sizeof r->log) {
        memcpy(r->log + r->n, s, n);
        r->n += n;
        r->log[r->n] = 0;
    }
}

static int on_data(void *ud, int op, uint8_t *d, size_t n, int flags) {
    rec *r = ud;
    r->pieces++;
    if (flags & QC_WS_FIRST) r->msg_len = 0;
    if (r->msg_len + n <= sizeof r->msg) memcpy(r->msg + r->msg_len, d, n);
    r->msg_len += n;
    if ((flags & QC_WS_FIRST) && (flags & QC_WS_FIN)) r->zero_copy++;
    if (flags & QC_WS_FIN) {
        char head[32];
        if (op == QC_WS_TEXT) {
            logf_(r, "T:", 2);
            logf_(r, (char *)r->msg, r->msg_len);
        } else {
            int k = snprintf(head, sizeof head, "B:%zu", r->msg_len);
            logf_(r, head, (size_t)k);
        }
        logf_(r, "|", 1);
    }
    return 0;
}

static int on_control(void *ud, int op, uint8_t *d, size_t n) {
    rec *r = ud;
    char head[32];
    if (op == QC_WS_PING) {
        logf_(r, "P:", 2);
        logf_(r, (char *)d, n);
    } else if (op == QC_WS_PONG) {
        logf_(r, "O:", 2);
    } else {
        int code = n >= 2 ? d[0] << 8 | d[1] : 1005;
        int k = snprintf(head, sizeof head, "C:%d:", code);
        logf_(r, head, (size_t)k);
        if (n > 2) logf_(r, (char *)d + 2, n - 2);
    }
    logf_(r, "|", 1);
    return r->stop_after_control;
}

static const qc_ws_parser_cb cb = {on_data, on_control};

/* A client frame: masked unless mask is NULL; `form` forces the length encoding (0: the
 * minimal one, 126 or 127). Returns its length. */
static size_t frame(uint8_t *out, int b0, const void *payload, size_t len, const uint8_t *mask, int form) {
    size_t o = 0;
    out[o++] = (uint8_t)b0;
    uint8_t mbit = mask ? 0x80 : 0;
    if (!form) form = len < 126 ? 0 : len <= 0xffff ? 126 : 127;
    if (form == 0) {
        out[o++] = (uint8_t)(mbit | len);
    } else if (form == 126) {
        out[o++] = mbit | 126;
        out[o++] = (uint8_t)(len >> 8);
        out[o++] = (uint8_t)len;
    } else {
        out[o++] = mbit | 127;
        for (int i = 0; i < 8; i++) out[o++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    if (mask) {
        memcpy(out + o, mask, 4);
        o += 4;
    }
    for (size_t i = 0; i < len; i++) out[o + i] = ((const uint8_t *)payload)[i] ^ (mask ? mask[i & 3] : 0);
    return o + len;
}

static const uint8_t M[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Feeds buf in two pieces split at `split` (the buffer is copied: the parser unmasks in
 * place). Returns the last feed's result; the log is in r. */
static int feed_split(const uint8_t *buf, size_t len, size_t split, size_t max, rec *r, qc_ws_parser *p) {
    static uint8_t copy[140000];
    memcpy(copy, buf, len);
    memset(r, 0, sizeof *r);
    qc_ws_parser_init(p, max, 1);
    size_t used;
    int rc = qc_ws_parser_feed(p, copy, split, &cb, r, &used);
    if (rc != 0) return rc;
    return qc_ws_parser_feed(p, copy + split, len - split, &cb, r, &used);
}

/* Every split of buf gives `want` in the log and the result `want_rc` (with its code). */
static int all_splits(const uint8_t *buf, size_t len, size_t max, const char *want, int want_rc, int want_code) {
    for (size_t s = 0; s <= len; s++) {
        rec r;
        qc_ws_parser p;
        int rc = feed_split(buf, len, s, max, &r, &p);
        int code = 0;
        if (rc < 0) qc_ws_parser_error(&p, &code);
        if (rc != want_rc || (want && strcmp(r.log, want) != 0) || (want_rc < 0 && code != want_code)) {
            printf("# split %zu: rc=%d code=%d log=\"%s\" reason=\"%s\"\n", s, rc, code, r.log, p.reason);
            return 0;
        }
    }
    return 1;
}

/* One byte at a time. */
static int bytewise(const uint8_t *buf, size_t len, size_t max, rec *r, qc_ws_parser *p) {
    static uint8_t copy[140000];
    memcpy(copy, buf, len);
    memset(r, 0, sizeof *r);
    qc_ws_parser_init(p, max, 1);
    for (size_t i = 0; i < len; i++) {
        size_t used;
        int rc = qc_ws_parser_feed(p, copy + i, 1, &cb, r, &used);
        if (rc != 0) return rc;
    }
    return 0;
}

static int error_is(const uint8_t *buf, size_t len, size_t max, int code, const char *reason) {
    rec r;
    qc_ws_parser p;
    int ok_all = all_splits(buf, len, max, NULL, -1, code);
    feed_split(buf, len, len, max, &r, &p);
    int got;
    const char *why = qc_ws_parser_error(&p, &got);
    if (reason && strcmp(why, reason) != 0) {
        printf("# reason \"%s\", wanted \"%s\"\n", why, reason);
        return 0;
    }
    return ok_all;
}

int main(void) {
    uint8_t buf[140000], *b;
    size_t n;

    /* The handshake (RFC 6455 1.3's example). */
    char acc[29];
    qc_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", acc);
    ok(strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0, "the accept key of RFC 6455's example");
    ok(qc_ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=="), "a 16-byte base64 key is valid");
    ok(!qc_ws_key_valid("dGhlIHNhbXBsZSBub25jZQ="), "a key one character short is not");
    ok(!qc_ws_key_valid("dGhlIHNhbXBsZSBub25jZR=="), "a key whose last bits are not zero is not");
    ok(!qc_ws_key_valid("dGhlIHNhbXBsZSBub25j*Q=="), "a key with a non-base64 character is not");
    ok(!qc_ws_key_valid("dGhlIHNhbXBsZSBub25jZXg="), "the base64 of 17 bytes is not");
    ok(!qc_ws_key_valid(""), "an empty key is not");

    /* RFC 6455 5.7: a single-frame masked text message. */
    static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    ok(all_splits(hello, sizeof hello, 0, "T:Hello|", 0, 0), "RFC 6455's masked \"Hello\", split at every byte");
    {
        rec r;
        qc_ws_parser p;
        feed_split(hello, sizeof hello, sizeof hello, 0, &r, &p);
        ok(r.zero_copy == 1 && r.pieces == 1, "a message that arrives whole is one piece, FIRST and FIN");
        feed_split(hello, sizeof hello, 8, 0, &r, &p);
        ok(r.zero_copy == 0 && r.pieces == 2, "a message cut by a read comes as two pieces");
    }

    /* Fragments with a ping between them (5.4), and a pong, and an empty close. */
    b = buf;
    b += frame(b, 0x01, "Hel", 3, M, 0);
    b += frame(b, 0x89, "ping!", 5, M, 0);
    b += frame(b, 0x00, "", 0, M, 0);
    b += frame(b, 0x80, "lo", 2, M, 0);
    b += frame(b, 0x8A, "", 0, M, 0);
    b += frame(b, 0x82, "\x00\x01\x02", 3, M, 0);
    b += frame(b, 0x88, "", 0, M, 0);
    n = (size_t)(b - buf);
    ok(all_splits(buf, n, 0, "P:ping!|T:Hello|O:|B:3|C:1005:|", 0, 0),
       "fragments with control frames between them, split at every byte");
    {
        rec r;
        qc_ws_parser p;
        ok(bytewise(buf, n, 0, &r, &p) == 0 && strcmp(r.log, "P:ping!|T:Hello|O:|B:3|C:1005:|") == 0,
           "the same fed one byte at a time");
    }

    /* Masking: every length to 40 and a long one, every phase of a split. */
    {
        int good = 1;
        uint8_t payload[300];
        for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 7 + 3);
        size_t lens[] = {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 40, 125, 126, 300};
        for (size_t li = 0; li < sizeof lens / sizeof lens[0] && good; li++) {
            size_t len = lens[li];
            static const uint8_t m2[4] = {0xde, 0xad, 0xbe, 0xef};
            n = frame(buf, 0x82, payload, len, m2, 0);
            for (size_t s = 0; s <= n && good; s++) {
                rec r;
                qc_ws_parser p;
                if (feed_split(buf, n, s, 0, &r, &p) != 0 || r.msg_len != len || memcmp(r.msg, payload, len) != 0) {
                    printf("# len %zu split %zu\n", len, s);
                    good = 0;
                }
            }
        }
        ok(good, "unmasks payloads of every length, split at every byte");
    }

    /* Length encodings. */
    {
        uint8_t big[70000];
        memset(big, 'a', sizeof big);
        n = frame(buf, 0x81, big, 126, M, 0);
        ok(all_splits(buf, n, 0, NULL, 0, 0), "a 126-byte frame with a 16-bit length");
        n = frame(buf, 0x82, big, 65536, M, 0);
        ok(all_splits(buf, n, 70000, "B:65536|", 0, 0), "a 65536-byte frame with a 64-bit length");
        n = frame(buf, 0x81, big, 125, M, 126);
        ok(error_is(buf, n, 0, 1002, "frame length 125 not minimally encoded"), "a 16-bit length under 126 is refused");
        n = frame(buf, 0x82, big, 65535, M, 127);
        ok(error_is(buf, n, 70000, 1002, "frame length 65535 not minimally encoded"),
           "a 64-bit length under 65536 is refused");
        uint8_t h63[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
        ok(error_is(h63, sizeof h63, 0, 1002, "frame length is 2^63 or more"), "a length of 2^63 is refused");
        uint8_t hmax[] = {0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4};
        ok(error_is(hmax, sizeof hmax, 0, 1002, NULL), "a length of 2^64 - 1 is refused");
        uint8_t h62[] = {0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
        ok(error_is(h62, sizeof h62, 65536, 1009, "message too big: 4611686018427387904 bytes > 65536"),
           "a declared 2^62 bytes is refused from the header alone");
    }

    /* The message bound, from the header, before any payload. */
    {
        uint8_t hdr[] = {0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0x11, 0x70, 1, 2, 3, 4}; /* 70000 bytes */
        ok(error_is(hdr, sizeof hdr, 65536, 1009, "message too big: 70000 bytes > 65536"),
           "a frame declaring 70000 bytes is refused at its header (max 65536)");
        uint8_t payload[600];
        memset(payload, 'x', sizeof payload);
        b = buf;
        b += frame(b, 0x01, payload, 400, M, 0);
        b += frame(b, 0x80, payload, 200, M, 0);
        n = (size_t)(b - buf);
        ok(error_is(buf, n, 512, 1009, "message too big: 600 bytes > 512"), "fragments that add up past the bound");
        ok(all_splits(buf, n, 600, NULL, 0, 0), "fragments that add up to the bound exactly pass");
    }

    /* Masking, reserved bits and opcodes. */
    n = frame(buf, 0x81, "hi", 2, NULL, 0);
    ok(error_is(buf, n, 0, 1002, "unmasked frame"), "an unmasked client frame is refused");
    {
        qc_ws_parser p;
        rec r;
        memset(&r, 0, sizeof r);
        qc_ws_parser_init(&p, 0, 0);
        memcpy(buf + 100, buf, n);
        ok(qc_ws_parser_feed(&p, buf + 100, n, &cb, &r, NULL) == 0 && strcmp(r.log, "T:hi|") == 0,
           "unmasked frames pass when no mask is required (client side)");
    }
    n = frame(buf, 0xC1, "hi", 2, M, 0);
    ok(error_is(buf, n, 0, 1002, "reserved bits set (no extension was agreed)"), "RSV1 is refused");
    n = frame(buf, 0x91, "hi", 2, M, 0);
    ok(error_is(buf, n, 0, 1002, NULL), "RSV3 is refused");
    n = frame(buf, 0x83, "hi", 2, M, 0);
    ok(error_is(buf, n, 0, 1002, "reserved opcode 3"), "opcode 3 is refused");
    n = frame(buf, 0x8B, "hi", 2, M, 0);
    ok(error_is(buf, n, 0, 1002, "reserved opcode 11"), "opcode 11 is refused");

    /* Control frames. */
    {
        uint8_t payload[126];
        memset(payload, 'p', sizeof payload);
        n = frame(buf, 0x89, payload, 126, M, 0);
        ok(error_is(buf, n, 0, 1002, "control frame too long: 126 bytes > 125"), "a 126-byte ping is refused");
        n = frame(buf, 0x89, payload, 125, M, 0);
        ok(all_splits(buf, n, 0, NULL, 0, 0), "a 125-byte ping passes");
        n = frame(buf, 0x09, "p", 1, M, 0);
        ok(error_is(buf, n, 0, 1002, "fragmented control frame"), "a fragmented ping is refused");
    }

    /* Fragmentation rules. */
    n = frame(buf, 0x80, "x", 1, M, 0);
    ok(error_is(buf, n, 0, 1002, "continuation frame without a message to continue"),
       "a continuation frame with no message open is refused");
    b = buf;
    b += frame(b, 0x01, "a", 1, M, 0);
    b += frame(b, 0x81, "b", 1, M, 0);
    n = (size_t)(b - buf);
    ok(error_is(buf, n, 0, 1002, "new message before the last one ended"), "a new message inside another is refused");

    /* UTF-8. */
    n = frame(buf, 0x81, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11, M, 0);
    ok(all_splits(buf, n, 0, "T:\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5|", 0, 0), "valid UTF-8 passes, split anywhere");
    n = frame(buf, 0x81, "ab\xff", 3, M, 0);
    ok(error_is(buf, n, 0, 1007, "invalid UTF-8 in text message"), "a 0xFF byte is refused");
    n = frame(buf, 0x81, "\xc0\x80", 2, M, 0);
    ok(error_is(buf, n, 0, 1007, NULL), "an overlong NUL is refused");
    n = frame(buf, 0x81, "\xed\xa0\x80", 3, M, 0);
    ok(error_is(buf, n, 0, 1007, NULL), "a UTF-16 surrogate is refused");
    n = frame(buf, 0x81, "\xf4\x90\x80\x80", 4, M, 0);
    ok(error_is(buf, n, 0, 1007, NULL), "a code point above U+10FFFF is refused");
    n = frame(buf, 0x81, "\xe0\x9f\xbf", 3, M, 0);
    ok(error_is(buf, n, 0, 1007, NULL), "an overlong three-byte form is refused");
    n = frame(buf, 0x81, "ab\xe2\x82", 4, M, 0);
    ok(error_is(buf, n, 0, 1007, "invalid UTF-8 in text message (a character cut at its end)"),
       "a message ending inside a character is refused");
    b = buf;
    b += frame(b, 0x01, "\xe2", 1, M, 0);
    b += frame(b, 0x00, "\x82", 1, M, 0);
    b += frame(b, 0x80, "\xac!", 2, M, 0);
    n = (size_t)(b - buf);
    ok(all_splits(buf, n, 0, "T:\xe2\x82\xac!|", 0, 0), "a character split across three fragments passes");
    b = buf;
    b += frame(b, 0x01, "\xe2", 1, M, 0);
    b += frame(b, 0x80, "\x28", 1, M, 0);
    n = (size_t)(b - buf);
    ok(error_is(buf, n, 0, 1007, NULL), "a bad continuation in the next fragment is refused");
    n = frame(buf, 0x82, "\xff\xfe", 2, M, 0);
    ok(all_splits(buf, n, 0, "B:2|", 0, 0), "binary messages are not checked as UTF-8");
    {
        /* A long ASCII run (the eight-at-a-time path) with one bad byte near its end. */
        char text[200];
        memset(text, 'a', sizeof text);
        text[190] = (char)0x80;
        n = frame(buf, 0x81, text, sizeof text, M, 0);
        ok(error_is(buf, n, 0, 1007, NULL), "a stray continuation byte deep in ASCII is refused");
    }

    /* Close payloads. */
    n = frame(buf, 0x88, "\x03", 1, M, 0);
    ok(error_is(buf, n, 0, 1002, "close frame with a 1-byte payload"), "a Close with a 1-byte payload is refused");
    n = frame(buf, 0x88, "\x03\xe8" "bye", 5, M, 0);
    ok(all_splits(buf, n, 0, "C:1000:bye|", 0, 0), "a Close with code 1000 and a reason");
    n = frame(buf, 0x88, "\x03\xed", 2, M, 0);
    ok(error_is(buf, n, 0, 1002, "invalid close code 1005"), "a Close carrying 1005 is refused");
    n = frame(buf, 0x88, "\x03\xe7", 2, M, 0);
    ok(error_is(buf, n, 0, 1002, "invalid close code 999"), "a Close carrying 999 is refused");
    n = frame(buf, 0x88, "\x13\x88", 2, M, 0);
    ok(error_is(buf, n, 0, 1002, "invalid close code 5000"), "a Close carrying 5000 is refused");
    n = frame(buf, 0x88, "\x0f\xa0", 2, M, 0);
    ok(all_splits(buf, n, 0, "C:4000:|", 0, 0), "a Close carrying 4000 passes");
    n = frame(buf, 0x88, "\x03\xe8\xff", 3, M, 0);
    ok(error_is(buf, n, 0, 1007, "invalid UTF-8 in close reason"), "a Close reason that is not UTF-8 is refused");
    {
        int codes_ok = qc_ws_close_code_valid(1000) && qc_ws_close_code_valid(1011) && qc_ws_close_code_valid(3000) &&
                       qc_ws_close_code_valid(4999) && !qc_ws_close_code_valid(1004) &&
                       !qc_ws_close_code_valid(1006) && !qc_ws_close_code_valid(1015) &&
                       !qc_ws_close_code_valid(2999) && !qc_ws_close_code_valid(0);
        ok(codes_ok, "close codes: the registered ones and 3000-4999 only");
    }

    /* A callback can stop the feed; the rest is parsed by the next call. */
    {
        b = buf;
        b += frame(b, 0x89, "a", 1, M, 0);
        b += frame(b, 0x81, "next", 4, M, 0);
        n = (size_t)(b - buf);
        rec r;
        memset(&r, 0, sizeof r);
        r.stop_after_control = 1;
        qc_ws_parser p;
        qc_ws_parser_init(&p, 0, 1);
        size_t used = 0;
        int rc = qc_ws_parser_feed(&p, buf, n, &cb, &r, &used);
        int first_ok = rc == 1 && strcmp(r.log, "P:a|") == 0 && used == 7;
        r.stop_after_control = 0;
        rc = qc_ws_parser_feed(&p, buf + used, n - used, &cb, &r, &used);
        ok(first_ok && rc == 0 && strcmp(r.log, "P:a|T:next|") == 0, "a callback stops the feed, which resumes after it");
    }

    /* After an error, nothing more is taken. */
    {
        n = frame(buf, 0x83, "x", 1, M, 0);
        rec r;
        memset(&r, 0, sizeof r);
        qc_ws_parser p;
        qc_ws_parser_init(&p, 0, 1);
        qc_ws_parser_feed(&p, buf, n, &cb, &r, NULL);
        n = frame(buf, 0x81, "ok", 2, M, 0);
        ok(qc_ws_parser_feed(&p, buf, n, &cb, &r, NULL) == -1 && r.n == 0, "a failed parser refuses everything after");
    }

    /* Server frame headers. */
    {
        uint8_t h[10];
        int good = qc_ws_frame_header(h, QC_WS_TEXT, 1, 0) == 2 && h[0] == 0x81 && h[1] == 0;
        good = good && qc_ws_frame_header(h, QC_WS_BINARY, 1, 125) == 2 && h[1] == 125;
        good = good && qc_ws_frame_header(h, QC_WS_BINARY, 1, 126) == 4 && h[1] == 126 && h[2] == 0 && h[3] == 126;
        good = good && qc_ws_frame_header(h, QC_WS_BINARY, 1, 65535) == 4 && h[2] == 0xff && h[3] == 0xff;
        good = good && qc_ws_frame_header(h, QC_WS_BINARY, 0, 65536) == 10 && h[0] == 0x02 && h[1] == 127 &&
               h[7] == 1 && h[8] == 0 && h[9] == 0;
        ok(good, "server frame headers use the minimal length form, unmasked");
    }

    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
