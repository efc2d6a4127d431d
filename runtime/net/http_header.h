/* A header name/value pair, shared by the HTTP server and client. */
#ifndef QC_HTTP_HEADER_H
#define QC_HTTP_HEADER_H

typedef struct {
    const char *name;
    const char *value;
} qc_http_header;

#endif
