#!/usr/bin/env bash
# POST /tokens/generate under wrk: our server against Node (node:http + livekit-server-sdk) and the
# seed's stack (FastAPI + PyJWT on uvicorn). Same method as bench/health.sh, shared in bench/lib.sh:
# CPU per request is read from /proc/PID/stat around the wrk run, rounds are interleaved, figures
# are medians.
#   bench/tokens.sh                      DURATION=10 ROUNDS=2 CONNECTIONS=32 FASTAPI_PEER=bench/peers/fastapi_tokens.py
# Goals: ours >= 2.5x Node and >= 15x FastAPI in CPU per request. Exits 1 when a server answered
# anything but 2xx; a goal not met is reported, not an error.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
GOAL_NODE=2.5
GOAL_FASTAPI=15
BODY='{"room_name":"interview-7","participant_identity":"cand-42","participant_type":"candidate"}'
PYTHON=/usr/bin/python3
FASTAPI_PEER=${FASTAPI_PEER:-bench/peers/fastapi_tokens.py}
URL_PATH=/tokens/generate
NON_2XX=void
ROUND_FORMAT='  round %d %-8s %8s req/s  p99 %8s ms  %7s us CPU/req\n'

need wrk node curl

# ---- build and peers ----------------------------------------------------------------------
build quantcoach
[[ -d bench/peers/node_modules ]] || npm ci --prefix bench/peers --no-audit --no-fund >/dev/null

SERVERS=(ours node)
if [[ -x $PYTHON ]] && "$PYTHON" -c 'import fastapi, uvicorn, jwt' 2>/dev/null; then
    SERVERS+=(fastapi)
else
    echo "tokens.sh: FastAPI peer skipped: needs $PYTHON with fastapi, uvicorn and PyJWT;" \
        "install with: sudo apt-get install -y python3-fastapi python3-uvicorn python3-jwt" >&2
fi

SCRIPT=$TMP/post.lua
cat >"$SCRIPT" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$BODY'
EOF
WRK_ARGS=(-s "$SCRIPT")

launch_server() {
    case $1 in
    ours) rm -rf "$TMP/data"; launch_ours "$2" "$3" ;;
    node) node bench/peers/node_tokens.js --port 0 </dev/null >"$2" 2>"$3" & ;;
    fastapi) "$PYTHON" "$FASTAPI_PEER" --port 0 </dev/null >"$2" 2>"$3" & ;;
    esac
}

# One request must answer 200 with a token.
probe_server() {
    local name=$1 code
    code=$(curl -sS -o "$TMP/$name.first" -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/tokens/generate" \
        -H 'Content-Type: application/json' -d "$BODY") || code=000
    { [[ $code == 200 ]] && grep -q '"token"' "$TMP/$name.first"; } ||
        { cat "$TMP/$name.first" "$TMP/$name.log" >&2; die "$name: POST /tokens/generate answered $code, not 200 with a token"; }
}

run_rounds "POST /tokens/generate"

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
