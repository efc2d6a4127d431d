/* CORS headers (the Fetch standard's protocol): which browser origins may read an answer,
 * and what a preflight allows. Every CORS header the server sends is decided here. */
#ifndef QC_CORS_H
#define QC_CORS_H

#include <stddef.h>

#include "http_header.h"

/* The most headers qc_cors_headers adds to one answer. */
#define QC_CORS_MAX_HEADERS 5

/* Writes the CORS headers of one answer into out (room for QC_CORS_MAX_HEADERS) and
 * returns how many. allowed is the QC_CORS_ORIGINS setting: "*" or a comma-separated list;
 * origin the request's Origin header (NULL: no headers, it is no cross-origin browser
 * request). An origin not allowed gets none at all. For the answer to a preflight,
 * preflight_allow is the methods the resource allows (the answer's Allow header) and
 * request_headers the preflight's Access-Control-Request-Headers (NULL: the usual
 * Authorization and Content-Type); otherwise preflight_allow is NULL. Values point into
 * the arguments or static strings. */
size_t qc_cors_headers(const char *allowed, const char *origin, const char *preflight_allow,
                       const char *request_headers, qc_http_header *out);

#endif
