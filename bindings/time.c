/* qc.time: wall clock, a monotonic clock, and sleep that yields to the loop. */
#define _POSIX_C_SOURCE 200809L
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <time.h>
#include <uv.h>

#include "host/task.h"

static int l_now(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    return 1;
}

static int l_monotonic(lua_State *L) {
    lua_pushnumber(L, (double)uv_hrtime() / 1e9);
    return 1;
}

typedef struct {
    uv_timer_t timer;
    qc_task *task;
} sleeper;

static void sleeper_closed(uv_handle_t *h) { free(h->data); }

static void sleeper_fired(uv_timer_t *timer) {
    sleeper *s = timer->data;
    qc_task *t = s->task;
    uv_close((uv_handle_t *)timer, sleeper_closed);
    qc_task_resume(t, 0);
}

static int l_sleep(lua_State *L) {
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_argcheck(L, secs >= 0, 1, "must not be negative");
    qc_task *t = qc_task_current(L);
    if (!t) return luaL_error(L, "qc.time.sleep: must be called from a task (a request handler or a script)");
    sleeper *s = malloc(sizeof *s);
    if (!s) return luaL_error(L, "qc.time.sleep: out of memory");
    s->task = t;
    uv_timer_init(qc_task_loop(t), &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, sleeper_fired, (uint64_t)(secs * 1000.0 + 0.5), 0);
    return qc_task_yield(L);
}

int luaopen_qc_time(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"now", l_now}, {"monotonic", l_monotonic}, {"sleep", l_sleep}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
