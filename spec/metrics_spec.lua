-- GET /metrics: the text parses under the exposition format's rules (a strict parser of
-- format 0.0.4 below, itself checked against broken texts), and each counter moves when its
-- event happens: requests by route and status, Lua errors and budget stops, policy loads,
-- rooms, and, with festival speech fed through /ingest and an LLM evaluator (the fake),
-- ingest tracks and frames, STT finals, the speech-end -> final latency, windows,
-- evaluations by outcome and LLM tokens. Off loopback without the admin key it is 403.
local cjson = require "cjson"
local server = require "support.server"
local lk = require "support.fake_livekit"
local fl = require "support.fake_llm"
local peers = require "support.peers"
local speech = require "support.speech"

local NAME = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local LABEL = "^[a-zA-Z_][a-zA-Z0-9_]*$"
local TYPES = { counter = true, gauge = true, histogram = true, summary = true, untyped = true }

local function number(s)
  if s == "+Inf" then return math.huge end
  if s == "-Inf" then return -math.huge end
  if s == "NaN" then return 0 / 0 end
  if not s:match("^[-+]?%d*%.?%d+[eE]?[-+]?%d*$") and not s:match("^[-+]?%d+%.?%d*[eE][-+]?%d+$") then return nil end
  return tonumber(s)
end

