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

/* Handles that bindings allocate: make the uv handle the first member of the block and
 * point handle->data at the block, so a shutdown drain can close and free it. */

#endif
