/* The Lua host. C owns lua_resume: every request or script is a task (a coroutine); a
 * binding that waits on I/O yields, and its libuv callback resumes the task through
 * qc_task_resume. Policies live in generations built by scripts/lib/qc/generation.lua; the live
 * one is swapped only after a complete, checked build, between events. */
#define _GNU_SOURCE /* dlsym(RTLD_DEFAULT), malloc_trim */
#include "host.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../net/cors.h"
#include "../net/http_client.h"
#include "../net/http_error.h"
#include "../net/ws_client.h"
#include "../log.h"
#include "../metrics.h"
#include "watchdog.h"
#include "bindings.h"
#include "task.h"

#define POOL_MAX 64    /* finished coroutines kept for reuse */
/* A request may hold up to a quarter of the Lua memory cap, so one runaway request cannot
 * starve the others; new requests are refused (503 OVERLOADED) while the state uses more
 * than three quarters of the cap, so requests already running have room to finish. */
#define TASK_SHARE_DIV 4
#define ADMIT_NUM 3
#define ADMIT_DEN 4
/* Near the cap, a full collection runs before a refusal when the state has grown by this
 * fraction of the cap since the last one, or that one is this old (requests that held
 * memory may have finished since, and nothing else would collect their garbage while no
 * request is let in). More often would free nothing and cost a whole heap walk each. */
#define ADMIT_GC_GROWTH_DIV 16
#define ADMIT_GC_AGE_MS 100
/* After a refusal, memory goes back to the OS this long after (a burst is over by then). */
#define RECLAIM_AFTER_REFUSAL_MS 1000
/* A burst of large requests is over when none has come for this long: then the memory it
 * took goes back to the OS (schedule_settle). */
#define SETTLE_MS 1000
#define LARGE_BODY (64 * 1024)
/* How far past its limits Lua may go inside cjson.decode: half the cap (decode_guarded). */
#define DECODE_OVERDRAW_DIV 2

struct qc_task {
    qc_host *host;
    lua_State *co;
    int co_ref;
    int waiting;
    int running;
    qc_http_exchange *ex; /* request tasks: where the answer goes */
    const void *req;      /* request tasks: the request table (qc_host_take_exchange checks it) */
    int taken;            /* the exchange was taken over (a WebSocket): the task answers nothing */
    int is_script;
    int is_detached; /* started by qc.host.spawn: nobody waits for its results */
    int done;
    int script_status;
    /* Answers after records (task.h): what the request waits for, once it joined a
     * barrier; the barrier it joined last, and that barrier's pass count then. */
    struct hold *hold;
    qc_barrier *joined;
    unsigned long joined_pass;
    /* Memory: bytes the task's own steps added to the state (net of what was freed while
     * it ran), and whether Lua ran out of memory in it. */
    long long mem_net;
    int mem_error;
    qc_task *prev, *next;
};

/* A successful answer copied out of Lua, sent once the barriers it waits for have passed.
 * Copied so the task and its coroutine go back to the pool at once instead of staying out
 * of it, one per held answer, for a loop turn. */
struct held_answer {
    int status;
    size_t nh, body_len;
    const char *body;
    qc_http_header hs[];
};

/* A request's wait for barriers. It outlives its task when the task ends first. */
struct hold {
    qc_host *host;
    int waits;                /* barriers joined and not yet passed */
    enum { HOLD_RUNNING, HOLD_ANSWER_READY, HOLD_ANSWERED } state;
    const char *code, *msg;   /* set when a barrier failed: no 200 for this request */
    qc_http_exchange *ex;     /* HOLD_ANSWER_READY: where the answer goes */
    struct held_answer *answer;
};

struct qc_barrier {
    qc_host *host; /* NULL once the host is freed */
    struct hold **holds;
    size_t n, cap;
    unsigned long passes;
    void (*flush)(void *ud);
    void *ud;
    qc_barrier *prev, *next;
};

struct qc_host {
    uv_loop_t *loop;
    qc_config cfg;
    int bound_port; /* the port the HTTP server bound (serve), 0 until main says */
    qc_host_mode mode;
    lua_State *L;
    size_t mem_used;
    int cap_active; /* the memory cap applies while Lua code runs, not to host bookkeeping */
    size_t task_limit;  /* mem_used may not pass this while the current task runs */
    int refused;        /* the last allocation was refused (Lua retries once after a full GC) */
    int mem_error;      /* ... and the retry was refused too: Lua raised "not enough memory" */
    int decoding;       /* inside cjson.decode: see decode_guarded */
    int overdrawn;      /* ... and it went past the limits */
    size_t live_after_gc; /* mem_used after the last full collection the host ran */
    uint64_t gc_at;       /* and the loop time then */
    uv_timer_t *reclaim;  /* after a memory error or a refusal: full GC, memory back to the OS */
    uv_timer_t *settle;   /* SETTLE_MS after the last large request or memory error: the same */
    qc_barrier *barriers;
    /* The time budget (serve mode): the watchdog measures each call into Lua; past its
     * budget it arms a count hook on the thread running then, and the hook raises. */
    qc_watchdog *watchdog;
    struct qc_watchdog_section *section;
    lua_State *volatile running;      /* the thread of the current call into Lua */
    int depth;                        /* calls into Lua open, nested */
    volatile sig_atomic_t budget_tripped;
    volatile sig_atomic_t hook_armed;
    int hostlib_ref;
    int dispatch_ref;
    int gen_ref;
    long generation;
    double reloaded_at;
    double started_at;
    char reload_error[2048];
    qc_task *tasks;
    qc_task *pool[POOL_MAX];
    int npool;
    qc_http_client *http;
};

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- memory cap and instruction budget ---------------------------------------------- */

static void free_self(uv_handle_t *handle) { free(handle); }

static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    qc_host *h = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        h->mem_used -= old;
        return NULL;
    }
    if (nsize > old && h->cap_active) {
        size_t after = h->mem_used + (nsize - old);
        size_t extra = h->decoding ? h->cfg.lua_memory_bytes / DECODE_OVERDRAW_DIV : 0;
        if (h->decoding && !h->overdrawn &&
            ((h->cfg.lua_memory_bytes && after > h->cfg.lua_memory_bytes) || after > h->task_limit))
            h->overdrawn = 1;
        if ((h->cfg.lua_memory_bytes && after > h->cfg.lua_memory_bytes + extra) ||
            (h->task_limit != SIZE_MAX && after > h->task_limit + extra)) {
            /* Lua answers a refusal with an emergency full collection and one retry; a
             * second refusal in a row is the "not enough memory" error for that call. */
            if (h->refused) h->mem_error = 1;
            h->refused = 1;
            return NULL;
        }
    }
    void *p = realloc(ptr, nsize);
    if (!p) return NULL;
    h->refused = 0;
    h->mem_used = h->mem_used - old + nsize;
    return p;
}

