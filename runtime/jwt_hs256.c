/* HS256 tokens: libjwt 1.10 signs and parses JSON (it links jansson, whose headers we do
 * not have); the checks are ours, because libjwt 1.10's jwt_decode compares signatures with
 * strcmp, cannot tell us why a token failed, and has no notion of exp, nbf or leeway. */
#define _POSIX_C_SOURCE 200809L
#include "jwt_hs256.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jwt.h> /* libjwt */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#define SHA256_LEN 32
/* base64url of a 32-byte MAC, unpadded. */
#define MAC_B64URL_LEN 43

static int fail(char *err, size_t errlen, const char **code, const char *c, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));

static int fail(char *err, size_t errlen, const char **code, const char *c, const char *fmt,
                ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    if (code) *code = c;
    return -1;
}

/* base64url without padding (RFC 4648 section 5) of n bytes into out (room for
 * 4 * ((n + 2) / 3) + 1 bytes); returns the length written. Encoded here, straight into the
 * URL alphabet: EVP_EncodeBlock plus a pass to swap '+' and '/' cost twice as many
 * instructions, on the path every token takes. Decoding stays with libcrypto. */
static size_t b64url_encode(const unsigned char *in, size_t n, char *out) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = alphabet[(v >> 6) & 63];
        *o++ = alphabet[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = alphabet[(v >> 6) & 63];
    }
    *o = 0;
    return (size_t)(o - out);
}

/* HMAC-SHA256 with a keyed context kept for the last secret used. OpenSSL 3's one-shot
 * HMAC() fetches the digest and builds a context on every call, which measured 2 us per
 * token; re-initialising a keyed EVP_MAC context (key NULL keeps the key) costs a tenth. */
static int hmac_sha256(const char *secret, const unsigned char *data, size_t len,
                       unsigned char out[SHA256_LEN]) {
    static EVP_MAC *mac;
    static EVP_MAC_CTX *ctx;
    static char *ctx_secret;
    size_t outlen = 0;
    if (!mac && !(mac = EVP_MAC_fetch(NULL, "HMAC", NULL))) return -1;
    if (!ctx || strcmp(ctx_secret, secret) != 0) {
        char *copy = strdup(secret);
        EVP_MAC_CTX *fresh = copy ? EVP_MAC_CTX_new(mac) : NULL;
        OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                               OSSL_PARAM_construct_end()};
        if (!fresh || !EVP_MAC_init(fresh, (const unsigned char *)secret, strlen(secret), params)) {
            EVP_MAC_CTX_free(fresh);
            free(copy);
            return -1;
        }
        EVP_MAC_CTX_free(ctx);
        if (ctx_secret) OPENSSL_clear_free(ctx_secret, strlen(ctx_secret));
        ctx = fresh;
        ctx_secret = copy;
    } else if (!EVP_MAC_init(ctx, NULL, 0, NULL)) {
        return -1;
    }
    if (!EVP_MAC_update(ctx, data, len) || !EVP_MAC_final(ctx, out, &outlen, SHA256_LEN) ||
        outlen != SHA256_LEN)
        return -1;
    return 0;
}

