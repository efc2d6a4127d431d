#!/usr/bin/env bash
# Ingest: N simulated LiveKit Track Egress tracks (bench_ingest_load: 48 kHz stereo s16le, one
# 1920-byte masked message per 10 ms per track at real-time pace, the egress's handshake, pings)
# into three servers, side by side in one run:
#   null        ours, QC_STT_ENGINE=null: /ingest -> qc_track (speexdsp) -> a counting sink
#   elevenlabs  ours, QC_STT_ENGINE=elevenlabs against bench_stt_sink, a local realtime STT
#               server that discards the audio and acknowledges commits
#   python      bench/peer_ingest.py: websockets + audioop (tomono, ratecv) -> a counting sink
# Per run the generator reads the server's CPU (utime+stime, /proc/PID/stat) and RSS over the
# measured window; ours also reports its added latency (from the loop turn that read a message
# to its STT write, runtime/audio/latency.h) in /health, read at the window's end. Rounds are
# interleaved and figures are medians, as in bench/lib.sh. bench/README.md ("Ingest") says how to
# read them.
#   bench/ingest.sh        TRACKS="50 200 500" DURATION=20 WARMUP=3 ROUNDS=2 SERVERS="null elevenlabs python"
#                          QUALITY=3 (QC_RESAMPLE_QUALITY) SPEECH=1 (festival speech; 0: tones)
#                          NICE=0 (nice level of the servers and the generator: on a machine other
#                          work keeps busy, NICE=-5 measures what the code costs rather than the queue)
#                          BASELINE=path/to/an/older/quantcoach: adds the servers null-base and
#                          elevenlabs-base (that binary, same settings) to SERVERS' default, so a
#                          change is measured before and after in the same interleaved rounds
# Goals (issue 9): CPU per message <= 10 us and >= 5x better than the Python pipeline, p99 added
# latency <= 1 ms, <= 64 KB per track. A goal not met is reported, not an error.
set -euo pipefail

DURATION=${DURATION:-20}
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TRACKS=${TRACKS:-50 200 500}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-2}
QUALITY=${QUALITY:-3}
SPEECH=${SPEECH:-1}
NICE=${NICE:-0}
BASELINE=${BASELINE:-}
if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE ]] || { echo "BASELINE=$BASELINE is not an executable" >&2; exit 2; }
    read -r -a SERVERS <<<"${SERVERS:-null null-base elevenlabs elevenlabs-base python}"
else
    read -r -a SERVERS <<<"${SERVERS:-null elevenlabs python}"
fi
PYTHON=/usr/bin/python3
KEY=benchkey
SECRET=bench-secret-bench-secret-bench-secret
GOAL_US=10 GOAL_RATIO=5 GOAL_P99_MS=1 GOAL_KB=64

build quantcoach bench_ingest_load bench_stt_sink
"$PYTHON" -c 'import websockets, audioop' 2>/dev/null ||
    die "the Python peer needs $PYTHON with websockets (apt-get install -y python3-websockets)"
# Every track is a socket in the generator and in the server (two with the elevenlabs engine).
ulimit -n "$(ulimit -Hn)"

# ---- the audio: festival speech with pauses (what the elevenlabs engine commits at) or tones ----
WAV_ARGS=()
if [[ $SPEECH == 1 ]] && command -v text2wave >/dev/null && command -v sox >/dev/null; then
    for i in 1 2 3; do
        printf '%s\n' "Tell me about a time you had to debug a system under load." \
            "We measured where the microseconds went, message by message, then fixed the worst first." \
            "What would you change if the number of tracks doubled tomorrow?" |
            sed -n "${i}p" | text2wave -eval '(voice_kal_diphone)' -o "$TMP/s$i.wav" 2>/dev/null
    done
    sox "$TMP/s1.wav" "$TMP/s2.wav" "$TMP/s3.wav" -r 48000 -c 2 -b 16 "$TMP/speech.wav" pad 0 1.2 2>/dev/null &&
        WAV_ARGS=(--wav "$TMP/speech.wav")