/* cjson.decode, guarded. lua-cjson 2.1 mallocs a scratch buffer as long as its input and
 * frees it on a parse error, but a Lua memory error raised inside it (a table or string
 * refused at the cap) longjmps past the free: every body refused at the cap leaked its own
 * size, 300 MB after 300 bodies of 1 MB. So inside decode the limits give way (by at most half
 * the cap, which a body within QC_MAX_BODY does not reach) and the overdraft is settled once
 * decode has returned and freed its buffer: the result is dropped and the call raises the
 * memory error it would have raised, which the host answers as it always did (503). */
static int decode_guarded(lua_State *L) {
    void *ud;
    lua_getallocf(L, &ud);
    qc_host *h = ud;
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    int outer = h->decoding;
    h->decoding = 1;
    int st = lua_pcall(L, n, 1, 0);
    h->decoding = outer;
    if (!outer && h->overdrawn) {
        h->overdrawn = 0;
        h->mem_error = 1;
        lua_settop(L, 0);
        lua_pushliteral(L, "not enough memory");
        return lua_error(L);
    }
    if (st != LUA_OK) return lua_error(L);
    return 1;
}

/* Replaces t.decode with the guarded one, and t.new with a constructor that does the same
 * to each instance it makes. */
static int cjson_new_guarded(lua_State *L);
static void guard_cjson(lua_State *L, int t) {
    t = lua_absindex(L, t);
    if (lua_getfield(L, t, "decode") == LUA_TFUNCTION) {
        lua_pushcclosure(L, decode_guarded, 1);
        lua_setfield(L, t, "decode");
    } else {
        lua_pop(L, 1);
    }
    if (lua_getfield(L, t, "new") == LUA_TFUNCTION && lua_tocfunction(L, -1) != cjson_new_guarded) {
        lua_pushcclosure(L, cjson_new_guarded, 1);
        lua_setfield(L, t, "new");
    } else {
        lua_pop(L, 1);
    }
}

static int cjson_new_guarded(lua_State *L) {
    lua_settop(L, 0);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_call(L, 0, 1);
    if (lua_istable(L, -1)) guard_cjson(L, -1); /* its own new is cjson's: wrapped too */
    return 1;
}

/* Gives freed memory back to the OS: mimalloc's mi_collect(true) when the process uses
 * mimalloc (release builds link it; looked up at run time, so the ASan build without it
 * needs no switch), glibc's malloc_trim otherwise. mimalloc decommits freed pages only
 * after decommit_delay (25 ms) and only from a later call into it, which an idle server
 * never makes: measured, 20 MB stayed resident after a 64 MB bomb. So the delay is zero
 * while the full collection frees the garbage and while mimalloc collects, and pages are
 * allocated and freed to reach the spans freed before (without that, 12 or 35 MB stayed
 * after 100 bodies of 1 MB refused at a 64 MB cap, from one run to the next; with it, 10.6
 * MB every time, from 9.8 before); the hot path keeps the delay. */
#ifdef __has_include
#if __has_include(<mimalloc.h>)
#include <mimalloc.h>
#define QC_HAVE_MIMALLOC_H 1
#endif
#endif
static void collect_and_return_memory(lua_State *L) {
#ifdef QC_HAVE_MIMALLOC_H
    static int looked;
    static void (*collect)(bool);
    static long (*option_get)(mi_option_t);
    static void (*option_set)(mi_option_t, long);
    if (!looked) {
        looked = 1;
        *(void **)&collect = dlsym(RTLD_DEFAULT, "mi_collect");
        *(void **)&option_get = dlsym(RTLD_DEFAULT, "mi_option_get");
        *(void **)&option_set = dlsym(RTLD_DEFAULT, "mi_option_set");
    }
    if (collect && option_get && option_set) {
        long delay = option_get(mi_option_decommit_delay);
        option_set(mi_option_decommit_delay, 0);
        lua_gc(L, LUA_GCCOLLECT);
        collect(true);
        /* What the collection freed is decommitted now, but spans freed earlier wait in
         * their segment for a later free or page allocation there to find the delay past.
         * Allocating pages reaches them: mimalloc takes a page from a free span and then
         * decommits what waits in that span's segment. The blocks are never written, so
         * they cost no memory, and freeing them with the delay at zero decommits them too. */
        enum { PROBES = 64 };
        void *probe[PROBES];
        for (size_t size = (size_t)8 << 20; size >= (size_t)64 << 10; size /= 2) {
            size_t n = 0;
            while (n < PROBES && (probe[n] = malloc(size)) != NULL) n++;
            while (n) free(probe[--n]);
        }
        collect(true);
        option_set(mi_option_decommit_delay, delay);
        return;
    }
#endif
    lua_gc(L, LUA_GCCOLLECT);
    malloc_trim(0);
}

/* After a memory error, between events: the failed request's garbage is collected at once
 * (the generational collector would leave it for a major collection that may not come for
 * a long while) and the pages go back to the OS. Once per loop turn at most; after a request
 * refused near the cap, a second later. */
static void reclaim_now(uv_timer_t *timer) {
    qc_host *h = timer->data;
    size_t before = h->mem_used;
    collect_and_return_memory(h->L);
    h->live_after_gc = h->mem_used;
    h->gc_at = uv_now(h->loop);
    qc_log(QC_LOG_INFO, "host", "memory reclaimed", " lua_bytes_before=%zu lua_bytes=%zu",
           before, h->mem_used);
}

/* Starts *timer (made on first use; serve mode only) to run reclaim_now in delay_ms. One
 * already pending is pushed back only with push_back. */
static void start_reclaim_timer(qc_host *h, uv_timer_t **timer, uint64_t delay_ms, int push_back) {
    if (h->mode != QC_HOST_SERVE) return;
    if (!*timer) {
        *timer = malloc(sizeof **timer);
        if (!*timer) return;
        uv_timer_init(h->loop, *timer);
        (*timer)->data = h;
    }
    if (push_back || !uv_is_active((uv_handle_t *)*timer)) uv_timer_start(*timer, reclaim_now, delay_ms, 0);
}

/* The reclaim after a memory error runs while the burst that caused it may still go on, and
 * what the burst frees after it stays with the allocator: mimalloc decommits a freed span
 * only when a later call into the same segment finds its delay past, which an idle server
 * never makes (measured after 300 bodies of 1 MB at the default cap: 57 MB stayed resident;
 * with this, 10.6 MB). So one more reclaim runs once large requests have stopped for
 * SETTLE_MS; each one pushes it back, so a steady load of them, which reuses that memory,
 * does not pay for it. (Decommitting at once for the whole burst, decommit_delay 0 from
 * its first large request, also left ~11 MB but made a burst of 300 bodies take 11 s
 * instead of 6.) */
static void schedule_settle(qc_host *h) { start_reclaim_timer(h, &h->settle, SETTLE_MS, 1); }

