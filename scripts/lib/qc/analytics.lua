-- The built-in evaluator: conversation analytics of a window or a whole interview, from the
-- finals alone (no network, no model): talk time and ratio per role, words per minute, turns,
-- the longest monologue, overlaps and interruptions, questions asked, silences, filler words.
--
--   local analytics = require "qc.analytics"
--   local a = analytics.compute(finals, { start = 0, ["end"] = 20 })   -- a window
--   local all = analytics.compute(finals)                              -- the interview
local M = {}

local ipairs, pairs, type = ipairs, pairs, type
local max, min, floor = math.max, math.min, math.floor

-- A gap in the speech of at least this long is a silence.
M.SILENCE_MIN = 2.0
-- An overlap shorter than this is two people breathing at a turn, not an overlap.
M.OVERLAP_MIN = 0.25

-- Words that fill a pause rather than say something; two-word ones are matched as pairs.
M.FILLERS = { "um", "uh", "uhm", "umm", "erm", "er", "ah", "hmm", "mm", "you know", "i mean" }

-- A final that starts with one of these (and has no "?" to count instead) asks a question:
-- the local recogniser writes no punctuation.
local QUESTION_START = {}
for w in ([[what why how when where which who whom whose can could would will do does did is are
  should shall have has may might]]):gmatch("%a+") do QUESTION_START[w] = true end

-- Words that lead into a question without being part of it ("and how would you ...").
local LEAD_IN = {}
for w in ("and so now okay ok then but well alright"):gmatch("%a+") do LEAD_IN[w] = true end

local FILLER1, FILLER2 = {}, {}
for _, f in ipairs(M.FILLERS) do
  local a, b = f:match("^(%S+)%s+(%S+)$")
  if a then FILLER2[a .. " " .. b] = f else FILLER1[f] = f end
end

local function round(x)
  return floor(x * 1000 + 0.5) / 1000
end

