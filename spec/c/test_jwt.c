/* Unit tests for runtime/jwt.c against the worked examples in
 * shared/protocols/livekit.md §1 (access token) and §4 (webhook), plus tokens forged here
 * with libcrypto to reach each failure code. TAP-style output; exit status 1 on failure. */
#define _POSIX_C_SOURCE 200809L
#include "jwt_hs256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tap.h"

/* §1: key devkey, secret secret, nbf 1767225600, exp 1767247200. */
static const char *ACCESS =
    "eyJhbGciOiJIUzI1NiJ9.eyJuYW1lIjoiQWRhIEwiLCJ2aWRlbyI6eyJyb29tSm9pbiI6dHJ1ZSwicm9vbSI6Im"
    "ludGVydmlldy03IiwiY2FuUHVibGlzaCI6dHJ1ZSwiY2FuU3Vic2NyaWJlIjp0cnVlfSwiaXNzIjoiZGV2a2V5Ii"
    "wic3ViIjoiY2FuZC00MiIsIm5iZiI6MTc2NzIyNTYwMCwiZXhwIjoxNzY3MjQ3MjAwfQ.iFULR6e9L43TiHl7yGaH"
    "A6mBCvagmk7iRNqrPlbu1SI";
#define ACCESS_NBF 1767225600L
#define ACCESS_EXP 1767247200L

/* §4: valid 1767225601..1767225901, sha256 claim over BODY. */
static const char *WEBHOOK =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzaGEyNTYiOiJ0Z2IyakF3QWFQN3RlQjdDVzlQUndlN1dTWmt"
    "qaVp6VEZhcW9tRzZMTnlzPSIsImlzcyI6ImRldmtleSIsImlhdCI6MTc2NzIyNTYwMSwibmJmIjoxNzY3MjI1NjA"
    "xLCJleHAiOjE3NjcyMjU5MDF9.ek09OwpWp6lWOkuhkTsN9N1I8GaMAWCN3jAE99THjWI";
static const char *BODY =
    "{\"event\":\"participant_joined\",\"room\":{\"sid\":\"RM_abc\",\"name\":\"interview-7\","
    "\"emptyTimeout\":300,\"creationTime\":\"1767225600\",\"numParticipants\":1},"
    "\"participant\":{\"sid\":\"PA_x\",\"identity\":\"cand-42\",\"state\":\"ACTIVE\","
    "\"joinedAt\":\"1767225601\",\"name\":\"Ada\",\"kind\":\"STANDARD\"},"
    "\"id\":\"EV_8sdFq3Wk2mGh\",\"createdAt\":\"1767225601\"}";
#define BODY_SHA "tgb2jAwAaP7teB7CW9PRwe7WSZkjiZzTFaqomG6LNys="
#define WH_EXP 1767225901L

static void b64url(const unsigned char *in, size_t n, char *out) {
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    size_t t = 0;
    for (size_t i = 0; out[i]; i++) {
        if (out[i] == '=') continue;
        out[t++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    out[t] = 0;
}

/* Builds header.payload.sig from raw JSON texts, HMAC'd with secret (no signature when
 * secret is NULL), so tests can reach checks that come after the signature. */
static char *forge(const char *header, const char *payload, const char *secret) {
    size_t hl = strlen(header), pl = strlen(payload);
    char *tok = malloc(2 * (hl + pl) + 200);
    if (!tok) abort();
    b64url((const unsigned char *)header, hl, tok);
    strcat(tok, ".");
    b64url((const unsigned char *)payload, pl, tok + strlen(tok));
    size_t signed_len = strlen(tok);
    strcat(tok, ".");
    if (secret) {
        unsigned char mac[32];
        unsigned int ml = 0;
        HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)tok, signed_len,
             mac, &ml);
        b64url(mac, ml, tok + strlen(tok));
    }
    return tok;
}

