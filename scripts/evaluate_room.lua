-- Re-runs windows and evaluation over a stored transcript, so an operator can edit a policy
-- and see what it would have made of past interviews.
-- Run: quantcoach run scripts/evaluate_room.lua ROOM [--policies DIR] [--evaluator E] [--store] (see --help),
-- or over files: quantcoach transcribe ... --evaluate (which runs this script over its JSON), or
-- quantcoach transcribe ... --format json | quantcoach run scripts/evaluate_room.lua --transcript -
local argparse = require "argparse"
local cjson = require "cjson"
local analytics = require "qc.analytics"
local cli = require "qc.cli"
local db_mod = require "qc.db"
local evaluation = require "qc.evaluation"
local generation = require "qc.generation"
local host = require "qc.host"
local json = require "qc.json"
local llm = require "qc.llm"
local tasks = require "qc.tasks"
local time = require "qc.time"
local windows = require "qc.windows"

local PROG = "evaluate_room"

local parser = argparse("quantcoach run scripts/evaluate_room.lua", "Re-run windows and evaluation over a stored transcript.")
  :epilog([[
The room's final transcripts are read from the store (QC_STORE_URL or QC_DATA, or --db) in the order
they were committed and go through the windows policy and the evaluators as they
did live. Without --store the result is printed and nothing is written. With
--store the room's windows and evaluations are replaced by the new ones (no live
event is sent: the interview is over). With --failed only the stored windows
whose LLM evaluation failed (error, invalid, pending) are evaluated again, and
their new results are stored.

With --transcript, the finals come from `quantcoach transcribe --format json` (a
file, or - for stdin) instead of the store: the same windows and evaluation for
recorded files.

Exit status: 0 when every evaluation succeeded, 1 when one failed, 2 for bad
usage or a room with no transcript.]])
  :help_max_width(80)
parser:argument("room", "The room's name."):args("?")
parser:option("--transcript", "Read the finals from this file (- for stdin), the JSON of `quantcoach transcribe --format json`, instead of the store."):argname("<file>")
parser:option("--policies", "Policy directory (default: the configured one)."):argname("<dir>")
parser:option("--evaluator", "analytics, openai or anthropic (default: QC_EVALUATOR)."):choices({ "analytics", "openai", "anthropic" })
parser:option("--db", "The store: a SQLite file or a postgres:// URI (default: QC_STORE_URL, else QC_DATA/quantcoach.db)."):argname("<store>")
parser:option("--format", "json or md (default json)."):choices({ "json", "md" })
parser:flag("--store", "Replace the room's stored windows and evaluations with the new ones.")
parser:flag("--failed", "Only evaluate again the stored windows whose LLM evaluation failed; store the results.")

local ok_args, args = parser:pparse(arg)
if not ok_args then return cli.usage_error(parser, args) end
if not args.room and not args.transcript then return cli.usage_error(parser, "a room (or --transcript FILE) is required") end
if args.transcript and (args.store or args.failed) then
  return cli.usage_error(parser, "--store and --failed work on a stored room, not on --transcript")
end

local config = host.config()
local policies
if args.policies then
  local gok, gen = pcall(generation.new_generation, args.policies, config.scripts_dir, 0)
  if not gok then return cli.bad_value(PROG, "--policies " .. args.policies .. ": " .. tostring(gen)) end
  policies = gen.policies
else
  policies = require "qc.policies"
end
if not policies.windows then return cli.bad_value(PROG, "the policy set has no windows.lua") end
local evaluator = args.evaluator or config.evaluator
local eval_policy = policies.evaluation
if evaluator ~= "analytics" and not eval_policy then
  return cli.bad_value(PROG, "--evaluator " .. evaluator .. " needs the policy set's evaluation.lua")
end

-- The finals of `quantcoach transcribe --format json`: its segments, in time order.
local function transcript_finals(path)
  local f, err = path == "-" and io.stdin or io.open(path, "rb")
  if not f then return nil, "--transcript " .. path .. ": " .. tostring(err) end
  local text = f:read("a")
  if f ~= io.stdin then f:close() end
  local ok, doc = pcall(cjson.decode, text or "")
  if not ok or type(doc) ~= "table" or type(doc.segments) ~= "table" then
    return nil, "--transcript " .. path .. ": not the JSON of quantcoach transcribe --format json"
  end
  local out = {}
  for i, g in ipairs(doc.segments) do
    if type(g) ~= "table" or type(g.start) ~= "number" or type(g["end"]) ~= "number" or type(g.text) ~= "string" then
      return nil, ("--transcript %s: segment %d lacks start, end or text"):format(path, i)
    end
    out[i] = { seq = i, identity = tostring(g.speaker or g.role), role = g.role, track = tostring(g.speaker or g.role),
               start_s = g.start, end_s = g["end"], text = g.text }
  end
  return out
end

local room = args.room or "transcript"
local db
if not args.transcript then
  local dok, handle = pcall(db_mod.open, args.db or db_mod.target())
  if not dok then return cli.bad_value(PROG, "store: " .. tostring(type(handle) == "table" and handle.message or handle)) end
  db = handle
end

local settings = evaluator ~= "analytics" and llm.settings(evaluator) or nil

