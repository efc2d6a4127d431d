/* qc.stt: transcript events to Lua. Every result of every track becomes a task running the
 * one handler registered with qc.stt.on_event(fn), with times on the interview clock. Lua
 * never sees audio. Partials are coalesced per track: while a partial's task has not run
 * yet, a newer partial of that track replaces its event in place (latest wins), so a slow
 * loop turn costs one task per track, not one per partial. */
#define _POSIX_C_SOURCE 200809L /* uv.h needs pthread_rwlock_t */
#include "audio/ingest.h"

#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "../runtime/host/bindings.h"
#include "../runtime/host/host.h"
#include "../runtime/log.h"

/* Registry keys (addresses), process-wide: the handler and the pending partials outlive
 * any policy generation. */
static char HANDLER_KEY, PENDING_KEY, RUNNER_KEY;

static qc_host *the_host;
static lua_State *main_L;
static unsigned long long events_dropped;

/* The runner a task starts with: clears the track's pending partial (its event is final
 * now: later partials make a task of their own), then calls the handler. Lua, so the
 * handler may yield. */
static const char RUNNER[] =
    "local pending, running = ...\n"
    "return function(key, ev, fn)\n"
    "  local _ <close> = running\n"
    "  if key and pending[key] == ev then pending[key] = nil end\n"
    "  return fn(ev)\n"
    "end\n";

/* Event tasks spawned and not yet ended. A graceful stop waits for them: on PostgreSQL the
 * final an ingest track flushes at its end is still being committed when the track is gone. */
static size_t events_running;

size_t qc_stt_events_running(void) { return events_running; }

/* __close of the runner's guard: runs when the handler returns, raises, or its task is
 * closed unfinished (the host going). */
static int event_ended(lua_State *L) {
    (void)L;
    if (events_running) events_running--;
    return 0;
}

static void push_time(lua_State *L, const char *k, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

/* Whose audio an event is about: the fields every event of a track carries, set in the table
 * at the top of L. */
static void fill_source(lua_State *L, const qc_ingest_info *info) {
    lua_pushstring(L, info->room);
    lua_setfield(L, -2, "room");
    lua_pushstring(L, info->identity);
    lua_setfield(L, -2, "identity");
    lua_pushstring(L, info->role);
    lua_setfield(L, -2, "role");
    lua_pushstring(L, info->track);
    lua_setfield(L, -2, "track");
}

/* Fills the event table at the top of L from a result. */
static void fill_event(lua_State *L, const qc_ingest_info *info, const qc_stt_result *r) {
    fill_source(L, info);
    lua_pushboolean(L, r->final);
    lua_setfield(L, -2, "final");
    lua_pushstring(L, r->text ? r->text : "");
    lua_setfield(L, -2, "text");
    push_time(L, "start", info->clock_offset + r->start_s);
    push_time(L, "end", info->clock_offset + r->end_s);
    lua_createtable(L, (int)r->nwords, 0);
    for (size_t i = 0; i < r->nwords; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, r->words[i].text ? r->words[i].text : "");
        lua_setfield(L, -2, "text");
        push_time(L, "start", info->clock_offset + r->words[i].start_s);
        push_time(L, "end", info->clock_offset + r->words[i].end_s);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "words");
}

/* Spawns runner(key, ev, handler): ev at the top of L, key below it (or nil). */
static int spawn_event(lua_State *L) {
    int ev = lua_gettop(L), key = ev - 1;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &RUNNER_KEY);
    int first = lua_gettop(L);
    lua_pushvalue(L, key);
    lua_pushvalue(L, ev);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &HANDLER_KEY);
    if (qc_host_spawn(the_host, L, first) < 0) {
        lua_settop(L, first - 1);
        return -1;
    }
    events_running++;
    return 0;
}

/* In a protected call on the main thread: upvalue-free, arguments as light userdata. */
static int deliver_p(lua_State *L) {
    const qc_ingest_info *info = lua_touserdata(L, 1);
    const qc_stt_result *r = lua_touserdata(L, 2);
    lua_settop(L, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &PENDING_KEY); /* 1: pending */
    lua_pushfstring(L, "%s\n%s", info->room, info->track); /* 2: the track's key */
    if (!r->final) {
        lua_pushvalue(L, 2);
        if (lua_rawget(L, 1) == LUA_TTABLE) { /* a partial's task has not run: latest wins */
            fill_event(L, info, r);
            return 0;
        }
        lua_pop(L, 1);
        lua_createtable(L, 0, 10);
        fill_event(L, info, r);
        lua_pushvalue(L, 2);
        lua_pushvalue(L, 3);
        lua_rawset(L, 1);
        if (spawn_event(L) < 0) {
            lua_pushvalue(L, 2);
            lua_pushnil(L);
            lua_rawset(L, 1);
            return luaL_error(L, "cannot start a task");
        }
        return 0;
    }
    /* A final: partials after it belong to the next utterance and get a task of their own. */
    lua_pushvalue(L, 2);
    lua_pushnil(L);
    lua_rawset(L, 1);
    lua_pushnil(L); /* no key: nothing pending to clear */
    lua_createtable(L, 0, 10);
    fill_event(L, info, r);
    if (spawn_event(L) < 0) return luaL_error(L, "cannot start a task");
    return 0;
}

