-- The evaluation runner: every committed final goes through the windows runner; each window
-- it closes is stored, announced, measured by the built-in analytics and, when QC_EVALUATOR
-- names an LLM and policies/evaluation.lua judges the window, sent to it in a task of its
-- own. Everything is committed before it is announced; a failed LLM evaluation is stored
-- with its error (and the reply as received) and can be run again (scripts/evaluate_room.lua).
-- Also builds what GET /rooms/{room}/evaluations and /report answer.
local cjson = require "cjson"
local counted = require "qc.stats" -- GET /metrics
local analytics = require "qc.analytics"
local windows = require "qc.windows"
local events = require "qc.events"
local llm = require "qc.llm"
local host = require "qc.host"
local log = require "qc.log"
local time = require "qc.time"

local M = {}

local type, ipairs, pairs, pcall, tostring = type, ipairs, pairs, pcall, tostring

M.ANALYTICS = "analytics"
M.INTERVIEW = 0 -- window_idx of the whole interview's evaluation

---The configured evaluator: "analytics" | "openai" | "anthropic".
---@return string
function M.evaluator()
  return host.config().evaluator or M.ANALYTICS
end

-- Announces a stored event on the room's live sockets (qc.live filters what a candidate sees).
local function announce(room, kind, body, seq)
  if not seq then return end
  local ok, live = pcall(require, "qc.live")
  if ok and type(live) == "table" and live.broadcast then
    local sent, err = pcall(live.broadcast, room, kind, body, seq)
    if not sent then log.warn("evaluation", "announce failed", { room = room, kind = kind, error = tostring(err) }) end
  end
end
M.announce = announce

local function decode(text)
  if type(text) ~= "string" then return nil end
  local ok, v = pcall(cjson.decode, text)
  return ok and v or nil
end

-- ---- storing evaluations ---------------------------------------------------------------

---The live message of an evaluation row.
local function message(room, idx, evaluator, r, seq)
  return { type = "evaluation", seq = seq, room = room, window = idx, evaluator = evaluator, status = r.status,
           result = r.result, error = r.error, attempts = r.attempts, model = r.model,
           usage = r.usage and { input = r.usage.input, output = r.usage.output } or nil }
end

