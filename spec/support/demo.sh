#!/bin/sh
# The demo (`make demo`): a two-speaker interview, festival speech from make_speech.sh,
# played through /ingest as LiveKit's Track Egress sends it (scripts/feed_audio.lua, one
# feeder per speaker, at real-time pace), so the console shows a live transcript, windows and
# analytics with no LiveKit and no API keys. The ingest token names the room, and the first
# audio records it, so no room has to be created first.
#
#   spec/support/demo.sh                      start a server with the embedded defaults (data in
#                                             build/demo), play the interview, keep serving until Ctrl+C
#   spec/support/demo.sh --server URL --room R [--speed N]
#                                             only play the interview into a running server's room
#                                             (the console spec does this), then exit
#
# Settings for the server it starts: DEMO_LISTEN (127.0.0.1:8000), DEMO_DATA (build/demo),
# DEMO_WAIT (seconds between printing the console's address and the first word, 5),
# QC_BIN (build/quantcoach). Nothing from .env or the QC_*/LIVEKIT_* environment is used:
# the demo is open and speaks only to 127.0.0.1.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${QC_BIN:-$root/build/quantcoach}
server=""
room=""
pids=""
speed=1
while [ $# -gt 0 ]; do
    case $1 in
        --server) server=${2:?--server needs a URL}; shift 2 ;;
        --room) room=${2:?--room needs a name}; shift 2 ;;
        --speed) speed=${2:?--speed needs a number}; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "demo: $bin not found: run make build first (or set QC_BIN)" >&2; exit 2; }

speech=$root/build/speech
sh "$here/make_speech.sh" "$speech"

# The feeders sign their ingest tokens with LiveKit's dev key pair, as the server it checks
# them with does (both with the embedded defaults). Only for a command run with `&`: it
# execs, so the pid `$!` gives is the command's own.
exec_clean() {
    exec env -i PATH="$PATH" HOME="${HOME:-/tmp}" QC_ENV_FILE=/dev/null "$@"
}

play() { # URL ROOM: both speakers at once, each its own track; waits for both
    pids=""
    for role in interviewer candidate; do
        exec_clean "$bin" run "$root/scripts/feed_audio.lua" --server "$1" --room "$2" \
            --identity "$role-demo" --track "TR_demo_$role" --speed "$speed" -q "$speech/$role.wav" &
        pids="$pids $!"
    done
    status=0
    for p in $pids; do wait "$p" || status=1; done
    return $status
}

if [ -n "$server" ]; then
    [ -n "$room" ] || { echo "demo: --server needs --room" >&2; exit 2; }
    play "$server" "$room"
    exit $?
fi

listen=${DEMO_LISTEN:-127.0.0.1:8000}
data=${DEMO_DATA:-$root/build/demo}
room=${room:-demo-$(date -u +%Y%m%d-%H%M%S)}
url=http://$listen
mkdir -p "$data"
log=$data/server.log
exec_clean QC_LISTEN="$listen" QC_DATA="$data" "$bin" serve >"$log" 2>&1 &
spid=$!
trap 'kill "$spid" $pids 2>/dev/null; wait "$spid" 2>/dev/null' EXIT
trap 'exit 130' INT TERM
tries=0
until curl -fs "$url/health" >/dev/null 2>&1; do
    if ! kill -0 "$spid" 2>/dev/null || [ $tries -ge 100 ]; then
        echo "demo: the server did not start (is $listen in use? set DEMO_LISTEN):" >&2
        cat "$log" >&2
        exit 1
    fi
    tries=$((tries + 1))
    sleep 0.1
done

cat <<EOF
quantcoach demo: the server runs at $url (log: $log)
Open the console:   $url/console#room=$room
The interview starts in ${DEMO_WAIT:-5} s: two speakers, about half a minute.
EOF
sleep "${DEMO_WAIT:-5}"
if play "$url" "$room"; then
    cat <<EOF
The interview has been played. The console still shows it; also:
  curl -s '$url/rooms/$room/transcript?format=text'
  curl -s '$url/rooms/$room/report?format=md'
Ctrl+C stops the server.
EOF
else
    echo "demo: a feeder failed (see above and $log)" >&2
fi
wait "$spid"
