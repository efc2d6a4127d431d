#!/bin/sh
# Test speech for two speakers, made with festival (see shared DEBIAN12.md: pocketsphinx
# recognises festival's voices, not espeak's). Reads spec/fixtures/speech/dialogue.txt
# ("role: words" per line) and writes to OUT_DIR (default build/speech):
#   ROLE.wav      48 kHz stereo s16, as LiveKit Egress sends it: the role's turns in place,
#                 silence while the other speaks, both files the same length, one clock
#   ROLE-16k.wav  the same at 16 kHz mono (what pocketsphinx_continuous reads in batch)
#   ROLE.txt      the role's words, one turn a line (the reference for word error rates)
#   turns.tsv     role, start and end seconds, words: one line per turn, in time order
# Cached: nothing is made again while dialogue.txt and this script are unchanged. sox runs
# with -R (no random dither), so the same text gives the same samples.
# Needs festival, festvox-kallpc16k, festvox-us-slt-hts, sox.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../fixtures/speech/dialogue.txt"
out=${1:-$here/../../build/speech}
gap=1.0      # seconds of silence between turns
lead=0.5     # and before the first

mkdir -p "$out"
stamp=$(cat "$src" "$0" | cksum | cut -d' ' -f1)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ]; then
    exit 0
fi
for tool in text2wave sox soxi; do
    command -v $tool >/dev/null || { echo "make_speech: $tool not found (apt-get install festival sox)" >&2; exit 1; }
done

# Made beside the results, so each lands with one rename: specs that run at once and make
# it together never read half a file.
tmp=$(mktemp -d "$out/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

voice() {
    case $1 in
        interviewer) echo voice_kal_diphone ;;
        candidate) echo voice_cmu_us_slt_arctic_hts ;;
        *) echo "make_speech: no voice for role $1" >&2; exit 1 ;;
    esac
}

silence() { sox -R -n -r 48000 -c 1 -b 16 "$2" trim 0 "$1"; }

: >"$tmp/turns.tsv"
: >"$tmp/interviewer.list"
: >"$tmp/candidate.list"
: >"$tmp/interviewer.txt"
: >"$tmp/candidate.txt"
silence $lead "$tmp/lead.wav"
silence $gap "$tmp/gap.wav"
for r in interviewer candidate; do echo "$tmp/lead.wav" >>"$tmp/$r.list"; done
t=$lead
n=0
grep -v '^#' "$src" | grep -v '^[[:space:]]*$' | while IFS= read -r line; do
    n=$((n + 1))
    role=${line%%:*}
    words=$(echo "${line#*:}" | sed 's/^ *//')
    other=interviewer
    [ "$role" = interviewer ] && other=candidate
    echo "$words" >"$tmp/say.txt"
    text2wave -eval "($(voice "$role"))" "$tmp/say.txt" -o "$tmp/raw$n.wav"
    sox -R "$tmp/raw$n.wav" -r 48000 -c 1 -b 16 "$tmp/turn$n.wav"
    d=$(soxi -D "$tmp/turn$n.wav")
    silence "$d" "$tmp/quiet$n.wav"
    echo "$tmp/turn$n.wav" >>"$tmp/$role.list"
    echo "$tmp/quiet$n.wav" >>"$tmp/$other.list"
    for r in interviewer candidate; do echo "$tmp/gap.wav" >>"$tmp/$r.list"; done
    end=$(awk "BEGIN { printf \"%.6f\", $t + $d }")
    printf '%s\t%.3f\t%.3f\t%s\n' "$role" "$t" "$end" "$words" >>"$tmp/turns.tsv"
    echo "$words" >>"$tmp/$role.txt"
    t=$(awk "BEGIN { printf \"%.6f\", $end + $gap }")
done
for r in interviewer candidate; do
    # shellcheck disable=SC2046
    sox -R $(cat "$tmp/$r.list") -c 2 "$tmp/$r.wav"
    sox -R "$tmp/$r.wav" -r 16000 -c 1 -b 16 "$tmp/$r-16k.wav"
    mv "$tmp/$r.wav" "$tmp/$r-16k.wav" "$tmp/$r.txt" "$out/"
done
mv "$tmp/turns.tsv" "$out/"
echo "$stamp" >"$out/stamp"