/* Verifies and reports whether the outcome code is `want` (NULL = success). */
static void expect(const char *tok, const char *iss, const char *secret, long now,
                   const char *want, const char *what) {
    char err[256] = "";
    const char *code = "unset";
    char *payload = NULL;
    int rc = qc_jwt_verify(tok, iss, secret, now, 60, &payload, err, sizeof err, &code);
    int good = want ? (rc == -1 && code && strcmp(code, want) == 0 && !payload && err[0])
                    : (rc == 0 && code == NULL && payload != NULL);
    if (!good) printf("# rc=%d code=%s err=%s\n", rc, code ? code : "(null)", err);
    ok(good, what);
    free(payload);
}

static void expect_wh(const char *auth, const char *body, size_t len, const char *key,
                      const char *secret, long now, const char *want, const char *what) {
    char err[256] = "";
    const char *code = "unset";
    int rc = qc_jwt_verify_webhook(auth, (const unsigned char *)body, len, key, secret, now, 60,
                                   err, sizeof err, &code);
    int good = want ? (rc == -1 && code && strcmp(code, want) == 0 && err[0])
                    : (rc == 0 && code == NULL);
    if (!good) printf("# rc=%d code=%s err=%s\n", rc, code ? code : "(null)", err);
    ok(good, what);
}

static void test_access_token(void) {
    char err[256];
    const char *code = NULL;
    char *payload = NULL;
    int rc = qc_jwt_verify(ACCESS, "devkey", "secret", ACCESS_NBF + 100, 60, &payload, err,
                           sizeof err, &code);
    ok(rc == 0 && code == NULL, "verifies the §1 access token inside its validity");
    ok(payload && strstr(payload, "\"room\":\"interview-7\"") && strstr(payload, "\"sub\":\"cand-42\""),
       "returns the §1 payload as signed");
    free(payload);

    expect(ACCESS, NULL, "secret", ACCESS_NBF + 100, NULL, "issuer check is skipped when iss is NULL");
    expect(ACCESS, "devkey", "secret", ACCESS_EXP + 60, NULL, "accepts exp + leeway");
    expect(ACCESS, "devkey", "secret", ACCESS_EXP + 61, "EXPIRED", "rejects exp + leeway + 1 as EXPIRED");
    expect(ACCESS, "devkey", "secret", ACCESS_NBF - 60, NULL, "accepts nbf - leeway");
    expect(ACCESS, "devkey", "secret", ACCESS_NBF - 61, "NOT_YET_VALID",
           "rejects nbf - leeway - 1 as NOT_YET_VALID");
    expect(ACCESS, "devkey", "Secret", ACCESS_NBF + 100, "BAD_SIGNATURE", "wrong secret is BAD_SIGNATURE");
    expect(ACCESS, "otherkey", "secret", ACCESS_NBF + 100, "BAD_ISSUER", "wrong iss is BAD_ISSUER");

    /* One byte changed in the payload part: still base64url, no longer what was signed. */
    char *t = strdup(ACCESS);
    if (!t) abort();
    char *p = strchr(t, '.') + 5;
    *p = *p == 'A' ? 'B' : 'A';
    expect(t, "devkey", "secret", ACCESS_NBF + 100, "BAD_SIGNATURE", "tampered payload is BAD_SIGNATURE");
    free(t);

    /* Last signature character changed within the same 6-bit group's unused bits
     * ('I' = 001000 -> 'J' = 001001): decodes to the same MAC, but is not canonical. */
    t = strdup(ACCESS);
    if (!t) abort();
    t[strlen(t) - 1] = 'J';
    expect(t, "devkey", "secret", ACCESS_NBF + 100, "BAD_SIGNATURE",
           "non-canonical signature encoding is BAD_SIGNATURE");
    free(t);
}

