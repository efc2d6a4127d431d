/* The Lua host: one Lua state on the libuv loop, a coroutine per request or script,
 * policy generations with atomic reload, an instruction budget per call and a memory cap. */
#ifndef QC_HOST_H
#define QC_HOST_H

#include <stddef.h>
#include <uv.h>

#include "../config.h"
#include "../net/http_server.h"

typedef struct qc_host qc_host;

typedef enum {
    QC_HOST_SERVE, /* policies sandboxed, budget and memory cap on */
    QC_HOST_SCRIPT /* `quantcoach run`: a trusted script, no budget */
} qc_host_mode;

qc_host *qc_host_new(uv_loop_t *loop, const qc_config *cfg, qc_host_mode mode, char *err, size_t errlen);
void qc_host_free(qc_host *h);

const qc_config *qc_host_config(qc_host *h);

/* The loop the host runs on (bindings that schedule work of their own). */
uv_loop_t *qc_host_loop(qc_host *h);

/* The port the HTTP server is bound to: serve sets it once it listens (it differs from the
 * configured one when that was 0); until then, and in scripts, the configured port. URLs
 * that name this server (the ingest URL handed to LiveKit's egress) need the bound one. */
void qc_host_set_bound_port(qc_host *h, int port);
int qc_host_bound_port(qc_host *h);

/* Builds a fresh policy generation and, if every check passes, makes it the live one.
 * On failure the old generation stays and err holds "file:line: message". */
int qc_host_reload(qc_host *h, char *err, size_t errlen);

/* Loads and checks every policy without making it live (`quantcoach check`). */
int qc_host_check(qc_host *h, char *err, size_t errlen);

/* Runs require(module).start() as a detached task: a service of the server's own (the
 * retention sweep) that lives as long as the host. Trusted code from scripts/lib, outside
 * any generation. -1 with err when the module does not load or has no start. */
int qc_host_start_service(qc_host *h, const char *module, char *err, size_t errlen);

/* Live generation number, the time of the last reload attempt and its error ("" if none). */
long qc_host_generation(qc_host *h);
double qc_host_reloaded_at(qc_host *h);
const char *qc_host_reload_error(qc_host *h);
double qc_host_started_at(qc_host *h);

/* qc_http_server's request callback (ud = the host). */
void qc_host_handle_http(void *ud, qc_http_exchange *ex, const qc_http_incoming *req);

/* Runs a Lua file as a task with `arg`; returns when the script has finished (runs the loop).
 * *status: the script's exit status (its integer return value, 0, or 1 on error). */
int qc_host_run_script(qc_host *h, const char *path, int argc, char **argv, int *status);

/* Starts the function at `first` on L's stack, with the values above it as arguments,
 * as a detached task (qc.host.spawn). Pops them. */
typedef struct lua_State lua_State;
int qc_host_spawn(qc_host *h, lua_State *L, int first);

/* For C functions that run long without returning to Lua (the pattern matcher): whether
 * the running call has overrun its time budget, a flag the watchdog's signal sets, cheap to
 * poll; and the error the budget's hook raises, raised from C (never returns). */
int qc_host_budget_exceeded(lua_State *L);
int qc_host_budget_error(lua_State *L);

/* For bindings that take a request's connection over entirely (a WebSocket: qc.audio's
 * ingest, req:accept_websocket): detaches the exchange from the running request task, so
 * the task's return answers nothing; the caller must answer or upgrade it. L must be the
 * request's own task and req_index its request table; NULL otherwise, or when the request
 * is already answered or taken. Marks the table `upgraded = true`. */
qc_http_exchange *qc_host_take_exchange(lua_State *L, int req_index);
/* The exchange the running request task answers, without taking it; NULL outside one. */
qc_http_exchange *qc_host_exchange(lua_State *L);

/* Closes the handles bindings own (sleep timers and such) so none can fire into a freed
 * task; call right after qc_host_free when the loop keeps running. */
void qc_host_close_owned_handles(uv_loop_t *loop);

/* Closes every handle left on the loop and runs it until libuv has released them. */
void qc_host_drain_loop(uv_loop_t *loop);

/* qc.stt's transcript event tasks spawned and not yet ended, all hosts (bindings/stt.c): a
 * graceful stop waits for them, as the finals they store are what the stop promises. */
size_t qc_stt_events_running(void);

#endif
