/* CORS headers: the origin check against QC_CORS_ORIGINS and the preflight answer. The
 * methods a preflight may use come from the route's Allow header, which the router (in
 * Lua) knows; everything else is decided here, for handler answers and errors alike. */
#include "cors.h"

#include <string.h>

#include "../config.h"

size_t qc_cors_headers(const char *allowed, const char *origin, const char *preflight_allow,
                       const char *request_headers, qc_http_header *out) {
    size_t n = 0;
    if (!origin || !allowed) return 0;
    if (strcmp(allowed, "*") == 0) {
        out[n++] = (qc_http_header){"access-control-allow-origin", "*"};
    } else {
        /* A listed origin is echoed back, and caches must keep answers apart by Origin. */
        size_t ol = strlen(origin), l;
        const char *cursor = allowed, *item;
        while (qc_config_list_next(&cursor, &item, &l)) {
            if (l == ol && strncmp(item, origin, l) == 0) {
                out[n++] = (qc_http_header){"access-control-allow-origin", origin};
                out[n++] = (qc_http_header){"vary", "Origin"};
                break;
            }
        }
        if (n == 0) return 0;
    }
    if (preflight_allow) {
        out[n++] = (qc_http_header){"access-control-allow-methods", preflight_allow};
        out[n++] = (qc_http_header){"access-control-allow-headers",
                                    request_headers ? request_headers : "authorization, content-type"};
        out[n++] = (qc_http_header){"access-control-max-age", "600"};
    }
    return n;
}
