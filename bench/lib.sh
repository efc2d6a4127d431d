# shellcheck shell=bash
# Sourced by bench/*.sh after `set -euo pipefail`; not run by itself. On sourcing it moves to the
# repository root and sets ROOT, BUILD, TMP (removed on exit) and the exit traps, which also stop
# the server in SERVER_PID. The rest is functions and settings for the wrk benchmarks
# (bench/health.sh, bench/tokens.sh), whose method bench/README.md describes.
#
# A wrk benchmark sets SERVERS, URL_PATH, WRK_ARGS (extra wrk arguments, e.g. -s post.lua),
# NON_2XX (warn: a warning; void: the run is void, exit 1) and ROUND_FORMAT (the printf line shown
# per round), defines launch_server NAME OUT LOG (start NAME in the background, stdout to OUT and
# stderr to LOG; `ours` through launch_ours) and probe_server NAME (check one request once PORT is
# known), then calls run_rounds "REQUEST" and prints its table from MRPS, MP99 and MCPU.
[[ ${BASH_SOURCE[0]} != "$0" ]] || { echo "bench/lib.sh is sourced by the bench/*.sh scripts, not run" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}

die() { echo "${0##*/}: $*" >&2; exit 1; }

# Dies unless every command named is on PATH, saying how to install the missing one.
need() {
    local cmd hint
    for cmd; do
        case $cmd in wrk | curl) hint=" (apt-get install -y $cmd)" ;; *) hint= ;; esac
        command -v "$cmd" >/dev/null || die "$cmd not found$hint"
    done
}

# Configures $BUILD when it is not yet, then builds the targets named.
build() {
    [[ -f $BUILD/CMakeCache.txt ]] || cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD" -j2 --target "$@" >/dev/null || die "build failed"
}

# "2 cores, 2026-11-23, commit abc1234" (+dirty when the tree differs from it where it counts).
machine_line() {
    local commit
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -z $(git status --porcelain -- runtime bindings scripts bench CMakeLists.txt 2>/dev/null) ]] || commit+="+dirty"
    echo "$(nproc) cores, $(date -u +%F), commit $commit"
}

TMP=$(mktemp -d)
SERVER_PID=
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
cleanup() { stop_server; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to 10 s for process $1 to write its port into file $2, which the sed expression $3
# prints; sets PORT. Fails when the process exits first or the time runs out.
await_port() {
    PORT=
    for _ in $(seq 100); do
        PORT=$(sed -n "$3" "$2" | head -n1)
        [[ -n $PORT ]] && break
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $PORT ]]
}

# ---- wrk benchmarks -------------------------------------------------------------------------
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-1}
WRK_ARGS=()
TCK=$(getconf CLK_TCK)
declare -A RPS P99 CPU       # key "server round" -> figure
declare -A MRPS MP99 MCPU    # key server -> median over its completed rounds

# Our server on an ephemeral port with an empty environment; data in $TMP/data.
launch_ours() {
    mkdir -p "$TMP/data"
    QC_ENV_FILE=/nonexistent QC_DATA="$TMP/data" \
        "$BUILD/quantcoach" serve --listen 127.0.0.1:0 </dev/null >"$1" 2>"$2" &
}

# Starts server $1 through the script's launch_server; sets SERVER_PID and PORT (ours logs its
# port, the peers print "listening PORT"), then has probe_server check that it answers.
start_server() {
    local name=$1 out=$TMP/$1.out log=$TMP/$1.log
    : >"$out"; : >"$log"
    launch_server "$name" "$out" "$log"
    SERVER_PID=$!
    local from=$out expr='s/^listening \([0-9]*\)$/\1/p'
    [[ $name != ours ]] || from=$log expr='s/.*server listening .*port=\([0-9]*\).*/\1/p'
    await_port "$SERVER_PID" "$from" "$expr" || { cat "$log" >&2; die "$name did not start"; }
    probe_server "$name"
}