/* A stream failed (auth, quota): an event of its own, {state = "failed", detail, ...}. */
static int deliver_state_p(lua_State *L) {
    const qc_ingest_info *info = lua_touserdata(L, 1);
    const char *detail = lua_touserdata(L, 2);
    lua_settop(L, 0);
    lua_pushnil(L);
    lua_createtable(L, 0, 8);
    fill_source(L, info);
    lua_pushliteral(L, "failed");
    lua_setfield(L, -2, "state");
    lua_pushstring(L, detail ? detail : "");
    lua_setfield(L, -2, "detail");
    if (spawn_event(L) < 0) return luaL_error(L, "cannot start a task");
    return 0;
}

static int have_handler(void) {
    if (!main_L) return 0;
    int t = lua_rawgetp(main_L, LUA_REGISTRYINDEX, &HANDLER_KEY);
    lua_pop(main_L, 1);
    return t == LUA_TFUNCTION;
}

static void run_protected(lua_CFunction f, const qc_ingest_info *info, void *arg) {
    if (!have_handler()) {
        events_dropped++;
        return;
    }
    int top = lua_gettop(main_L);
    lua_pushcfunction(main_L, f);
    lua_pushlightuserdata(main_L, (void *)info);
    lua_pushlightuserdata(main_L, arg);
    if (lua_pcall(main_L, 2, 0, 0) != LUA_OK) {
        events_dropped++;
        qc_log(QC_LOG_ERROR, "stt", "transcript event lost", " room=%s track=%s error=\"%s\"", info->room,
               info->track, lua_tostring(main_L, -1) ? lua_tostring(main_L, -1) : "?");
    }
    lua_settop(main_L, top);
}

static void sink_result(void *ud, const qc_ingest_info *info, const qc_stt_result *r) {
    (void)ud;
    run_protected(deliver_p, info, (void *)r);
}

static void sink_state(void *ud, const qc_ingest_info *info, qc_stt_state state, const char *detail) {
    (void)ud;
    if (state == QC_STT_FAILED) run_protected(deliver_state_p, info, (void *)detail);
}

/* qc.stt.on_event(fn): the one handler of every transcript event (nil removes it). The
 * last registration wins: each policy generation's qc.transcripts registers its own. */
static int l_on_event(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &HANDLER_KEY);
    return 0;
}

/* qc.stt.engine() -> {name, state, streams, samples_in, results_final, results_partial,
 * reconnects, replayed_s, dropped_samples, events_dropped}, or nil when this process runs
 * no engine (scripts). */
static int l_engine(lua_State *L) {
    qc_ingest_hub *hub = qc_ingest_hub_default();
    qc_stt_engine *e = qc_ingest_hub_engine(hub);
    if (!e) {
        if (!hub) {
            lua_pushnil(L);
            return 1;
        }
        const char *name, *why = qc_ingest_hub_engine_error(hub, &name);
        lua_createtable(L, 0, 3);
        lua_pushstring(L, name);
        lua_setfield(L, -2, "name");
        lua_pushfstring(L, "failed: %s", why ? why : "?");
        lua_setfield(L, -2, "state");
        lua_pushinteger(L, 0);
        lua_setfield(L, -2, "streams");
        return 1;
    }
    qc_stt_stats st;
    memset(&st, 0, sizeof st);
    qc_stt_engine_stats(e, &st);
    lua_createtable(L, 0, 10);
    lua_pushstring(L, st.name ? st.name : "?");
    lua_setfield(L, -2, "name");
    lua_pushstring(L, st.state ? st.state : "?");
    lua_setfield(L, -2, "state");
    lua_pushinteger(L, (lua_Integer)st.streams);
    lua_setfield(L, -2, "streams");
    lua_pushinteger(L, (lua_Integer)st.samples_in);
    lua_setfield(L, -2, "samples_in");
    lua_pushinteger(L, (lua_Integer)st.results_final);
    lua_setfield(L, -2, "results_final");
    lua_pushinteger(L, (lua_Integer)st.results_partial);
    lua_setfield(L, -2, "results_partial");
    lua_pushinteger(L, (lua_Integer)st.reconnects);
    lua_setfield(L, -2, "reconnects");
    lua_pushnumber(L, st.replayed_s);
    lua_setfield(L, -2, "replayed_s");
    lua_pushinteger(L, (lua_Integer)st.dropped_samples);
    lua_setfield(L, -2, "dropped_samples");
    lua_pushinteger(L, (lua_Integer)events_dropped);
    lua_setfield(L, -2, "events_dropped");
    return 1;
}

int luaopen_qc_stt(lua_State *L) {
    static const luaL_Reg fns[] = {{"on_event", l_on_event}, {"engine", l_engine}, {NULL, NULL}};
    the_host = qc_bindings_host(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    main_L = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &PENDING_KEY);
    if (luaL_loadbufferx(L, RUNNER, sizeof RUNNER - 1, "=qc.stt", "t") != LUA_OK) return lua_error(L);
    lua_insert(L, -2);
    /* The guard every runner closes: a table whose __close counts the event as ended. */
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, event_ended);
    lua_setfield(L, -2, "__close");
    lua_setmetatable(L, -2);
    lua_call(L, 2, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &RUNNER_KEY);
    static const qc_ingest_sink sink = {.on_result = sink_result, .on_state = sink_state};
    qc_ingest_hub *hub = qc_ingest_hub_default();
    if (hub) qc_ingest_hub_set_sink(hub, &sink, NULL);
    luaL_newlib(L, fns);
    return 1;
}
