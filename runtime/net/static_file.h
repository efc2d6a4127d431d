/* Files of the web directory (GET /docs, /openapi.json, the console), read for the static
 * handler (scripts/lib/qc/handlers/static.lua). A request path never leaves the directory:
 * no "." or ".." segment, no hidden name, no backslash or control byte, and a symlink is
 * followed only when where it leads is still inside the directory. */
#ifndef QC_NET_STATIC_FILE_H
#define QC_NET_STATIC_FILE_H

#include <stddef.h>
#include <stdint.h>

/* Largest file served (the biggest asset we ship is well under it). */
#define QC_STATIC_MAX (16u << 20)

typedef struct {
    char *data;         /* malloc'd contents (NULL when not asked for); the caller frees */
    size_t size;
    int64_t mtime_ns;   /* last modification, ns since the epoch */
} qc_static_file;

/* 0 when the relative path is one we would look up (segments of [A-Za-z0-9._~+@-], none
 * empty, "." or "..", none starting with "."); -1 otherwise. `len` counts every byte, so an
 * embedded NUL is refused too. */
int qc_static_path_ok(const char *rel, size_t len);

/* Finds rel below root and reads it (its data only when want_data). Returns 0, or the HTTP
 * status to answer: 404 for a path refused, missing or not a regular file (a directory, a
 * symlink out of root), 500 for a read error or a file over QC_STATIC_MAX; err says why. */
int qc_static_read(const char *root, const char *rel, size_t rel_len, int want_data, qc_static_file *out,
                   char *err, size_t errlen);

#endif
