/* libFuzzer harness for HS256 verification (runtime/jwt_hs256.c). The first byte picks what
 * the rest is:
 *   0: a token for qc_jwt_verify;
 *   1: an Authorization header, a newline, then a body, for qc_jwt_verify_webhook;
 *   2: a claims payload the harness signs with qc_jwt_sign_object and verifies: a verified
 *      token gives back exactly the bytes signed, and never fails for its signature;
 *   3: as 2, then one byte of the token changed (position and value from the input): the
 *      changed token must not verify.
 * The fuzzer cannot forge an HMAC, so 2 and 3 are how it reaches the claim checks. */
#include <string.h>

#include "fuzz_common.h"
#include "jwt_hs256.h"

#define SECRET "fuzz-secret"
#define NOW 1800000000L

static char *dup_cstr(const uint8_t *p, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

static void check_code(int rc, const char *code) {
    if (rc == 0 && code) fuzz_fail("success with code %s", code);
    if (rc != 0 && !code) fuzz_fail("failure without a code");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t mode = data[0] % 4;
    data++, size--;
    char err[256];
    const char *code = NULL;

    if (mode == 0) {
        char *tok = dup_cstr(data, size), *payload = NULL;
        int rc = qc_jwt_verify(tok, size % 2 ? "fuzz-key" : NULL, SECRET, NOW, 60, &payload, err, sizeof err, &code);
        check_code(rc, code);
        if (rc == 0 && !payload) fuzz_fail("verified without a payload");
        free(payload);
        free(tok);
        return 0;
    }
    if (mode == 1) {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t alen = nl ? (size_t)(nl - data) : size;
        char *auth = dup_cstr(data, alen);
        const uint8_t *body = nl ? nl + 1 : NULL;
        size_t blen = nl ? size - alen - 1 : 0;
        /* A body of its own allocation, so reading past it is caught. */
        unsigned char *b = blen ? malloc(blen) : NULL;
        if (blen) memcpy(b, body, blen);
        int rc = qc_jwt_verify_webhook(auth, b, blen, "fuzz-key", SECRET, NOW, 60, err, sizeof err, &code);
        check_code(rc, code);
        free(b);
        free(auth);
        return 0;
    }

    /* 2 and 3: the payload is signed as given (only its outer braces are checked). */
    size_t cut = size, pos = 0;
    uint8_t val = 0;
    if (mode == 3) {
        if (size < 3) return 0;
        pos = (size_t)data[0] << 8 | data[1];
        val = data[2];
        data += 3, size -= 3, cut = size;
    }
    char *token = NULL;
    if (qc_jwt_sign_object((const char *)data, cut, SECRET, &token, err, sizeof err) < 0) return 0;
    size_t tlen = strlen(token);
    if (mode == 3) {
        pos %= tlen;
        if (token[pos] == (char)val || val == 0) {
            free(token);
            return 0;
        }
        token[pos] = (char)val;
    }
    char *payload = NULL;
    int rc = qc_jwt_verify(token, NULL, SECRET, NOW, 60, &payload, err, sizeof err, &code);
    check_code(rc, code);
    if (mode == 3 && rc == 0) fuzz_fail("a token changed at byte %zu still verifies", pos);
    if (mode == 2) {
        if (rc == 0 && (strlen(payload) != size || memcmp(payload, data, size) != 0))
            fuzz_fail("the verified payload differs from the bytes signed");
        if (rc != 0 && strcmp(code, "BAD_SIGNATURE") == 0) fuzz_fail("our own signature was refused: %s", err);
        if (rc != 0 && strcmp(code, "INTERNAL") == 0) fuzz_fail("INTERNAL: %s", err);
    }
    free(payload);
    free(token);
    return 0;
}