---Lower-cased words of a text, punctuation stripped (an apostrophe inside a word stays).
---@param text string
---@return string[]
function M.words(text)
  local out = {}
  for w in (text or ""):lower():gmatch("%S+") do
    w = w:gsub("^[^%w']+", ""):gsub("[^%w']+$", "")
    if w:find("%w") then out[#out + 1] = w end
  end
  return out
end

local function count_questions(text, words)
  local _, marks = (text or ""):gsub("%?", "")
  if marks > 0 then return marks end
  local i = 1
  while words[i] and LEAD_IN[words[i]] do i = i + 1 end
  return (words[i] and QUESTION_START[words[i]]) and 1 or 0
end

local function new_role()
  return { talk_time = 0, words = 0, turns = 0, questions = 0, fillers = {}, filler_count = 0,
           interruptions = 0, finals = 0 }
end

---@class qc.AnalyticsRange
---@field start number|nil
---@field end number|nil

-- The words of a final inside [lo, hi]: those whose middle is in it when the final carries
-- word times, else its share of the final's time (a final is spoken at one rate). Counted
-- like talk time, so that words per minute is the rate of what the window holds (a 0.3 s
-- end of a 15-word final is 1.2 words, not 15 in 0.3 s).
local function words_inside(f, n, lo, hi, s, e)
  if lo == -math.huge and hi == math.huge then return n end
  local list = f.words
  if type(list) == "table" and #list > 0 then
    local k = 0
    for _, w in ipairs(list) do
      local ws, we = type(w) == "table" and w.start, type(w) == "table" and w["end"]
      if type(ws) == "number" and type(we) == "number" then
        local mid = (ws + we) / 2
        if mid >= lo and mid < hi then k = k + 1 end
      end
    end
    return k
  end
  local full = f["end"] - f.start
  if full <= 0 then return (f.start >= lo and f.start < hi) and n or 0 end
  return n * (e > s and e - s or 0) / full
end

---Analytics of finals ({identity, role, start, end, text[, words]}); with a range, talk time,
---words and silences count only inside it (a window); questions and fillers count whole finals.
---@param finals table[]
---@param range qc.AnalyticsRange|nil
---@return table
function M.compute(finals, range)
  local lo = range and range.start or -math.huge
  local hi = range and range["end"] or math.huge
  local list = {}
  for _, f in ipairs(finals) do
    if type(f.start) == "number" and type(f["end"]) == "number" then list[#list + 1] = f end
  end
  table.sort(list, function(a, b)
    if a.start ~= b.start then return a.start < b.start end
    return (a.seq or 0) < (b.seq or 0)
  end)

  local roles, turns, questions, fillers = {}, 0, 0, 0
  local first, last = math.huge, -math.huge
  local run, longest, prev_role = nil, nil, {}
  for i, f in ipairs(list) do
    local role = f.role or f.identity or "unknown"
    local r = roles[role]
    if not r then r = new_role(); roles[role] = r end
    local s, e = max(f.start, lo), min(max(f["end"], f.start), hi)
    local dur = e > s and e - s or 0
    r.talk_time = r.talk_time + dur
    r.finals = r.finals + 1
    local words = M.words(f.text)
    r.words = r.words + words_inside(f, #words, lo, hi, s, e)
    local q = count_questions(f.text, words)
    r.questions, questions = r.questions + q, questions + q
    local j = 1
    while j <= #words do
      local pair = words[j + 1] and FILLER2[words[j] .. " " .. words[j + 1]]
      local one = not pair and FILLER1[words[j]]
      local name = pair or one
      if name then
        r.fillers[name] = (r.fillers[name] or 0) + 1
        r.filler_count = r.filler_count + 1
        fillers = fillers + 1
      end
      j = j + (pair and 2 or 1)
    end
    if f.start < first then first = f.start end
    if f["end"] > last then last = f["end"] end
    -- Turns and monologues: maximal runs of one role in time order.
    if i == 1 or role ~= prev_role[1] then
      turns = turns + 1
      r.turns = r.turns + 1
      run = { role = role, identity = f.identity, start = f.start, ["end"] = f["end"], words = 0 }
    end
    run["end"] = max(run["end"], f["end"])
    run.words = run.words + #words
    if not longest or run["end"] - run.start > longest["end"] - longest.start then longest = run end
    prev_role[1] = role
  end
  if longest then
    longest = { role = longest.role, identity = longest.identity, start = round(longest.start),
                ["end"] = round(longest["end"]), duration = round(longest["end"] - longest.start),
                words = longest.words }
  end

  -- Overlaps: two roles speaking at once. An interruption is an overlap the later speaker
  -- wins: the earlier one stops while the later one goes on (a short "mm-hm" inside a long
  -- answer overlaps without interrupting).
  local overlaps, overlap_s, interruptions = 0, 0, 0
  for i = 1, #list do
    local a = list[i]
    local ra = a.role or a.identity or "unknown"
    for j = i + 1, #list do
      local b = list[j]
      if b.start >= a["end"] then break end
      local rb = b.role or b.identity or "unknown"
      if rb ~= ra then
        local o = min(a["end"], b["end"], hi) - max(b.start, lo)
        if o >= M.OVERLAP_MIN then
          overlaps = overlaps + 1
          overlap_s = overlap_s + o
          if b["end"] > a["end"] and b.start > a.start then
            interruptions = interruptions + 1
            roles[rb].interruptions = roles[rb].interruptions + 1
          end
        end
      end
    end
  end

  -- Silences: gaps of at least SILENCE_MIN between the end of all speech so far and the
  -- next start (speech before the first word and after the last is not a silence).
  local silences, silence_s, longest_silence, reach = 0, 0, 0, nil
  for _, f in ipairs(list) do
    if reach then
      local gs, ge = max(reach, lo), min(f.start, hi)
      local gap = ge - gs
      if gap >= M.SILENCE_MIN then
        silences = silences + 1
        silence_s = silence_s + gap
        if gap > longest_silence then longest_silence = gap end
      end
    end
    reach = reach and max(reach, f["end"]) or f["end"]
  end

  local talk_total = 0
  for _, r in pairs(roles) do talk_total = talk_total + r.talk_time end
  for _, r in pairs(roles) do
    r.talk_ratio = talk_total > 0 and round(r.talk_time / talk_total) or 0
    r.wpm = r.talk_time > 0 and round(r.words / (r.talk_time / 60)) or 0
    r.talk_time = round(r.talk_time)
    r.words = floor(r.words + 0.5)
  end
  local span_lo = range and range.start or (first ~= math.huge and first or 0)
  local span_hi = range and range["end"] or (last ~= -math.huge and last or 0)
  return {
    duration = round(max(span_hi - span_lo, 0)),
    speech = round(talk_total),
    finals = #list,
    roles = roles,
    turns = turns,
    longest_monologue = longest,
    overlaps = { count = overlaps, seconds = round(overlap_s) },
    interruptions = interruptions,
    questions = questions,
    silences = { count = silences, seconds = round(silence_s), longest = round(longest_silence) },
    fillers = fillers,
  }
end

return M