-- One LLM evaluation per judged window, at most QC_LLM_CONCURRENCY at once.
local function judge_all(list)
  local results = tasks.map(list, math.max(1, settings.concurrency), function(w)
    return evaluation.judge_window(eval_policy, evaluator, w, settings)
  end)
  local out = {}
  for i, r in ipairs(results) do
    out[i] = r.ok and r.value or { status = "error", error = r.error, attempts = 0 }
  end
  return out
end

local failed = 0

if args.failed then
  if evaluator == "analytics" then return cli.bad_value(PROG, "--failed needs an LLM evaluator") end
  local stored = windows.list(db, room)
  local evs = evaluation.evaluations(db, room)
  local todo = {}
  for _, w in ipairs(stored) do
    local e = evs[w.index] and evs[w.index][evaluator]
    if e and e.status ~= "ok" then todo[#todo + 1] = w end
  end
  for i, r in ipairs(judge_all(todo)) do
    local _, seq, body = evaluation.store(db, room, todo[i].index, evaluator, r)
    evaluation.announce(room, "evaluation", body, seq)
    if r.status ~= "ok" then failed = failed + 1 end
    io.stderr:write(("%s: window %d: %s%s\n"):format(PROG, todo[i].index, r.status, r.error and (" (" .. r.error .. ")") or ""))
  end
  io.stderr:write(("%s: %d evaluated again, %d failed\n"):format(PROG, #todo, failed))
  db:close()
  return failed > 0 and 1 or 0
end

local finals
if args.transcript then
  local terr
  finals, terr = transcript_finals(args.transcript)
  if not finals then return cli.bad_value(PROG, terr) end
  if #finals == 0 then return cli.bad_value(PROG, "--transcript " .. args.transcript .. " holds no segment") end
else
  finals = db:query([[SELECT seq, identity, role, track, start_s, end_s, text FROM events
                      WHERE room = ? AND kind = 'final' ORDER BY seq]], room)
  if #finals == 0 then
    db:close()
    return cli.bad_value(PROG, "room " .. room .. " has no stored transcript")
  end
end

-- Windows, as the live runner would have made them.
local st, all = windows.new_state(), {}
for _, f in ipairs(finals) do
  local list = windows.step(policies.windows, st, room, { seq = f.seq, identity = f.identity, role = f.role,
    track = f.track, start = f.start_s, ["end"] = f.end_s, text = f.text })
  for _, w in ipairs(list) do all[#all + 1] = w end
end
for _, w in ipairs(windows.finish(policies.windows, st, room)) do all[#all + 1] = w end

-- Evaluations: analytics for every window, the LLM for those the policy judges.
local evs, judged = {}, {}
for _, w in ipairs(all) do
  evs[w.index] = { analytics = { status = "ok", result = analytics.compute(w.finals, w), attempts = 1 } }
  if evaluator ~= "analytics" then
    local jok, yes = pcall(eval_policy.judge, w)
    if jok and yes == true then judged[#judged + 1] = w end
  end
end
if evaluator ~= "analytics" then
  for i, r in ipairs(judge_all(judged)) do
    evs[judged[i].index][evaluator] = r
    if r.status ~= "ok" then failed = failed + 1 end
  end
  local ok_windows = {}
  for _, w in ipairs(judged) do
    local r = evs[w.index][evaluator]
    if r.status == "ok" then
      ok_windows[#ok_windows + 1] = { index = w.index, start = w.start, ["end"] = w["end"], text = w.text, result = r.result }
    end
  end
  local summary = evaluation.judge_interview(eval_policy, evaluator, ok_windows, evaluation.interview_analytics(all), settings)
  evs[evaluation.INTERVIEW] = { [evaluator] = summary }
  if summary.status ~= "ok" then failed = failed + 1 end
end

if args.store then
  local now = time.now()
  local sok, serr = db:transaction(function()
    db_mod.check(db:run("DELETE FROM windows WHERE room = ?", room))
    db_mod.check(db:run("DELETE FROM evaluations WHERE room = ?", room))
    st.max_length = nil
    db_mod.check(db:run("INSERT INTO window_state (room, state, updated_at) VALUES (?, ?, ?) ON CONFLICT (room) DO UPDATE SET "
      .. "state = excluded.state, updated_at = excluded.updated_at", room, cjson.encode(st), now))
    for _, w in ipairs(all) do
      local msg = windows.message(w, nil)
      assert(db:run("INSERT INTO windows (room, idx, seq, start_s, end_s, text, body, created_at) VALUES (?, ?, NULL, ?, ?, ?, ?, ?)",
        room, w.index, w.start, w["end"], w.text, cjson.encode(msg), now))
    end
  end)
  if not sok then return cli.bad_value(PROG, "store: " .. tostring(serr)) end
  for idx, by in pairs(evs) do
    for name, r in pairs(by) do evaluation.store(db, room, idx, name, r, { event = false }) end
  end
end

local function view(r)
  return { status = r.status, result = r.result, raw = r.raw, error = r.error, attempts = r.attempts,
           model = r.model, usage = r.usage }
end
local views = {}
for idx, by in pairs(evs) do
  views[idx] = {}
  for name, r in pairs(by) do views[idx][name] = view(r) end
end
local report = evaluation.report_of(room, all, views, eval_policy)
if args.format == "md" then
  io.stdout:write(evaluation.markdown(report))
else
  local out = evaluation.list_of(room, all, views)
  out.evaluator = evaluator
  out.report = report
  out.stored = args.store or false
  io.stdout:write(json.encode(out), "\n")
end
if db then db:close() end
return failed > 0 and 1 or 0