---Stores one evaluation (replacing an earlier run of the same window and evaluator) and its
---event, in one transaction. `announce_it`: false for a re-run over a finished interview.
---@param db table qc.store handle
---@param room string
---@param idx integer window index, 0 for the whole interview
---@param evaluator string
---@param r table { status, result?, raw?, error?, attempts?, usage?, model? }
---@param opts { event: boolean|nil }|nil
---@return table message, integer|nil seq, string body
function M.store(db, room, idx, evaluator, r, opts)
  local now = time.now()
  local seq, msg, body
  local ok, err = db:transaction(function(tx)
    -- A pending row is no event: its result is, when it comes.
    if (not opts or opts.event ~= false) and r.status ~= "pending" then
      seq, body = events.append(tx, room, "evaluation", {}, function(n)
        msg = message(room, idx, evaluator, r, n)
        return msg
      end, now)
    else
      msg = message(room, idx, evaluator, r, nil)
      body = cjson.encode(msg)
    end
    local usage = r.usage or {}
    local okr, e = tx:run([[INSERT INTO evaluations (room, window_idx, evaluator, status, result, raw, error,
        attempts, model, input_tokens, output_tokens, seq, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (room, window_idx, evaluator) DO UPDATE SET status = excluded.status, result = excluded.result,
        raw = excluded.raw, error = excluded.error, attempts = evaluations.attempts + excluded.attempts,
        model = excluded.model, input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,
        seq = excluded.seq, updated_at = excluded.updated_at]],
      room, idx, evaluator, r.status, r.result ~= nil and cjson.encode(r.result) or nil, r.raw, r.error,
      r.attempts or 0, r.model, usage.input, usage.output, seq, now, now)
    if not okr then error(e, 0) end
  end)
  if not ok then error("evaluations: " .. tostring(err), 0) end
  if r.status ~= "pending" then counted.evaluation(evaluator, r) end
  return msg, seq, body
end

-- ---- running evaluators ----------------------------------------------------------------

---Runs the LLM evaluator over one window (yields while the request runs).
---@param policy table policies/evaluation.lua
---@param evaluator string "openai" | "anthropic"
---@param window table
---@param settings table|nil qc.llm settings (from the configuration when nil)
---@return table result { status, result?, raw?, error?, attempts, usage, model }
function M.judge_window(policy, evaluator, window, settings)
  local ok, prompt = pcall(policy.prompt, window)
  if not ok or type(prompt) ~= "string" then
    return { status = "error", error = "evaluation policy: prompt failed: " .. tostring(prompt), attempts = 0 }
  end
  return llm.call(settings or llm.settings(evaluator),
    { system = policy.system, user = prompt, schema = policy.window_schema, name = "window_evaluation" })
end

---The interview's LLM report from its judged windows and analytics.
function M.judge_interview(policy, evaluator, judged, stats, settings)
  local ok, prompt = pcall(policy.report_prompt, judged, stats)
  if not ok or type(prompt) ~= "string" then
    return { status = "error", error = "evaluation policy: report_prompt failed: " .. tostring(prompt), attempts = 0 }
  end
  return llm.call(settings or llm.settings(evaluator),
    { system = policy.system, user = prompt, schema = policy.report_schema, name = "interview_report" })
end

local function judged_by(policy, window)
  if not policy then return false end
  local ok, yes = pcall(policy.judge, window)
  if not ok then
    log.error("evaluation", "judge failed", { room = window.room, window = window.index, error = tostring(yes) })
    return false
  end
  return yes == true
end

local function policies()
  local ok, p = pcall(require, "qc.policies")
  return ok and p or {}
end

-- An LLM evaluation of a stored window, in a task of its own: 'pending' first, so a crash
-- leaves a row that says what to run again.
local function spawn_llm(db, room, evaluator, policy, window)
  M.store(db, room, window.index, evaluator, { status = "pending", attempts = 0 }, { event = false })
  host.spawn(function()
    local r = M.judge_window(policy, evaluator, window)
    local ok, err = pcall(function()
      local _, seq, body = M.store(db, room, window.index, evaluator, r)
      announce(room, "evaluation", body, seq)
    end)
    if not ok then log.error("evaluation", "not stored", { room = room, window = window.index, error = tostring(err) }) end
    if r.status ~= "ok" then
      log.warn("evaluation", "window evaluation failed", { room = room, window = window.index, evaluator = evaluator,
                                                          status = r.status, error = r.error, attempts = r.attempts })
    end
  end)
end

---Stores the analytics of windows (inside the windows runner's transaction); returns their
---live messages { seq, body }.
---@param db table
---@param room string
---@param list table[] windows
---@return table[]
function M.store_analytics(db, room, list)
  local out = {}
  for i, w in ipairs(list) do
    local stats = analytics.compute(w.finals, w)
    local _, seq, body = M.store(db, room, w.index, M.ANALYTICS, { status = "ok", result = stats, attempts = 1 })
    out[i] = { seq = seq, body = body }
  end
  return out
end

---Windows and their analytics just committed: announced in the order of their sequence
---numbers, then the LLM, when one is configured and the policy judges the window.
---@param db table
---@param room string
---@param list table[] windows
---@param msgs table[] their { seq, body }
---@param stats table[] their analytics' { seq, body } (stored here when nil)
function M.on_windows(db, room, list, msgs, stats)
  stats = stats or M.store_analytics(db, room, list)
  for i = 1, #list do announce(room, "window", msgs[i].body, msgs[i].seq) end
  for i = 1, #list do announce(room, "evaluation", stats[i].body, stats[i].seq) end
  local evaluator = M.evaluator()
  if evaluator == M.ANALYTICS then return end
  local policy = policies().evaluation
  for _, w in ipairs(list) do
    if judged_by(policy, w) then spawn_llm(db, room, evaluator, policy, w) end
  end
end

local function analytics_within(room)
  return function(tx, list) return M.store_analytics(tx, room, list) end
end

local function get_db()
  return require("qc.db").get()
end

---One stored final through the room's windows runner (qc.owner calls it, in seq order, on
---the room's owner): the state is read, stepped and written back with the windows it closed
---and their analytics in one transaction; a final the state took already is skipped. Then
---the windows are announced and, with an LLM evaluator, judged. Raises on a store error.
---@param db table
---@param policy table policies/windows.lua
---@param room string
---@param final qc.WindowFinal with its seq
---@return integer windows closed
function M.step_final(db, policy, room, final)
  local list, msgs, stats = windows.commit(db, policy, room, final, time.now(), analytics_within(room), { consume = true })
  if #list > 0 then M.on_windows(db, room, list, msgs, stats) end
  return #list
end

---The clock's tick of one room through its windows runner (a silence: no new final), and the
---windows it closed handled as step_final's. Raises on a store error.
---@return integer windows closed
function M.step_tick(db, policy, room, clock, now)
  local list, msgs, stats = windows.commit(db, policy, room, clock, now, analytics_within(room))
  if #list > 0 then M.on_windows(db, room, list, msgs, stats) end
  return #list
end

---The live hook: a final was committed (and announced) by qc.transcripts. The room's owner
---(qc.owner: this process, always, on SQLite) runs the windows policy over the stored finals
---it has not taken yet, this one included, in seq order. Never raises: the final is stored
---already, and a window problem must not fail its caller.
---@param ev table { room, identity, role, track, text, start, end }
---@param _ integer|nil the final's event number (the owner reads it back from the store)
function M.on_final(ev, _)
  if not policies().windows then return end
  local ok, err = pcall(function() require("qc.owner").run(ev.room) end)
  if not ok then log.error("evaluation", "windows step failed", { room = ev.room, error = tostring(err) }) end
end

---The LLM evaluations a room's previous owner left 'pending' (it died while the LLM answered):
---run again in tasks of their own by the room's new owner.
---@param db table
---@param room string
---@return integer how many
function M.rerun_pending(db, room)
  local evaluator = M.evaluator()
  if evaluator == M.ANALYTICS then return 0 end
  local policy = policies().evaluation
  if not policy then return 0 end
  local rows = db:query("SELECT window_idx FROM evaluations WHERE room = ? AND evaluator = ? AND status = 'pending' AND window_idx > 0",
    room, evaluator) or {}
  if #rows == 0 then return 0 end
  local by_index = {}
  for _, w in ipairs(windows.list(db, room)) do by_index[w.index] = w end
  local n = 0
  for _, r in ipairs(rows) do
    local w = by_index[r.window_idx]
    if w then
      w.room = room
      log.info("evaluation", "pending evaluation run again", { room = room, window = w.index, evaluator = evaluator })
      spawn_llm(db, room, evaluator, policy, w)
      n = n + 1
    end
  end
  return n
end

-- Rooms whose windows runner may have a window open, with their interview clock's origin.
-- The state is JSON, read here rather than by the store's JSON functions (PostgreSQL and
-- SQLite spell them differently): see has_open.
local OPEN_ROOMS = [[SELECT w.room AS room, r.started_at AS started_at, w.state AS state FROM window_state w
  JOIN rooms r ON r.name = w.room
  WHERE r.started_at IS NOT NULL]]

-- On PostgreSQL the rooms of every instance are in the store: a room whose interview goes on
-- may be owned by an instance that died, so every such room is a candidate for the tick
-- (taken over when its lock is free), and the open list is read for each in the loop.
local LIVE_ROOMS = OPEN_ROOMS .. " AND r.ended_at IS NULL"

-- Whether a stored windows state has a window open. cjson writes a non-empty list of windows
-- as "open":[{ and an empty one as "open":{} (and a string value cannot hold that text
-- unescaped), so a room in no window costs a substring search, not a decode.
local function has_open(state)
  if not state:find('"open":[{', 1, true) then return false end
  local ok, st = pcall(cjson.decode, state)
  return ok and type(st) == "table" and type(st.open) == "table" and #st.open > 0
end

-- The rows of OPEN_ROOMS whose state has a window open.
local function open_rooms(rows)
  local out = {}
  for _, r in ipairs(rows) do
    if has_open(r.state) then out[#out + 1] = { room = r.room, started_at = r.started_at } end
  end
  return out
end

---A clock tick: every room with open windows goes through the windows policy with the
---interview clock now (now - rooms.started_at) and no new final, so a window closes on time
---in a silence. The windows it closes are handled as on_final's. Only the rooms this process
---owns (qc.owner): on PostgreSQL a room owned by no live instance is taken over here, and the
---tick goes through the room's runner after the stored finals it has not taken yet (the
---count returned is SQLite's alone then). Never raises.
---@param now number|nil unix seconds (time.now())
---@param pause fun()|nil called after a room that closed windows and every 100 rooms (the
---clock service yields to the loop there: 1,000 rooms closing at once cost ~170 ms)
---@return integer windows closed
function M.tick(now, pause)
  local policy = policies().windows
  if not policy then return 0 end
  now = now or time.now()
  local ok, db = pcall(get_db)
  if not ok then return 0 end
  local owner = require "qc.owner"
  local pg = events.backend() == "postgres"
  local rows
  if pg then
    events.listen()
    rows = db:query(LIVE_ROOMS) or {}
  else
    rows = open_rooms(db:query(OPEN_ROOMS) or {})
  end
  local closed = 0
  for i, r in ipairs(rows) do
    local n = 0
    local done, err = pcall(function()
      if not owner.owns(r.room, now) then return end
      if pg then
        -- Through the room's runner, after any finals it has not taken yet (a room just
        -- taken over); counted there, not here.
        if has_open(r.state) then owner.run(r.room, { tick = { clock = now - r.started_at, now = now } }) end
        return
      end
      n = M.step_tick(db, policy, r.room, now - r.started_at, now)
      closed = closed + n
    end)
    if not done then log.error("evaluation", "windows tick failed", { room = r.room, error = tostring(err) }) end
    if pause and (n > 0 or i % 100 == 0) then pause() end
  end
  return closed
end

---The interview ended: closes the open windows, evaluates them, and (with an LLM
---evaluator) writes the interview's report. Waits for the report.
---@param room string
function M.finish(room)
  local p = policies()
  local db = get_db()
  local owner = require "qc.owner"
  if p.windows then
    -- Whichever instance the webhook reached: the finals not taken yet first, then the end.
    -- A runner writing the state at the same time makes the write fail (compare-and-set):
    -- tried again from the state it wrote.
    for attempt = 1, 5 do
      owner.run(room, { force = true })
      local ok, list, msgs, stats = pcall(windows.commit, db, p.windows, room, nil, time.now(), analytics_within(room))
      if ok then
        if #list > 0 then M.on_windows(db, room, list, msgs, stats) end
        break
      end
      local msg = type(list) == "table" and list.message or tostring(list)
      if attempt == 5 or not msg:find(windows.STALE, 1, true) then error(list, 0) end
    end
    owner.release(room)
    -- The room's owner, if another instance, gives it up too.
    local sent, nerr = pcall(events.notify, db, "ended", room)
    if not sent then log.warn("evaluation", "ended not announced", { room = room, error = tostring(nerr) }) end
  end
  local evaluator = M.evaluator()
  if evaluator ~= M.ANALYTICS and p.evaluation then
    local all = windows.list(db, room)
    if #all == 0 then return end
    -- A room that ended twice (a repeated webhook with a new id) keeps its first good report.
    local done = db:first("SELECT status FROM evaluations WHERE room = ? AND window_idx = 0 AND evaluator = ?", room, evaluator)
    if done and done.status == "ok" then return end
    local judged = M.judged_windows(db, room, evaluator, all)
    local r = M.judge_interview(p.evaluation, evaluator, judged, M.interview_analytics(all))
    local _, seq, body = M.store(db, room, M.INTERVIEW, evaluator, r)
    announce(room, "evaluation", body, seq)
  end
end

-- ---- reading back ----------------------------------------------------------------------

local function row_view(r)
  return { status = r.status, result = decode(r.result), raw = r.raw, error = r.error, attempts = r.attempts,
           model = r.model, usage = (r.input_tokens or r.output_tokens) and { input = r.input_tokens, output = r.output_tokens } or nil,
           updated_at = r.updated_at }
end

---window_idx -> evaluator -> view, for a room.
function M.evaluations(db, room)
  local out = {}
  for _, r in ipairs(db:query("SELECT * FROM evaluations WHERE room = ? ORDER BY window_idx, evaluator", room) or {}) do
    out[r.window_idx] = out[r.window_idx] or {}
    out[r.window_idx][r.evaluator] = row_view(r)
  end
  return out
end

---The judged windows with their LLM results (for the report prompt).
function M.judged_windows(db, room, evaluator, all)
  local evs = M.evaluations(db, room)
  local out = {}
  for _, w in ipairs(all) do
    local e = evs[w.index] and evs[w.index][evaluator]
    if e and e.status == "ok" then
      out[#out + 1] = { index = w.index, start = w.start, ["end"] = w["end"], text = w.text, result = e.result }
    end
  end
  return out
end

---Analytics over a whole interview: the finals of all its windows, each once.
---@param all table[] windows
function M.interview_analytics(all)
  local seen, finals = {}, {}
  for _, w in ipairs(all) do
    for _, f in ipairs(w.finals or {}) do
      local key = f.seq or (tostring(f.identity) .. "|" .. tostring(f.start) .. "|" .. tostring(f.text))
      if not seen[key] then
        seen[key] = true
        finals[#finals + 1] = f
      end
    end
  end
  return analytics.compute(finals)
end

local json_array = function(t)
  local ok, json = pcall(require, "qc.json")
  if ok then return json.array(t) end
  return t
end

---Windows with their evaluations, and the interview's (evs: window_idx -> evaluator -> view).
function M.list_of(room, all, evs)
  local out = {}
  for i, w in ipairs(all) do
    out[i] = { index = w.index, start = w.start, ["end"] = w["end"], text = w.text, finals = json_array(w.finals),
               seq = w.seq, evaluations = evs[w.index] or {} }
  end
  return { room = room, windows = json_array(out), interview = evs[M.INTERVIEW] }
end

---GET /rooms/{room}/evaluations: windows with their evaluations, and the interview's.
function M.list(db, room)
  return M.list_of(room, windows.list(db, room), M.evaluations(db, room))
end

---GET /rooms/{room}/report: the whole interview.
function M.report(db, room)
  return M.report_of(room, windows.list(db, room), M.evaluations(db, room))
end

---The report of windows and their evaluations (evs: window_idx -> evaluator -> view).
---@param policy table|nil policies/evaluation.lua (the live one when nil): the rubric
function M.report_of(room, all, evs, policy)
  local stats = M.interview_analytics(all)
  local scores, counts, usage = {}, { ok = 0, invalid = 0, error = 0, pending = 0 }, { input = 0, output = 0 }
  policy = policy or policies().evaluation
  for idx, by in pairs(evs) do
    for name, e in pairs(by) do
      if name ~= M.ANALYTICS then
        counts[e.status] = (counts[e.status] or 0) + 1
        if e.usage then
          usage.input = usage.input + (e.usage.input or 0)
          usage.output = usage.output + (e.usage.output or 0)
        end
        if idx ~= M.INTERVIEW and e.status == "ok" and type(e.result) == "table" and policy then
          for _, c in ipairs(policy.rubric) do
            local v = e.result[c.key]
            if type(v) == "number" then
              local s = scores[c.key] or { title = c.title, min = c.min, max = c.max, sum = 0, n = 0 }
              s.sum, s.n = s.sum + v, s.n + 1
              scores[c.key] = s
            end
          end
        end
      end
    end
  end
  for _, s in pairs(scores) do
    s.mean = math.floor(s.sum / s.n * 100 + 0.5) / 100
    s.windows, s.sum, s.n = s.n, nil, nil
  end
  local summary
  for name, e in pairs(evs[M.INTERVIEW] or {}) do
    if name ~= M.ANALYTICS then summary = e; summary.evaluator = name end
  end
  local first, last = all[1], all[#all]
  return {
    room = room, windows = #all,
    start = first and first.start or nil, ["end"] = last and last["end"] or nil,
    analytics = stats, scores = scores, evaluations = counts, usage = usage, summary = summary,
  }
end

-- "1 turn", "2 turns": a count with its noun.
local function count(n, noun)
  return ("%d %s"):format(n, n == 1 and noun or noun .. "s")
end

local function pct(x) return ("%d%%"):format(math.floor((x or 0) * 100 + 0.5)) end

---The report as a readable Markdown page.
---@param r table M.report's answer
---@return string
function M.markdown(r)
  local a = r.analytics
  local out = { ("# Interview report: %s"):format(r.room), "",
    ("%s, %.0f s of conversation, %.0f s of speech, %s, %s."):format(count(r.windows, "window"),
      a.duration or 0, a.speech or 0, count(a.turns or 0, "turn"), count(a.questions or 0, "question")), "",
    "## Conversation", "", "| role | talk time (s) | share | words | words/min | turns | questions | fillers | interruptions |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |" }
  local roles = {}
  for role in pairs(a.roles or {}) do roles[#roles + 1] = role end
  table.sort(roles)
  for _, role in ipairs(roles) do
    local x = a.roles[role]
    out[#out + 1] = ("| %s | %.1f | %s | %d | %.0f | %d | %d | %d | %d |"):format(role, x.talk_time, pct(x.talk_ratio),
      x.words, x.wpm, x.turns, x.questions, x.filler_count, x.interruptions)
  end
  out[#out + 1] = ""
  if a.longest_monologue then
    local m = a.longest_monologue
    out[#out + 1] = ("Longest monologue: %s, %.1f s (%.0f-%.0f s)."):format(m.role, m.duration, m.start, m["end"])
  end
  out[#out + 1] = ("Overlaps: %d (%.1f s), interruptions: %d. Silences of 2 s or more: %d (%.1f s, longest %.1f s)."):format(
    a.overlaps.count, a.overlaps.seconds, a.interruptions, a.silences.count, a.silences.seconds, a.silences.longest)
  local keys = {}
  for k in pairs(r.scores) do keys[#keys + 1] = k end
  table.sort(keys)
  if #keys > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "## Scores (mean over judged windows)"
    out[#out + 1] = ""
    for _, k in ipairs(keys) do
      local s = r.scores[k]
      out[#out + 1] = ("- %s: %.2f (%d..%d, %s)"):format(s.title or k, s.mean, s.min, s.max, count(s.windows, "window"))
    end
  end
  if r.summary then
    out[#out + 1] = ""
    out[#out + 1] = "## Summary"
    out[#out + 1] = ""
    local res = r.summary.result
    if r.summary.status == "ok" and type(res) == "table" then
      out[#out + 1] = tostring(res.summary or "")
      if res.recommendation then out[#out + 1] = ""; out[#out + 1] = "Recommendation: " .. tostring(res.recommendation) end
    else
      out[#out + 1] = ("The summary failed (%s): %s"):format(tostring(r.summary.status), tostring(r.summary.error))
    end
  end
  return table.concat(out, "\n") .. "\n"
end

return M
