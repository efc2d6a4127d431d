/* Set-up shared by the harnesses that run the real Lua host (fuzz_dispatch, fuzz_http): a
 * libuv loop, a host in serve mode on the repo's policies and scripts, SQLite in a fresh
 * temp dir, and LiveKit pointed at a 127.0.0.1 port nothing listens on, so a LiveKit call
 * fails at once (503) and nothing leaves the machine. */
#ifndef QC_FUZZ_HOST_H
#define QC_FUZZ_HOST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <dlfcn.h>

#include "config.h"
#define QC_FUZZ_LUA
#include "fuzz_common.h"
#include "log.h"
#include "host/host.h"
#include "jwt_hs256.h"

#define FUZZ_LK_KEY "fuzz-key"
#define FUZZ_LK_SECRET "fuzz-secret"

/* The host makes its Lua state with lua_newstate; this definition, in the executable, comes
 * before liblua's, so the state (and each task's coroutine, which inherits the hook) gets
 * the line coverage of fuzz_common.h. */
lua_State *lua_newstate(lua_Alloc f, void *ud) {
    static lua_State *(*real)(lua_Alloc, void *);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "lua_newstate");
    if (!real) fuzz_fail("dlsym(lua_newstate): %s", dlerror());
    lua_State *L = real(f, ud);
    if (L) fuzz_lua_cover(L);
    return L;
}

/* A loopback port that was free a moment ago: bound, read, closed. */
static inline int fuzz_closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &al) < 0)
        fuzz_fail("cannot find a free port");
    close(fd);
    return ntohs(a.sin_port);
}

static char fuzz_data_dir[] = "/tmp/qc-fuzz-XXXXXX";

/* The SQLite files of the run, at exit (a crash leaves them, with the input that caused it). */
static void fuzz_data_dir_remove(void) {
    static const char *files[] = {"quantcoach.db", "quantcoach.db-wal", "quantcoach.db-shm"};
    char path[sizeof fuzz_data_dir + 32];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", fuzz_data_dir, files[i]);
        unlink(path);
    }
    rmdir(fuzz_data_dir);
}

static inline qc_host *fuzz_host_start(uv_loop_t *loop, qc_config *cfg) {
    const char *data_dir = fuzz_data_dir;
    if (!mkdtemp(fuzz_data_dir)) fuzz_fail("mkdtemp failed");
    atexit(fuzz_data_dir_remove);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", fuzz_closed_port());
    setenv("QC_DATA", data_dir, 1);
    setenv("LIVEKIT_URL", url, 1);
    setenv("LIVEKIT_API_KEY", FUZZ_LK_KEY, 1);
    setenv("LIVEKIT_API_SECRET", FUZZ_LK_SECRET, 1);
    setenv("QC_LIVEKIT_TIMEOUT_MS", "2000", 1);
    /* Errors only: an access line per input would be most of the run's output. Handler
     * failures are logged at error level, with their traceback. */
    if (!getenv("QC_LOG_LEVEL")) setenv("QC_LOG_LEVEL", "error", 1);
    unsetenv("QC_API_KEYS");
    char err[2048];
    if (qc_log_init(err, sizeof err) < 0) fuzz_fail("log: %s", err);
    if (qc_config_from_env(cfg, err, sizeof err) < 0) fuzz_fail("config: %s", err);
    if (uv_loop_init(loop) != 0) fuzz_fail("uv_loop_init failed");
    qc_host *h = qc_host_new(loop, cfg, QC_HOST_SERVE, err, sizeof err);
    if (!h) fuzz_fail("host: %s", err);
    if (qc_host_reload(h, err, sizeof err) < 0) fuzz_fail("policies: %s", err);
    return h;
}

#endif