/* Once per loop turn at most: a reclaim already pending is not pushed back. */
static void schedule_reclaim(qc_host *h, uint64_t delay_ms) { start_reclaim_timer(h, &h->reclaim, delay_ms, 0); }

static void budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    void *ud;
    lua_getallocf(L, &ud);
    qc_host *h = ud;
    if (!h->budget_tripped) { /* armed for a call that has ended: stand down */
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    /* Inside a hook, level 0 is the Lua function that was stopped: name its line, not its
     * caller's (luaL_error would take level 1). */
    luaL_where(L, 0);
    lua_pushfstring(L, "time budget exceeded (%d ms of CPU)", (int)h->cfg.lua_budget_ms);
    lua_concat(L, 2);
    lua_error(L);
}

int qc_host_budget_exceeded(lua_State *L) {
    void *ud;
    lua_getallocf(L, &ud);
    return ((qc_host *)ud)->budget_tripped != 0;
}

int qc_host_budget_error(lua_State *L) {
    void *ud;
    lua_getallocf(L, &ud);
    return luaL_error(L, "time budget exceeded (%d ms of CPU)", (int)((qc_host *)ud)->cfg.lua_budget_ms);
}

/* From the watchdog's signal, on the loop thread, while the overrunning call is still in
 * Lua or in a C function it called: the hook fires at its next VM instruction. lua_sethook
 * is the one Lua call meant for signal handlers (lua.c stops scripts on Ctrl-C this way). */
static void budget_overrun(void *ud) {
    qc_host *h = ud;
    lua_State *L = h->running;
    if (!L) return;
    h->budget_tripped = 1;
    h->hook_armed = 1;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
}

/* Brackets every call into Lua code (a resume, or a pcall on the main thread). Calls nest
 * (a handler's qc.host.reload builds a generation): the budget covers the outermost one,
 * and lua_leave gets back what lua_enter returned. */
static lua_State *lua_enter(qc_host *h, lua_State *L) {
    lua_State *outer = h->running;
    if (h->depth++ == 0) {
        h->budget_tripped = 0;
        h->cap_active = h->mode == QC_HOST_SERVE;
        if (h->section) qc_watchdog_enter(h->section);
    }
    h->running = L;
    return outer;
}

static void lua_leave(qc_host *h, lua_State *outer) {
    /* Close the section first: a signal arriving after this point is ignored. */
    if (--h->depth == 0 && h->section) qc_watchdog_leave(h->section);
    atomic_signal_fence(memory_order_seq_cst);
    if (h->hook_armed) {
        lua_sethook(h->running, NULL, 0, 0);
        if (h->depth > 0) lua_sethook(outer, budget_hook, LUA_MASKCOUNT, 1); /* it overran too */
        else h->hook_armed = 0;
    }
    h->running = outer;
    if (h->depth == 0) h->cap_active = 0;
}

/* ---- tasks -------------------------------------------------------------------------- */

static void task_release(qc_task *t, int reusable);
static int finish_request(qc_task *t, int nres, const char *origin, struct held_answer **hold);
static void respond_json_error(qc_task *t, int status, const char *code, const char *message,
                               const char *origin);

qc_task *qc_task_current(lua_State *L) { return *(qc_task **)lua_getextraspace(L); }
lua_State *qc_task_thread(qc_task *t) { return t->co; }
uv_loop_t *qc_task_loop(qc_task *t) { return t->host->loop; }
qc_host *qc_task_host(qc_task *t) { return t->host; }

int qc_task_yield(lua_State *L) {
    qc_task *t = qc_task_current(L);
    if (!t) return luaL_error(L, "this call waits on the event loop and must run in a task");
    t->waiting = 1;
    return lua_yield(L, 0);
}

static qc_task *task_new(qc_host *h) {
    qc_task *t;
    if (h->npool > 0) {
        t = h->pool[--h->npool];
    } else {
        t = calloc(1, sizeof *t);
        if (!t) return NULL;
        t->host = h;
        t->co = lua_newthread(h->L);
        t->co_ref = luaL_ref(h->L, LUA_REGISTRYINDEX);
        *(qc_task **)lua_getextraspace(t->co) = t;
    }
    t->waiting = t->running = t->done = t->is_script = t->is_detached = 0;
    t->ex = NULL;
    t->req = NULL;
    t->taken = 0;
    t->script_status = 0;
    t->hold = NULL;
    t->joined = NULL;
    t->mem_net = 0;
    t->mem_error = 0;
    t->prev = NULL;
    t->next = h->tasks;
    if (h->tasks) h->tasks->prev = t;
    h->tasks = t;
    return t;
}

static void task_release(qc_task *t, int reusable) {
    qc_host *h = t->host;
    if (t->prev) t->prev->next = t->next;
    else h->tasks = t->next;
    if (t->next) t->next->prev = t->prev;
    if (reusable && h->npool < POOL_MAX && lua_status(t->co) == LUA_OK) {
        lua_settop(t->co, 0);
        h->pool[h->npool++] = t;
        return;
    }
    luaL_unref(h->L, LUA_REGISTRYINDEX, t->co_ref);
    free(t);
}


/* Appends the CORS headers of t's answer (runtime/net/cors.c decides them all). allow is the
 * answer's Allow header: with it, a 2xx answer to a preflight gets the preflight headers
 * too. A preflight is an OPTIONS request with an Origin; its Access-Control-Request-Method
 * is no header lws 4.1 collects, and a browser sends a cross-origin OPTIONS only as one. */
static void cors_headers(qc_host *h, qc_http_exchange *ex, const char *origin, int status, const char *allow,
                         qc_http_header *out, size_t *n) {
    if (!origin) return;
    int options = strcmp(qc_http_exchange_method(ex), "OPTIONS") == 0;
    const char *preflight = options && allow && status >= 200 && status < 300 ? allow : NULL;
    const char *acrh = preflight ? qc_http_exchange_header(ex, "access-control-request-headers") : NULL;
    *n += qc_cors_headers(h->cfg.cors_origins, origin, preflight, acrh, out + *n);
}

static void respond_error_on(qc_host *h, qc_http_exchange *ex, int status, const char *code,
                             const char *message, const char *field, const char *origin, const char *retry_after) {
    char body[QC_HTTP_ERROR_MAX];
    size_t n = qc_http_error_json(body, sizeof body, code, message, field);
    qc_http_header hs[2 + QC_CORS_MAX_HEADERS] = {{"content-type", "application/json"}};
    size_t nh = 1;
    if (retry_after) hs[nh++] = (qc_http_header){"retry-after", retry_after};
    cors_headers(h, ex, origin, status, NULL, hs, &nh);
    qc_http_exchange_respond(ex, status, hs, nh, body, n);
}