static void test_forged(void) {
    const char *claims = "{\"iss\":\"devkey\",\"exp\":1767247200,\"nbf\":1767225600}";
    long now = ACCESS_NBF + 100;
    char *t;

    t = forge("{\"alg\":\"none\"}", claims, NULL);
    expect(t, "devkey", "secret", now, "BAD_ALG", "alg none token is BAD_ALG");
    free(t);
    t = forge("{\"alg\":\"none\",\"typ\":\"JWT\"}", claims, "secret");
    expect(t, "devkey", "secret", now, "BAD_ALG", "alg none even with a valid HMAC is BAD_ALG");
    free(t);
    t = forge("{\"alg\":\"HS384\"}", claims, "secret");
    expect(t, "devkey", "secret", now, "BAD_ALG", "HS384 is BAD_ALG");
    free(t);
    t = forge("{\"alg\":\"hs256\"}", claims, "secret");
    expect(t, "devkey", "secret", now, "BAD_ALG", "alg is case-sensitive");
    free(t);
    t = forge("{\"typ\":\"JWT\"}", claims, "secret");
    expect(t, "devkey", "secret", now, "BAD_ALG", "missing alg is BAD_ALG");
    free(t);
    t = forge("{\"alg\":\"none\",\"alg\":\"HS256\"}", claims, "secret");
    expect(t, "devkey", "secret", now, "MALFORMED", "duplicate alg in header is MALFORMED");
    free(t);
    t = forge("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", claims, "secret");
    expect(t, "devkey", "secret", now, "MALFORMED", "crit header is refused");
    free(t);
    t = forge("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims, "secret");
    expect(t, "devkey", "secret", now, NULL, "Go-style header with typ verifies");
    free(t);

    t = forge("{\"alg\":\"HS256\"}", "{\"iss\":\"devkey\",\"sub\":\"x\"}", "secret");
    expect(t, "devkey", "secret", now, "NO_EXP", "token without exp is NO_EXP");
    free(t);
    t = forge("{\"alg\":\"HS256\"}", "{\"iss\":\"devkey\",\"exp\":\"1767247200\"}", "secret");
    expect(t, "devkey", "secret", now, "MALFORMED", "string exp is MALFORMED");
    free(t);
    t = forge("{\"alg\":\"HS256\"}", "{\"iss\":\"devkey\",\"exp\":1767247200.5}", "secret");
    expect(t, "devkey", "secret", now, "MALFORMED", "non-integer exp is MALFORMED");
    free(t);
    t = forge("{\"alg\":\"HS256\"}", "{\"iss\":\"devkey\",\"exp\":1767247200,\"nbf\":null}", "secret");
    expect(t, "devkey", "secret", now, "MALFORMED", "null nbf is MALFORMED");
    free(t);
    t = forge("{\"alg\":\"HS256\"}", "{\"iss\":\"devkey\",\"exp\":9223372036854775807,\"nbf\":-9223372036854775807}",
              "secret");
    expect(t, "devkey", "secret", now, NULL, "extreme exp/nbf do not overflow");
    free(t);
    t = forge("{\"alg\":\"HS256\"}", "{\"iss\":\"devkey\",\"exp\":-9223372036854775807}", "secret");
    expect(t, "devkey", "secret", now, "EXPIRED", "hugely negative exp is EXPIRED");
    free(t);
    t = forge("{\"alg\":\"HS256\"}", "{\"iss\":7,\"exp\":1767247200}", "secret");
    expect(t, "devkey", "secret", now, "BAD_ISSUER", "non-string iss is BAD_ISSUER");
    free(t);
    t = forge("{\"alg\":\"HS256\"}", "[1,2]", "secret");
    expect(t, "devkey", "secret", now, "MALFORMED", "array payload is MALFORMED");
    free(t);
    t = forge("{\"alg\":\"HS256\"}", "{\"exp\":1767247200,\"exp\":1}", "secret");
    expect(t, NULL, "secret", now, "MALFORMED", "duplicate claim is MALFORMED");
    free(t);
    /* A NUL inside the payload would make jansson see less than we return. */
    {
        char tok[512];
        const unsigned char pl[] = "{\"exp\":1767247200}\0{\"x\":1}";
        b64url((const unsigned char *)"{\"alg\":\"HS256\"}", 15, tok);
        strcat(tok, ".");
        b64url(pl, sizeof pl - 1, tok + strlen(tok));
        size_t sl = strlen(tok);
        unsigned char mac[32];
        unsigned int ml = 0;
        HMAC(EVP_sha256(), "secret", 6, (const unsigned char *)tok, sl, mac, &ml);
        strcat(tok, ".");
        b64url(mac, ml, tok + strlen(tok));
        expect(tok, NULL, "secret", now, "MALFORMED", "payload with a NUL byte is MALFORMED");
    }
}

static void test_malformed(void) {
    long now = ACCESS_NBF + 100;
    expect(NULL, NULL, "secret", now, "MALFORMED", "NULL token is MALFORMED");
    expect("", NULL, "secret", now, "MALFORMED", "empty token is MALFORMED");
    expect("abc", NULL, "secret", now, "MALFORMED", "one part is MALFORMED");
    expect("abc.def", NULL, "secret", now, "MALFORMED", "two parts is MALFORMED");
    expect("a.b.c.d", NULL, "secret", now, "MALFORMED", "four parts is MALFORMED");
    expect(".eyJ9.abc", NULL, "secret", now, "MALFORMED", "empty header is MALFORMED");
    expect("eyJhbGciOiJIUzI1NiJ9 .e30.abc", NULL, "secret", now, "MALFORMED", "space is MALFORMED");
    expect("eyJhbGciOiJIUzI1NiJ9=.e30.abc", NULL, "secret", now, "MALFORMED", "padding is MALFORMED");
    expect("e.e30.abc", NULL, "secret", now, "MALFORMED", "impossible base64 length is MALFORMED");
    expect("bm90IGpzb24.e30.abc", NULL, "secret", now, "MALFORMED", "header not JSON is MALFORMED");
    char err[128];
    const char *code = NULL;
    ok(qc_jwt_verify(ACCESS, NULL, "", ACCESS_NBF, 60, NULL, err, sizeof err, &code) == -1 &&
           strcmp(code, "INVALID_ARGUMENT") == 0,
       "empty secret is INVALID_ARGUMENT");
    ok(qc_jwt_verify(ACCESS, NULL, "secret", ACCESS_NBF, -1, NULL, err, sizeof err, &code) == -1 &&
           strcmp(code, "INVALID_ARGUMENT") == 0,
       "negative leeway is INVALID_ARGUMENT");
    ok(qc_jwt_verify(ACCESS, NULL, "secret", ACCESS_NBF, 60, NULL, NULL, 0, NULL) == 0,
       "err, code and payload outputs are optional");
    size_t big = QC_JWT_MAX_TOKEN + 10;
    char *huge = malloc(big + 1);
    if (!huge) abort();
    memset(huge, 'A', big);
    huge[big] = 0;
    expect(huge, NULL, "secret", now, "MALFORMED", "over-long token is MALFORMED");
    free(huge);
}

static void test_sign(void) {
    const char *claims =
        "{\"iss\":\"devkey\",\"sub\":\"cand-42\",\"name\":\"Zo\xc3\xab \xe2\x9c\x93\","
        "\"nbf\":1767225600,\"exp\":1767247200,\"metadata\":\"{\\\"role\\\":\\\"candidate\\\"}\","
        "\"video\":{\"roomJoin\":true,\"room\":\"interview-7\",\"canPublish\":true,"
        "\"canPublishSources\":[\"microphone\",\"camera\"]}}";
    char err[256] = "";
    char *tok = NULL;
    int rc = qc_jwt_sign(claims, "secret", &tok, err, sizeof err);
    ok(rc == 0 && tok && strncmp(tok, "eyJ", 3) == 0, "signs a claims object with a nested video grant");
    if (rc != 0) printf("# %s\n", err);
    char *payload = NULL;
    const char *code = "unset";
    rc = qc_jwt_verify(tok, "devkey", "secret", ACCESS_NBF + 1, 60, &payload, err, sizeof err, &code);
    ok(rc == 0 && code == NULL, "our signed token verifies");
    ok(payload && strstr(payload, "\"video\":{") && strstr(payload, "\"canPublishSources\":[\"microphone\",\"camera\"]") &&
           strstr(payload, "Zo\xc3\xab \xe2\x9c\x93") && strstr(payload, "\"exp\":1767247200"),
       "roundtrip keeps nested grants, UTF-8 and exp");
    free(payload);
    expect(tok, "devkey", "other", ACCESS_NBF + 1, "BAD_SIGNATURE", "our token fails with another secret");
    /* libjwt writes {"alg":"HS256","typ":"JWT"}: base64url of '{"alg":"HS256","typ":"JWT"}'. */
    ok(tok && strncmp(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37) == 0, "header is HS256/JWT");
    free(tok);

    struct { const char *json, *what; } bad[] = {
        {"{}", "refuses an empty object"},
        {"[1,2]", "refuses an array"},
        {"not json", "refuses invalid JSON"},
        {"{\"a\":1,\"a\":2}", "refuses duplicate keys"},
        {"\"str\"", "refuses a bare string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tok = (char *)1;
        err[0] = 0;
        rc = qc_jwt_sign(bad[i].json, "secret", &tok, err, sizeof err);
        ok(rc == -1 && tok == NULL && err[0], bad[i].what);
    }
    ok(qc_jwt_sign("{\"a\":1}", "", &tok, err, sizeof err) == -1, "refuses an empty secret");

    size_t n = QC_JWT_MAX_PAYLOAD + 100;
    char *big = malloc(n + 1);
    if (!big) abort();
    memset(big, 'x', n);
    memcpy(big, "{\"a\":\"", 6);
    memcpy(big + n - 2, "\"}", 2);
    big[n] = 0;
    ok(qc_jwt_sign(big, "secret", &tok, err, sizeof err) == -1, "refuses an over-long payload");
    free(big);
    /* 1e9 re-serializes as 1000000000.0: a short input can become a long encoding. */
    n = QC_JWT_MAX_PAYLOAD - 10;
    big = malloc(n + 16);
    if (!big) abort();
    size_t at = 0;
    at += (size_t)sprintf(big, "{\"a\":[");
    while (at + 6 < n) at += (size_t)sprintf(big + at, "1e9,");
    sprintf(big + at, "1e9]}");
    ok(qc_jwt_sign(big, "secret", &tok, err, sizeof err) == -1, "refuses a payload whose re-serialization is over-long");
    free(big);
}

/* The payload part of our tokens is encoded by our own base64url: it must equal libcrypto's
 * (made URL-safe) for every length modulo 3 and for bytes that map to '-' and '_'. */
static void test_payload_encoding(void) {
    int all = 1;
    for (int extra = 0; extra < 6; extra++) {
        char json[64];
        /* "\xfb\xff" ends up as the bytes that encode to '-' and '_' in base64url. */
        int n = snprintf(json, sizeof json, "{\"k\":\"\xfb\xff\xfe?>%.*s\"}", extra, "abcdef");
        char *tok = NULL, err[128];
        if (qc_jwt_sign_object(json, (size_t)n, "secret", &tok, err, sizeof err) != 0) {
            all = 0;
            continue;
        }
        char want[128];
        b64url((const unsigned char *)json, (size_t)n, want);
        const char *dot = strchr(tok, '.');
        all = all && dot && strncmp(dot + 1, want, strlen(want)) == 0 && dot[1 + strlen(want)] == '.';
        free(tok);
    }
    ok(all, "encodes payloads of every length like libcrypto's base64, URL-safe, unpadded");
}

static void test_webhook(void) {
    size_t len = strlen(BODY);
    long now = 1767225700;
    char sha[45];
    ok(len == 312, "example body is 312 bytes");
    ok(qc_jwt_sha256_base64((const unsigned char *)BODY, len, sha) == 0 && strcmp(sha, BODY_SHA) == 0,
       "sha256 base64 of the example body matches §4");
    ok(qc_jwt_sha256_base64(NULL, 0, sha) == 0 &&
           strcmp(sha, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=") == 0,
       "sha256 base64 of the empty body");

    expect_wh(WEBHOOK, BODY, len, "devkey", "secret", now, NULL, "§4 webhook verifies at 1767225700");
    expect_wh(WEBHOOK, BODY, len, "devkey", "secret", WH_EXP + 61, "EXPIRED",
              "§4 webhook is EXPIRED at exp + 61");
    char *bearer = malloc(strlen(WEBHOOK) + 16);
    if (!bearer) abort();
    sprintf(bearer, "Bearer %s", WEBHOOK);
    expect_wh(bearer, BODY, len, "devkey", "secret", now, NULL, "\"Bearer \" prefix is accepted");
    sprintf(bearer, "bearer  %s ", WEBHOOK);
    expect_wh(bearer, BODY, len, "devkey", "secret", now, NULL, "scheme is case-insensitive, blanks trimmed");
    sprintf(bearer, "Bearer%s", WEBHOOK);
    expect_wh(bearer, BODY, len, "devkey", "secret", now, "MALFORMED", "\"Bearer\" glued to the token is MALFORMED");
    free(bearer);

    char *body = strdup(BODY);
    if (!body) abort();
    body[100] ^= 1;
    expect_wh(WEBHOOK, body, len, "devkey", "secret", now, "BODY_MISMATCH", "body changed by one byte is BODY_MISMATCH");
    free(body);
    expect_wh(WEBHOOK, BODY, len - 1, "devkey", "secret", now, "BODY_MISMATCH", "truncated body is BODY_MISMATCH");
    expect_wh(WEBHOOK, BODY, len, "devkey", "wrong", now, "BAD_SIGNATURE", "wrong secret is BAD_SIGNATURE");
    expect_wh(WEBHOOK, BODY, len, "otherkey", "secret", now, "BAD_ISSUER", "wrong api key is BAD_ISSUER");
    expect_wh(NULL, BODY, len, "devkey", "secret", now, "MISSING", "no header is MISSING");
    expect_wh("", BODY, len, "devkey", "secret", now, "MISSING", "empty header is MISSING");
    expect_wh("   ", BODY, len, "devkey", "secret", now, "MISSING", "blank header is MISSING");
    expect_wh(ACCESS, BODY, len, "devkey", "secret", now, "NO_SHA256", "token without sha256 is NO_SHA256");

    char *t = forge("{\"alg\":\"none\"}",
                    "{\"sha256\":\"" BODY_SHA "\",\"iss\":\"devkey\",\"exp\":1767225901}", NULL);
    expect_wh(t, BODY, len, "devkey", "secret", now, "BAD_ALG", "alg none webhook is BAD_ALG");
    free(t);
    t = forge("{\"alg\":\"HS256\"}", "{\"sha256\":7,\"iss\":\"devkey\",\"exp\":1767225901}", "secret");
    expect_wh(t, BODY, len, "devkey", "secret", now, "NO_SHA256", "non-string sha256 is NO_SHA256");
    free(t);
    t = forge("{\"alg\":\"HS256\"}", "{\"sha256\":\"" BODY_SHA "x\",\"iss\":\"devkey\",\"exp\":1767225901}",
              "secret");
    expect_wh(t, BODY, len, "devkey", "secret", now, "BODY_MISMATCH", "longer sha256 claim is BODY_MISMATCH");
    free(t);
    t = forge("{\"alg\":\"HS256\"}", "{\"sha256\":\"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\","
              "\"iss\":\"devkey\",\"exp\":1767225901}", "secret");
    expect_wh(t, NULL, 0, "devkey", "secret", now, NULL, "empty body with NULL pointer verifies");
    free(t);
}

static void test_const_time_equal(void) {
    ok(qc_const_time_equal("abc", 3, "abc", 3) == 1, "equal strings are equal");
    ok(qc_const_time_equal("abc", 3, "abd", 3) == 0, "different strings differ");
    ok(qc_const_time_equal("abc", 3, "abcd", 4) == 0, "a prefix is not equal");
    ok(qc_const_time_equal("a\0b", 3, "a\0c", 3) == 0, "bytes after a NUL count");
    ok(qc_const_time_equal(NULL, 0, "", 0) == 1, "NULL equals empty");
    ok(qc_const_time_equal("", 0, "x", 1) == 0, "empty differs from non-empty");
}

int main(void) {
    test_access_token();
    test_forged();
    test_malformed();
    test_sign();
    test_payload_encoding();
    test_webhook();
    test_const_time_equal();
    printf("1..%d\n", count);
    if (failures) printf("# %d of %d failed\n", failures, count);
    return failures ? 1 : 0;
}
