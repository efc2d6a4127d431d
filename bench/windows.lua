-- Windows and analytics for many concurrent rooms: what they cost the loop.
--   QC_DATA=$(mktemp -d) build/quantcoach run bench/windows.lua      (or ./bench/run windows)
-- ROOMS (default 1000) interviews of FINALS finals each (default 60: ~5 minutes of
-- conversation, a final every ~5 s alternating speakers), interleaved as a server sees them.
-- Prints, per transcript event:
--   1. the windows policy alone (in memory): CPU us per event;
--   2. analytics alone: CPU us per window;
--   3. the whole live path of a final (qc.transcripts.on_event: stored, announced, then the
--      windows runner on the store, analytics stored and announced for each window it closed):
--      CPU us per event, and the delay from a final's arrival to its window event being
--      committed (p50, p99, max over the finals that closed a window), which is the time of
--      the call that closes it: windows are decided in the final's own step.
local windows = require "qc.windows"
local analytics = require "qc.analytics"
local time = require "qc.time"

local ROOMS = tonumber(os.getenv("ROOMS")) or 1000
local FINALS = tonumber(os.getenv("FINALS")) or 60

local src = os.getenv("QC_SOURCE_DIR") or "."
local policy = assert(loadfile(src .. "/policies/windows.lua", "t", _ENV))()

-- Room r's k-th final: alternating speakers, 2-7 s long, 0.3-1.5 s apart.
local function final_of(r, k, t)
  local role = (k % 2 == 0) and "candidate" or "interviewer"
  local d = 2 + ((r * 7 + k * 13) % 50) / 10
  return { identity = role .. "-" .. r, role = role, track = "TR_" .. role .. r,
           text = "so the expected value is three and a half um because every face is equally likely",
           start = t, ["end"] = t + d }, t + d + 0.3 + ((r + k) % 12) / 10
end

local function schedule()
  local evs, clock = {}, {}
  for r = 1, ROOMS do clock[r] = (r % 10) / 10 end
  for k = 1, FINALS do
    for r = 1, ROOMS do
      local f
      f, clock[r] = final_of(r, k, clock[r])
      f.room = "bench-" .. r
      evs[#evs + 1] = f
    end
  end
  return evs
end

local function pct(sorted, p)
  if #sorted == 0 then return 0 end
  return sorted[math.max(1, math.ceil(#sorted * p))]
end

local evs = schedule()
print(("windows bench: %d rooms, %d finals each, %d events"):format(ROOMS, FINALS, #evs))

-- 1. The policy through the runner, in memory.
do
  local states, emitted = {}, {}
  local c0 = os.clock()
  for _, f in ipairs(evs) do
    local st = states[f.room]
    if not st then st = windows.new_state(); states[f.room] = st end
    for _, w in ipairs(windows.step(policy, st, f.room, f)) do emitted[#emitted + 1] = w end
  end
  local c1 = os.clock()
  print(("policy + runner, in memory:   %7.2f us CPU per event (%d windows)"):format((c1 - c0) * 1e6 / #evs, #emitted))

  -- 2. Analytics per window.
  local a0 = os.clock()
  for _, w in ipairs(emitted) do analytics.compute(w.finals, w) end
  local a1 = os.clock()
  print(("analytics:                    %7.2f us CPU per window"):format((a1 - a0) * 1e6 / #emitted))
end

-- 3. The live path on the store.
do
  local transcripts = require "qc.transcripts"
  local evaluation = require "qc.evaluation"
  local db = require("qc.db").get()
  -- Told when a final's step closed windows (the same module instance transcripts calls).
  local closed = 0
  local on_windows = evaluation.on_windows
  evaluation.on_windows = function(...)
    closed = closed + 1
    return on_windows(...)
  end
  local delays, windows_before = {}, db:first("SELECT count(*) AS n FROM windows").n
  local c0, t0 = os.clock(), time.monotonic()
  for _, f in ipairs(evs) do
    f.final = true
    local before = closed
    local s = time.monotonic()
    transcripts.on_event(f)
    local e = time.monotonic()
    if closed > before then delays[#delays + 1] = (e - s) * 1e3 end
  end
  local c1, t1 = os.clock(), time.monotonic()
  table.sort(delays)
  local n = db:first("SELECT count(*) AS n FROM windows").n - windows_before
  print(("live path (store, announce):  %7.2f us CPU per event, %.0f events/s on one core (%d windows)"):format(
    (c1 - c0) * 1e6 / #evs, #evs / (t1 - t0), n))
  print(("final -> window event:        p50 %.3f ms, p99 %.3f ms, max %.3f ms (%d finals that closed a window)"):format(
    pct(delays, 0.5), pct(delays, 0.99), delays[#delays] or 0, #delays))
end