static void respond_json_error_field(qc_task *t, int status, const char *code, const char *message,
                                     const char *field, const char *origin) {
    respond_error_on(t->host, t->ex, status, code, message, field, origin, NULL);
    t->ex = NULL;
}

static void respond_json_error(qc_task *t, int status, const char *code, const char *message,
                               const char *origin) {
    respond_json_error_field(t, status, code, message, NULL, origin);
}

static void respond_memory_limit(qc_task *t, const char *origin) {
    respond_json_error(t, 503, "MEMORY_LIMIT", "the server is short of memory for this request; try again later",
                       origin);
}

static struct held_answer *copy_answer(int status, const qc_http_header *hs, size_t nh, const char *body,
                                       size_t blen) {
    size_t bytes = sizeof(struct held_answer) + nh * sizeof(qc_http_header) + blen + 1;
    for (size_t i = 0; i < nh; i++) bytes += strlen(hs[i].name) + strlen(hs[i].value) + 2;
    struct held_answer *a = malloc(bytes);
    if (!a) return NULL;
    a->status = status;
    a->nh = nh;
    a->body_len = blen;
    char *p = (char *)(a->hs + nh);
    for (size_t i = 0; i < nh; i++) {
        size_t ln = strlen(hs[i].name) + 1, lv = strlen(hs[i].value) + 1;
        a->hs[i].name = memcpy(p, hs[i].name, ln);
        a->hs[i].value = memcpy(p + ln, hs[i].value, lv);
        p += ln + lv;
    }
    if (blen) memcpy(p, body, blen);
    p[blen] = 0;
    a->body = p;
    return a;
}

/* The request task ended normally: its results are status, headers, body. With `hold`, a
 * successful answer is copied to *hold instead of sent, and 1 is returned; an error answer
 * is always sent at once (it claims nothing done). */
static int finish_request(qc_task *t, int nres, const char *origin, struct held_answer **hold) {
    lua_State *co = t->co;
    int base = lua_gettop(co) - nres + 1;
    if (nres < 3 || !lua_isinteger(co, base) || !lua_isstring(co, base + 2)) {
        qc_log(QC_LOG_ERROR, "host", "dispatch returned a malformed answer", NULL);
        respond_json_error(t, 500, "INTERNAL", "internal error", origin);
        return 0;
    }
    lua_Integer raw_status = lua_tointeger(co, base);
    if (raw_status < 200 || raw_status > 599) {
        /* 1xx would promise an Upgrade or a second answer that never comes, and anything
         * outside 100-599 is no HTTP status at all: a handler bug, never the client's. */
        qc_log(QC_LOG_ERROR, "host", "handler returned an invalid status", " method=%s path=%s status=%lld",
               qc_http_exchange_method(t->ex), qc_http_exchange_path(t->ex), (long long)raw_status);
        respond_json_error(t, 500, "INTERNAL", "internal error", origin);
        return 0;
    }
    int status = (int)raw_status;
    if (t->mem_error && status >= 400) {
        /* The handler caught Lua's "not enough memory" and answered some error of its own
         * (dispatch's pcall around cjson.decode says BAD_JSON): that is not the client's
         * fault, so it is not reported as such. */
        qc_log(QC_LOG_WARN, "host", "error answer replaced: the request ran out of memory", " path=%s status=%d",
               qc_http_exchange_path(t->ex), status);
        respond_memory_limit(t, origin);
        return 0;
    }
    qc_http_header hs[64];
    size_t nh = 0;
    const char *allow = NULL;
    if (lua_istable(co, base + 1)) {
        lua_pushnil(co);
        while (nh < 64 - QC_CORS_MAX_HEADERS && lua_next(co, base + 1)) {
            if (lua_type(co, -2) == LUA_TSTRING && lua_isstring(co, -1)) {
                hs[nh].name = lua_tostring(co, -2);
                hs[nh].value = lua_tostring(co, -1); /* stays valid: the table keeps it */
                if (strcasecmp(hs[nh].name, "allow") == 0) allow = hs[nh].value;
                nh++;
            }
            lua_pop(co, 1);
        }
    }
    cors_headers(t->host, t->ex, origin, status, allow, hs, &nh);
    size_t blen;
    const char *body = lua_tolstring(co, base + 2, &blen);
    if (hold && status < 400) {
        *hold = copy_answer(status, hs, nh, body, blen);
        if (*hold) return 1;
        respond_memory_limit(t, origin);
        return 0;
    }
    qc_http_exchange_respond(t->ex, status, hs, nh, body, blen);
    t->ex = NULL;
    return 0;
}

/* Pushes t[key] without metamethods: the call has ended, and code run now (an __index)
 * would run outside its time budget. */
static int raw_field(lua_State *L, int t, const char *key) {
    lua_pushstring(L, key);
    return lua_rawget(L, t < 0 ? t - 1 : t);
}

/* The task raised: a table with an integer status (qc.errors) is an intended HTTP error;
 * anything else is a bug in a handler or policy, logged with its traceback. */
static void finish_request_error(qc_task *t, int st, const char *origin, const char *path) {
    qc_host *h = t->host;
    lua_State *co = t->co;
    if (st == LUA_ERRMEM || t->mem_error) {
        const char *m = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : "(an error table)";
        qc_log(QC_LOG_ERROR, "host", "request ran out of memory", " path=%s error=\"%s\" lua_bytes=%zu", path, m,
               h->mem_used);
        respond_memory_limit(t, origin);
        return;
    }
    if (lua_istable(co, -1)) {
        if (raw_field(co, -1, "status") == LUA_TNUMBER && lua_isinteger(co, -1)) {
            lua_Integer raw_status = lua_tointeger(co, -1);
            int status = raw_status >= 400 && raw_status <= 599 ? (int)raw_status : 500;
            raw_field(co, -2, "code");
            raw_field(co, -3, "message");
            raw_field(co, -4, "field");
            /* lua_type, not lua_isstring: a number here is a mistake, not a code. */
            const char *code = lua_type(co, -3) == LUA_TSTRING ? lua_tostring(co, -3) : "ERROR";
            const char *msg = lua_type(co, -2) == LUA_TSTRING ? lua_tostring(co, -2) : "request failed";
            const char *field = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : NULL;
            respond_json_error_field(t, status, code, msg, field, origin);
            lua_pop(co, 4);
            return;
        }
        lua_pop(co, 1);
        /* For the log only: what the table says of itself, read raw. */
        raw_field(co, -1, "message");
        if (lua_type(co, -1) != LUA_TSTRING) {
            lua_pop(co, 1);
            lua_pushliteral(co, "(error object is a table without an integer status)");
        }
        lua_replace(co, -2);
    }
    const char *msg = lua_tostring(co, -1);
    luaL_traceback(h->L, co, msg ? msg : "(error object is not a string)", 0);
    const char *tb = lua_tostring(h->L, -1);
    /* One log line: newlines of the traceback become " | ". */
    char line[4096];
    size_t o = 0;
    for (const char *p = tb; p && *p && o + 4 < sizeof line; p++) {
        if (*p == '\n') {
            memcpy(line + o, " | ", 3);
            o += 3;
        } else if (*p != '\t') {
            line[o++] = *p;
        }
    }
    line[o] = 0;
    lua_pop(h->L, 1);
    const char *code = "INTERNAL", *public_msg = "internal error";
    if (h->budget_tripped) {
        code = "BUDGET_EXCEEDED";
        public_msg = "the handler ran past its time budget";
    }
    qc_log(QC_LOG_ERROR, "host", "handler failed", " path=%s code=%s error=\"%s\"", path, code, line);
    qc_metrics_lua_error(h->budget_tripped);
    respond_json_error(t, 500, code, public_msg, origin);
}

