/* HS256 JSON Web Tokens as LiveKit uses them: access tokens we mint for rooms and the
 * Authorization header LiveKit puts on webhooks (shared/protocols/livekit.md §1, §4).
 * Only HS256 is accepted; the secret is the API secret's raw bytes. Knows nothing of Lua. */
#ifndef QC_JWT_H
#define QC_JWT_H

#include <stddef.h>

/* Longest token qc_jwt_verify looks at; longer is MALFORMED. */
#define QC_JWT_MAX_TOKEN 65536
/* Longest payload qc_jwt_sign takes: libjwt 1.10 base64-encodes it in an alloca'd buffer
 * twice its size, so an unbounded payload would be an unbounded stack allocation. */
#define QC_JWT_MAX_PAYLOAD 32768

/* Signs a JSON object (any claims, nested objects included; at least one member, no
 * duplicate keys) as HS256 with header {"alg":"HS256","typ":"JWT"}. Keys come out sorted.
 * The caller frees *out_token with free(). Fails only on bad arguments or out of memory. */
/* Signs payload bytes that the caller vouches are one JSON object (lua-cjson's encoding of a
 * table): only the outer braces are checked. The fast path for tokens we mint. */
int qc_jwt_sign_object(const char *payload_json, size_t len, const char *secret, char **out_token,
                       char *err, size_t errlen);

int qc_jwt_sign(const char *payload_json, const char *secret, char **out_token, char *err,
                size_t errlen);

/* Verifies a compact HS256 token at time `now` (unix seconds) and, on success, gives back
 * the payload JSON exactly as signed (caller frees; out_payload_json may be NULL).
 * Checks, in order: shape, header alg == "HS256", signature, exp present and
 * now <= exp + leeway_s, nbf (when present) now >= nbf - leeway_s, iss == expected_iss
 * (NULL skips it). exp and nbf must be JSON integers. On failure *code (when code is not
 * NULL) is one of "MALFORMED", "BAD_ALG", "BAD_SIGNATURE", "NO_EXP", "EXPIRED",
 * "NOT_YET_VALID", "BAD_ISSUER", "INVALID_ARGUMENT" (NULL/empty secret, leeway_s < 0),
 * "INTERNAL" (out of memory); on success it is NULL. */
int qc_jwt_verify(const char *token, const char *expected_iss, const char *secret, long now,
                  long leeway_s, char **out_payload_json, char *err, size_t errlen,
                  const char **code);

/* Verifies a LiveKit webhook: `authorization` is the header value (the raw token as
 * LiveKit sends it, or "Bearer <token>"), verified as qc_jwt_verify with iss == api_key,
 * then its `sha256` claim must equal qc_jwt_sha256_base64(body). Codes are those of
 * qc_jwt_verify plus "MISSING" (NULL or empty header), "NO_SHA256" (claim absent or not a
 * string) and "BODY_MISMATCH". body may be NULL when body_len is 0. */
int qc_jwt_verify_webhook(const char *authorization, const unsigned char *body, size_t body_len,
                          const char *api_key, const char *secret, long now, long leeway_s,
                          char *err, size_t errlen, const char **code);

/* Standard padded base64 of SHA-256(data): 44 characters and a NUL. */
int qc_jwt_sha256_base64(const unsigned char *data, size_t len, char out[45]);

/* 1 when the two byte strings are equal, else 0. Both are hashed and the digests compared
 * in constant time, so the timing shows neither where they differ nor whether the lengths
 * matched. For secrets such as API keys. A NULL pointer counts as an empty string. */
int qc_const_time_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
