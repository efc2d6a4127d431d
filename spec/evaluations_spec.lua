-- Windows and evaluations on the store: scripts/evaluate_room.lua over a stored transcript
-- (analytics, and an LLM evaluator against the fake chat server, with stored errors and a
-- re-run of the failed ones), and GET /rooms/{room}/evaluations and /report on a real server.
local server = require "support.server"
local fl = require "support.fake_llm"
local cjson = require "cjson"

local quote = server.quote

-- A stored interview: ~80 s, the interviewer asks, the candidate answers at length.
local FINALS = {
  { "interviewer", 0.5, 6, "so what is the expected value of a fair die" },
  { "candidate", 7, 19, "um i think it is three and a half because each face from one to six is equally likely so the average is three point five" },
  { "interviewer", 20, 26, "and how would you price a call option on a stock" },
  { "candidate", 28, 45, "uh i would use black scholes with the implied volatility from the market and discount at the risk free rate over the time to expiry" },
  { "interviewer", 46, 50, "good what if volatility is stochastic" },
  { "candidate", 51, 62, "then i would look at a heston model and calibrate it to the volatility surface you know using the smile" },
  { "interviewer", 63, 66, "and how would you hedge that position" },
  { "candidate", 67, 80, "i would delta hedge with the underlying and rebalance as the delta moves and watch the vega too" },
}

