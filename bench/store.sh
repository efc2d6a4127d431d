#!/usr/bin/env bash
# The store's two backends side by side: our server on SQLite (the embedded default) against the
# same server on PostgreSQL (QC_STORE_URL, a throwaway cluster from spec/support/pg.sh), for
#   - POST /tokens/generate (each issued token is a deferred insert), and
#   - POST /bench/final: one transcript final through transcripts.on_event, the path a final
#     takes after STT (numbered, stored, announced, windows and analytics), on 64 rooms;
# then, with two instances on one PostgreSQL database, the delay from a final committed on A to
# its delivery on B's live socket (p50, p99).
# Same method as bench/tokens.sh (bench/lib.sh): CPU per request from /proc around the wrk run,
# interleaved rounds, medians. For PostgreSQL the CPU of every process of its cluster (postmaster,
# backends, WAL writer, checkpointer...) over the run is counted too: that is what a request costs.
#   bench/store.sh                       DURATION=10 ROUNDS=3 CONNECTIONS=32 FINALS=2000 RATE=200
#   PARTS="tokens finals delay"          which parts to run (the default: all three)
set -euo pipefail
: "${ROUNDS:=3}"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PG=$ROOT/spec/support/pg.sh
KEY=bench-key
ROUND_FORMAT='  round %d %-8s %8s req/s  p99 %8s ms  %7s us CPU/req (server and postgres)\n'
NON_2XX=void
FINALS=${FINALS:-2000}
PARTS=" ${PARTS:-tokens finals delay} "
RATE=${RATE:-200}

need wrk node curl psql

build quantcoach

# The cluster lives in $TMP, which the postgres user must reach when we run as root.
chmod 711 "$TMP"
PGDIR=$TMP/pg
PGBASE=
B_PID=
cleanup_store() {
    stop_server
    [[ -z $B_PID ]] || { kill -TERM "$B_PID" 2>/dev/null || true; wait "$B_PID" 2>/dev/null || true; }
    [[ -z $PGBASE ]] || sh "$PG" stop "$PGDIR" --rm >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup_store EXIT
PGBASE=$(sh "$PG" start "$PGDIR")
PGVERSION=$(psql -X -At -d "$PGBASE" -c 'SHOW server_version')
PGCONF=$(psql -X -At -d "$PGBASE" -c "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'max_connections', 'shared_buffers')")
# Called in $(...) subshells: the counter lives in a file.
echo 0 >"$TMP/dbn"
fresh_database() {
    local DBN
    DBN=$(($(<"$TMP/dbn") + 1))
    echo "$DBN" >"$TMP/dbn"
    psql -X -q -v ON_ERROR_STOP=1 -d "$PGBASE" -c "CREATE DATABASE bench_$DBN" >/dev/null
    echo "${PGBASE%/postgres}/bench_$DBN"
}

# A copy of the shipped scripts and policies with one more route: POST /bench/final commits the
# final in its body as STT's result would be (transcripts.on_event) and answers with the wall
# clock just before and just after that call (the commit is in between), for the A->B delay.
mkdir -p "$TMP/policies"
cp -r scripts "$TMP/scripts"
cp policies/*.lua "$TMP/policies/"
cat >"$TMP/scripts/lib/qc/handlers/bench_final.lua" <<'EOF'
local transcripts = require "qc.transcripts"
local time = require "qc.time"
return {
  final = function(req)
    local j = req.json
    local before = time.now()
    transcripts.on_event { room = j.room, identity = "cand-1", role = "candidate", track = "TR_bench", final = true,
      text = j.text, start = j.t, ["end"] = j.t + 1.5, words = {} }
    return 200, nil, { room = j.room, before = before, after = time.now() }
  end,
}
EOF
awk '{ print } /^return \{$/ && !done { print "  { \"POST\", \"/bench/final\", require(\"qc.handlers.bench_final\").final },"; done = 1 }' \
    policies/routes.lua >"$TMP/policies/routes.lua"
grep -q '/bench/final' "$TMP/policies/routes.lua" || die "policies/routes.lua has no 'return {' line to add the route to"

# Ours on either backend: $STORE_URL empty for SQLite (a fresh data directory), a fresh database
# for PostgreSQL. Same settings otherwise.
launch_store() { # NAME OUT LOG [PORT]
    local store_url=
    rm -rf "$TMP/data-$1"
    mkdir -p "$TMP/data-$1"
    [[ $1 != pg* ]] || store_url=$(fresh_database)
    QC_ENV_FILE=/nonexistent QC_DATA="$TMP/data-$1" QC_STORE_URL=$store_url QC_API_KEYS=$KEY \
        QC_SCRIPTS="$TMP/scripts" QC_POLICIES="$TMP/policies" QC_STT_ENGINE=null \
        "$BUILD/quantcoach" serve --listen "127.0.0.1:${4:-0}" </dev/null >"$2" 2>"$3" &
}
launch_server() { launch_store "$1" "$2" "$3"; }

start_server() {
    local name=$1 out=$TMP/$1.out log=$TMP/$1.log
    : >"$out"; : >"$log"
    launch_server "$name" "$out" "$log"
    SERVER_PID=$!
    await_port "$SERVER_PID" "$log" 's/.*server listening .*port=\([0-9]*\).*/\1/p' || { cat "$log" >&2; die "$name did not start"; }
    probe_server "$name"
}

