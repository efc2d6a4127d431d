#!/usr/bin/env bash
# scripts/batch_rooms.lua creating ROOMS rooms against the fake LiveKit (spec/support/fake_livekit.js),
# at --concurrency 1, 4 and 16: wall time, rooms per second and peak RSS of the quantcoach process
# (from /usr/bin/time). Each run starts from a reset fake and an empty data directory, and must
# report every row "created".
#   bench/batch.sh                       ROOMS=1000 CONCURRENCY="1 4 16"
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOMS=${ROOMS:-1000}
CONCURRENCY=${CONCURRENCY:-1 4 16}

need node curl
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install -y time)"

build quantcoach
[[ -d spec/support/node_modules ]] || npm ci --prefix spec/support --no-audit --no-fund >/dev/null

# The fake reads its stdin from a fifo this shell holds open: should this script die without its
# trap, the fifo closes and the fake leaves by itself. It is the SERVER_PID that lib.sh stops on exit.
mkfifo "$TMP/fake.in"
node spec/support/fake_livekit.js --port 0 --key devkey --secret secret <"$TMP/fake.in" >"$TMP/fake.out" 2>"$TMP/fake.log" &
SERVER_PID=$!
exec {FAKE_IN}>"$TMP/fake.in"
await_port "$SERVER_PID" "$TMP/fake.out" 's/^listening \([0-9]*\)$/\1/p' ||
    { cat "$TMP/fake.log" >&2; die "fake LiveKit did not start"; }

CSV=$TMP/rooms.csv
{
    echo "room_name,interviewer,candidate,scheduled_at"
    for ((i = 1; i <= ROOMS; i++)); do
        printf 'bench-%04d,Interviewer %d,Candidate %d,2026-12-%02dT%02d:00:00Z\n' \
            "$i" "$i" "$i" $((i % 28 + 1)) $((i % 10 + 8))
    done
} >"$CSV"

echo "batch_rooms.lua: $ROOMS rooms against the fake LiveKit, $(machine_line)" >&2

declare -A SECS RPS RSS
for c in $CONCURRENCY; do
    curl -fsS -X POST "http://127.0.0.1:$PORT/_fake/reset" -H 'Content-Type: application/json' -d '{}' >/dev/null ||
        die "could not reset the fake LiveKit"
    data=$TMP/data.$c out=$TMP/out.$c.csv
    rm -rf "$data"; mkdir -p "$data"
    t0=$EPOCHREALTIME
    rc=0
    LIVEKIT_URL=ws://127.0.0.1:$PORT LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret \
        QC_DATA="$data" QC_ENV_FILE=/nonexistent \
        /usr/bin/time -f '%M' -o "$TMP/time.$c" \
        "$BUILD/quantcoach" run scripts/batch_rooms.lua "$CSV" --out "$out" -q --concurrency "$c" \
        </dev/null >"$TMP/run.$c.log" 2>&1 {FAKE_IN}>&- || rc=$?
    t1=$EPOCHREALTIME
    [[ $rc == 0 ]] || { tail -n 20 "$TMP/run.$c.log" >&2; die "concurrency $c: batch_rooms exited with $rc"; }
    rows=$(awk 'NR > 1' "$out" | wc -l)
    created=$(awk -F, 'NR > 1 && $3 == "created"' "$out" | wc -l)
    [[ $rows == "$ROOMS" && $created == "$ROOMS" ]] ||
        die "concurrency $c: $rows rows, $created created (want $ROOMS and $ROOMS)"
    SECS[$c]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    RPS[$c]=$(awk -v s="${SECS[$c]}" -v n="$ROOMS" 'BEGIN { printf "%.0f", n / s }')
    RSS[$c]=$(awk '/^[0-9]+$/ { v = $1 } END { printf "%.1f", v / 1024 }' "$TMP/time.$c")
    printf '  concurrency %2d: %6s s  %5s rooms/s  peak RSS %s MiB\n' "$c" "${SECS[$c]}" "${RPS[$c]}" "${RSS[$c]}" >&2
done

echo
printf '| %11s | %7s | %7s | %13s |\n' concurrency seconds 'rooms/s' 'peak RSS MiB'
printf '| %11s | %7s | %7s | %13s |\n' ---: ---: ---: ---:
for c in $CONCURRENCY; do
    printf '| %11s | %7s | %7s | %13s |\n' "$c" "${SECS[$c]}" "${RPS[$c]}" "${RSS[$c]}"
done
echo "($ROOMS rooms each, all \"created\"; wall time of the whole quantcoach run, peak RSS from /usr/bin/time)"