static void finish_script(qc_task *t, int st, int nres) {
    qc_host *h = t->host;
    lua_State *co = t->co;
    if (st == LUA_OK) {
        t->script_status = 0;
        int type = nres > 0 ? lua_type(co, -nres) : LUA_TNIL;
        lua_Integer n = 0;
        int isnum = 0;
        if (type == LUA_TNUMBER) n = lua_tointegerx(co, -nres, &isnum); /* 3.0 is 3; 1.5 is not */
        if (type == LUA_TBOOLEAN) {
            /* as os.exit takes them */
            t->script_status = lua_toboolean(co, -nres) ? 0 : 1;
        } else if (type == LUA_TNUMBER && isnum && n >= 0 && n <= 255) {
            t->script_status = (int)n;
        } else if (type != LUA_TNIL) {
            /* The shell keeps only the low 8 bits: 256 would read as success. Name the value
             * rather than exit with what it wraps to. */
            /* Formatted in C: outside a protected call, a Lua allocation that fails would
             * end in the panic handler. */
            char shown[96];
            if (type == LUA_TSTRING)
                snprintf(shown, sizeof shown, "the string \"%.60s%s\"", lua_tostring(co, -nres),
                         lua_rawlen(co, -nres) > 60 ? "..." : "");
            else if (lua_isinteger(co, -nres))
                snprintf(shown, sizeof shown, "%lld", (long long)lua_tointeger(co, -nres));
            else if (type == LUA_TNUMBER)
                snprintf(shown, sizeof shown, "%.14g", (double)lua_tonumber(co, -nres));
            else
                snprintf(shown, sizeof shown, "a %s", luaL_typename(co, -nres));
            fprintf(stderr, "quantcoach: the script returned %s, not an exit status (an integer from 0 to 255)\n",
                    shown);
            t->script_status = 1;
        }
    } else {
        const char *msg = lua_tostring(co, -1);
        luaL_traceback(h->L, co, msg ? msg : "(error object is not a string)", 0);
        fprintf(stderr, "%s\n", lua_tostring(h->L, -1));
        lua_pop(h->L, 1);
        t->script_status = 1;
    }
    t->done = 1;
}

/* Runs the task until it yields or ends. Request results are sent from here. */
static void task_step(qc_task *t, int nargs) {
    qc_host *h = t->host;
    t->waiting = 0;
    t->running = 1;
    /* The task's share of the cap: what its earlier steps kept, plus this step's growth
     * (what it allocates less what is freed meanwhile), may not pass cap / TASK_SHARE_DIV. */
    size_t saved_limit = h->task_limit, start = h->mem_used;
    if (h->mode == QC_HOST_SERVE && h->cfg.lua_memory_bytes) {
        long long room = (long long)(h->cfg.lua_memory_bytes / TASK_SHARE_DIV) - t->mem_net;
        h->task_limit = room > 0 ? start + (size_t)room : start;
    }
    h->refused = h->mem_error = 0;
    lua_State *outer = lua_enter(h, t->co);
    int nres = 0;
    int st = lua_resume(t->co, NULL, nargs, &nres);
    lua_leave(h, outer);
    t->running = 0;
    h->task_limit = saved_limit;
    long long net = t->mem_net + (long long)h->mem_used - (long long)start;
    t->mem_net = net > 0 ? net : 0;
    if (h->mem_error || st == LUA_ERRMEM) {
        t->mem_error = 1;
        schedule_reclaim(h, 0);
        schedule_settle(h);
    }
    h->refused = h->mem_error = 0;
    if (st == LUA_YIELD) {
        if (t->waiting) {
            lua_pop(t->co, nres);
            return;
        }
        /* A bare coroutine.yield at the top of a task: nothing would ever resume it. */
        lua_pop(t->co, nres);
        lua_pushstring(t->co, "coroutine.yield outside a coroutine of your own");
        st = LUA_ERRRUN;
    }
    if (t->is_detached) {
        if (st != LUA_OK) {
            const char *msg = lua_tostring(t->co, -1);
            luaL_traceback(h->L, t->co, msg ? msg : "(error object is not a string)", 0);
            qc_log(QC_LOG_ERROR, "host", "spawned task failed", " error=\"%s\"", lua_tostring(h->L, -1));
            qc_metrics_lua_error(h->budget_tripped);
            lua_pop(h->L, 1);
        }
        task_release(t, st == LUA_OK);
        return;
    }
    if (t->is_script) {
        finish_script(t, st, nres);
        return; /* run_script releases it */
    }
    if (t->taken) { /* its connection belongs to someone else now: nothing to answer */
        if (st != LUA_OK) {
            const char *msg = lua_tostring(t->co, -1);
            luaL_traceback(h->L, t->co, msg ? msg : "(error object is not a string)", 0);
            qc_log(QC_LOG_ERROR, "host", "handler failed after taking its connection over", " error=\"%s\"",
                   lua_tostring(h->L, -1));
            lua_pop(h->L, 1);
        }
        struct hold *r = t->hold;
        t->hold = NULL;
        if (r) {
            if (r->waits > 0) r->state = HOLD_ANSWERED; /* freed at the last pass */
            else free(r);
        }
        task_release(t, st == LUA_OK);
        return;
    }
    /* Request task: path and origin come from the exchange, which owns them until the
     * answer is sent (the handler may have changed the request table). */
    const char *path = t->ex ? qc_http_exchange_path(t->ex) : "?";
    const char *origin = t->ex ? qc_http_exchange_header(t->ex, "origin") : NULL;
    struct hold *r = t->hold;
    t->hold = NULL;
    int waiting = r && r->waits > 0;
    if (st != LUA_OK) {
        finish_request_error(t, st, origin, path); /* a failure claims nothing done: now */
    } else if (r && r->code) {
        /* A commit this request waited for failed while it still ran. */
        respond_json_error(t, 503, r->code, r->msg, origin);
    } else if (finish_request(t, nres, origin, waiting ? &r->answer : NULL)) {
        r->ex = t->ex; /* sent when the last barrier it joined passes */
        t->ex = NULL;
        r->state = HOLD_ANSWER_READY;
        r = NULL;
    }
    if (r) {
        if (r->waits > 0) r->state = HOLD_ANSWERED; /* freed at the last pass */
        else free(r);
    }
    task_release(t, st == LUA_OK);
}

