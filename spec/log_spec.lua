-- qc.log: the line a Lua caller gets, long fields included. The scripts run in a child
-- quantcoach, so a memory error under ASan shows as its exit status, not as a dead runner.
local server = require "support.server"
local lk = require "support.fake_livekit"

local quote = server.quote

-- Runs a Lua snippet with `quantcoach run`; returns its exit status and stderr + stdout.
local function run_lua(code, env)
  local dir = server.tmpdir()
  server.write_file(dir .. "/x.lua", code)
  local vars = { "QC_ENV_FILE=/nonexistent" }
  for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. quote(v) end
  return server.run(("env %s %s run %s"):format(table.concat(vars, " "), quote(server.bin), quote(dir .. "/x.lua")))
end

local LIMIT = 4096 -- the documented limit on one field's value (README, Logs)

describe("qc.log", function()
  it("writes a field of 1100 bytes whole", function()
    local status, out = run_lua [[require "qc.log".info("t", "m", { id = ("I"):rep(1100) })]]
    assert.equal(0, status, out)
    assert.truthy(out:find("info t m id=" .. ("I"):rep(1100) .. "\n", 1, true), out)
  end)

  it("writes every field, sorted by key, when each is long", function()
    local status, out = run_lua [[
      require "qc.log".warn("t", "m", { b = ("b"):rep(3000), a = ("a"):rep(3000), c = "x y" })
    ]]
    assert.equal(0, status, out)
    local want = "warn t m a=" .. ("a"):rep(3000) .. " b=" .. ("b"):rep(3000) .. ' c="x y"\n'
    assert.truthy(out:find(want, 1, true), out)
  end)

  it("cuts a value past the limit with a marker that gives its length", function()
    local status, out = run_lua [[require "qc.log".info("t", "m", { id = ("I"):rep(10000), z = 1 })]]
    assert.equal(0, status, out)
    local want = 'info t m id="' .. ("I"):rep(LIMIT) .. '...[cut, 10000 bytes]" z=1\n'
    assert.truthy(out:find(want, 1, true), out)
  end)

  it("keeps more than 64 fields", function()
    local status, out = run_lua [[
      local f = {}
      for i = 1, 100 do f[("k%03d"):format(i)] = i end
      require "qc.log".info("t", "m", f)
    ]]
    assert.equal(0, status, out)
    assert.truthy(out:find(" k001=1 k002=2 ", 1, true), out)
    assert.truthy(out:find(" k099=99 k100=100\n", 1, true), out)
  end)

  it("survives a value whose __tostring raises, and logs nothing half-built", function()
    local status, out = run_lua [[
      local bad = setmetatable({}, { __tostring = function() error("no string for you") end })
      local ok, err = pcall(require "qc.log".info, "t", "m", { a = ("a"):rep(2000), b = bad })
      assert(not ok and tostring(err):find("no string for you"), tostring(err))
      require "qc.log".info("t", "after", { n = 1 })
    ]]
    assert.equal(0, status, out)
    assert.falsy(out:find("info t m", 1, true), out)
    assert.truthy(out:find("info t after n=1\n", 1, true), out)
  end)

  it("escapes quotes, backslashes and control characters inside a quoted value", function()
    local status, out = run_lua [[require "qc.log".info("t", "m", { v = 'a "b"\\c\nd\re' })]]
    assert.equal(0, status, out)
    assert.truthy(out:find('info t m v="a \\"b\\"\\\\c\\nd\\re"\n', 1, true), out)
  end)

  it("counts the fields past the line's field budget in fields_cut", function()
    local status, out = run_lua [[
      local f = {}
      for i = 1, 6 do f["f" .. i] = ("v"):rep(4000) end
      require "qc.log".info("t", "m", f)
    ]]
    assert.equal(0, status, out)
    assert.truthy(out:find(" f4=" .. ("v"):rep(4000) .. " fields_cut=2\n", 1, true), out)
  end)

  it("keeps a cut JSON line valid JSON", function()
    local status, out = run_lua([[require "qc.log".info("t", ("m"):rep(40000), { a = 1 })]],
      { QC_LOG_FORMAT = "json" })
    assert.equal(0, status, out)
    local rec = require "cjson".decode(out:match("(%b{})\n"))
    assert.truthy(rec.msg:find("...[line cut]", 1, true))
  end)

  it("keeps a long field whole in JSON lines too", function()
    local status, out = run_lua([[require "qc.log".info("t", "m", { id = ("J"):rep(3000) })]],
      { QC_LOG_FORMAT = "json" })
    assert.equal(0, status, out)
    local line = out:match("(%b{})\n")
    assert.truthy(line, out)
    local rec = require "cjson".decode(line)
    assert.equal(("J"):rep(3000), rec.id)
  end)
end)

describe("a signed webhook with a long event id", function()
  local s
  setup(function()
    s = server.start { env = { LIVEKIT_URL = "ws://127.0.0.1:1", LIVEKIT_API_KEY = "devkey", LIVEKIT_API_SECRET = "secret" } }
  end)
  teardown(function() if s then s:stop() end end)

  it("is accepted and logged with its whole id, and the server keeps serving", function()
    local id = "EV_" .. ("x"):rep(1500)
    local body = ('{"event":"room_started","room":{"sid":"RM_long","name":"long-id"},"id":"%s","createdAt":"%d"}')
      :format(id, os.time())
    local status = s:request("POST", "/webhooks/livekit", body,
      { ["Content-Type"] = "application/webhook+json", Authorization = lk.sign_webhook(body) })
    assert.equal(200, status, s:log_text())
    assert.equal(200, (s:request("GET", "/health")))
    server.wait_for(function() return s:log_text():find("id=" .. id .. "\n", 1, true) end, 10, "the log line")
  end)
end)