# utime + stime of the whole process (every thread), in clock ticks. Field 2 may hold spaces,
# so count fields after the closing parenthesis: state is the 1st there, utime and stime the
# 12th and 13th. Fails for a process that is gone or a zombie (its times read as zero).
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat") || return 1
    stat=${stat##*) }
    awk '$1 == "Z" || $1 == "X" { exit 1 } { print $12 + $13 }' <<<"$stat"
}

# p99 from wrk's --latency table, in milliseconds.
p99_ms() {
    awk '$1 == "99%" {
        v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : 1
        printf "%.3f", v * f }' "$1"
}

median() { tr ' ' '\n' | sort -g | awk '{ a[NR] = $1 } END { printf "%s", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# One round of server $1: start, warm up, CPU ticks around the measured wrk run, stop; records
# RPS, P99 and CPU under "$1 $2".
measure() {
    local name=$1 round=$2 out=$TMP/wrk.$1.$2
    start_server "$name"
    local url=http://127.0.0.1:$PORT$URL_PATH
    wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" ${WRK_ARGS[@]+"${WRK_ARGS[@]}"} "$url" >"$out.warm"
    local t0 t1
    t0=$(cpu_ticks "$SERVER_PID")
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency ${WRK_ARGS[@]+"${WRK_ARGS[@]}"} "$url" >"$out"
    if ! t1=$(cpu_ticks "$SERVER_PID" 2>/dev/null); then
        # Died under load: say so, show its last log lines, and leave this round out of the medians.
        echo "warning: $name round $round: server exited during the run; last log lines:" >&2
        grep -v ' request ' "$TMP/$name.log" | tail -n 5 | sed 's/^/    /' >&2
        wait "$SERVER_PID" 2>/dev/null || echo "    exit status $?" >&2
        SERVER_PID=
        return 0
    fi
    stop_server
    local warn='Non-2xx|Socket errors'
    if [[ $NON_2XX == void ]]; then
        if grep -q 'Non-2xx' "$out" "$out.warm"; then
            grep -h 'Non-2xx' "$out.warm" "$out" | sed 's/^/    /' >&2
            die "$name round $round: answers other than 2xx; the run is void"
        fi
        warn='Socket errors'
    fi
    local reqs
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    [[ ${reqs:-0} -gt 0 ]] || die "$name: wrk completed no requests"
    if grep -qE "$warn" "$out"; then
        echo "warning: $name round $round: $(grep -E "$warn" "$out" | tr -s ' ')" >&2
    fi
    RPS[$name $round]=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$out")
    P99[$name $round]=$(p99_ms "$out")
    CPU[$name $round]=$(awk -v d=$((t1 - t0)) -v t="$TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d * 1e6 / t / n }')
    # shellcheck disable=SC2059 # the script's own format
    printf "$ROUND_FORMAT" "$round" "$name" "${RPS[$name $round]}" "${P99[$name $round]}" "${CPU[$name $round]}" >&2
}

# Prints the heading for request $1, runs ROUNDS rounds of every server, then sets the medians.
# Interleaved: round r runs every server once, in an order rotated by r, so slow drifts of a noisy
# machine fall on all servers alike.
# shellcheck disable=SC2034 # MRPS, MP99 and MCPU are read by the scripts' tables
run_rounds() {
    echo "$1: wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, $(machine_line)" >&2
    local r i s rps p99 cpu
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((i = 0; i < ${#SERVERS[@]}; i++)); do
            measure "${SERVERS[$(((i + r - 1) % ${#SERVERS[@]}))]}" "$r"
        done
    done
    for s in "${SERVERS[@]}"; do
        rps='' p99='' cpu=''
        for ((r = 1; r <= ROUNDS; r++)); do
            [[ -n ${CPU[$s $r]:-} ]] || continue
            rps+="${RPS[$s $r]} " p99+="${P99[$s $r]} " cpu+="${CPU[$s $r]} "
        done
        [[ -n $cpu ]] || die "$s: no round completed"
        MRPS[$s]=$(median <<<"${rps% }") MP99[$s]=$(median <<<"${p99% }") MCPU[$s]=$(median <<<"${cpu% }")
    done
}
