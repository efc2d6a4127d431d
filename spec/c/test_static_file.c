/* The web directory's file reader: paths refused by their spelling, symlinks in and out of
 * the directory, directories, and files read whole. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/static_file.h"

#include "tap.h"

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static int status_of(const char *root, const char *rel, size_t len, qc_static_file *f) {
    char err[256];
    int st = qc_static_read(root, rel, len, 1, f, err, sizeof err);
    return st;
}

int main(void) {
    char base[] = "/tmp/qc_static_XXXXXX";
    if (!mkdtemp(base)) return 1;
    char root[256], path[512], outside[512];
    snprintf(root, sizeof root, "%s/web", base);
    mkdir(root, 0755);
    snprintf(path, sizeof path, "%s/docs", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/docs/index.html", root);
    put(path, "<!doctype html>");
    snprintf(path, sizeof path, "%s/.env", root);
    put(path, "SECRET=1");
    snprintf(outside, sizeof outside, "%s/secret.txt", base);
    put(outside, "outside");
    snprintf(path, sizeof path, "%s/out.txt", root);
    if (symlink(outside, path) != 0) return 1;
    snprintf(path, sizeof path, "%s/in.html", root);
    if (symlink("docs/index.html", path) != 0) return 1;
    snprintf(path, sizeof path, "%s/up", root);
    if (symlink("..", path) != 0) return 1;

    qc_static_file f;
    ok(status_of(root, "docs/index.html", 15, &f) == 0 && f.size == 15 && memcmp(f.data, "<!doctype html>", 15) == 0,
       "a file is read whole");
    ok(f.mtime_ns > 0, "with its modification time");
    free(f.data);
    ok(status_of(root, "in.html", 7, &f) == 0 && f.size == 15, "a symlink that stays inside is followed");
    free(f.data);
    ok(status_of(root, "out.txt", 7, &f) == 404 && !f.data, "a symlink out of the directory is 404");
    ok(status_of(root, "up/secret.txt", 13, &f) == 404, "a symlinked directory out of it is 404");
    ok(status_of(root, "docs", 4, &f) == 404, "a directory is 404");
    ok(status_of(root, "missing.js", 10, &f) == 404, "a missing file is 404");

    static const char *bad[] = {"../secret.txt", "docs/../../secret.txt", "..", ".", "./docs/index.html",
                                ".env", "docs//index.html", "/docs/index.html", "docs/index.html/",
                                "docs\\..\\..\\secret.txt", "%2e%2e/secret.txt", "docs/index.html?x",
                                "docs/ index.html", "", "docs/.", "docs/.."};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char what[128];
        snprintf(what, sizeof what, "refused: \"%s\"", bad[i]);
        ok(status_of(root, bad[i], strlen(bad[i]), &f) == 404 && qc_static_path_ok(bad[i], strlen(bad[i])) < 0, what);
    }
    ok(status_of(root, "docs/index.html\0.png", 20, &f) == 404, "refused: an embedded NUL");
    ok(qc_static_path_ok("vendor/swagger-ui@5/x.min.js", 28) == 0, "a plain nested path is fine");

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) return 1;
    return failures ? 1 : 0;
}