local function make_store(dir, room)
  local db = server.open_db(dir)
  assert(db:run("INSERT INTO rooms (name, created_at, last_seq) VALUES (?, 0, ?)", room, #FINALS))
  for i, f in ipairs(FINALS) do
    local body = cjson.encode { type = "transcript", seq = i, room = room, identity = f[1] .. "-1", role = f[1],
                                text = f[4], start = f[2], ["end"] = f[3], final = true }
    assert(db:run([[INSERT INTO events (room, seq, kind, created_at, identity, role, track, start_s, end_s, text, body)
                    VALUES (?, ?, 'final', 0, ?, ?, ?, ?, ?, ?, ?)]], room, i, f[1] .. "-1", f[1], "TR_" .. f[1], f[2], f[3], f[4], body))
  end
  db:close()
end

local function query(dir, sql, ...)
  local db = server.open_db(dir)
  local rows = assert(db:query(sql, ...))
  db:close()
  return rows
end

-- Runs scripts/evaluate_room.lua; returns its exit status, stdout and stderr.
local function evaluate(env, argv)
  local dir = server.tmpdir()
  local e = { "QC_ENV_FILE=/nonexistent" }
  -- Under SPEC_PG_URL, the data directory's PostgreSQL database.
  if env.QC_DATA then env.QC_STORE_URL = server.store_url_for(env.QC_DATA) end
  for k, v in pairs(env) do e[#e + 1] = k .. "=" .. quote(v) end
  local a = {}
  for i, x in ipairs(argv) do a[i] = quote(x) end
  local cmd = ("env %s %s run %s %s > %s/out 2> %s/err; echo $? > %s/rc"):format(table.concat(e, " "), quote(server.bin),
    quote(server.source .. "/scripts/evaluate_room.lua"), table.concat(a, " "), dir, dir, dir)
  os.execute(cmd)
  local rc = tonumber(server.read_file(dir .. "/rc"))
  local out, err = server.read_file(dir .. "/out"), server.read_file(dir .. "/err")
  os.execute("rm -rf " .. quote(dir))
  return rc, out, err
end

local GOOD = '{"correctness":4,"approach":4,"communication":3,"hints_needed":0,"evidence":"three and a half","feedback":"solid"}'
local REPORT = '{"correctness":4,"approach":4,"communication":4,"hints_needed":0,"summary":"Good.","strengths":["pricing"],"concerns":[],"recommendation":"hire"}'

describe("evaluate_room.lua", function()
  local dir

  before_each(function()
    dir = server.tmpdir()
    make_store(dir, "iv-1")
  end)
  after_each(function() os.execute("rm -rf " .. quote(dir)) end)

  it("re-runs windows and analytics over a stored transcript and prints them, storing nothing", function()
    local rc, out, err = evaluate({ QC_DATA = dir }, { "iv-1" })
    assert.equal(0, rc, err)
    local doc = cjson.decode(out)
    assert.equal("analytics", doc.evaluator)
    assert.is_true(#doc.windows >= 3)
    local seen = {}
    for i, w in ipairs(doc.windows) do
      assert.equal(i, w.index)
      assert.is_true(w["end"] - w.start <= 20)
      assert.equal("ok", w.evaluations.analytics.status)
      for _, f in ipairs(w.finals) do seen[f.seq] = true end
    end
    for i = 1, #FINALS do assert.truthy(seen[i], "final " .. i .. " in no window") end
    assert.matches("^Interviewer: so what is the expected value", doc.windows[1].text)
    assert.equal(4, doc.report.analytics.roles.candidate.turns)
    assert.equal(8, doc.report.analytics.turns)
    assert.equal(0, query(dir, "SELECT count(*) AS n FROM windows")[1].n)
  end)

  it("stores with --store, and another windows policy gives other windows", function()
    local rc, out, err = evaluate({ QC_DATA = dir }, { "iv-1", "--store" })
    assert.equal(0, rc, err)
    local n = #cjson.decode(out).windows
    assert.equal(n, query(dir, "SELECT count(*) AS n FROM windows WHERE room = 'iv-1'")[1].n)
    assert.equal(n, query(dir, "SELECT count(*) AS n FROM evaluations WHERE room = 'iv-1' AND evaluator = 'analytics'")[1].n)

    local pdir = server.copy_policies()
    local path = pdir .. "/windows.lua"
    local text = server.read_file(path):gsub("M%.length = 20", "M.length = 60"):gsub("M%.hop = 10", "M.hop = 60"):gsub("M%.min_length = 8", "M.min_length = 59")
    -- The examples describe 20 s windows: drop them with the rules they describe.
    text = text:gsub("\nM%.examples = {.-\n}\n", "\n")
    server.write_file(path, text)
    rc, out, err = evaluate({ QC_DATA = dir }, { "iv-1", "--policies", pdir, "--store" })
    assert.equal(0, rc, err)
    local doc = cjson.decode(out)
    assert.is_true(#doc.windows < n)
    assert.is_true(doc.windows[1]["end"] - doc.windows[1].start > 20)
    assert.equal(#doc.windows, query(dir, "SELECT count(*) AS n FROM windows WHERE room = 'iv-1'")[1].n)
  end)

  it("prints a readable report with --format md", function()
    local rc, out, err = evaluate({ QC_DATA = dir }, { "iv-1", "--format", "md" })
    assert.equal(0, rc, err)
    assert.matches("# Interview report: iv-1", out, 1, true)
    assert.matches("| candidate |", out, 1, true)
  end)

  it("judges files: the JSON of `quantcoach transcribe --format json` with --transcript", function()
    local segs = {}
    for i, f in ipairs(FINALS) do
      segs[i] = { role = f[1], speaker = f[1]:sub(1, 1):upper() .. f[1]:sub(2), start = f[2], ["end"] = f[3], partials = 1,
                  text = f[4], words = {} }
    end
    local path = dir .. "/tr.json"
    server.write_file(path, cjson.encode { engine = "local", tracks = {}, partials = 6, segments = segs })
    local rc, out, err = evaluate({ QC_DATA = dir .. "/none" }, { "--transcript", path })
    assert.equal(0, rc, err)
    local doc = cjson.decode(out)
    local _, from_store = evaluate({ QC_DATA = dir }, { "iv-1" })
    local stored = cjson.decode(from_store)
    assert.equal(#stored.windows, #doc.windows)
    for i, w in ipairs(doc.windows) do
      assert.same({ stored.windows[i].start, stored.windows[i]["end"], stored.windows[i].text }, { w.start, w["end"], w.text })
    end
    assert.equal(8, doc.report.analytics.turns)
    server.write_file(path, '{"segments":[{"start":1}]}')
    rc, _, err = evaluate({ QC_DATA = dir }, { "--transcript", path })
    assert.equal(2, rc)
    assert.matches("segment 1 lacks start, end or text", err, 1, true)
    rc, _, err = evaluate({ QC_DATA = dir }, { "--transcript", path, "--store" })
    assert.equal(2, rc)
    assert.matches("--store and --failed work on a stored room", err, 1, true)
  end)

  it("says so for a room without a transcript", function()
    local rc, _, err = evaluate({ QC_DATA = dir }, { "nobody" })
    assert.equal(2, rc)
    assert.matches("evaluate_room: room nobody has no stored transcript", err, 1, true)
  end)

  describe("with an LLM evaluator", function()
    local fake
    setup(function() fake = fl.start() end)
    teardown(function() if fake then fake:stop() end end)
    before_each(function() fake:reset() end)

    local function env()
      return { QC_DATA = dir, QC_LLM_BASE_URL = fake.base, QC_LLM_API_KEY = "sk-spec", QC_LLM_MODEL = "gpt-spec",
               QC_LLM_TIMEOUT_MS = "1000", QC_LLM_RETRIES = "1", QC_LLM_CONCURRENCY = "1" }
    end

    it("stores each window's result, a malformed reply as received, an error with its cause, and runs the failed ones again", function()
      -- Judged windows go out one at a time (concurrency 1), in order, then the report.
      local rc0, out0 = evaluate({ QC_DATA = dir }, { "iv-1" })
      assert.equal(0, rc0)
      local plain = cjson.decode(out0).windows
      local n = #plain
      -- What the shipped evaluation policy judges: windows where the candidate said 12 words.
      local to_judge = 0
      for _, w in ipairs(plain) do
        -- (the policy counts the words of the candidate's finals in the window, whole)
        local words = 0
        for _, f in ipairs(w.finals) do
          if f.role == "candidate" then for _ in f.text:gmatch("%S+") do words = words + 1 end end
        end
        if words >= 12 then to_judge = to_judge + 1 end
      end
      assert.is_true(to_judge >= 4 and to_judge < n, ("judged %d of %d"):format(to_judge, n))
      local replies = { { content = GOOD, usage = { input = 200, output = 30 } },
                        { content = "The candidate was great (no JSON here)" },
                        { status = 500, body = { error = { message = "boom" } } }, { status = 500, body = { error = { message = "boom" } } } }
      for _ = 4, to_judge do replies[#replies + 1] = { content = GOOD } end
      replies[#replies + 1] = { content = REPORT }
      fake:queue(replies)
      local rc, out, err = evaluate(env(), { "iv-1", "--evaluator", "openai", "--store" })
      assert.equal(1, rc, err)
      local doc = cjson.decode(out)
      -- The judged windows (those where the candidate said enough), in order.
      local ev, judged = {}, {}
      for _, w in ipairs(doc.windows) do
        if w.evaluations.openai then ev[#ev + 1] = w.evaluations.openai; judged[#judged + 1] = w.index end
      end
      assert.equal(to_judge, #judged, cjson.encode(judged))
      assert.equal("ok", ev[1].status)
      assert.equal(4, ev[1].result.correctness)
      assert.same({ input = 200, output = 30 }, ev[1].usage)
      assert.equal("invalid", ev[2].status)
      assert.equal("The candidate was great (no JSON here)", ev[2].raw)
      assert.equal("error", ev[3].status)
      assert.equal(2, ev[3].attempts)
      assert.matches("HTTP 500: boom", ev[3].error, 1, true)
      assert.equal("hire", doc.interview.openai.result.recommendation)

      local rows = query(dir, "SELECT window_idx, status, raw, error, attempts, input_tokens FROM evaluations WHERE evaluator = 'openai' ORDER BY window_idx")
      assert.equal(#judged + 1, #rows) -- every judged window, and the interview (0)
      assert.equal(0, rows[1].window_idx)
      assert.equal("ok", rows[1].status)
      assert.same({ judged[1], "ok", 200 }, { rows[2].window_idx, rows[2].status, rows[2].input_tokens })
      assert.same({ judged[2], "invalid" }, { rows[3].window_idx, rows[3].status })
      assert.equal("The candidate was great (no JSON here)", rows[3].raw)
      assert.same({ judged[3], "error", "HTTP 500: boom" }, { rows[4].window_idx, rows[4].status, rows[4].error })
      assert.equal(n, query(dir, "SELECT count(*) AS n FROM windows WHERE room = 'iv-1'")[1].n)

      -- The request the server saw: the rubric's prompt and schema.
      local call = fake:calls()[1]
      assert.equal("Bearer sk-spec", call.headers.authorization)
      assert.equal("gpt-spec", call.body.model)
      assert.matches("Interviewer: so what is the expected value", call.body.messages[2].content, 1, true)
      assert.matches("hints_needed", call.body.messages[2].content, 1, true)
      assert.same({ "correctness", "approach", "communication", "hints_needed", "evidence", "feedback" },
        call.body.response_format.json_schema.schema.required)

      -- Run again: only the two that failed go out, and both are stored as ok.
      fake:reset()
      fake:queue { { content = GOOD }, { content = GOOD } }
      rc, out, err = evaluate(env(), { "iv-1", "--evaluator", "openai", "--failed" })
      assert.equal(0, rc, err)
      assert.equal(2, #fake:calls())
      rows = query(dir, "SELECT window_idx, status, attempts FROM evaluations WHERE evaluator = 'openai' AND status <> 'ok'")
      assert.equal(0, #rows)
      assert.equal(3, query(dir, "SELECT attempts FROM evaluations WHERE evaluator = 'openai' AND window_idx = ?", judged[3])[1].attempts)
    end)

    it("asks the Anthropic Messages API when told to", function()
      local replies = {}
      for i = 1, 12 do replies[i] = { content = GOOD } end
      replies[#replies + 1] = { content = REPORT }
      fake:queue(replies)
      local e = env()
      e.ANTHROPIC_API_KEY, e.QC_ANTHROPIC_URL, e.QC_ANTHROPIC_MODEL = "ak-spec", fake.base, "claude-spec"
      local rc, out, err = evaluate(e, { "iv-1", "--evaluator", "anthropic" })
      assert.is_true(rc == 0 or rc == 1, err)
      local doc = cjson.decode(out)
      assert.equal("ok", doc.windows[1].evaluations.anthropic.status)
      local call = fake:calls()[1]
      assert.equal("/v1/messages", call.path)
      assert.equal("ak-spec", call.headers["x-api-key"])
      assert.equal("claude-spec", call.body.model)
      assert.is_nil(call.body.temperature)
    end)
  end)
end)

describe("GET /rooms/{room}/evaluations and /report", function()
  local dir, s

  setup(function()
    dir = server.tmpdir()
    make_store(dir, "iv-2")
    local rc, _, err = evaluate({ QC_DATA = dir }, { "iv-2", "--store" })
    assert(rc == 0, err)
    s = server.start { data = dir, env = { QC_API_KEYS = "spec-key" } }
  end)
  teardown(function()
    if s then s:stop() end
    os.execute("rm -rf " .. quote(dir))
  end)

  local AUTH = { Authorization = "Bearer spec-key" }

  it("serves the stored windows with their analytics", function()
    local status, body = s:request("GET", "/rooms/iv-2/evaluations", nil, AUTH)
    assert.equal(200, status, s:log_text())
    assert.equal("iv-2", body.room)
    assert.is_true(#body.windows >= 3)
    local w = body.windows[1]
    assert.equal(1, w.index)
    assert.matches("^Interviewer: ", w.text)
    assert.equal("ok", w.evaluations.analytics.status)
    assert.is_number(w.evaluations.analytics.result.roles.interviewer.talk_time)
  end)

  it("serves the interview's report as JSON and as Markdown", function()
    local status, body = s:request("GET", "/rooms/iv-2/report", nil, AUTH)
    assert.equal(200, status)
    assert.equal(8, body.analytics.turns)
    assert.equal(79.5, body.analytics.duration)
    local status2, md, hdrs = s:request("GET", "/rooms/iv-2/report?format=md", nil, AUTH)
    assert.equal(200, status2)
    assert.matches("^text/markdown", hdrs["content-type"])
    assert.matches("# Interview report: iv-2", md, 1, true)
  end)

  it("needs an API key, knows its rooms and its formats", function()
    local status, body = s:request("GET", "/rooms/iv-2/evaluations")
    assert.equal(401, status)
    assert.equal("UNAUTHORIZED", body.error.code)
    status, body = s:request("GET", "/rooms/nobody/report", nil, AUTH)
    assert.equal(404, status)
    assert.equal("NOT_FOUND", body.error.code)
    status, body = s:request("GET", "/rooms/iv-2/report?format=pdf", nil, AUTH)
    assert.equal(422, status)
    assert.equal("format", body.error.field)
  end)
end)

describe("the Markdown report", function()
  it("says 1 turn, 1 question, 1 window: counts agree with their nouns", function()
    local evaluation = require "qc.evaluation"
    local a = require("qc.analytics").compute({
      { seq = 1, identity = "cand-1", role = "candidate", start = 0, ["end"] = 4, text = "what is the question?" } })
    local md = evaluation.markdown({ room = "r1", windows = 1, analytics = a, scores = {
      correctness = { title = "Correctness", mean = 3, min = 3, max = 3, windows = 1 } } })
    assert.matches("1 window, 4 s of conversation, 4 s of speech, 1 turn, 1 question.", md, 1, true)
    assert.matches("(3..3, 1 window)", md, 1, true)
    assert.not_matches("1 turns", md, 1, true)
    a.turns, a.questions = 2, 0
    md = evaluation.markdown({ room = "r1", windows = 2, analytics = a, scores = {} })
    assert.matches("2 windows, 4 s of conversation, 4 s of speech, 2 turns, 0 questions.", md, 1, true)
  end)
end)
