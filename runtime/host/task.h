/* Tasks: one Lua coroutine per request, script or event, driven by the C scheduler.
 * Bindings that wait for I/O call qc_task_current() to find their task, start the I/O,
 * and return qc_task_yield(L). When the I/O completes (a libuv callback), they push the
 * results onto qc_task_thread(t) and call qc_task_resume(t, nresults). */
#ifndef QC_HOST_TASK_H
#define QC_HOST_TASK_H

#include <lua.h>
#include <uv.h>

typedef struct qc_task qc_task;
typedef struct qc_host qc_host;

/* The task running on coroutine L, or NULL when L is not a task (for example the main
 * thread while policies load). Bindings that must yield raise when it is NULL. */
qc_task *qc_task_current(lua_State *L);

/* The coroutine of a task: push resume values here before qc_task_resume. */
lua_State *qc_task_thread(qc_task *t);

/* The loop the task's host runs on. */
uv_loop_t *qc_task_loop(qc_task *t);

/* Marks the task as waiting and yields the coroutine. Use as `return qc_task_yield(L);`. */
int qc_task_yield(lua_State *L);

/* Resumes a waiting task with nresults values already pushed on its thread. Safe to call
 * from any libuv callback; never call it while the task itself is running. */
void qc_task_resume(qc_task *t, int nresults);

/* The host a task belongs to (for bindings that need shared services). */
qc_host *qc_task_host(qc_task *t);

/* Answers after records. A binding whose work finishes on a later loop turn than the
 * task (the group commit of deferred writes) joins the task to a barrier: a request task's
 * answer is then held until every barrier it joined has passed, and a barrier that failed
 * turns a successful answer into a 503 with its code. Tasks that answer nobody (scripts,
 * spawned tasks) are not held. The barrier's owner passes it once its work is done.
 * flush(ud) is called when the host stops, so the owner can do its work and pass first. */
typedef struct qc_barrier qc_barrier;
qc_barrier *qc_barrier_new(qc_host *h, void (*flush)(void *ud), void *ud);
/* Holds t's answer until b's next pass; joining twice before a pass is one join. 0 or -1. */
int qc_barrier_join(qc_barrier *b, qc_task *t);
/* Releases every task joined since the last pass. code NULL: the work succeeded. Otherwise
 * a held successful answer becomes 503 {code, message}; both must be string literals (the
 * answer may go later). */
void qc_barrier_pass(qc_barrier *b, const char *code, const char *message);
/* Tasks joined and not yet released. */
size_t qc_barrier_waiting(const qc_barrier *b);
/* Passes what is still joined as failed, then frees. NULL is a no-op. */
void qc_barrier_free(qc_barrier *b);

/* Handles that bindings allocate: make the uv handle the first member of the block and
 * point handle->data at the block, so a shutdown drain can close and free it. */

#endif
