#!/usr/bin/env bash
# POST /tokens/generate under wrk: our server against Node (node:http + livekit-server-sdk) and the
# seed's stack (FastAPI + PyJWT on uvicorn). Same method as bench/health.sh: CPU per request is read
# from /proc/PID/stat around the wrk run, rounds are interleaved, figures are medians.
#   bench/tokens.sh                      DURATION=10 ROUNDS=2 CONNECTIONS=32 FASTAPI_PEER=bench/peers/fastapi_tokens.py
# Goals: ours >= 2.5x Node and >= 15x FastAPI in CPU per request. Exits 1 when a server answered
# anything but 2xx; a goal not met is reported, not an error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-1}
GOAL_NODE=2.5
GOAL_FASTAPI=15
BODY='{"room_name":"interview-7","participant_identity":"cand-42","participant_type":"candidate"}'
PYTHON=/usr/bin/python3
FASTAPI_PEER=${FASTAPI_PEER:-bench/peers/fastapi_tokens.py}

die() { echo "tokens.sh: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk not found (apt-get install -y wrk)"
command -v node >/dev/null || die "node not found"
command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"

# ---- build and peers ----------------------------------------------------------------------
[[ -f $BUILD/CMakeCache.txt ]] || cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j2 --target quantcoach >/dev/null || die "build failed"
[[ -d bench/peers/node_modules ]] || npm ci --prefix bench/peers --no-audit --no-fund >/dev/null

SERVERS=(ours node)
if [[ -x $PYTHON ]] && "$PYTHON" -c 'import fastapi, uvicorn, jwt' 2>/dev/null; then
    SERVERS+=(fastapi)
else
    echo "tokens.sh: FastAPI peer skipped: needs $PYTHON with fastapi, uvicorn and PyJWT;" \
        "install with: sudo apt-get install -y python3-fastapi python3-uvicorn python3-jwt" >&2
fi

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

SCRIPT=$TMP/post.lua
cat >"$SCRIPT" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$BODY'
EOF

# Starts server $1 in the background; sets SERVER_PID and PORT; checks one request answers 200.
start_server() {
    local name=$1 out=$TMP/$1.out log=$TMP/$1.log
    : >"$out"; : >"$log"
    case $name in
    ours)
        rm -rf "$TMP/data"; mkdir -p "$TMP/data"
        QC_ENV_FILE=/nonexistent QC_DATA="$TMP/data" \
            "$BUILD/quantcoach" serve --listen 127.0.0.1:0 </dev/null >"$out" 2>"$log" &
        ;;
    node) node bench/peers/node_tokens.js --port 0 </dev/null >"$out" 2>"$log" & ;;
    fastapi) "$PYTHON" "$FASTAPI_PEER" --port 0 </dev/null >"$out" 2>"$log" & ;;
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
    local code
    code=$(curl -sS -o "$TMP/$name.first" -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/tokens/generate" \
        -H 'Content-Type: application/json' -d "$BODY") || code=000
    [[ $code == 200 ]] && grep -q '"token"' "$TMP/$name.first" ||
        { cat "$TMP/$name.first" "$log" >&2; die "$name: POST /tokens/generate answered $code, not 200 with a token"; }
}

# utime + stime of the whole process (every thread), in clock ticks (see bench/health.sh).
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
URL_PATH=/tokens/generate
declare -A RPS P99 CPU # key "server round" -> figure