/* ---- barriers: answers after records (task.h) ----------------------------------------- */

/* The last barrier a request waited for has passed (or the host stops: `stopping`). */
static void hold_done(struct hold *r, int stopping) {
    if (r->state == HOLD_ANSWER_READY) {
        const char *origin = qc_http_exchange_header(r->ex, "origin");
        if (stopping)
            respond_error_on(r->host, r->ex, 503, "STOPPING", "the server stopped before this request finished",
                             NULL, origin, NULL);
        else if (r->code)
            respond_error_on(r->host, r->ex, 503, r->code, r->msg, NULL, origin, NULL);
        else
            qc_http_exchange_respond(r->ex, r->answer->status, r->answer->hs, r->answer->nh, r->answer->body,
                                     r->answer->body_len);
    }
    free(r->answer);
    free(r);
}

qc_barrier *qc_barrier_new(qc_host *h, void (*flush)(void *ud), void *ud) {
    qc_barrier *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->host = h;
    b->flush = flush;
    b->ud = ud;
    b->next = h->barriers;
    if (h->barriers) h->barriers->prev = b;
    h->barriers = b;
    return b;
}

int qc_barrier_join(qc_barrier *b, qc_task *t) {
    if (!b || !b->host || !t || !t->ex) return 0;
    if (t->joined == b && t->joined_pass == b->passes) return 0;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        struct hold **nh = realloc(b->holds, cap * sizeof *nh);
        if (!nh) return -1;
        b->holds = nh;
        b->cap = cap;
    }
    if (!t->hold) {
        t->hold = calloc(1, sizeof *t->hold);
        if (!t->hold) return -1;
        t->hold->host = b->host;
    }
    b->holds[b->n++] = t->hold;
    t->hold->waits++;
    t->joined = b;
    t->joined_pass = b->passes;
    return 0;
}

/* Releases every hold joined to b since its last pass; code, if any, fails them. A hold
 * whose task still runs goes on with the task. Answering runs no Lua, so nothing joins
 * while this runs. */
static void release_holds(qc_barrier *b, const char *code, const char *message, int stopping) {
    size_t n = b->n;
    b->n = 0;
    for (size_t i = 0; i < n; i++) {
        struct hold *r = b->holds[i];
        if (code && !r->code) {
            r->code = code;
            r->msg = message;
        }
        if (--r->waits == 0 && r->state != HOLD_RUNNING) hold_done(r, stopping);
    }
}

void qc_barrier_pass(qc_barrier *b, const char *code, const char *message) {
    if (!b) return;
    b->passes++;
    if (!b->host) {
        b->n = 0;
        return;
    }
    release_holds(b, code, message, 0);
}

size_t qc_barrier_waiting(const qc_barrier *b) { return b ? b->n : 0; }

void qc_barrier_free(qc_barrier *b) {
    if (!b) return;
    if (b->n) qc_barrier_pass(b, "UNAVAILABLE", "the work this request waited for was abandoned");
    qc_host *h = b->host;
    if (h) {
        if (b->prev) b->prev->next = b->next;
        else h->barriers = b->next;
        if (b->next) b->next->prev = b->prev;
    }
    free(b->holds);
    free(b);
}

void qc_task_resume(qc_task *t, int nresults) {
    if (t->running || !t->waiting) return;
    task_step(t, nresults);
}

typedef struct {
    uv_timer_t timer; /* first: see task.h on handle ownership */
    qc_task *task;
    int nargs;
} spawn_start;

static void spawn_closed(uv_handle_t *handle) { free(handle->data); }

static void spawn_run(uv_timer_t *timer) {
    spawn_start *s = timer->data;
    qc_task *t = s->task;
    int nargs = s->nargs;
    uv_close((uv_handle_t *)timer, spawn_closed);
    task_step(t, nargs);
}

/* Starts fn(...) (L's stack from index `first` up) as a task of its own, from the loop on
 * its next turn: never nested inside the caller's own resume. */
int qc_host_spawn(qc_host *h, lua_State *L, int first) {
    int n = lua_gettop(L) - first + 1;
    spawn_start *s = malloc(sizeof *s);
    if (!s) return -1;
    qc_task *t = task_new(h);
    if (!t) {
        free(s);
        return -1;
    }
    t->is_detached = 1;
    lua_xmove(L, t->co, n);
    s->task = t;
    s->nargs = n - 1;
    uv_timer_init(h->loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, spawn_run, 0, 0);
    return 0;
}

/* ---- HTTP requests ------------------------------------------------------------------ */

/* Is there room for one more request of body_len bytes? Near the cap, the garbage of
 * finished requests is collected first, if enough can have piled up since the last time. */
static int admit(qc_host *h, size_t body_len) {
    if (h->mode != QC_HOST_SERVE || !h->cfg.lua_memory_bytes) return 1;
    size_t limit = h->cfg.lua_memory_bytes / ADMIT_DEN * ADMIT_NUM;
    if (h->mem_used + body_len <= limit) return 1;
    uint64_t now = uv_now(h->loop);
    if (h->mem_used < h->live_after_gc + h->cfg.lua_memory_bytes / ADMIT_GC_GROWTH_DIV &&
        now - h->gc_at < ADMIT_GC_AGE_MS)
        return 0;
    lua_gc(h->L, LUA_GCCOLLECT);
    h->live_after_gc = h->mem_used;
    h->gc_at = now;
    return h->mem_used + body_len <= limit;
}