static int is_b64url_char(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* Decodes unpadded base64url into a NUL-terminated heap buffer. The caller has checked the
 * alphabet. Returns NULL with *oom set when allocation failed, NULL alone when the
 * length is impossible. */
static unsigned char *b64url_decode(const char *s, size_t n, size_t *outlen, int *oom) {
    *oom = 0;
    if (n % 4 == 1 || n > INT_MAX - 4) return NULL;
    size_t pad = (4 - n % 4) % 4;
    char *in = malloc(n + pad + 1);
    unsigned char *out = malloc((n + pad) / 4 * 3 + 1);
    if (!in || !out) {
        free(in);
        free(out);
        *oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) in[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    memset(in + n, '=', pad);
    in[n + pad] = 0;
    /* EVP_DecodeBlock counts the padding as zero bytes, hence the "- pad". */
    int got = EVP_DecodeBlock(out, (const unsigned char *)in, (int)(n + pad));
    free(in);
    if (got < 0 || (size_t)got < pad) {
        free(out);
        return NULL;
    }
    *outlen = (size_t)got - pad;
    out[*outlen] = 0;
    return out;
}

/* Decodes one base64url part that must hold a JSON object. jansson stops at a NUL, so a
 * NUL inside would make what we check differ from what we hand back: refuse it. */
static int decode_json_part(const char *s, size_t n, char **out, const char *what, char *err,
                            size_t errlen, const char **code) {
    size_t len = 0;
    int oom = 0;
    unsigned char *buf = b64url_decode(s, n, &len, &oom);
    if (!buf) {
        if (oom) return fail(err, errlen, code, "INTERNAL", "jwt: out of memory");
        return fail(err, errlen, code, "MALFORMED", "jwt: %s is not valid base64url", what);
    }
    if (memchr(buf, 0, len)) {
        free(buf);
        return fail(err, errlen, code, "MALFORMED", "jwt: %s contains a NUL byte", what);
    }
    *out = (char *)buf;
    return 0;
}

/* Reads an integer claim. 1 = present and integral, 0 = absent, -1 = present but not a
 * JSON integer (or out of range, or out of memory: never read a failure as "absent", or an
 * allocation failure would skip the nbf check). jansson prints reals with a '.' or an
 * exponent, so "whole string parsed by strtoll" means the JSON value was an integer. */
static int claim_int(jwt_t *claims, const char *name, long long *out) {
    errno = 0;
    char *s = jwt_get_grants_json(claims, name);
    if (!s) return errno == EINVAL ? 0 : -1; /* libjwt 1.10: EINVAL = no such claim */
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    int ok = end != s && *end == 0 && errno == 0;
    free(s);
    if (!ok) return -1;
    *out = v;
    return 1;
}

/* |a - b| > limit, for any a and b, without signed overflow: when a > b the true
 * difference fits in unsigned long long. */
static int later_by_more_than(long long a, long long b, long limit) {
    return a > b && (unsigned long long)a - (unsigned long long)b > (unsigned long long)limit;
}

/* The verification proper, on a token that need not be NUL-terminated (the webhook path
 * passes a slice of the header, prefix and blanks cut off). On success *out_claims holds the parsed payload and
 * *out_payload (when asked for) the payload text. */
static int verify_token(const char *tok, size_t toklen, const char *expected_iss,
                        const char *secret, long now, long leeway_s, jwt_t **out_claims,
                        char **out_payload, char *err, size_t errlen, const char **code) {
    char *header = NULL, *payload = NULL;
    jwt_t *hdr = NULL, *claims = NULL;
    int rc = -1;

    if (!secret || !*secret || strlen(secret) > INT_MAX)
        return fail(err, errlen, code, "INVALID_ARGUMENT", "jwt: empty secret");
    if (leeway_s < 0)
        return fail(err, errlen, code, "INVALID_ARGUMENT", "jwt: negative leeway");
    if (toklen == 0) return fail(err, errlen, code, "MALFORMED", "jwt: empty token");
    if (toklen > QC_JWT_MAX_TOKEN)
        return fail(err, errlen, code, "MALFORMED", "jwt: token longer than %d bytes",
                    QC_JWT_MAX_TOKEN);

    /* Exactly header.payload.signature, base64url only (no padding, no spaces). */
    size_t dots[2], ndots = 0;
    for (size_t i = 0; i < toklen; i++) {
        unsigned char c = (unsigned char)tok[i];
        if (c == '.') {
            if (ndots == 2)
                return fail(err, errlen, code, "MALFORMED", "jwt: token has more than 3 parts");
            dots[ndots++] = i;
        } else if (!is_b64url_char(c)) {
            return fail(err, errlen, code, "MALFORMED", "jwt: invalid character in token");
        }
    }
    if (ndots != 2) return fail(err, errlen, code, "MALFORMED", "jwt: token needs 3 parts");
    size_t hlen = dots[0], plen = dots[1] - dots[0] - 1, slen = toklen - dots[1] - 1;
    const char *ppart = tok + dots[0] + 1, *spart = tok + dots[1] + 1;
    if (hlen == 0 || plen == 0)
        return fail(err, errlen, code, "MALFORMED", "jwt: empty header or payload");

    if (decode_json_part(tok, hlen, &header, "header", err, errlen, code) < 0) goto out;
    if (jwt_new(&hdr) != 0) {
        fail(err, errlen, code, "INTERNAL", "jwt: out of memory");
        goto out;
    }
    /* jwt_add_headers_json wants an object and rejects duplicate keys, so a second "alg"
     * cannot hide behind the first. */
    if (jwt_add_headers_json(hdr, header) != 0) {
        fail(err, errlen, code, "MALFORMED", "jwt: header is not a JSON object");
        goto out;
    }
    const char *alg = jwt_get_header(hdr, "alg");
    if (!alg || strcmp(alg, "HS256") != 0) {
        /* Not echoing the header's alg: error text ends up in one-line logs. */
        fail(err, errlen, code, "BAD_ALG", "jwt: alg must be HS256");
        goto out;
    }
    /* RFC 7515 §4.1.11: extensions we do not understand must not be ignored. */
    errno = 0;
    char *crit = jwt_get_headers_json(hdr, "crit");
    if (crit || errno != EINVAL) {
        free(crit);
        fail(err, errlen, code, "MALFORMED", "jwt: unsupported crit header");
        goto out;
    }

    /* Compare base64url text, not decoded bytes: only the one canonical encoding of the
     * right MAC passes. The length is public (always 43), so checking it first leaks
     * nothing. */
    unsigned char mac[EVP_MAX_MD_SIZE];
    if (hmac_sha256(secret, (const unsigned char *)tok, hlen + 1 + plen, mac) < 0) {
        fail(err, errlen, code, "INTERNAL", "jwt: HMAC failed");
        goto out;
    }
    char want[4 * ((SHA256_LEN + 2) / 3) + 1];
    b64url_encode(mac, SHA256_LEN, want);
    OPENSSL_cleanse(mac, sizeof mac);
    if (slen != MAC_B64URL_LEN || CRYPTO_memcmp(want, spart, MAC_B64URL_LEN) != 0) {
        fail(err, errlen, code, "BAD_SIGNATURE", "jwt: signature does not match");
        goto out;
    }

    if (decode_json_part(ppart, plen, &payload, "payload", err, errlen, code) < 0) goto out;
    if (jwt_new(&claims) != 0) {
        fail(err, errlen, code, "INTERNAL", "jwt: out of memory");
        goto out;
    }
    if (jwt_add_grants_json(claims, payload) != 0) {
        fail(err, errlen, code, "MALFORMED",
             "jwt: payload is not a JSON object (or repeats a key)");
        goto out;
    }

    long long exp = 0, nbf = 0;
    int r = claim_int(claims, "exp", &exp);
    if (r == 0) {
        fail(err, errlen, code, "NO_EXP", "jwt: token has no exp");
        goto out;
    }
    if (r < 0) {
        fail(err, errlen, code, "MALFORMED", "jwt: exp is not an integer");
        goto out;
    }
    if (later_by_more_than(now, exp, leeway_s)) {
        fail(err, errlen, code, "EXPIRED", "jwt: token expired at %lld (now %ld, leeway %lds)",
             exp, now, leeway_s);
        goto out;
    }
    r = claim_int(claims, "nbf", &nbf);
    if (r < 0) {
        fail(err, errlen, code, "MALFORMED", "jwt: nbf is not an integer");
        goto out;
    }
    if (r > 0 && later_by_more_than(nbf, now, leeway_s)) {
        fail(err, errlen, code, "NOT_YET_VALID",
             "jwt: token not valid before %lld (now %ld, leeway %lds)", nbf, now, leeway_s);
        goto out;
    }
    if (expected_iss) {
        const char *iss = jwt_get_grant(claims, "iss");
        if (!iss || strcmp(iss, expected_iss) != 0) {
            fail(err, errlen, code, "BAD_ISSUER", "jwt: issuer is not %s", expected_iss);
            goto out;
        }
    }

    if (code) *code = NULL;
    if (out_claims) {
        *out_claims = claims;
        claims = NULL;
    }
    if (out_payload) {
        *out_payload = payload;
        payload = NULL;
    }
    rc = 0;
out:
    jwt_free(hdr);
    jwt_free(claims);
    free(header);
    free(payload);
    return rc;
}

int qc_jwt_verify(const char *token, const char *expected_iss, const char *secret, long now,
                  long leeway_s, char **out_payload_json, char *err, size_t errlen,
                  const char **code) {
    if (out_payload_json) *out_payload_json = NULL;
    if (!token) return fail(err, errlen, code, "MALFORMED", "jwt: no token");
    /* strnlen: a huge string is MALFORMED without being walked to its end. */
    size_t n = strnlen(token, QC_JWT_MAX_TOKEN + 1);
    return verify_token(token, n, expected_iss, secret, now, leeway_s, NULL, out_payload_json,
                        err, errlen, code);
}

int qc_jwt_verify_webhook(const char *authorization, const unsigned char *body, size_t body_len,
                          const char *api_key, const char *secret, long now, long leeway_s,
                          char *err, size_t errlen, const char **code) {
    if (!api_key || !*api_key)
        return fail(err, errlen, code, "INVALID_ARGUMENT", "jwt: empty api key");
    if (!body && body_len)
        return fail(err, errlen, code, "INVALID_ARGUMENT", "jwt: NULL body with a length");

    /* LiveKit sends the bare token; "Bearer " (any case, RFC 7235) costs nothing to allow.
     * Surrounding blanks are trimmed in case the HTTP layer left them. */
    const char *s = authorization ? authorization : "";
    size_t n = strnlen(s, QC_JWT_MAX_TOKEN + 65);
    if (n > QC_JWT_MAX_TOKEN + 64)
        return fail(err, errlen, code, "MALFORMED", "jwt: Authorization header too long");
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (n == 0) return fail(err, errlen, code, "MISSING", "jwt: no Authorization header");
    if (n > 7 && strncasecmp(s, "Bearer", 6) == 0 && (s[6] == ' ' || s[6] == '\t')) {
        s += 7, n -= 7;
        while (n && (*s == ' ' || *s == '\t')) s++, n--;
    }

    jwt_t *claims = NULL;
    if (verify_token(s, n, api_key, secret, now, leeway_s, &claims, NULL, err, errlen, code) < 0)
        return -1;

    int rc = -1;
    const char *claimed = jwt_get_grant(claims, "sha256");
    char actual[45];
    if (!claimed) {
        fail(err, errlen, code, "NO_SHA256", "jwt: webhook token has no sha256 claim");
    } else if (qc_jwt_sha256_base64(body, body_len, actual) < 0) {
        fail(err, errlen, code, "INTERNAL", "jwt: SHA-256 failed");
    } else if (strlen(claimed) != 44 || CRYPTO_memcmp(claimed, actual, 44) != 0) {
        /* The claim is no secret (anyone can hash the body); constant time anyway, as
         * LiveKit's Go receiver does, so nobody has to think about it. */
        fail(err, errlen, code, "BODY_MISMATCH", "jwt: sha256 of the body does not match");
    } else {
        if (code) *code = NULL;
        rc = 0;
    }
    jwt_free(claims);
    return rc;
}

int qc_jwt_sha256_base64(const unsigned char *data, size_t len, char out[45]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    out[0] = 0;
    if (!data) {
        if (len) return -1;
        data = (const unsigned char *)"";
    }
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != SHA256_LEN)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, md, SHA256_LEN);
    return 0;
}

