/* The JSON body of every HTTP error, {"error":{"code":"...","message":"...","field":"..."}}:
 * rendered here and nowhere else, so the HTTP layer, the Lua host and Lua code (through
 * qc.host.error_body) send the same shape with the same escaping. */
#ifndef QC_HTTP_ERROR_H
#define QC_HTTP_ERROR_H

#include <stddef.h>

/* Room for any error body we send. A longer message is cut (ending in "...") to fit. */
#define QC_HTTP_ERROR_MAX 4096

/* The smallest cap that holds a body: the frame with empty strings, field included, and
 * the terminating NUL. */
#define QC_HTTP_ERROR_MIN 46

/* Writes the body into buf (NUL-terminated) and returns its length. field may be NULL
 * (then there is no "field" key); a NULL code or message is written as "". Strings are
 * escaped as JSON wants ('"', '\\', every byte below 0x20), and a byte that is not part
 * of valid UTF-8 becomes U+FFFD, so the body is always valid UTF-8 JSON. When the strings
 * do not fit in cap, each keeps as much as a fair share of the room allows and is cut at
 * a character boundary, never inside an escape or a UTF-8 sequence. Returns 0 (and an
 * empty string when cap > 0) only when cap < QC_HTTP_ERROR_MIN. */
size_t qc_http_error_json(char *buf, size_t cap, const char *code, const char *message, const char *field);

#endif