void qc_host_handle_http(void *ud, qc_http_exchange *ex, const qc_http_incoming *req) {
    qc_host *h = ud;
    if (req->body_len >= LARGE_BODY) schedule_settle(h);
    if (!admit(h, req->body_len)) {
        /* Established requests keep the memory they need to finish; this one may retry. */
        qc_log(QC_LOG_WARN, "host", "request refused: Lua memory near its cap", " path=%s lua_bytes=%zu", req->path,
               h->mem_used);
        schedule_reclaim(h, RECLAIM_AFTER_REFUSAL_MS);
        respond_error_on(h, ex, 503, "OVERLOADED", "the server is short of memory; try again later", NULL,
                         qc_http_exchange_header(ex, "origin"), "1");
        return;
    }
    qc_task *t = task_new(h);
    if (!t) {
        qc_http_header hs[] = {{"content-type", "application/json"}};
        char b[QC_HTTP_ERROR_MIN + 32];
        size_t n = qc_http_error_json(b, sizeof b, "INTERNAL", "out of memory", NULL);
        qc_http_exchange_respond(ex, 500, hs, 1, b, n);
        return;
    }
    t->ex = ex;
    lua_State *co = t->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, h->dispatch_ref);
    lua_rawgeti(co, LUA_REGISTRYINDEX, h->gen_ref);
    /* Room for what dispatch and handlers add (params, args, json, caller) without a rehash. */
    lua_createtable(co, 0, 16);
    lua_pushstring(co, req->method);
    lua_setfield(co, -2, "method");
    lua_pushstring(co, req->path);
    lua_setfield(co, -2, "path");
    lua_pushstring(co, req->query);
    lua_setfield(co, -2, "query");
    if (req->nargs) {
        lua_createtable(co, 0, (int)req->nargs);
        for (size_t i = 0; i < req->nargs; i++) {
            lua_getfield(co, -1, req->args[i].name);
            int seen = !lua_isnil(co, -1);
            lua_pop(co, 1);
            if (seen) continue; /* the first of a repeated name wins */
            lua_pushstring(co, req->args[i].value);
            lua_setfield(co, -2, req->args[i].name);
        }
        lua_setfield(co, -2, "args");
    }
    lua_pushlstring(co, req->body, req->body_len);
    lua_setfield(co, -2, "body");
    lua_pushstring(co, req->peer);
    lua_setfield(co, -2, "peer");
    lua_createtable(co, 0, (int)req->nheaders);
    for (size_t i = 0; i < req->nheaders; i++) {
        lua_pushstring(co, req->headers[i].value);
        lua_setfield(co, -2, req->headers[i].name);
    }
    lua_setfield(co, -2, "headers");
    if (req->websocket) {
        lua_pushboolean(co, 1);
        lua_setfield(co, -2, "websocket");
        lua_pushcfunction(co, qc_ws_server_accept);
        lua_setfield(co, -2, "accept_websocket");
    }
    t->req = lua_topointer(co, -1);
    task_step(t, 2);
}

qc_http_exchange *qc_host_exchange(lua_State *L) {
    qc_task *t = qc_task_current(L);
    return t && !t->taken ? t->ex : NULL;
}

qc_http_exchange *qc_host_take_exchange(lua_State *L, int req_index) {
    qc_task *t = qc_task_current(L);
    if (!t || !t->ex || t->taken || !lua_istable(L, req_index) || lua_topointer(L, req_index) != t->req) return NULL;
    qc_http_exchange *ex = t->ex;
    t->ex = NULL;
    t->taken = 1;
    /* Tells dispatch (scripts/lib/qc/generation.lua) that there is no answer to return. */
    req_index = lua_absindex(L, req_index);
    lua_pushliteral(L, "upgraded");
    lua_pushboolean(L, 1);
    lua_rawset(L, req_index);
    return ex;
}

/* ---- generations -------------------------------------------------------------------- */

/* Calls hostlib[fname](policies_dir, scripts_dir, next_id) on the main thread. Leaves the
 * generation on the stack on success. */
static int build_generation(qc_host *h, const char *fname, char *err, size_t errlen) {
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->hostlib_ref);
    lua_getfield(L, -1, fname);
    lua_remove(L, -2);
    lua_pushstring(L, h->cfg.policies_dir);
    lua_pushstring(L, h->cfg.scripts_dir);
    lua_pushinteger(L, h->generation + 1);
    lua_State *outer = lua_enter(h, L);
    int st = lua_pcall(L, 3, 1, 0);
    lua_leave(h, outer);
    if (st != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        snprintf(err, errlen, "%s", m ? m : (st == LUA_ERRMEM ? "not enough memory" : "policy load failed"));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

int qc_host_reload(qc_host *h, char *err, size_t errlen) {
    h->reloaded_at = wall_now();
    if (build_generation(h, "new_generation", err, errlen) < 0) {
        snprintf(h->reload_error, sizeof h->reload_error, "%s", err);
        qc_log(QC_LOG_ERROR, "host", "reload rejected", " generation=%ld error=\"%s\"", h->generation, err);
        qc_metrics_reload(0);
        return -1;
    }
    /* The swap: requests already running hold their own reference to the old one. */
    if (h->gen_ref != LUA_NOREF) luaL_unref(h->L, LUA_REGISTRYINDEX, h->gen_ref);
    h->gen_ref = luaL_ref(h->L, LUA_REGISTRYINDEX);
    h->generation++;
    h->reload_error[0] = 0;
    qc_log(QC_LOG_INFO, "host", "policies loaded", " generation=%ld dir=%s", h->generation, h->cfg.policies_dir);
    qc_metrics_reload(1);
    return 0;
}

int qc_host_check(qc_host *h, char *err, size_t errlen) {
    if (build_generation(h, "new_generation", err, errlen) < 0) return -1;
    lua_pop(h->L, 1);
    return 0;
}

int qc_host_start_service(qc_host *h, const char *module, char *err, size_t errlen) {
    lua_State *L = h->L;
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    lua_State *outer = lua_enter(h, L);
    int st = lua_pcall(L, 1, 1, 0);
    lua_leave(h, outer);
    if (st != LUA_OK || !lua_istable(L, -1)) {
        snprintf(err, errlen, "%s: %s", module, st != LUA_OK ? lua_tostring(L, -1) : "does not return a table");
        lua_settop(L, top);
        return -1;
    }
    lua_getfield(L, -1, "start");
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1) || qc_host_spawn(h, L, lua_gettop(L)) < 0) {
        snprintf(err, errlen, "%s: no start function, or out of memory", module);
        lua_settop(L, top);
        return -1;
    }
    return 0;
}

long qc_host_generation(qc_host *h) { return h->generation; }
double qc_host_reloaded_at(qc_host *h) { return h->reloaded_at; }
const char *qc_host_reload_error(qc_host *h) { return h->reload_error; }
double qc_host_started_at(qc_host *h) { return h->started_at; }
const qc_config *qc_host_config(qc_host *h) { return &h->cfg; }
uv_loop_t *qc_host_loop(qc_host *h) { return h->loop; }
void qc_host_set_bound_port(qc_host *h, int port) { h->bound_port = port; }
int qc_host_bound_port(qc_host *h) { return h->bound_port ? h->bound_port : h->cfg.listen_port; }

qc_http_client *qc_host_http_client(qc_host *h) {
    if (!h->http) {
        char err[256];
        h->http = qc_http_client_new(h->loop, err, sizeof err);
        if (!h->http) qc_log(QC_LOG_ERROR, "host", "http client unavailable", " error=\"%s\"", err);
    }
    return h->http;
}

/* ---- set-up ------------------------------------------------------------------------- */

static int host_panic(lua_State *L) {
    const char *m = lua_tostring(L, -1);
    qc_log(QC_LOG_ERROR, "host", "lua panic", " error=\"%s\"", m ? m : "?");
    qc_log_flush();
    abort();
}

