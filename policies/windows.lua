-- Windows: when a window of the conversation closes, so that it can be judged while the
-- interview runs.
--
-- Called by the windows runner (scripts/lib/qc/windows.lua) each time a final transcript of a
-- room is committed, every second while the room has open windows (a clock tick: s.new is
-- nil, so that a silence does not hold a window open), and once more when the interview ends. The runner owns every piece of
-- state (recent finals, open windows, the clock) and passes it in; this file keeps none, so a
-- reload applies new rules from the next decision and loses or repeats no window. The runner
-- calls decide() again with the updated state until it returns nothing to do, so one call
-- needs to take only one step (open the next window, or close the ones that are due).
--
-- decide(s) -> { open = { start, ... }, close = { { id = id, ["end"] = t }, ... } }
--   s.clock      seconds on the interview clock: now on a tick, else the latest end of any final seen
--   s.new        the final just committed, or nil (a clock tick, or the interview ended)
--   s.previous   the final before s.new in time order, or nil
--   s.open       open windows, oldest first: { id, start }
--   s.last_start the start of the newest window ever opened, or nil before the first
--   s.ended      true when the interview is over: close everything
--   A final is { identity, role, start, ["end"], text }.
-- The runner checks the answer: a start must not be before last_start, an end must be after
-- its window's start and at most `length` after it. A window that closes with no final in
-- it is dropped (silence is not judged); the others are numbered 1, 2, ... per room in the
-- order they close.
--
-- As shipped (the backend we replace): 20 s windows, a new one every 10 s, and a speaker turn
-- closes every open window that is at least min_length long early, and starts a new one at
-- the turn.
--
-- Example: decide{ clock = 21.5, last_start = 10, open = { { id = 1, start = 0 }, { id = 2, start = 10 } },
--                  new = { role = "candidate", start = 19, ["end"] = 21.5 },
--                  previous = { role = "candidate", start = 12, ["end"] = 18 } }
--   --> { open = { 20 }, close = {} }          (time for the next window; none is 20 s old plus grace)
local M = {}

M.length = 20      -- seconds: no window is longer
M.hop = 10         -- seconds between window starts when nobody changes turn
M.min_length = 8   -- seconds: a turn closes only windows at least this long
M.grace = 2        -- seconds a window waits past its end for finals of the other track

---@class qc.Final
---@field identity string
---@field role string|nil
---@field start number
---@field end number
---@field text string

---@class qc.WindowsState
---@field clock number
---@field new qc.Final|nil
---@field previous qc.Final|nil
---@field open { id: integer, start: number }[]
---@field last_start number|nil
---@field ended boolean|nil

---@class qc.WindowsDecision
---@field open number[]
---@field close { id: integer, end: number }[]

local floor, min = math.floor, math.min

---@param s qc.WindowsState
---@return qc.WindowsDecision
function M.decide(s)
  local open, close = {}, {}
  local new, prev = s.new, s.previous

  if s.ended then
    for _, w in ipairs(s.open) do
      close[#close + 1] = { id = w.id, ["end"] = min(w.start + M.length, math.max(s.clock, w.start + 0.001)) }
    end
    return { open = open, close = close }
  end

  -- A speaker turn: a final from another role than the one before it.
  if new and prev and new.role ~= prev.role then
    local t = new.start
    for _, w in ipairs(s.open) do
      if t - w.start >= M.min_length then close[#close + 1] = { id = w.id, ["end"] = min(t, w.start + M.length) } end
    end
    if #close > 0 and (s.last_start == nil or t > s.last_start) then open[1] = t end
    if #close > 0 then return { open = open, close = close } end
  end

  -- Time: a window closes once the clock is past its end (plus grace).
  for _, w in ipairs(s.open) do
    if s.clock >= w.start + M.length + M.grace then close[#close + 1] = { id = w.id, ["end"] = w.start + M.length } end
  end

  -- The next start, every hop seconds; after a silence with nothing open, skip to the hop
  -- just before the new final instead of opening the empty ones between.
  if s.last_start == nil then
    if new then open[1] = floor(new.start / M.hop) * M.hop end
  else
    local nxt = s.last_start + M.hop
    if #s.open == #close and new and new.start >= nxt + M.hop then
      nxt = s.last_start + M.hop * floor((new.start - s.last_start) / M.hop)
    end
    -- Only a final opens windows: a tick in a silence would open ones with nothing in them.
    if new and s.clock >= nxt then open[1] = nxt end
  end
  return { open = open, close = close }
end

-- Checked on load, reload and `quantcoach check`: decide(state) must answer `expect`.
M.examples = {
  { state = { clock = 3, open = {}, new = { role = "interviewer", start = 1, ["end"] = 3 } },
    expect = { open = { 0 }, close = {} } },
  { state = { clock = 21.5, last_start = 10, open = { { id = 1, start = 0 }, { id = 2, start = 10 } },
              new = { role = "candidate", start = 19, ["end"] = 21.5 },
              previous = { role = "candidate", start = 12, ["end"] = 18 } },
    expect = { open = { 20 }, close = {} } },
  { state = { clock = 23, last_start = 20, open = { { id = 1, start = 0 }, { id = 2, start = 10 }, { id = 3, start = 20 } } },
    expect = { open = {}, close = { { id = 1, ["end"] = 20 } } } },
  -- A turn 9 s into window 2 closes it (and window 1, 14 s old), and starts window 3 there.
  { state = { clock = 22, last_start = 10, open = { { id = 1, start = 5 }, { id = 2, start = 10 } },
              new = { role = "candidate", start = 19, ["end"] = 22 },
              previous = { role = "interviewer", start = 11, ["end"] = 18.5 } },
    expect = { open = { 19 }, close = { { id = 1, ["end"] = 19 }, { id = 2, ["end"] = 19 } } } },
  -- A turn 4 s into the only window closes nothing.
  { state = { clock = 6, last_start = 0, open = { { id = 1, start = 0 } },
              new = { role = "candidate", start = 4, ["end"] = 6 },
              previous = { role = "interviewer", start = 0.5, ["end"] = 3.5 } },
    expect = { open = {}, close = {} } },
  -- A tick in a silence closes what is due and opens nothing.
  { state = { clock = 33, last_start = 20, open = { { id = 2, start = 10 }, { id = 3, start = 20 } } },
    expect = { open = {}, close = { { id = 2, ["end"] = 30 } } } },
  { state = { clock = 31, last_start = 20, ended = true, open = { { id = 4, start = 20 } } },
    expect = { open = {}, close = { { id = 4, ["end"] = 31 } } } },
}

return M