fi
AUDIO=${WAV_ARGS[1]:+"festival speech, $(soxi -D "${WAV_ARGS[1]}" | cut -d. -f1) s, looped"}
AUDIO=${AUDIO:-"tones (440 Hz left, 1 kHz right)"}

# ---- the discarding STT server, one for the whole run -------------------------------------------
SINK_PID=
"$BUILD/bench_stt_sink" --port 0 </dev/null >"$TMP/sink.out" 2>"$TMP/sink.log" &
SINK_PID=$!
trap 'kill -TERM $SINK_PID 2>/dev/null || true; cleanup' EXIT
await_port "$SINK_PID" "$TMP/sink.out" 's/^listening \([0-9]*\)$/\1/p' || die "bench_stt_sink did not start"
SINK_PORT=$PORT

# The server of the current run, $CURRENT: ours with QC_STT_ENGINE=$CURRENT, or the peer.
launch_server() {
    if [[ $CURRENT == python ]]; then
        nice -n "$NICE" "$PYTHON" bench/peer_ingest.py --port 0 </dev/null >"$2" 2>"$3" &
        return
    fi
    local bin=$BUILD/quantcoach
    [[ $CURRENT == *-base ]] && bin=$BASELINE
    rm -rf "$TMP/data" && mkdir -p "$TMP/data"
    nice -n "$NICE" env QC_ENV_FILE=/nonexistent QC_DATA="$TMP/data" LIVEKIT_API_KEY=$KEY LIVEKIT_API_SECRET=$SECRET \
        QC_STT_ENGINE="${CURRENT%-base}" QC_RESAMPLE_QUALITY="$QUALITY" ELEVENLABS_API_KEY=bench \
        QC_ELEVENLABS_URL="ws://127.0.0.1:$SINK_PORT/v1/speech-to-text/realtime" \
        "$bin" serve --listen 127.0.0.1:0 </dev/null >"$2" 2>"$3" &
}

# start_server (lib.sh) reads ours' port from its log, the peer's from "listening PORT".
probe_server() {
    [[ $1 == python ]] && return 0
    curl -fsS "http://127.0.0.1:$PORT/health" >"$TMP/health.first" ||
        { cat "$TMP/$1.log" >&2; die "$CURRENT: /health did not answer"; }
}

declare -A R # "field server tracks round" -> value

# field KEY LINE: the value of key=value in a result line
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

run_one() {
    local name=$1 n=$2 round=$3 line stats args=() log=$TMP/ours.log
    CURRENT=$name
    if [[ $name == python ]]; then
        start_server python
        log=$TMP/python.log
    else
        start_server ours
        args=(--key "$KEY" --secret "$SECRET" --stats-url "http://127.0.0.1:$PORT/health")
    fi
    line=$(nice -n "$NICE" "$BUILD/bench_ingest_load" --url "ws://127.0.0.1:$PORT/ingest" -n "$n" --duration "$DURATION" \
        --warmup "$WARMUP" --room-prefix "r$round" --server-pid "$SERVER_PID" ${WAV_ARGS[@]+"${WAV_ARGS[@]}"} \
        "${args[@]}" 2>"$TMP/gen.err") || true
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "warning: $name n=$n round $round: the server exited; last log lines:" >&2
        tail -n 5 "$log" | sed 's/^/    /' >&2
        SERVER_PID=
        return 0
    fi
    stop_server
    [[ $line == result* ]] || { cat "$TMP/gen.err" >&2; echo "warning: $name n=$n round $round: no result" >&2; return 0; }
    local k load
    load=$(cut -d' ' -f1 /proc/loadavg)
    for k in held lag_p99_ms server_us_per_msg server_cpu_pct server_kb_per_track server_rss_kb gen_kept_up; do
        R[$k $name $n $round]=$(field "$k" "$line")
    done
    R[load $name $n $round]=$load
    stats=$(field stats1 "$line")
    R[p99 $name $n $round]=$(sed -n 's/.*"p99_added_us":\([0-9.]*\).*/\1/p' <<<"$stats")
    R[cpu99 $name $n $round]=$(sed -n 's/.*"p99_added_oncpu_us":\([0-9.]*\).*/\1/p' <<<"$stats")
    local failure
    failure=$(sed -n 's/.*first_failure="\([^"]*\)".*/\1/p' <<<"$line")
    printf '  round %d %-15s n=%-4d held %4s  lag p99 %8s ms  %6s us/msg  CPU %5s%%  %6s KB/track  p99 added %6s us (on CPU %5s)  generator kept up: %-3s  load %s%s\n' \
        "$round" "$name" "$n" "${R[held $name $n $round]}" "${R[lag_p99_ms $name $n $round]}" \
        "${R[server_us_per_msg $name $n $round]}" "${R[server_cpu_pct $name $n $round]}" \
        "${R[server_kb_per_track $name $n $round]}" "${R[p99 $name $n $round]:--}" "${R[cpu99 $name $n $round]:--}" \
        "${R[gen_kept_up $name $n $round]}" \
        "$load" "${failure:+  first failure: $failure}" >&2
}

