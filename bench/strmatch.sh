#!/usr/bin/env bash
# Pattern matching: our string.find/match/gmatch/gsub against the stock ones (bench/strmatch.lua).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec "$root/${BUILD:-build}/quantcoach" run "$root/bench/strmatch.lua"
