/* qc.audio: hands an accepted ingest WebSocket to the C track pipeline (runtime/audio/ingest.c).
 * After qc.audio.ingest returns, no Lua runs for that connection's messages. */
#define _POSIX_C_SOURCE 200809L /* uv.h needs pthread_rwlock_t */
#include "audio/ingest.h"
#include "audio/latency.h"

#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "../runtime/host/bindings.h"
#include "../runtime/host/host.h"

static const char *field_string(lua_State *L, int t, const char *name, int required) {
    lua_getfield(L, t, name);
    const char *s = lua_tostring(L, -1);
    if (!s && required) luaL_error(L, "qc.audio.ingest: info.%s must be a string", name);
    lua_pop(L, 1); /* the string stays alive in the table */
    return s ? s : "";
}

static lua_Number field_number(lua_State *L, int t, const char *name, lua_Number def) {
    lua_getfield(L, t, name);
    int isnum;
    lua_Number v = lua_tonumberx(L, -1, &isnum);
    int present = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (present && !isnum) luaL_error(L, "qc.audio.ingest: info.%s must be a number", name);
    return present ? v : def;
}

/* qc.audio.ingest(req, info) -> true | nil, err, code. info = {room, identity, role, track,
 * rate, channels, clock_offset}. Accepts req's WebSocket upgrade and feeds its audio to a
 * track of the process's STT engine; the request's task no longer answers it. code says
 * who answers after a nil: ANSWERED (a JSON error was sent already), or NO_ENGINE (this
 * process runs none) and NOT_TAKEN (not an upgrade, or already answered): the caller. */
static int l_ingest(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    qc_ingest_info info;
    info.room = field_string(L, 2, "room", 1);
    info.identity = field_string(L, 2, "identity", 1);
    info.track = field_string(L, 2, "track", 1);
    info.role = field_string(L, 2, "role", 0);
    lua_Number rate = field_number(L, 2, "rate", 48000), channels = field_number(L, 2, "channels", 2);
    luaL_argcheck(L, rate >= 1 && rate <= 1e6, 2, "info.rate out of range");
    luaL_argcheck(L, channels >= 1 && channels <= 64, 2, "info.channels out of range");
    info.rate = (unsigned)rate;
    info.channels = (unsigned)channels;
    info.clock_offset = field_number(L, 2, "clock_offset", 0);
    qc_ingest_hub *hub = qc_ingest_hub_default();
    if (!hub) {
        lua_pushnil(L);
        lua_pushliteral(L, "qc.audio: no STT engine in this process (ingest runs in `quantcoach serve`)");
        lua_pushliteral(L, "NO_ENGINE");
        return 3;
    }
    qc_http_exchange *ex = qc_host_take_exchange(L, 1);
    if (!ex) {
        lua_pushnil(L);
        lua_pushliteral(L, "qc.audio: the request cannot be taken over (not a WebSocket upgrade, or already answered)");
        lua_pushliteral(L, "NOT_TAKEN");
        return 3;
    }
    char err[256];
    if (qc_ingest_start(hub, ex, &info, err, sizeof err) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushliteral(L, "ANSWERED");
        return 3;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

/* qc.audio.stats() -> {tracks, connections, accepted, bytes_in, frames_in, dropped,
 * closed_bad_input, p50_added_us, p99_added_us, max_added_us, p99_added_oncpu_us, p99_turn_us,
 * turns, offcpu_turns}; zeros where no engine runs. The latencies are over the last 10 to
 * 20 s (audio/latency.h). */
static int l_stats(lua_State *L) {
    qc_ingest_stats st;
    qc_ingest_hub_stats(qc_ingest_hub_default(), &st);
    qc_latency_stats lat;
    qc_latency_get(&lat);
    lua_createtable(L, 0, 14);
    set_int(L, "p50_added_us", (uint64_t)qc_latency_quantile(lat.buckets, lat.count, 0.5));
    set_int(L, "p99_added_us", (uint64_t)qc_latency_quantile(lat.buckets, lat.count, 0.99));
    set_int(L, "max_added_us", lat.max_ns / 1000);
    set_int(L, "p99_added_oncpu_us", (uint64_t)qc_latency_quantile(lat.oncpu_buckets, lat.oncpu_count, 0.99));
    set_int(L, "p99_turn_us", (uint64_t)qc_latency_quantile(lat.turn_buckets, lat.turns, 0.99));
    set_int(L, "turns", lat.turns);
    set_int(L, "offcpu_turns", lat.offcpu_turns);
    set_int(L, "tracks", st.tracks);
    set_int(L, "connections", st.connections);
    set_int(L, "accepted", st.accepted);
    set_int(L, "bytes_in", st.bytes_in);
    set_int(L, "frames_in", st.frames_in);
    set_int(L, "dropped", st.dropped);
    set_int(L, "closed_bad_input", st.closed_bad_input);
    return 1;
}

int luaopen_qc_audio(lua_State *L) {
    static const luaL_Reg fns[] = {{"ingest", l_ingest}, {"stats", l_stats}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
