/* libFuzzer harness for qc_config_mask_url (runtime/config.c): QC_STORE_URL as the start-up
 * line and /health show it. Besides the sanitizers: the output fits its buffer, and wherever
 * libpq would read a password in the userinfo (from the first ':' after "://" to the first
 * '@' before any '/') the output shows "***" there instead. */
#include <string.h>

#include "config.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096 || memchr(data, 0, size)) return 0; /* an environment value holds no NUL */
    char url[4097], out[1200];
    memcpy(url, data, size);
    url[size] = 0;
    if (qc_config_mask_url(url, out, sizeof out) != 0) return 0;
    if (strlen(out) >= sizeof out) fuzz_fail("output of %zu bytes in a buffer of %zu", strlen(out), sizeof out);
    const char *sep = strstr(url, "://");
    if (!sep) return 0;
    const char *auth = sep + 3, *p = auth;
    while (*p && *p != '@' && *p != '/') p++;
    if (*p != '@') return 0;
    const char *colon = memchr(auth, ':', (size_t)(p - auth));
    if (!colon) return 0;
    size_t head = (size_t)(colon + 1 - url);
    if (strncmp(out, url, head) != 0 || strncmp(out + head, "***", 3) != 0)
        fuzz_fail("password of \"%s\" not masked: \"%s\"", url, out);
    return 0;
}
