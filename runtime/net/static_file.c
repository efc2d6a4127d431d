/* Static files below one directory (static_file.h). The path is checked by its spelling
 * first, then resolved with realpath and compared with the resolved root, so that neither
 * "..", an encoded one decoded upstream, nor a symlink can reach a file outside. */
#define _DEFAULT_SOURCE /* realpath */
#include "static_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int name_byte(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-' || c == '~' || c == '+' || c == '@';
}

int qc_static_path_ok(const char *rel, size_t len) {
    if (!rel || len == 0 || len > 1024) return -1;
    size_t seg_start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || rel[i] == '/') {
            size_t n = i - seg_start;
            if (n == 0) return -1;             /* empty segment: leading, trailing or doubled slash */
            if (rel[seg_start] == '.') return -1; /* ".", "..", and hidden names (.env, .git) */
            seg_start = i + 1;
            continue;
        }
        if (!name_byte((unsigned char)rel[i])) return -1;
    }
    return 0;
}

int qc_static_read(const char *root, const char *rel, size_t rel_len, int want_data, qc_static_file *out,
                   char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (qc_static_path_ok(rel, rel_len) < 0) {
        snprintf(err, errlen, "not a file path this server serves");
        return 404;
    }
    char rroot[PATH_MAX], joined[PATH_MAX * 2], real[PATH_MAX];
    if (!realpath(root, rroot)) {
        snprintf(err, errlen, "web directory %s: %s", root, strerror(errno));
        return 404;
    }
    if ((size_t)snprintf(joined, sizeof joined, "%s/%.*s", rroot, (int)rel_len, rel) >= sizeof joined ||
        !realpath(joined, real)) {
        snprintf(err, errlen, "no such file");
        return 404;
    }
    size_t rl = strlen(rroot);
    if (strncmp(real, rroot, rl) != 0 || real[rl] != '/') {
        snprintf(err, errlen, "no such file"); /* a symlink out of the directory: not ours to show */
        return 404;
    }
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "no such file");
        return 404;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "no such file");
        return 404;
    }
    if ((uint64_t)st.st_size > QC_STATIC_MAX) {
        close(fd);
        snprintf(err, errlen, "file too large to serve");
        return 500;
    }
    out->size = (size_t)st.st_size;
    out->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if (want_data) {
        out->data = malloc(out->size ? out->size : 1);
        if (!out->data) {
            close(fd);
            snprintf(err, errlen, "out of memory");
            return 500;
        }
        size_t got = 0;
        while (got < out->size) {
            ssize_t n = read(fd, out->data + got, out->size - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (size_t)n;
        }
        if (got != out->size) { /* truncated while we read: answer what is coherent, nothing */
            free(out->data);
            out->data = NULL;
            close(fd);
            snprintf(err, errlen, "file changed while read");
            return 500;
        }
    }
    close(fd);
    return 0;
}