measure() {
    local name=$1 round=$2 out=$TMP/wrk.$1.$2
    start_server "$name"
    wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$SCRIPT" "http://127.0.0.1:$PORT$URL_PATH" >"$out.warm"
    local t0 t1
    t0=$(cpu_ticks "$SERVER_PID")
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$SCRIPT" "http://127.0.0.1:$PORT$URL_PATH" >"$out"
    if ! t1=$(cpu_ticks "$SERVER_PID" 2>/dev/null); then
        echo "warning: $name round $round: server exited during the run; last log lines:" >&2
        grep -v ' request ' "$TMP/$name.log" | tail -n 5 | sed 's/^/    /' >&2
        wait "$SERVER_PID" 2>/dev/null || echo "    exit status $?" >&2
        SERVER_PID=
        return 0
    fi
    stop_server
    if grep -q 'Non-2xx' "$out" "$out.warm"; then
        grep -h 'Non-2xx' "$out.warm" "$out" | sed 's/^/    /' >&2
        die "$name round $round: answers other than 2xx; the run is void"
    fi
    local reqs
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    [[ ${reqs:-0} -gt 0 ]] || die "$name: wrk completed no requests"
    if grep -q 'Socket errors' "$out"; then
        echo "warning: $name round $round: $(grep 'Socket errors' "$out" | tr -s ' ')" >&2
    fi
    RPS[$name $round]=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$out")
    P99[$name $round]=$(p99_ms "$out")
    CPU[$name $round]=$(awk -v d=$((t1 - t0)) -v t="$TCK" -v n="$reqs" 'BEGIN { printf "%.2f", d * 1e6 / t / n }')
    printf '  round %d %-8s %8s req/s  p99 %8s ms  %7s us CPU/req\n' "$round" "$name" \
        "${RPS[$name $round]}" "${P99[$name $round]}" "${CPU[$name $round]}" >&2
}

median() { tr ' ' '\n' | sort -g | awk '{ a[NR] = $1 } END { printf "%s", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain -- runtime bindings scripts bench CMakeLists.txt 2>/dev/null) ]] || COMMIT+="+dirty"
echo "POST /tokens/generate: wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, $(nproc) cores, $(date -u +%F), commit $COMMIT" >&2
for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < ${#SERVERS[@]}; i++)); do
        measure "${SERVERS[$(((i + r - 1) % ${#SERVERS[@]}))]}" "$r"
    done
done

declare -A MRPS MP99 MCPU
for s in "${SERVERS[@]}"; do
    rps= p99= cpu=
    for ((r = 1; r <= ROUNDS; r++)); do
        [[ -n ${CPU[$s $r]:-} ]] || continue
        rps+="${RPS[$s $r]} " p99+="${P99[$s $r]} " cpu+="${CPU[$s $r]} "
    done
    [[ -n $cpu ]] || die "$s: no round completed"
    MRPS[$s]=$(median <<<"${rps% }") MP99[$s]=$(median <<<"${p99% }") MCPU[$s]=$(median <<<"${cpu% }")
done

declare -A LABEL=([ours]=ours [node]=Node [fastapi]=FastAPI) GOAL=([node]=$GOAL_NODE [fastapi]=$GOAL_FASTAPI)
echo
printf '| %-8s | %8s | %9s | %11s | %18s | %-28s |\n' server 'req/s' 'p99 (ms)' 'CPU µs/req' 'CPU/req vs ours' goal
printf '| %-8s | %8s | %9s | %10s | %18s | %-28s |\n' --- ---: ---: ---: ---: ---
for s in "${SERVERS[@]}"; do
    ratio=- goal=-
    if [[ $s != ours ]]; then
        read -r ratio goal < <(awk -v p="${MCPU[$s]}" -v o="${MCPU[ours]}" -v g="${GOAL[$s]}" -v L="${LABEL[$s]}" 'BEGIN {
            r = p / o
            if (r >= g) v = "met"; else v = sprintf("NOT met, %.0f%% short", (g - r) / g * 100)
            printf "%.2fx %s\n", r, sprintf(">= %gx: %s", g, v) }')
    fi
    printf '| %-8s | %8.0f | %9.2f | %10.1f | %18s | %-28s |\n' "${LABEL[$s]}" "${MRPS[$s]}" "${MP99[$s]}" "${MCPU[$s]}" \
        "$([[ $s == ours ]] && echo - || echo "${LABEL[$s]}/ours $ratio")" "$goal"
done
echo "(medians of the completed rounds out of $ROUNDS; 'vs ours' = the peer's CPU per request / ours: 2x = we use half)"
