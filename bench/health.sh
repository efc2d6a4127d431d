#!/usr/bin/env bash
# GET /health under wrk: our server against Node's node:http and a bare libwebsockets server
# (on a foreign libuv loop and on lws' own poll loop). The figure that matters is CPU per
# request, read from /proc/PID/stat around the wrk run; see bench/README.md for why.
#   bench/health.sh                      DURATION=10 ROUNDS=2 CONNECTIONS=32 STRACE=0
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STRACE=${STRACE:-0}
SERVERS=(ours node lws-uv lws-poll)
URL_PATH=/health
NON_2XX=warn
ROUND_FORMAT='  round %d %-9s %8s req/s  p99 %7s ms  %6s us CPU/req\n'

need wrk node

# ---- build and peers ----------------------------------------------------------------------
build quantcoach bench_bare_lws
[[ -d bench/peers/node_modules ]] || npm ci --prefix bench/peers --no-audit --no-fund >/dev/null

launch_server() {
    case $1 in
    ours) launch_ours "$2" "$3" ;;
    node) node bench/peers/node_health.js --port 0 </dev/null >"$2" 2>"$3" & ;;
    lws-uv) "$BUILD/bench_bare_lws" --uv --port 0 </dev/null >"$2" 2>"$3" & ;;
    lws-poll) "$BUILD/bench_bare_lws" --port 0 </dev/null >"$2" 2>"$3" & ;;
    esac
}

probe_server() {
    curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 ||
        wrk -t1 -c1 -d1s "http://127.0.0.1:$PORT/health" >/dev/null # curl may be missing
}

run_rounds "GET /health"

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