/* package.path: scripts/lib first, then the system's (busted and friends live there). */
static void set_package_path(lua_State *L, const char *scripts_dir) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *sys = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/lib/?.lua;%s/lib/?/init.lua;%s", scripts_dir, scripts_dir, sys ? sys : "");
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

qc_host *qc_host_new(uv_loop_t *loop, const qc_config *cfg, qc_host_mode mode, char *err, size_t errlen) {
    qc_host *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->loop = loop;
    h->cfg = *cfg;
    h->mode = mode;
    h->gen_ref = LUA_NOREF;
    h->task_limit = SIZE_MAX;
    h->started_at = wall_now();
    h->L = lua_newstate(host_alloc, h);
    if (!h->L) {
        snprintf(err, errlen, "cannot create the Lua state");
        free(h);
        return NULL;
    }
    lua_atpanic(h->L, host_panic);
    *(qc_task **)lua_getextraspace(h->L) = NULL;
    luaL_openlibs(h->L);
    /* Requests make many short-lived tables and strings: the generational collector
     * reclaims those young objects without walking the long-lived policy generations. */
    lua_gc(h->L, LUA_GCGEN, 0, 0);
    qc_bindings_preload(h->L, h);
    set_package_path(h->L, cfg->scripts_dir);
    /* Loaded here, once, so every require "cjson" (and each cjson.new()) decodes guarded. */
    lua_getglobal(h->L, "require");
    lua_pushstring(h->L, "cjson");
    if (lua_pcall(h->L, 1, 1, 0) == LUA_OK && lua_istable(h->L, -1)) guard_cjson(h->L, -1);
    lua_pop(h->L, 1);

    /* The host's Lua half is trusted code shipped with the binary; required (not loaded
     * by path) so scripts that require it share the same instance. */
    lua_getglobal(h->L, "require");
    lua_pushstring(h->L, "qc.generation");
    if (lua_pcall(h->L, 1, 1, 0) != LUA_OK) {
        snprintf(err, errlen, "%s", lua_tostring(h->L, -1));
        lua_close(h->L);
        free(h);
        return NULL;
    }
    lua_getfield(h->L, -1, "dispatch");
    h->dispatch_ref = luaL_ref(h->L, LUA_REGISTRYINDEX);
    h->hostlib_ref = luaL_ref(h->L, LUA_REGISTRYINDEX);
    /* Scripts (`quantcoach run`) may run as long as they like; served calls may not. */
    if (mode == QC_HOST_SERVE) {
        h->watchdog = qc_watchdog_new(cfg->lua_budget_ms, budget_overrun, h, err, errlen);
        if (!h->watchdog) {
            lua_close(h->L);
            free(h);
            return NULL;
        }
        h->section = qc_watchdog_section(h->watchdog);
    }
    return h;
}

/* Convention for bindings: a handle whose data points to itself is the first member of a
 * heap block nothing else owns (a sleep timer whose task died), so the drain frees it. */
static void close_owned(uv_handle_t *handle, void *arg) {
    (void)arg;
    if (!uv_is_closing(handle) && handle->data == (void *)handle) uv_close(handle, free_self);
}

static void close_walk(uv_handle_t *handle, void *arg) {
    (void)arg;
    if (!uv_is_closing(handle)) uv_close(handle, handle->data == (void *)handle ? free_self : NULL);
}

/* Freed by the loop drain (task.h's convention). */
static void close_reclaim_timer(uv_timer_t **timer) {
    if (!*timer) return;
    (*timer)->data = *timer;
    uv_close((uv_handle_t *)*timer, free_self);
    *timer = NULL;
}

void qc_host_free(qc_host *h) {
    if (!h) return;
    /* WebSockets whose handlers are Lua functions: closed (1001) and cut loose first. */
    qc_ws_server_host_closing(h);
    if (h->http) qc_http_client_close(h->http);
    h->http = NULL;
    close_reclaim_timer(&h->reclaim);
    close_reclaim_timer(&h->settle);
    /* Answers held for work not yet done: let the owners do it (a group commit) and pass
     * their barriers now; then no barrier may point at a task any more. */
    for (qc_barrier *b = h->barriers; b; b = b->next)
        if (b->flush) b->flush(b->ud);
    while (h->barriers) {
        qc_barrier *b = h->barriers;
        h->barriers = b->next;
        release_holds(b, NULL, NULL, 1);
        b->host = NULL;
        b->prev = b->next = NULL;
    }
    /* Tasks still waiting (timers, transfers) die with the state; their handles are
     * closed by the caller's loop drain. */
    while (h->tasks) {
        qc_task *t = h->tasks;
        if (t->ex) respond_json_error(t, 503, "STOPPING", "the server stopped before this request finished", NULL);
        free(t->hold); /* no barrier points at it any more */
        t->hold = NULL;
        task_release(t, 0);
    }
    qc_watchdog_free(h->watchdog); /* before the state it would hook goes */
    lua_close(h->L);
    for (int i = 0; i < h->npool; i++) free(h->pool[i]);
    free(h);
}

void qc_host_close_owned_handles(uv_loop_t *loop) {
    uv_walk(loop, close_owned, NULL);
}

/* Runs the loop until libuv has let go of every handle. Handles still open after a while
 * (nobody closed them) are closed here, so shutdown cannot hang. */
void qc_host_drain_loop(uv_loop_t *loop) {
    qc_ws_client_shutdown(); /* lws' context ends while the loop runs below */
    uv_walk(loop, close_owned, NULL);
    uint64_t deadline = uv_hrtime() + 2000000000ull;
    while (uv_run(loop, UV_RUN_NOWAIT) && uv_hrtime() < deadline) uv_sleep(1);
    uv_walk(loop, close_walk, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
}

/* ---- scripts ------------------------------------------------------------------------ */

int qc_host_run_script(qc_host *h, const char *path, int argc, char **argv, int *status) {
    lua_State *L = h->L;
    lua_createtable(L, argc, 1);
    lua_pushstring(L, path);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");

    qc_task *t = task_new(h);
    if (!t) {
        fprintf(stderr, "quantcoach: out of memory\n");
        *status = 1;
        return -1;
    }
    t->is_script = 1;
    if (luaL_loadfilex(t->co, path, "t") != LUA_OK) {
        fprintf(stderr, "quantcoach: %s\n", lua_tostring(t->co, -1));
        task_release(t, 0);
        *status = 1;
        return -1;
    }
    for (int i = 0; i < argc; i++) lua_pushstring(t->co, argv[i]);
    task_step(t, argc);
    while (!t->done) {
        if (uv_run(h->loop, UV_RUN_ONCE) == 0 && !t->done) {
            fprintf(stderr, "quantcoach: %s: the script is waiting on nothing that can wake it\n", path);
            t->script_status = 1;
            break;
        }
    }
    *status = t->script_status;
    task_release(t, 0);
    return 0;
}
