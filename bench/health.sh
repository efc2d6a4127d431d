#!/usr/bin/env bash
# GET /health under wrk: our server against Node's node:http and a bare libwebsockets server
# (on a foreign libuv loop and on lws' own poll loop). The figure that matters is CPU per
# request, read from /proc/PID/stat around the wrk run; see bench/README.md for why.
#   bench/health.sh                      DURATION=10 ROUNDS=2 CONNECTIONS=32 STRACE=0
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-1}
STRACE=${STRACE:-0}
SERVERS=(ours node lws-uv lws-poll)

die() { echo "health.sh: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk not found (apt-get install -y wrk)"
command -v node >/dev/null || die "node not found"

# ---- build and peers ----------------------------------------------------------------------
[[ -f $BUILD/CMakeCache.txt ]] || cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j2 --target quantcoach bench_bare_lws >/dev/null || die "build failed"
[[ -d bench/peers/node_modules ]] || npm ci --prefix bench/peers --no-audit --no-fund >/dev/null

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

# Starts server $1 in the background; sets SERVER_PID and PORT.
start_server() {
    local name=$1 out=$TMP/$1.out log=$TMP/$1.log
    : >"$out"; : >"$log"
    case $name in
    ours)
        mkdir -p "$TMP/data"
        QC_ENV_FILE=/nonexistent QC_DATA="$TMP/data" \
            "$BUILD/quantcoach" serve --listen 127.0.0.1:0 </dev/null >"$out" 2>"$log" &
        ;;
    node) node bench/peers/node_health.js --port 0 </dev/null >"$out" 2>"$log" & ;;
    lws-uv) "$BUILD/bench_bare_lws" --uv --port 0 </dev/null >"$out" 2>"$log" & ;;
    lws-poll) "$BUILD/bench_bare_lws" --port 0 </dev/null >"$out" 2>"$log" & ;;
    esac
    SERVER_PID=$!
    PORT=
    for _ in $(seq 100); do
        if [[ $name == ours ]]; then
            PORT=$(sed -n 's/.*server listening .*port=\([0-9]*\).*/\1/p' "$log" | head -n1)
        else
            PORT=$(sed -n 's/^listening \([0-9]*\)$/\1/p' "$out" | head -n1)
        fi
        [[ -n $PORT ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $PORT ]] || { cat "$log" >&2; die "$name did not start"; }
    curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 ||
        wrk -t1 -c1 -d1s "http://127.0.0.1:$PORT/health" >/dev/null # curl may be missing
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

TCK=$(getconf CLK_TCK)
declare -A RPS P99 CPU # key "server round" -> figure

measure() {
    local name=$1 round=$2 out=$TMP/wrk.$1.$2
    start_server "$name"
    wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:$PORT/health" >/dev/null
    local t0 t1
    t0=$(cpu_ticks "$SERVER_PID")
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$PORT/health" >"$out"
    if ! t1=$(cpu_ticks "$SERVER_PID" 2>/dev/null); then
        # Died under load: say so, show its last log lines, and leave this round out of the medians.
        echo "warning: $name round $round: server exited during the run; last log lines:" >&2
        grep -v ' request ' "$TMP/$name.log" | tail -n 5 | sed 's/^/    /' >&2
        wait "$SERVER_PID" 2>/dev/null || echo "    exit status $?" >&2
        SERVER_PID=
        return 0
    fi
    stop_server
    local reqs
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    [[ ${reqs:-0} -gt 0 ]] || die "$name: wrk completed no requests"
    if grep -qE 'Non-2xx|Socket errors' "$out"; then
        echo "warning: $name round $round: $(grep -E 'Non-2xx|Socket errors' "$out" | tr -s ' ')" >&2
    fi
    RPS[$name $round]=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$out")
    P99[$name $round]=$(p99_ms "$out")
    CPU[$name $round]=$(awk -v d=$((t1 - t0)) -v t="$TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d * 1e6 / t / n }')
    printf '  round %d %-9s %8s req/s  p99 %7s ms  %6s us CPU/req\n' "$round" "$name" \
        "${RPS[$name $round]}" "${P99[$name $round]}" "${CPU[$name $round]}" >&2
}

median() { tr ' ' '\n' | sort -g | awk '{ a[NR] = $1 } END { printf "%s", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain -- runtime bindings scripts bench CMakeLists.txt 2>/dev/null) ]] || COMMIT+="+dirty"
echo "GET /health: wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, $(nproc) cores, $(date -u +%F), commit $COMMIT" >&2
# Interleave: round r runs every server once, in an order rotated by r, so slow drifts of a
# noisy machine fall on all servers alike.
for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < ${#SERVERS[@]}; i++)); do
        measure "${SERVERS[$(((i + r - 1) % ${#SERVERS[@]}))]}" "$r"
    done
done

declare -A MRPS MP99 MCPU
for s in "${SERVERS[@]}"; do
    rps='' p99='' cpu=''
    for ((r = 1; r <= ROUNDS; r++)); do
        [[ -n ${CPU[$s $r]:-} ]] || continue
        rps+="${RPS[$s $r]} " p99+="${P99[$s $r]} " cpu+="${CPU[$s $r]} "
    done
    [[ -n $cpu ]] || die "$s: no round completed"
    MRPS[$s]=$(median <<<"${rps% }") MP99[$s]=$(median <<<"${p99% }") MCPU[$s]=$(median <<<"${cpu% }")
done

echo
printf '| %-8s | %8s | %11s | %14s | %14s |\n' server 'req/s' 'p99 (ms)' 'CPU µs/req' 'vs Node (CPU)'
printf '| %-8s | %8s | %11s | %13s | %14s |\n' --- ---: ---: ---: ---:
for s in "${SERVERS[@]}"; do
    ratio=$(awk -v n="${MCPU[node]}" -v c="${MCPU[$s]}" 'BEGIN { printf "%.2fx", n / c }')
    printf '| %-8s | %8.0f | %11.2f | %13.1f | %14s |\n' "$s" "${MRPS[$s]}" "${MP99[$s]}" "${MCPU[$s]}" "$ratio"
done
echo "(medians of the completed rounds out of $ROUNDS; 'vs Node' = Node's CPU per request / this server's: 2x = half the CPU)"

# ---- optional: syscalls per request for ours ------------------------------------------------
if [[ $STRACE == 1 ]]; then
    if ! command -v strace >/dev/null; then
        echo "STRACE=1 but strace is not installed; skipped" >&2
        exit 0
    fi
    start_server ours
    strace -c -f -p "$SERVER_PID" -o "$TMP/strace" 2>/dev/null &
    STRACE_PID=$!
    sleep 0.5
    wrk -t1 -c"$CONNECTIONS" -d3s "http://127.0.0.1:$PORT/health" >"$TMP/wrk.strace"
    kill -INT "$STRACE_PID"
    wait "$STRACE_PID" 2>/dev/null || true
    stop_server
    reqs=$(awk '/requests in/ { print $1 }' "$TMP/wrk.strace")
    echo
    echo "ours under strace -c -f ($reqs requests; strace slows the server, counts only):"
    awk -v n="$reqs" '$1 ~ /^[0-9.]+$/ && NF >= 5 {
        calls = $4; name = $NF
        if (name == "total") total = calls; else if (calls / n >= 0.05) printf "  %-14s %6.2f per request\n", name, calls / n
    } END { printf "  %-14s %6.2f per request\n", "total", total / n }' "$TMP/strace"
fi