-- Labels of `{a="x",b="y"}` (the text inside the braces): a table, or raises.
local function labels_of(text, where)
  local out, pos = {}, 1
  while pos <= #text do
    local name, after = text:match("^([^=]+)=\"()", pos)
    assert(name and name:match(LABEL), where .. ": bad label name at " .. text:sub(pos))
    assert(out[name] == nil, where .. ": label " .. name .. " twice")
    local value, i = {}, after
    while true do
      local c = text:sub(i, i)
      assert(c ~= "", where .. ": unterminated label value")
      if c == "\\" then
        local n = text:sub(i + 1, i + 1)
        assert(n == "\\" or n == '"' or n == "n", where .. ": bad escape \\" .. n)
        value[#value + 1] = n == "n" and "\n" or n
        i = i + 2
      elseif c == '"' then
        break
      else
        assert(c ~= "\n", where .. ": newline in a label value")
        value[#value + 1] = c
        i = i + 1
      end
    end
    out[name] = table.concat(value)
    pos = i + 1
    if pos <= #text then
      assert(text:sub(pos, pos) == ",", where .. ": expected , between labels")
      pos = pos + 1
    end
  end
  return out
end

local function series_key(name, labels)
  local ks = {}
  for k, v in pairs(labels) do ks[#ks + 1] = k .. "=" .. v end
  table.sort(ks)
  return name .. "{" .. table.concat(ks, ",") .. "}"
end

---Parses exposition text strictly; raises on anything the format does not allow. Returns
---{ families = { name = { type, help, samples = { {name, labels, value} } } }, value = fn }.
local function parse(text)
  assert(text:sub(-1) == "\n", "the text must end with a newline")
  local families, order, current, seen, done = {}, {}, nil, {}, {}
  local function family(name)
    local f = families[name]
    if not f then
      f = { name = name, samples = {} }
      families[name] = f
      order[#order + 1] = name
    end
    return f
  end
  -- The family a sample belongs to: its own name, or a histogram's base.
  local function owner(name)
    for _, suffix in ipairs { "_bucket", "_sum", "_count" } do
      local base = name:sub(1, -#suffix - 1)
      if name:sub(-#suffix) == suffix and families[base] and families[base].type == "histogram" then return base end
    end
    return name
  end
  local n = 0
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    local where = "line " .. n .. " (" .. line .. ")"
    assert(not line:find("\r"), where .. ": CR")
    if line:match("^#") then
      local kind, name, rest = line:match("^# (%u+) (%S+) ?(.*)$")
      if kind == "HELP" then
        assert(name:match(NAME), where .. ": bad name")
        local f = family(name)
        assert(not f.help, where .. ": second HELP")
        local i = 1
        while true do
          i = rest:find("\\", i, true)
          if not i then break end
          local n = rest:sub(i + 1, i + 1)
          assert(n == "\\" or n == "n", where .. ": HELP escapes only \\\\ and \\n")
          i = i + 2
        end
        f.help = rest
      elseif kind == "TYPE" then
        assert(name:match(NAME), where .. ": bad name")
        assert(TYPES[rest], where .. ": unknown type")
        local f = family(name)
        assert(not f.type, where .. ": second TYPE")
        assert(#f.samples == 0, where .. ": TYPE after samples")
        f.type = rest
      end
    elseif line ~= "" then
      local name, rest = line:match("^([^{%s]+)(.*)$")
      assert(name and name:match(NAME), where .. ": bad metric name")
      local labels = {}
      if rest:sub(1, 1) == "{" then
        local close = rest:find("}[^}]*$")
        assert(close, where .. ": unclosed labels")
        labels = labels_of(rest:sub(2, close - 1), where)
        rest = rest:sub(close + 1)
      end
      local value, ts = rest:match("^ (%S+)( ?%-?%d*)$")
      assert(value, where .. ": expected one space and a value")
      local v = number(value)
      assert(v, where .. ": bad value " .. value)
      local base = owner(name)
      -- A family's samples are together: once another family has started, it is closed.
      if current and current ~= base then done[current] = true end
      assert(not done[base], where .. ": samples of " .. base .. " are not together")
      current = base
      local key = series_key(name, labels)
      assert(not seen[key], where .. ": duplicate series")
      seen[key] = true
      local f = family(base)
      if f.type == "counter" then assert(v >= 0, where .. ": a negative counter") end
      f.samples[#f.samples + 1] = { name = name, labels = labels, value = v }
    end
  end
  -- Histograms: buckets cumulative, le ascending, +Inf equal to _count, _sum present.
  for _, name in ipairs(order) do
    local f = families[name]
    if f.type == "histogram" then
      local groups = {}
      for _, smp in ipairs(f.samples) do
        local l = {}
        for k, v in pairs(smp.labels) do if k ~= "le" then l[k] = v end end
        local g = series_key("", l)
        groups[g] = groups[g] or { buckets = {} }
        if smp.name == name .. "_bucket" then
          local le = assert(smp.labels.le, name .. ": a bucket without le")
          table.insert(groups[g].buckets, { le = assert(number(le), "bad le " .. le), count = smp.value })
        elseif smp.name == name .. "_sum" then groups[g].sum = smp.value
        elseif smp.name == name .. "_count" then groups[g].count = smp.value
        else error(name .. ": unexpected sample " .. smp.name) end
      end
      for g, grp in pairs(groups) do
        local b = grp.buckets
        assert(#b > 0 and b[#b].le == math.huge, name .. g .. ": no +Inf bucket last")
        for i = 2, #b do
          assert(b[i].le > b[i - 1].le, name .. g .. ": le not ascending")
          assert(b[i].count >= b[i - 1].count, name .. g .. ": buckets not cumulative")
        end
        assert(grp.count and grp.sum, name .. g .. ": _sum and _count needed")
        assert.equal(grp.count, b[#b].count, name .. g .. ": +Inf bucket is not the count")
      end
    end
  end
  return {
    families = families,
    ---The value of one sample (0 when absent): name and a subset of its labels that picks it.
    value = function(name, want)
      local base = owner(name)
      for _, smp in ipairs((families[base] or { samples = {} }).samples) do
        local ok = smp.name == name
        for k, v in pairs(want or {}) do if smp.labels[k] ~= v then ok = false end end
        if ok then return smp.value end
      end
      return 0
    end,
  }
end

describe("the exposition parser of this spec", function()
  it("takes a good text and refuses broken ones", function()
    local good = "# HELP a_total A \\\\ b\\n\n# TYPE a_total counter\na_total{x=\"q\\\"\\n\"} 1\n"
      .. "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n"
    local m = parse(good)
    assert.equal(1, m.value("a_total", { x = 'q"\n' }))
    assert.equal(2, m.value("h_count"))
    local bad = {
      "a 1",                                                   -- no final newline
      "# TYPE a counter\n# TYPE a counter\na 1\n",             -- TYPE twice
      "a 1\n# TYPE a counter\n",                               -- TYPE after samples
      "# TYPE a counter\na -1\n",                              -- negative counter
      "a{x=\"1\"} 1\na{x=\"1\"} 2\n",                          -- duplicate series
      "a 1\nb 1\na{x=\"2\"} 1\n",                              -- a family split
      "a{x=\"\\t\"} 1\n",                                      -- bad escape
      "# HELP a x\\ty\na 1\n",                                 -- bad escape in HELP
      "a{1x=\"v\"} 1\n",                                       -- bad label name
      "a  1\n",                                                -- two spaces
      "a one\n",                                               -- not a number
      "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", -- not cumulative
      "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",                       -- +Inf != count
      "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",                          -- no +Inf
    }
    for _, text in ipairs(bad) do
      assert.has_error(function() parse(text) end, nil, text)
    end
  end)
end)

describe("GET /metrics", function()
  local s, fake, llm
  local EXTRA = [[
  { "GET", "/spec/boom", function() error("boom on purpose") end },
  { "GET", "/spec/spin", function() while true do end end },
  { "GET", "/spec/metrics-remote", function(req)
      req.peer = "192.0.2.77"
      return metrics.metrics(req)
    end },
]]
  local GOOD = '{"correctness":4,"approach":4,"communication":3,"hints_needed":0,"evidence":"e","feedback":"ok"}'

  setup(function()
    fake = lk.start()
    llm = fl.start()
    local policies = server.copy_policies(server.tmpdir() .. "/policies")
    local routes = server.read_file(policies .. "/routes.lua")
    server.write_file(policies .. "/routes.lua", (routes:gsub("\n}%s*$", "\n" .. EXTRA .. "}\n")))
    s = server.start { policies = policies, env = {
      LIVEKIT_URL = fake.url, QC_LUA_BUDGET_MS = "200", QC_ADMIN_KEY = "spec-admin",
      QC_EVALUATOR = "openai", QC_LLM_BASE_URL = llm.base, QC_LLM_API_KEY = "sk-spec", QC_LLM_MODEL = "gpt-spec",
      QC_LLM_RETRIES = "0", QC_LLM_TIMEOUT_MS = "5000",
    } }
  end)
  teardown(function()
    if s then s:stop() end
    if fake then fake:stop() end
    if llm then llm:stop() end
  end)

  local function scrape()
    local status, text, headers = s:request("GET", "/metrics")
    assert.equal(200, status, text)
    assert.equal("text/plain; version=0.0.4; charset=utf-8", headers["content-type"])
    return parse(text), text
  end

  it("parses, and declares every family before its first event", function()
    local m = scrape()
    for _, name in ipairs { "qc_http_requests_total", "qc_http_request_duration_seconds", "qc_lua_errors_total",
        "qc_policy_reloads_total", "qc_stt_final_latency_seconds", "qc_windows_total", "qc_evaluations_total",
        "qc_rooms", "qc_ingest_tracks", "qc_ingest_frames_total", "qc_ingest_dropped_samples_total",
        "qc_stt_streams", "qc_stt_reconnects_total", "qc_stt_replayed_seconds_total", "qc_stt_results_total",
        "qc_live_clients", "qc_policy_generation", "qc_lua_memory_bytes" } do
      assert.is_table(m.families[name], name)
      assert.is_string(m.families[name].type, name)
      assert.is_string(m.families[name].help, name)
    end
    assert.is_true(m.value("qc_lua_memory_bytes") > 100000)
    assert.equal(1, m.value("qc_policy_reloads_total", { outcome = "loaded" }))
  end)

  it("counts requests by route pattern, method and status, with their latency", function()
    local before = scrape()
    local labels = { route = "/rooms/{room}/transcript", method = "GET", status = "404" }
    s:request("GET", "/rooms/nobody-1/transcript")
    s:request("GET", "/rooms/nobody-2/transcript")
    s:request("GET", "/no/such/path")
    s:request("POST", "/health")
    local after = scrape()
    assert.equal(before.value("qc_http_requests_total", labels) + 2, after.value("qc_http_requests_total", labels))
    local hl = { route = "/rooms/{room}/transcript", method = "GET" }
    assert.equal(before.value("qc_http_request_duration_seconds_count", hl) + 2,
      after.value("qc_http_request_duration_seconds_count", hl))
    assert.is_true(after.value("qc_http_request_duration_seconds_sum", hl) > before.value("qc_http_request_duration_seconds_sum", hl))
    local unmatched = { route = "unmatched", method = "GET", status = "404" }
    assert.equal(before.value("qc_http_requests_total", unmatched) + 1, after.value("qc_http_requests_total", unmatched))
    local wrong = { route = "unmatched", method = "POST", status = "405" }
    assert.equal(before.value("qc_http_requests_total", wrong) + 1, after.value("qc_http_requests_total", wrong))
    -- The room names are not labels: one series per route.
    local _, text = scrape()
    assert.falsy(text:find("nobody-1", 1, true))
  end)

  it("counts Lua errors and budget stops, policy reloads and rejections", function()
    local before = scrape()
    assert.equal(500, (s:request("GET", "/spec/boom")))
    local status, body = s:request("GET", "/spec/spin")
    assert.equal(500, status)
    assert.equal("BUDGET_EXCEEDED", body.error.code)
    assert.equal(200, (s:request("POST", "/admin/reload")))
    -- A broken policy: rejected, the old one keeps serving.
    local roles = server.read_file(s.policies .. "/roles.lua")
    server.write_file(s.policies .. "/roles.lua", "return {")
    assert.equal(422, (s:request("POST", "/admin/reload")))
    server.write_file(s.policies .. "/roles.lua", roles)
    local after = scrape()
    assert.equal(before.value("qc_lua_errors_total", { kind = "error" }) + 1, after.value("qc_lua_errors_total", { kind = "error" }))
    assert.equal(before.value("qc_lua_errors_total", { kind = "budget" }) + 1, after.value("qc_lua_errors_total", { kind = "budget" }))
    assert.equal(before.value("qc_policy_reloads_total", { outcome = "loaded" }) + 1, after.value("qc_policy_reloads_total", { outcome = "loaded" }))
    assert.equal(before.value("qc_policy_reloads_total", { outcome = "rejected" }) + 1, after.value("qc_policy_reloads_total", { outcome = "rejected" }))
    assert.equal(1, after.value("qc_policy_degraded"))
    assert.equal(200, (s:request("POST", "/admin/reload")))
    assert.equal(0, scrape().value("qc_policy_degraded"))
  end)

  it("counts rooms by state", function()
    local before = scrape()
    assert.equal(200, (s:request("POST", "/rooms/create", { room_name = "metrics-room" })))
    local mid = scrape()
    assert.equal(before.value("qc_rooms", { state = "open" }) + 1, mid.value("qc_rooms", { state = "open" }))
    assert.equal(200, (s:request("DELETE", "/rooms/metrics-room")))
    local after = scrape()
    assert.equal(mid.value("qc_rooms", { state = "open" }) - 1, after.value("qc_rooms", { state = "open" }))
    assert.equal(mid.value("qc_rooms", { state = "ended" }) + 1, after.value("qc_rooms", { state = "ended" }))
  end)

  it("is 403 off loopback without the admin key, and answers with it", function()
    local status, body = s:request("GET", "/spec/metrics-remote")
    assert.equal(403, status)
    assert.equal("FORBIDDEN", body.error.code)
    status = s:request("GET", "/spec/metrics-remote", nil, { Authorization = "Bearer spec-admin" })
    assert.equal(200, status)
  end)

  it("counts ingest tracks and frames, finals and their latency, windows, evaluations and LLM tokens", function()
    local dir = speech.make()
    local replies = {}
    for i = 1, 40 do replies[i] = { content = GOOD, usage = { input = 100, output = 20 } } end
    llm:queue(replies)
    local before = scrape()
    local room = "metrics-audio"
    local feeders = peers.feed_roles(s, room, { interviewer = "interviewer-1", candidate = "candidate-1" }, dir, 2)
    server.wait_for(function() return scrape().value("qc_ingest_tracks") == 2 end, 30, "two live tracks")
    for _, f in pairs(feeders) do f:wait_event("close", 90) end
    server.wait_for(function() return scrape().value("qc_ingest_tracks") == 0 end, 60, "the tracks to finish")
    -- The interview's end closes its last windows; their evaluations come after.
    server.wait_for(function()
      local m = scrape()
      return m.value("qc_evaluations_total", { evaluator = "openai", outcome = "ok" })
        > before.value("qc_evaluations_total", { evaluator = "openai", outcome = "ok" })
    end, 60, "an LLM evaluation")
    local after = scrape()
    assert.equal(before.value("qc_ingest_tracks_accepted_total") + 2, after.value("qc_ingest_tracks_accepted_total"))
    local upgraded = { route = "/ingest", method = "GET", status = "101" }
    assert.equal(before.value("qc_http_requests_total", upgraded) + 2, after.value("qc_http_requests_total", upgraded))
    assert.is_true(after.value("qc_ingest_frames_total") > before.value("qc_ingest_frames_total") + 48000 * 10)
    assert.is_true(after.value("qc_ingest_bytes_total") > before.value("qc_ingest_bytes_total"))
    local finals = after.value("qc_stt_results_total", { kind = "final" }) - before.value("qc_stt_results_total", { kind = "final" })
    assert.is_true(finals >= 4, "finals: " .. finals)
    local measured = after.value("qc_stt_final_latency_seconds_count") - before.value("qc_stt_final_latency_seconds_count")
    assert.is_true(measured >= 2, "final latencies measured: " .. measured)
    assert.is_true(after.value("qc_stt_final_latency_seconds_sum") > before.value("qc_stt_final_latency_seconds_sum"))
    assert.is_true(after.value("qc_windows_total") > before.value("qc_windows_total"))
    assert.is_true(after.value("qc_evaluations_total", { evaluator = "analytics", outcome = "ok" })
      > before.value("qc_evaluations_total", { evaluator = "analytics", outcome = "ok" }))
    local judged = after.value("qc_evaluations_total", { evaluator = "openai", outcome = "ok" })
      - before.value("qc_evaluations_total", { evaluator = "openai", outcome = "ok" })
    assert.equal(before.value("qc_llm_tokens_total", { evaluator = "openai", kind = "input" }) + 100 * judged,
      after.value("qc_llm_tokens_total", { evaluator = "openai", kind = "input" }))
    assert.equal(before.value("qc_llm_tokens_total", { evaluator = "openai", kind = "output" }) + 20 * judged,
      after.value("qc_llm_tokens_total", { evaluator = "openai", kind = "output" }))
    assert.equal(1, after.value("qc_stt_up", { engine = "local" }))
    cjson.encode(after.families) -- the whole scrape decoded without error
  end)
end)