int qc_const_time_equal(const char *a, size_t alen, const char *b, size_t blen) {
    unsigned char da[EVP_MAX_MD_SIZE], db[EVP_MAX_MD_SIZE];
    unsigned int la = 0, lb = 0;
    if (!a) a = "", alen = 0;
    if (!b) b = "", blen = 0;
    /* Equal digests of different lengths would need a SHA-256 collision, but fold the
     * length in anyway; it costs nothing and keeps the statement exact. If hashing fails
     * we say "different": failing closed is the only safe answer for a key check. */
    if (!EVP_Digest(a, alen, da, &la, EVP_sha256(), NULL) ||
        !EVP_Digest(b, blen, db, &lb, EVP_sha256(), NULL) || la != SHA256_LEN ||
        lb != SHA256_LEN)
        return 0;
    int diff = CRYPTO_memcmp(da, db, SHA256_LEN);
    return (diff == 0) & (alen == blen);
}

/* base64url of {"alg":"HS256","typ":"JWT"}, the header libjwt and the Go SDK write. */
static const char HS256_HEADER_B64[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/* header.payload.signature over the payload bytes as given. One HMAC and two base64
 * encodings: no JSON parsing, which cost more than the signature under libjwt. */
static int sign_raw(const char *payload, size_t plen, const char *secret, char **out_token, char *err,
                    size_t errlen) {
    size_t hlen = sizeof HS256_HEADER_B64 - 1;
    size_t b64len = 4 * ((plen + 2) / 3);
    char *tok = malloc(hlen + 1 + b64len + 1 + 4 * ((SHA256_LEN + 2) / 3) + 1);
    if (!tok) return fail(err, errlen, NULL, NULL, "jwt: out of memory");
    memcpy(tok, HS256_HEADER_B64, hlen);
    tok[hlen] = '.';
    size_t n = hlen + 1 + b64url_encode((const unsigned char *)payload, plen, tok + hlen + 1);
    unsigned char mac[EVP_MAX_MD_SIZE];
    if (hmac_sha256(secret, (const unsigned char *)tok, n, mac) < 0) {
        free(tok);
        return fail(err, errlen, NULL, NULL, "jwt: HMAC failed");
    }
    tok[n++] = '.';
    b64url_encode(mac, SHA256_LEN, tok + n);
    OPENSSL_cleanse(mac, sizeof mac);
    *out_token = tok;
    return 0;
}

int qc_jwt_sign_object(const char *payload_json, size_t len, const char *secret, char **out_token,
                       char *err, size_t errlen) {
    if (!out_token) return fail(err, errlen, NULL, NULL, "jwt: no place for the token");
    *out_token = NULL;
    if (!payload_json || len < 2 || payload_json[0] != '{' || payload_json[len - 1] != '}')
        return fail(err, errlen, NULL, NULL, "jwt: payload is not a JSON object");
    if (len == 2) return fail(err, errlen, NULL, NULL, "jwt: payload has no claims");
    if (len > QC_JWT_MAX_PAYLOAD)
        return fail(err, errlen, NULL, NULL, "jwt: payload longer than %d bytes", QC_JWT_MAX_PAYLOAD);
    if (!secret || !*secret || strlen(secret) > INT_MAX) return fail(err, errlen, NULL, NULL, "jwt: empty secret");
    return sign_raw(payload_json, len, secret, out_token, err, errlen);
}

int qc_jwt_sign(const char *payload_json, const char *secret, char **out_token, char *err,
                size_t errlen) {
    if (!out_token) return fail(err, errlen, NULL, NULL, "jwt: no place for the token");
    *out_token = NULL;
    if (!payload_json) return fail(err, errlen, NULL, NULL, "jwt: no payload");
    if (!secret || !*secret || strlen(secret) > INT_MAX)
        return fail(err, errlen, NULL, NULL, "jwt: empty secret");
    if (strnlen(payload_json, QC_JWT_MAX_PAYLOAD + 1) > QC_JWT_MAX_PAYLOAD)
        return fail(err, errlen, NULL, NULL, "jwt: payload longer than %d bytes",
                    QC_JWT_MAX_PAYLOAD);

    jwt_t *j = NULL;
    char *dump = NULL;
    int rc = -1;
    if (jwt_new(&j) != 0) {
        fail(err, errlen, NULL, NULL, "jwt: out of memory");
        goto out;
    }
    if (jwt_add_grants_json(j, payload_json) != 0) {
        fail(err, errlen, NULL, NULL, "jwt: payload is not a JSON object (or repeats a key)");
        goto out;
    }
    /* libjwt 1.10 encodes "{}" into a 4-byte alloca and writes 5 bytes (a stack overflow),
     * and a token without claims is no use to LiveKit anyway. */
    errno = 0;
    dump = jwt_get_grants_json(j, NULL);
    if (!dump) {
        fail(err, errlen, NULL, NULL, "jwt: out of memory");
        goto out;
    }
    if (strcmp(dump, "{}") == 0) {
        fail(err, errlen, NULL, NULL, "jwt: payload has no claims");
        goto out;
    }
    /* What libjwt encodes is this re-serialization, which can be longer than the input
     * (1e9 prints as 1000000000.0), so the alloca bound is checked on it too. */
    if (strlen(dump) > QC_JWT_MAX_PAYLOAD) {
        fail(err, errlen, NULL, NULL, "jwt: payload longer than %d bytes", QC_JWT_MAX_PAYLOAD);
        goto out;
    }
    /* Validated by jansson above; what is signed is its canonical re-serialization, as
     * libjwt would have done. */
    rc = sign_raw(dump, strlen(dump), secret, out_token, err, errlen);
out:
    free(dump);
    jwt_free(j); /* also scrubs its copy of the secret */
    return rc;
}
