#!/usr/bin/env bash
# Windows and analytics for many rooms (bench/windows.lua) on a fresh store: ./bench/run windows
# ROOMS (1000) and FINALS (60) pass through the environment.
set -euo pipefail
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(dirname "$dir")
bin=${QC_BIN:-$src/build/quantcoach}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
QC_DATA=$data QC_SOURCE_DIR=$src QC_STT_ENGINE=null QC_ENV_FILE=/nonexistent "$bin" run "$dir/windows.lua"