# CPU of the server process, plus, on a PostgreSQL round, of every process of the cluster (the
# postmaster and its children). A backend that ended during the run would take its CPU with it:
# the server's pool keeps its connections for the whole run, so none does.
eval "$(declare -f cpu_ticks | sed '1s/cpu_ticks/proc_ticks/')"
PG_POSTMASTER=$(head -n1 "$PGDIR/data/postmaster.pid")
pg_ticks() {
    local t=0 p c
    for p in "$PG_POSTMASTER" $(pgrep -P "$PG_POSTMASTER"); do
        c=$(proc_ticks "$p" 2>/dev/null) && t=$((t + c))
    done
    echo "$t"
}
CURRENT=
cpu_ticks() {
    local s p
    s=$(proc_ticks "$1") || return 1
    if [[ $CURRENT == pg ]]; then
        p=$(pg_ticks)
        echo "$p" >>"$TMP/pgticks.$CURRENT_ROUND"
        # What the run asked of PostgreSQL: WAL bytes, transactions (xact_commit: a read in
        # autocommit counts as one), client connections.
        psql -X -At -F ' ' -d "$PGBASE" -c "SELECT pg_current_wal_lsn() - '0/0',
            (SELECT sum(xact_commit) FROM pg_stat_database),
            (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')" >>"$TMP/pgstats.$CURRENT_ROUND"
        echo $((s + p))
    else
        echo "$s"
    fi
}
eval "$(declare -f measure | sed '1s/measure/measure_inner/')"
measure() {
    CURRENT=$1 CURRENT_ROUND=$BENCH.$2
    : >"$TMP/pgticks.$CURRENT_ROUND"
    : >"$TMP/pgstats.$CURRENT_ROUND"
    measure_inner "$@"
}

# WAL bytes and transactions per request, and client connections, of the pg rounds (medians).
pg_stats() {
    local r n wal= commits= conns=
    for ((r = 1; r <= ROUNDS; r++)); do
        [[ -s $TMP/pgstats.$BENCH.$r ]] || continue
        n=$(awk '/requests in/ { print $1 }' "$TMP/wrk.pg.$r")
        read -r w c k < <(awk -v n="$n" 'NR == 1 { w = $1; c = $2 } { W = $1; C = $2; K = $3 }
            END { printf "%.0f %.3f %d\n", (W - w) / n, (C - c) / n, K }' "$TMP/pgstats.$BENCH.$r")
        wal+="$w " commits+="$c " conns+="$k "
    done
    echo "$(median <<<"${wal% }") $(median <<<"${commits% }") $(median <<<"${conns% }")"
}

# The share of postgres in the CPU per request of the pg rounds: median over rounds, in µs.
pg_share() {
    local r vals=
    for ((r = 1; r <= ROUNDS; r++)); do
        [[ -s $TMP/pgticks.$BENCH.$r ]] || continue
        vals+=$(awk -v t="$TCK" -v n="$(awk '/requests in/ { print $1 }' "$TMP/wrk.pg.$r")" \
            'NR == 1 { a = $1 } { b = $1 } END { printf "%.2f ", (b - a) * 1e6 / t / n }' "$TMP/pgticks.$BENCH.$r")
    done
    median <<<"${vals% }"
}

SERVERS=(sqlite pg)
declare -A TABLE STATS
table_row() { # BENCH LABEL
    local pgpart ratio
    pgpart=$(pg_share)
    ratio=$(awk -v p="${MCPU[pg]}" -v s="${MCPU[sqlite]}" 'BEGIN { printf "%.2fx", p / s }')
    TABLE[$1]=$(printf '| %-22s | %9.0f | %9.2f | %9.1f | %9.0f | %9.2f | %9.1f (%s in postgres) | %s |' "$2" \
        "${MRPS[sqlite]}" "${MP99[sqlite]}" "${MCPU[sqlite]}" "${MRPS[pg]}" "${MP99[pg]}" "${MCPU[pg]}" "$pgpart" "$ratio")
    read -r w c k < <(pg_stats)
    STATS[$1]=$(printf '| %-22s | %9s | %9s | %9s |' "$2" "$w" "$c" "$((k - 1))")
    unset RPS P99 CPU MRPS MP99 MCPU
    declare -gA RPS P99 CPU MRPS MP99 MCPU
}

# ---- 1. tokens ----------------------------------------------------------------------------
if [[ $PARTS == *" tokens "* ]]; then
BENCH=tokens
BODY='{"room_name":"interview-7","participant_identity":"cand-42","participant_type":"candidate"}'
URL_PATH=/tokens/generate
cat >"$TMP/tokens.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.body = '$BODY'
EOF
WRK_ARGS=(-s "$TMP/tokens.lua")
probe_server() {
    local code
    code=$(curl -sS -o "$TMP/$1.first" -w '%{http_code}' -X POST "http://127.0.0.1:$PORT$URL_PATH" \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $KEY" -d "$BODY") || code=000
    [[ $code == 200 ]] || { cat "$TMP/$1.first" "$TMP/$1.log" >&2; die "$1: POST $URL_PATH answered $code"; }
}
run_rounds "POST /tokens/generate, SQLite against PostgreSQL $PGVERSION ($PGCONF)"
table_row tokens "POST /tokens/generate"
fi

# ---- 2. transcript finals -------------------------------------------------------------------
# 64 rooms, the connections' requests spread over them; each room's finals 2 s apart on its
# clock, 20 distinct words a final, so windows close and analytics run as in an interview.
if [[ $PARTS == *" finals "* ]]; then
BENCH=finals
URL_PATH=/bench/final
BODY='{"room":"bench-probe","text":"probe","t":0}'
cat >"$TMP/finals.lua" <<EOF
local n = 0
local words = { "i", "would", "price", "the", "option", "with", "a", "binomial", "tree", "and", "then",
  "check", "the", "greeks", "against", "black", "scholes", "for", "the", "hedge" }
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
request = function()
  n = n + 1
  local room = n % 64
  local t = math.floor(n / 64) * 2
  local body = string.format('{"room":"bench-%d","text":"%s %d","t":%d}', room, table.concat(words, " "), n, t)
  return wrk.format(nil, nil, nil, body)
end
EOF
WRK_ARGS=(-s "$TMP/finals.lua")
run_rounds "POST /bench/final (transcripts.on_event, 64 rooms), SQLite against PostgreSQL"
table_row finals "a final (64 rooms)"
fi

if [[ -n ${TABLE[*]} ]]; then
echo
echo "Store backends, $(machine_line); PostgreSQL $PGVERSION, $PGCONF"
printf '| %-22s | %9s | %9s | %9s | %9s | %9s | %s | %s |\n' request 'SQLite req/s' 'p99 ms' 'CPU µs/req' \
    'PG req/s' 'p99 ms' 'CPU µs/req (server + postgres)' 'PG/SQLite CPU'
printf '| %-22s | %9s | %9s | %9s | %9s | %9s | %s | %s |\n' --- ---: ---: ---: ---: ---: ---: ---:
for b in tokens finals; do [[ -z ${TABLE[$b]:-} ]] || echo "${TABLE[$b]}"; done
echo "(medians of $ROUNDS interleaved rounds, wrk -t1 -c$CONNECTIONS -d${DURATION}s; PG's CPU counts its server process and every postgres process)"
echo
printf '| %-22s | %9s | %9s | %9s |\n' "PostgreSQL, per request" 'WAL bytes' 'transactions' 'server connections'
printf '| %-22s | %9s | %9s | %9s |\n' --- ---: ---: ---:
for b in tokens finals; do [[ -z ${STATS[$b]:-} ]] || echo "${STATS[$b]}"; done
echo "(transactions: xact_commit of every database, reads included; the connection count leaves out the psql that reads it)"
fi

# ---- 3. A -> B live delay -------------------------------------------------------------------
# Two instances on one database: a live client on B, finals posted to A one at a time at RATE
# a second; each answer carries A's wall clock around the commit, each live message its
# arrival time on the same clock.
[[ $PARTS == *" delay "* ]] || exit 0
echo
url=$(fresh_database)
start_instance() { # NAME -> prints port
    local log=$TMP/$1.log
    QC_ENV_FILE=/nonexistent QC_DATA="$TMP/data-$1" QC_STORE_URL=$url QC_API_KEYS=$KEY \
        QC_SCRIPTS="$TMP/scripts" QC_POLICIES="$TMP/policies" QC_STT_ENGINE=null \
        "$BUILD/quantcoach" serve --listen 127.0.0.1:0 </dev/null >/dev/null 2>"$log" &
    echo $!
}
SERVER_PID=$(start_instance A)
await_port "$SERVER_PID" "$TMP/A.log" 's/.*server listening .*port=\([0-9]*\).*/\1/p' || { cat "$TMP/A.log" >&2; die "A did not start"; }
PORT_A=$PORT
B_PID=$(start_instance B)
await_port "$B_PID" "$TMP/B.log" 's/.*server listening .*port=\([0-9]*\).*/\1/p' || { cat "$TMP/B.log" >&2; die "B did not start"; }
PORT_B=$PORT
a0=$(proc_ticks "$SERVER_PID") b0=$(proc_ticks "$B_PID") p0=$(pg_ticks)
NODE_PATH=$ROOT/spec/support/node_modules node "$ROOT/bench/live_delay.js" --a "http://127.0.0.1:$PORT_A" \
    --b "ws://127.0.0.1:$PORT_B" --key "$KEY" --finals "$FINALS" --rate "$RATE" || echo "live delay: incomplete (see above)"
a1=$(proc_ticks "$SERVER_PID") b1=$(proc_ticks "$B_PID") p1=$(pg_ticks)
# What a final costs each side: A takes the request and commits (and owns the room, so it also
# runs windows and analytics); B is woken by the notification, reads the row and sends it.
awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v p=$((p1 - p0)) -v t="$TCK" -v n="$FINALS" 'BEGIN {
    printf "  CPU per final over the run: A %.0f us, B %.0f us, postgres %.0f us (clock ticks of %.0f ms: +-%.0f us)\n",
        a * 1e6 / t / n, b * 1e6 / t / n, p * 1e6 / t / n, 1000 / t, 1e6 / t / n }'