echo "ingest: tracks ${TRACKS// /, }; ${DURATION}s measured after ${WARMUP}s warm-up; $ROUNDS rounds;" \
    "speexdsp quality $QUALITY; $AUDIO; nice $NICE; $(machine_line)" >&2
for ((r = 1; r <= ROUNDS; r++)); do
    for n in $TRACKS; do
        for ((i = 0; i < ${#SERVERS[@]}; i++)); do
            run_one "${SERVERS[$(((i + r - 1) % ${#SERVERS[@]}))]}" "$n" "$r"
        done
    done
done

# med FIELD SERVER N: the median over the rounds that gave it, or empty
med() {
    local v='' r
    for ((r = 1; r <= ROUNDS; r++)); do [[ -n ${R[$1 $2 $3 $r]:-} ]] && v+="${R[$1 $2 $3 $r]} "; done
    [[ -n $v ]] && median <<<"${v% }"
}
# minimum over the rounds (held: a count of tracks that a round may lose to the machine's noise)
least() {
    local v='' r
    for ((r = 1; r <= ROUNDS; r++)); do [[ -n ${R[$1 $2 $3 $r]:-} ]] && v+="${R[$1 $2 $3 $r]} "; done
    [[ -n $v ]] && tr ' ' '\n' <<<"${v% }" | sort -g | head -n1
}

declare -A LABEL=([null]="ours, null engine" [elevenlabs]="ours, elevenlabs engine" [python]="Python websockets + audioop"
    [null-base]="baseline, null engine" [elevenlabs-base]="baseline, elevenlabs engine")
echo
printf '| %-27s | %6s | %10s | %10s | %10s | %6s | %12s | %12s | %12s | %11s |\n' server tracks 'held (min)' 'lag p99 ms' \
    'CPU µs/msg' 'CPU %' 'KB per track' 'p99 added ms' '(on CPU) ms' 'load (1 min)'
printf '| %-27s | %6s | %10s | %10s | %10s | %6s | %12s | %12s | %12s | %11s |\n' --- ---: ---: ---: ---: ---: ---: ---: ---: ---:
declare -A MOST HELD_ALL
for s in "${SERVERS[@]}"; do
    MOST[$s]=0
    for n in $TRACKS; do
        held=$(least held "$s" "$n") || continue
        p99=$(med p99 "$s" "$n") && p99=$(awk -v u="$p99" 'BEGIN { printf "%.2f", u / 1000 }') || p99=-
        cpu99=$(med cpu99 "$s" "$n") && cpu99=$(awk -v u="$cpu99" 'BEGIN { printf "%.2f", u / 1000 }') || cpu99=-
        printf '| %-27s | %6d | %10s | %10.1f | %10.2f | %6.1f | %12.1f | %12s | %12s | %11s |\n' "${LABEL[$s]}" "$n" "$held/$n" \
            "$(med lag_p99_ms "$s" "$n")" "$(med server_us_per_msg "$s" "$n")" "$(med server_cpu_pct "$s" "$n")" \
            "$(med server_kb_per_track "$s" "$n")" "$p99" "$cpu99" "$(med load "$s" "$n")"
        [[ $held == "$n" ]] && HELD_ALL[$s $n]=1 && ((n > MOST[$s])) && MOST[$s]=$n
    done
done
echo "(medians over $ROUNDS rounds; held = tracks whose lag stayed under 500 ms, least over the rounds; CPU per"
echo " message = the server's utime+stime over the window / messages sent in it; KB per track = (RSS at the end"
echo " of the window - RSS before the first connection) / tracks; p99 added = ours' /health at the window's end,"
echo " over its last 10-20 s: all loop turns, and (on CPU) only the turns the loop thread was not taken off its CPU)"

# ---- goals ------------------------------------------------------------------------------------
echo
gen_ok=yes
for s in "${SERVERS[@]}"; do for n in $TRACKS; do for ((r = 1; r <= ROUNDS; r++)); do
    [[ ${R[gen_kept_up $s $n $r]:-yes} == yes ]] || gen_ok="no (its own 1 ms tick ran late, p99 > 5 ms, in some runs: see the rounds)"
done; done; done
echo "generator kept up in every run: $gen_ok"
for s in "${SERVERS[@]}"; do echo "most tracks held at real time, ${LABEL[$s]}: ${MOST[$s]} (of the counts tried: $TRACKS)"; done
# Marginal memory: the RSS slope between the two largest counts held, which the fixed costs
# (Lua states, SQLite, allocator arenas) do not blur as they do RSS / N at small N.
for s in null null-base elevenlabs elevenlabs-base python; do
    [[ " ${SERVERS[*]} " == *" $s "* ]] || continue
    lo='' hi=''
    for n in $TRACKS; do [[ -n ${HELD_ALL[$s $n]:-} ]] && lo=$hi && hi=$n; done
    [[ -n $lo && -n $hi ]] || continue
    awk -v a="$(med server_rss_kb "$s" "$lo")" -v b="$(med server_rss_kb "$s" "$hi")" -v lo="$lo" -v hi="$hi" -v L="${LABEL[$s]}" \
        'BEGIN { printf "memory per added track, %s: %.1f KB (RSS from %d to %d tracks)\n", L, (b - a) / (hi - lo), lo, hi }'
done
# CPU against the Python peer: at the largest count both held (a server that falls behind reads
# more messages per wake-up, so its CPU per message drops: only held runs compare).
for s in null null-base elevenlabs elevenlabs-base; do
    [[ " ${SERVERS[*]} " == *" $s "* ]] || continue
    for n in $TRACKS; do
        us=$(med server_us_per_msg "$s" "$n") || continue
        py=
        [[ -n ${HELD_ALL[python $n]:-} ]] && py=$(med server_us_per_msg python "$n")
        awk -v s="$s" -v n="$n" -v us="$us" -v py="$py" -v kb="$(med server_kb_per_track "$s" "$n")" \
            -v p99="$(med p99 "$s" "$n" || true)" -v cpu99="$(med cpu99 "$s" "$n" || true)" -v pyrun="$([[ " ${SERVERS[*]} " == *" python "* ]] && echo 1)" -v held="$([[ -n ${HELD_ALL[$s $n]:-} ]] && echo 1)" \
            -v gu=$GOAL_US -v gr=$GOAL_RATIO -v gp=$GOAL_P99_MS -v gk=$GOAL_KB 'BEGIN {
            line = sprintf("%s n=%d%s: %.2f us/msg (goal <= %g: %s)", s, n, held ? "" : " (NOT held)", us, gu, us <= gu ? "met" : "NOT met")
            if (py != "") line = line sprintf("; Python/ours %.1fx (goal >= %gx: %s)", py / us, gr, py / us >= gr ? "met" : "NOT met")
            else if (pyrun) line = line "; Python did not hold this count: no CPU ratio"
            if (p99 != "") line = line sprintf("; p99 added %.2f ms, on CPU %.2f ms (goal <= %g: %s, %s)", p99 / 1000, cpu99 / 1000, gp,
                p99 / 1000 <= gp ? "met" : "NOT met", cpu99 / 1000 <= gp ? "met" : "NOT met")
            line = line sprintf("; %.1f KB/track (goal <= %g: %s)", kb, gk, kb <= gk ? "met" : "NOT met")
            print line }'
    done
done
