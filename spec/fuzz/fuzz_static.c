/* libFuzzer harness for the web directory's file reader (runtime/net/static_file.c). The
 * input is the path below the directory, as a request would give it after decoding. A
 * directory made once holds two files, a symlink within, a symlink out, a symlinked parent
 * and a hidden file; the outside file holds a marker. Properties, besides the sanitizers: a
 * path found is one the spelling check accepts, its contents are never the outside file's,
 * and a read is the same whether its data is asked for or not. */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/static_file.h"
#include "fuzz_common.h"

static const char OUTSIDE[] = "fuzz-static-outside-marker";
static char root[256], base_dir[64];

static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base_dir);
    if (system(cmd) != 0) fputs("fuzz_static: could not remove the scratch directory\n", stderr);
}

static void put(const char *dir, const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) fuzz_fail("cannot write %s", p);
    fputs(text, f);
    fclose(f);
}

static void setup(void) {
    char base[] = "/tmp/qc_fuzz_static_XXXXXX";
    if (!mkdtemp(base)) fuzz_fail("mkdtemp");
    memcpy(base_dir, base, sizeof base);
    atexit(cleanup);
    snprintf(root, sizeof root, "%s/web", base);
    char p[512], q[512];
    mkdir(root, 0755);
    snprintf(p, sizeof p, "%s/docs", root);
    mkdir(p, 0755);
    put(root, "openapi.json", "{}");
    put(p, "index.html", "<!doctype html>");
    put(root, ".env", "hidden");
    put(base, "secret.txt", OUTSIDE);
    snprintf(p, sizeof p, "%s/secret.txt", base);
    snprintf(q, sizeof q, "%s/docs/out", root);
    if (symlink(p, q) != 0) fuzz_fail("symlink");
    snprintf(q, sizeof q, "%s/docs/in", root);
    if (symlink("index.html", q) != 0) fuzz_fail("symlink");
    snprintf(q, sizeof q, "%s/up", root);
    if (symlink("..", q) != 0) fuzz_fail("symlink");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!root[0]) setup();
    const char *rel = (const char *)data;
    char err[256];
    qc_static_file with, without;
    int a = qc_static_read(root, rel, size, 1, &with, err, sizeof err);
    int b = qc_static_read(root, rel, size, 0, &without, err, sizeof err);
    if (a != b) fuzz_fail("read with data %d, without %d", a, b);
    if (a == 0) {
        if (qc_static_path_ok(rel, size) != 0) fuzz_fail("a path the spelling check refuses was read");
        if (with.size != without.size) fuzz_fail("sizes differ");
        if (with.size == sizeof OUTSIDE - 1 && memcmp(with.data, OUTSIDE, with.size) == 0)
            fuzz_fail("read the file outside the directory");
        if (with.size == 6 && memcmp(with.data, "hidden", 6) == 0) fuzz_fail("read a hidden file");
        free(with.data);
    } else if (a != 404 && a != 500) {
        fuzz_fail("status %d", a);
    }
    return 0;
}
