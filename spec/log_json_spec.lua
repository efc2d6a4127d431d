-- QC_LOG_FORMAT=json: every line a server writes is one JSON object whose key=value fields
-- are members of their own, from C (the access log, handler errors) and from qc.log alike.
local server = require "support.server"
local cjson = require "cjson"

local quote = server.quote

-- Every line of `text`, decoded; fails naming the first line that is not one JSON object.
local function decode_lines(text)
  local recs = {}
  for line in text:gmatch("([^\n]*)\n") do
    local ok, rec = pcall(cjson.decode, line)
    assert(ok and type(rec) == "table", "not a JSON object: " .. line)
    recs[#recs + 1] = rec
  end
  return recs
end

local function find(recs, component, msg)
  for _, r in ipairs(recs) do
    if r.component == component and r.msg == msg then return r end
  end
end

local function run_lua(code)
  local dir = server.tmpdir()
  server.write_file(dir .. "/x.lua", code)
  return server.run(("env QC_ENV_FILE=/nonexistent QC_LOG_FORMAT=json %s run %s")
    :format(quote(server.bin), quote(dir .. "/x.lua")))
end

describe("JSON log lines of a server run", function()
  local s, recs
  setup(function()
    local policies = server.fixture_policies [[
  { "GET", "/quotes", function() error('he said "hi" there, path=/x', 0) end },
]]
    s = server.start { policies = policies, env = { QC_LOG_FORMAT = "json", LIVEKIT_URL = "ws://127.0.0.1:1" } }
    assert.equal(200, (s:request("GET", "/health")))
    assert.equal(404, (s:request("GET", "/no/such/path%20x")))
    assert.equal(500, (s:request("GET", "/boom")))
    assert.equal(500, (s:request("GET", "/quotes")))
    s:wait_log('"path":"/quotes","status":500')
    assert.equal(0, s:stop())
    recs = decode_lines(s:log_text())
  end)

  it("are each one JSON object with ts, level, component and msg", function()
    assert.truthy(#recs >= 6, s:log_text())
    for _, r in ipairs(recs) do
      assert.equal("number", type(r.ts))
      assert.truthy(({ debug = 1, info = 1, warn = 1, error = 1 })[r.level], cjson.encode(r))
      assert.equal("string", type(r.component))
      assert.equal("string", type(r.msg))
      assert.is_nil(r.fields)
    end
  end)

  it("carry the access log's fields as members, numbers as numbers", function()
    local hit
    for _, r in ipairs(recs) do
      if r.component == "http" and r.msg == "request" and r.path == "/health" then hit = r end
    end
    assert.truthy(hit, s:log_text())
    assert.equal("GET", hit.method)
    assert.equal(200, hit.status)
    assert.equal("number", type(hit.duration_ms))
  end)

  it("carry the start-up fields as members", function()
    local r = find(recs, "server", "listening")
    assert.truthy(r, s:log_text())
    assert.equal(s.port, r.port)
    assert.equal("127.0.0.1", r.address)
  end)

  it("keep a C caller's quoted error whole, quotes inside included", function()
    local r
    for _, x in ipairs(recs) do
      if x.msg == "handler failed" and x.path == "/quotes" then r = x end
    end
    assert.truthy(r, s:log_text())
    assert.truthy(r.error:find('he said "hi" there, path=/x', 1, true), r.error)
  end)
end)

describe("qc.log with QC_LOG_FORMAT=json", function()
  it("writes each field as a member: numbers and booleans typed, strings kept strings", function()
    local status, out = run_lua [[
      require "qc.log".info("t", "m", { n = 42, f = 1.5, yes = true, s = "12", b = "true", txt = "x y" })
    ]]
    assert.equal(0, status, out)
    local r = decode_lines(out)[1]
    assert.same({ 42, 1.5, true, "12", "true", "x y" }, { r.n, r.f, r.yes, r.s, r.b, r.txt })
  end)

  it("renames a field that repeats a reserved key instead of writing the key twice", function()
    local status, out = run_lua [[require "qc.log".warn("t", "m", { msg = "mine", level = 3, ts = "x" })]]
    assert.equal(0, status, out)
    assert.falsy(out:find('"msg":"m".*"msg":'), out)
    local r = decode_lines(out)[1]
    assert.same({ "m", "warn", "mine", 3, "x" }, { r.msg, r.level, r.msg_2, r.level_2, r.ts_2 })
  end)

  it("escapes control bytes and writes a byte that is not UTF-8 as U+FFFD", function()
    local status, out = run_lua [[require "qc.log".info("t", "m", { v = 'a "b"\\c\nd\1e caf\xc3\xa9 \xff' })]]
    assert.equal(0, status, out)
    assert.equal('a "b"\\c\nd\1e caf\xc3\xa9 \xef\xbf\xbd', decode_lines(out)[1].v)
  end)

  it("marks a cut value and counts the fields past the budget", function()
    local status, out = run_lua [[
      local f = { a_id = ("I"):rep(10000) }
      for i = 1, 6 do f["f" .. i] = ("v"):rep(4000) end
      require "qc.log".info("t", "m", f)
    ]]
    assert.equal(0, status, out)
    local r = decode_lines(out)[1]
    assert.equal(("v"):rep(4000), r.f1)
    assert.truthy(r.a_id:find("...[cut, 10000 bytes]", 1, true), r.a_id)
    assert.equal("number", type(r.fields_cut))
  end)

  it("keeps a line cut inside its message valid, ending in the cut mark", function()
    local status, out = run_lua [[require "qc.log".info("t", ("m"):rep(40000), { a = 1 })]]
    assert.equal(0, status, out)
    local r = decode_lines(out)[1]
    assert.truthy(r.msg:find("...[line cut]", 1, true))
  end)

  it("keeps a line of many escaped fields under the line limit and valid", function()
    local status, out = run_lua [[
      local f = {}
      for i = 1, 4 do f["c" .. i] = ("\1"):rep(1000) end
      require "qc.log".info("t", ("m"):rep(20000), f)
    ]]
    assert.equal(0, status, out)
    local line = out:match("[^\n]*")
    assert.truthy(#line <= 32768, #line)
    local r = decode_lines(out)[1]
    assert.truthy(r.line_cut or r.c1, out:sub(-200))
  end)
end)
