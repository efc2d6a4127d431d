#!/usr/bin/env bash
# The local STT engine's capacity and the resampler's cost (bench/README.md, "Local STT
# capacity"): festival speech (spec/support/make_speech.sh) through bench_stt_capacity.
# Settings: TRACKS (list, "1 2 4"), REPEAT (passes over the 31 s file per track, 2), BUILD.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD:-$root/build}
bin=$build/bench_stt_capacity
[[ -x $bin ]] || { echo "stt_capacity: build $bin first (make build)" >&2; exit 2; }
speech=$build/speech
"$root/spec/support/make_speech.sh" "$speech"
echo "cores: $(nproc); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" resample "$speech/interviewer.wav"
for n in ${TRACKS:-1 2 4}; do
    "$bin" local "$n" "$speech/candidate.wav" "${REPEAT:-2}"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
