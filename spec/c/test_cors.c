/* CORS headers: the origin check against "*" and a list, and the preflight headers. */
#include <stdio.h>
#include <string.h>

#include "net/cors.h"

#include "tap.h"

static const char *get(const qc_http_header *h, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(h[i].name, name) == 0) return h[i].value;
    return NULL;
}

int main(void) {
    qc_http_header h[QC_CORS_MAX_HEADERS];
    const char *list = "http://a.example, http://b.example";
    size_t n;

    ok(qc_cors_headers("*", NULL, "GET", NULL, h) == 0, "adds nothing to a request without an Origin");

    n = qc_cors_headers("*", "http://x.example", NULL, NULL, h);
    ok(n == 1 && strcmp(get(h, n, "access-control-allow-origin"), "*") == 0, "allows every origin with *");

    n = qc_cors_headers(list, "http://b.example", NULL, NULL, h);
    ok(n == 2 && strcmp(get(h, n, "access-control-allow-origin"), "http://b.example") == 0 &&
           strcmp(get(h, n, "vary"), "Origin") == 0,
       "echoes a listed origin, with Vary: Origin");

    ok(qc_cors_headers(list, "http://b.example.evil", "GET", NULL, h) == 0 &&
           qc_cors_headers(list, "http://a.exampl", "GET", NULL, h) == 0 &&
           qc_cors_headers(list, "", "GET", NULL, h) == 0,
       "gives an origin not listed (a longer or shorter one too) no headers, preflight or not");

    n = qc_cors_headers(list, "http://a.example", "GET, OPTIONS", "x-trace", h);
    ok(n == QC_CORS_MAX_HEADERS && strcmp(get(h, n, "access-control-allow-methods"), "GET, OPTIONS") == 0 &&
           strcmp(get(h, n, "access-control-allow-headers"), "x-trace") == 0 &&
           strcmp(get(h, n, "access-control-max-age"), "600") == 0,
       "answers a preflight with the resource's methods, the asked headers and a max age");

    n = qc_cors_headers("*", "http://a.example", "POST", NULL, h);
    ok(n == 4 && strcmp(get(h, n, "access-control-allow-headers"), "authorization, content-type") == 0,
       "names Authorization and Content-Type when a preflight asks for no headers");

    printf("1..%d\n", count);
    return failures ? 1 : 0;
}
