-- The policy sandbox and the policy contract checks: what a policy can reach, what it can
-- change, and how a rejected policy is reported (file and line) by `quantcoach check`, by a
-- reload of a running server and in /health.
local server = require "support.server"
local generation = require "qc.generation"

local SCRIPTS = server.source .. "/scripts"

local fixture_policies, line_of = server.fixture_policies, server.line_of

-- Replaces the first plain occurrence of `from` in the file (no patterns: code has many %).
local function edit(path, from, to)
  local text = server.read_file(path)
  local i, j = text:find(from, 1, true)
  assert(i, "text not found in " .. path .. ": " .. from)
  server.write_file(path, text:sub(1, i - 1) .. to .. text:sub(j + 1))
end

-- Builds a generation in this process from the fixture policies, with `code` run at the top
-- of routes.lua (a policy chunk, in the policy sandbox). Returns ok, generation-or-error.
local function build_with(code)
  local dir = fixture_policies()
  edit(dir .. "/routes.lua", 'local VERSION = "v1"', 'local VERSION = "v1"\n' .. code)
  return pcall(generation.new_generation, dir, SCRIPTS, 1)
end

-- The policy must load: each escape inside it is tried and must fail.
local function assert_contained(code)
  local ok, err = build_with(code)
  assert(ok, err)
end

local function check(dir)
  return server.run(("%s check --policies %s"):format(server.bin, dir))
end

describe("the policy sandbox", function()
  it("does not let a policy require qc.db (raw SQL, ATTACH of new files)", function()
    local ok, err = build_with([[local db = require "qc.db"
db.get():exec("ATTACH DATABASE '/tmp/qc_sandbox_escape.db' AS x")]])
    assert.is_false(ok)
    assert.matches("routes%.lua:6: require: qc%.db is not available to policies", err)
  end)

  it("does not let a policy read the LiveKit API secret", function()
    local ok, err = build_with([[local secret = require("qc.livekit").settings().secret]])
    assert.is_false(ok)
    assert.matches("routes%.lua:6: require: qc%.livekit is not available to policies", err)
    for _, name in ipairs { "qc.host", "qc.store", "qc.fetch", "qc.rooms", "qc.generation",
                            "qc.contracts", "qc.router", "qc.tasks", "argparse", "busted" } do
      assert_contained(("assert(not pcall(require, %q), 'required %s')"):format(name, name))
    end
    assert_contained([[assert(not pcall(function() return qc.host end), "qc.host through the qc table")]])
  end)

  it("refuses a policy that changes cjson.encode or qc.json.HEADERS, with file and line", function()
    local ok, err = build_with([[require("cjson").encode = function() return "{}" end]])
    assert.is_false(ok)
    assert.matches("routes%.lua:6: .*read%-only", err)
    ok, err = build_with([[require("qc.json").HEADERS["x-poisoned"] = "yes"]])
    assert.is_false(ok)
    assert.matches("routes%.lua:6: .*read%-only", err)
  end)

  it("keeps module tables, their nested tables and what pairs() yields read-only", function()
    assert_contained([[
local json, cjson, log, auth = require "qc.json", require "cjson", require "qc.log", require "qc.auth"
local service = require "qc.handlers.service"
assert(not pcall(function() json.encode = nil end), "json.encode replaced")
assert(not pcall(function() qc.log.info = nil end), "qc.log.info replaced")
assert(not pcall(function() log.error = nil end), "log.error replaced")
assert(not pcall(function() auth.caller = function() return "dev" end end), "auth bypassed")
assert(not pcall(function() service.health = nil end), "a handler replaced")
assert(not pcall(function() require("qc.jwt").verify = nil end), "jwt.verify replaced")
assert(not pcall(function() require("qc.time").now = nil end), "time.now replaced")
for k, v in pairs(json) do
  if type(v) == "table" then assert(not pcall(function() v.x = 1 end), "json." .. k .. " writable through pairs") end
end
assert(json.HEADERS["content-type"] == "application/json", "views still read")
]])
  end)

  it("refuses rawset on a shared table and hides real metatables", function()
    assert_contained([[
local cjson, json = require "cjson", require "qc.json"
assert(not pcall(rawset, cjson, "encode", function() end), "rawset on cjson")
assert(not pcall(rawset, json.HEADERS, "x", "y"), "rawset on HEADERS")
assert(not pcall(rawset, require("qc.policies"), "roles", {}), "rawset on qc.policies")
assert(type(getmetatable(cjson)) ~= "table", "the metatable of a view")
assert(not pcall(setmetatable, cjson, nil), "setmetatable on a view")
assert(rawget(cjson, "encode") == nil, "rawget reaches the real table")
assert(next(cjson) == nil, "next reaches the real table")
]])
  end)

  it("locks the string metatable, and a policy's string table is its own", function()
    assert_contained([[
assert(type(getmetatable("")) ~= "table", "string metatable reachable")
string.upper = function() return "pwned" end
]])
    assert.equal("A", ("a"):upper())
    assert.equal("A", string.upper("a"))
  end)

  it("gives policies no debug, package, _G, coroutine, io, collectgarbage or dofile", function()
    for _, name in ipairs { "debug", "package", "_G", "coroutine", "io", "collectgarbage",
                            "dofile", "loadfile", "print", "require('debug')", "require('package')",
                            "require('_G')", "require('io')", "require('coroutine')", "require('os')",
                            "require('string')", "require('qc.log').debug and debug" } do
      assert_contained(("assert(not pcall(function() return %s end), %q)"):format(name, name .. " is reachable"))
    end
  end)

  it("runs load() in text mode, in the policy sandbox or a table the policy gives", function()
    assert_contained([[
assert(load(string.dump(function() end)) == nil, "bytecode loads")
local f = load("return require('qc.db')", "c", "t", { require = require })
assert(not pcall(f), "load with a custom env reaches qc.db")
local g = load("return _G")
assert(not pcall(g), "load reaches _G")
local h = load("x = 1; return x", "c", "t", {})
assert(h() == 1, "load with a table of the policy's own")
]])
  end)

  it("refuses a __gc metamethod (it would run outside any call's budget)", function()
    assert_contained([[assert(not pcall(setmetatable, {}, { __gc = function() end }), "__gc accepted")
local t = setmetatable({}, { __index = function() return 1 end })
assert(t.x == 1, "ordinary metatables work")]])
  end)

  it("gives a policy a read-only view of the other policies", function()
    local dir = fixture_policies()
    edit(dir .. "/speakers.lua", "local M = {}", [[local M = {}
assert(not pcall(function() policies.roles.ttl_seconds = 1 end), "roles changed from speakers")
assert(not pcall(function() policies.roles = {} end), "qc.policies changed")
assert(policies.roles.ttl_seconds == 7200, "roles are readable")]])
    local ok, err = pcall(generation.new_generation, dir, SCRIPTS, 1)
    assert(ok, err)
  end)

  it("gives each generation its own modules: nothing a policy changes reaches the next", function()
    local ok1, g1 = build_with("")
    local ok2, g2 = build_with("")
    assert(ok1, g1)
    assert(ok2, g2)
    assert.are_not.equal(g1.modules["qc.json"], g2.modules["qc.json"])
    assert.are_not.equal(g1.modules["qc.handlers.service"], g2.modules["qc.handlers.service"])
    assert.is_table(g1.modules["qc.json"])
  end)

  it("protects the request's metatable and the shared empty args and params tables", function()
    local ok, gen = build_with("")
    assert(ok, gen)
    local probe = [[return function(req)
  local out = {}
  out.mt = type(getmetatable(req))
  out.args = pcall(rawset, req.args, "injected", "1")
  out.params = pcall(rawset, req.params, "injected", "1")
  out.args_w = pcall(function() req.args.injected = "1" end)
  return 200, nil, out
end]]
    local env_probe = load(probe, "=probe", "t", gen.policy_env)()
    gen.router.static["/probe"] = { methods = { GET = env_probe }, allow = "GET, OPTIONS" }
    local function req(path)
      return { method = "GET", path = path, body = "", headers = {}, peer = "127.0.0.1" }
    end
    local status, _, body = generation.dispatch(gen, req("/probe"))
    assert.equal(200, status)
    local r = require("cjson").decode(body)
    assert.are_not.equal("table", r.mt)
    assert.is_false(r.args)
    assert.is_false(r.params)
    assert.is_false(r.args_w)
    -- And the next request still sees empty args.
    local _, _, echo = generation.dispatch(gen, req("/rooms/a/participants"))
    assert.is_nil(require("cjson").decode(echo).args.injected)
  end)
end)

describe("a policy that tries to escape, then a clean reload", function()
  local s, dir
  setup(function()
    dir = fixture_policies()
    s = server.start { policies = dir }
  end)
  teardown(function() s:stop() end)

  it("is rejected with a clear error for each of the issue's three escapes", function()
    local clean = server.read_file(dir .. "/routes.lua")
    for _, attack in ipairs {
      { [[require("qc.db").get():exec("ATTACH DATABASE '/tmp/qc_sandbox_escape.db' AS x")]], "qc%.db is not available" },
      { [[local secret = require("qc.livekit").settings().secret]], "qc%.livekit is not available" },
      { [[require("cjson").encode = function() return '{"poisoned":true}' end]], "read%-only" },
    } do
      edit(dir .. "/routes.lua", 'local VERSION = "v1"', 'local VERSION = "v1"\n' .. attack[1])
      local status, body = s:request("POST", "/admin/reload")
      assert.equal(422, status)
      assert.matches("routes%.lua:6: .*" .. attack[2], body.error.message)
      server.write_file(dir .. "/routes.lua", clean)
    end
    local _, health = s:request("GET", "/health")
    assert.equal(1, health.policies.generation)
  end)

  it("leaves nothing behind for the next generation after a clean reload", function()
    local clean = server.read_file(dir .. "/routes.lua")
    -- Every attempt is wrapped in pcall, so this generation loads whatever the sandbox does.
    edit(dir .. "/routes.lua", 'local VERSION = "v1"', [[local VERSION = "v1"
local cjson, json = require "cjson", require "qc.json"
pcall(function() cjson.encode = function() return '{"poisoned":true}' end end)
pcall(rawset, cjson, "encode", function() return '{"poisoned":true}' end)
pcall(function() json.HEADERS["x-poisoned"] = "yes" end)
pcall(rawset, json.HEADERS, "x-poisoned", "yes")
pcall(function() json.encode = function() return '{"poisoned":true}' end end)
pcall(function() require("qc.log").info = function() end end)
pcall(function() cjson.encode_max_depth(1) end)
pcall(function() cjson.decode_invalid_numbers(true) end)]])
    assert.equal(200, (s:request("POST", "/admin/reload")))
    server.write_file(dir .. "/routes.lua", clean)
    assert.equal(200, (s:request("POST", "/admin/reload")))
    local status, body, headers = s:request("GET", "/version")
    assert.equal(200, status)
    assert.same({ version = "v1" }, body)
    assert.is_nil(headers["x-poisoned"])
    status, body = s:request("POST", "/echo", { deep = { a = { b = { c = 1 } } } })
    assert.equal(200, status)
    assert.same({ deep = { a = { b = { c = 1 } } } }, body.json)
    status, body = s:request("POST", "/echo", '{"n":0x10}', { ["Content-Type"] = "application/json" })
    assert.equal(400, status)
    s:request("GET", "/sleep?s=0&tag=after-clean-reload")
    -- The log is written through a buffer: wait for the line rather than race the flush.
    server.wait_for(function() return s:log_text():find("sleeping tag=after%-clean%-reload") end, 5,
      "qc.log to still write after the reload")
  end)
end)

describe("an error object with metamethods", function()
  it("costs one 500, not the server", function()
    local dir = fixture_policies()
    edit(dir .. "/routes.lua", '{ "GET", "/text"', [[{ "GET", "/trap", function()
      error(setmetatable({}, { __index = function() while true do end end }))
    end },
  { "GET", "/trap2", function()
      assert(false, setmetatable({}, { __index = function() while true do end end }))
    end },
  { "GET", "/teapot2", function() error(setmetatable({ status = 418, code = "TEAPOT", message = "m" }, {})) end },
  { "GET", "/text"]])
    local s = server.start { policies = dir, env = { QC_LUA_BUDGET_MS = "300" } }
    for _, path in ipairs { "/trap", "/trap2" } do
      local status, body = s:request("GET", path, nil, nil, 5)
      assert.equal(500, status, path)
      assert.equal("INTERNAL", body.error.code)
    end
    local status, body = s:request("GET", "/teapot2")
    assert.equal(418, status)
    assert.equal("TEAPOT", body.error.code)
    assert.equal(200, (s:request("GET", "/health", nil, nil, 5)))
    assert.equal(0, s:stop())
  end)
end)

describe("JSON request bodies", function()
  local s
  setup(function() s = server.start { policies = fixture_policies() } end)
  teardown(function() s:stop() end)

  local function post(body)
    return s:request("POST", "/echo", body, { ["Content-Type"] = "application/json" })
  end

  it("refuses hexadecimal, infinite and NaN numbers with 400 BAD_JSON", function()
    for _, text in ipairs { '{"a":0x10}', '{"a":inf}', '{"a":-inf}', '{"a":nan}', '{"a":Infinity}',
                            '{"a":1e999}', '{"a":[-1E400]}', '{"a":1' .. ("0"):rep(400) .. '}' } do
      local status, body = post(text)
      assert.equal(400, status, text)
      assert.equal("BAD_JSON", body.error.code, text)
    end
    local status, body = post('{"a":1e300,"b":-0.5}')
    assert.equal(200, status)
    assert.equal(1e300, body.json.a)
  end)

  it("refuses a body that is not a JSON object with 422, naming the shape expected", function()
    for text, got in pairs { ["[1,2]"] = "an array", ["[]"] = "an array", ['"room"'] = "a string",
                             ["42"] = "a number", ["true"] = "a boolean", ["null"] = "null" } do
      local status, body = post(text)
      assert.equal(422, status, text)
      assert.equal("VALIDATION_ERROR", body.error.code)
      assert.equal("body", body.error.field)
      assert.equal("body: must be a JSON object, got " .. got, body.error.message)
    end
    assert.equal(200, (post("  {}")))
  end)
end)

describe("contract checks name file and line", function()
  it("catches a route whose handler is a misspelt handler name", function()
    local dir = server.copy_policies()
    edit(dir .. "/routes.lua", "auth.required(rooms.create)", "auth.required(rooms.craete)")
    local code, out = check(dir)
    assert.equal(1, code, out)
    local line = line_of(dir .. "/routes.lua", "auth.required(rooms.craete)")
    assert.matches("routes%.lua:" .. line .. ": qc%.handlers%.rooms has no field 'craete'", out)
  end)

  it("catches a route whose handler is nil, wrapped in auth.required or not", function()
    local dir = server.copy_policies()
    edit(dir .. "/routes.lua", "return {", "local nothing\nreturn {")
    edit(dir .. "/routes.lua", "auth.required(rooms.list)", "auth.required(nothing)")
    local code, out = check(dir)
    assert.equal(1, code, out)
    assert.matches("routes%.lua:" .. line_of(dir .. "/routes.lua", "required(nothing)") .. ": ", out)
    assert.matches("handler must be a function, got nil", out)

    dir = server.copy_policies()
    edit(dir .. "/routes.lua", "return {", "local nothing\nreturn {")
    edit(dir .. "/routes.lua", '{ "GET", "/health", service.health }', '{ "GET", "/health",\n    nothing }')
    code, out = check(dir)
    assert.equal(1, code, out)
    assert.matches("routes%.lua:" .. line_of(dir .. "/routes.lua", '"/health"')
      .. ": route 2 %(GET /health%): handler must be a function, got nil", out)
  end)

  it("names the line of a bad route method or a duplicate route", function()
    local dir = fixture_policies()
    edit(dir .. "/routes.lua", '{ "GET", "/version"', '{ "FETCH", "/version"')
    local code, out = check(dir)
    assert.equal(1, code)
    assert.matches("routes%.lua:" .. line_of(dir .. "/routes.lua", "FETCH") .. ": route %d+ %(FETCH /version%): method", out)
    dir = fixture_policies()
    edit(dir .. "/routes.lua", '{ "GET", "/text"', '{ "GET", "/version", function() end },\n  { "GET", "/text"')
    code, out = check(dir)
    assert.equal(1, code)
    local text = server.read_file(dir .. "/routes.lua")
    local _, second = text:find('.-{ "GET", "/version".-{ "GET", "/version"')
    local _, nl = text:sub(1, second):gsub("\n", "")
    assert.matches("routes%.lua:" .. (nl + 1) .. ": route %d+ %(GET /version%): declared twice", out)
  end)

  it("names the line of a bad token lifetime", function()
    local dir = server.copy_policies()
    edit(dir .. "/roles.lua", "M.ttl_seconds = 2 * 60 * 60", "M.ttl_seconds = 5")
    local code, out = check(dir)
    assert.equal(1, code)
    assert.matches("roles%.lua:" .. line_of(dir .. "/roles.lua", "M.ttl_seconds =") .. ": ttl_seconds must be", out)
  end)

  it("names the line of an unknown grant and of a grant that is not a boolean", function()
    local dir = server.copy_policies()
    edit(dir .. "/roles.lua", "agent = { hidden = true,", "agent = { hidden = true, canPublsh = true,")
    local code, out = check(dir)
    assert.equal(1, code)
    assert.matches("roles%.lua:" .. line_of(dir .. "/roles.lua", "canPublsh") .. ": grants%.agent%.canPublsh is not a LiveKit grant", out)

    dir = server.copy_policies()
    edit(dir .. "/roles.lua", "M.grants = {", "M.grants = {\n  -- the candidate\n")
    edit(dir .. "/roles.lua", "candidate = { canPublish = true,", "candidate = {\n    canPublish = 'yes',")
    code, out = check(dir)
    assert.equal(1, code)
    assert.matches("roles%.lua:" .. line_of(dir .. "/roles.lua", "canPublish = 'yes'") .. ": grants%.candidate%.canPublish must be true or false", out)
  end)

  it("names the line of a failing contract example", function()
    local dir = server.copy_policies()
    edit(dir .. "/roles.lua", '{ identity = "agent", role = "agent" }', '{ identity = "agent", role = "candidate" }')
    local code, out = check(dir)
    assert.equal(1, code)
    assert.matches("roles%.lua:" .. line_of(dir .. "/roles.lua", 'identity = "agent", role = "candidate"') .. ": example 3: role_of", out)
    dir = server.copy_policies()
    edit(dir .. "/speakers.lua", 'track = { sid = "TR_b" }, transcribe = true', 'track = { sid = "TR_b" }, transcribe = false')
    code, out = check(dir)
    assert.equal(1, code)
    assert.matches("speakers%.lua:" .. line_of(dir .. "/speakers.lua", 'sid = "TR_b"') .. ": example 2: transcribe returned true", out)
  end)

  it("names the line of a policy function that is not a function", function()
    local dir = server.copy_policies()
    edit(dir .. "/speakers.lua", "function M.transcribe(participant, track, role)", "M.transcribe = true\nlocal function unused(participant, track, role)")
    local code, out = check(dir)
    assert.equal(1, code)
    assert.matches("speakers%.lua:" .. line_of(dir .. "/speakers.lua", "M.transcribe = true") .. ": transcribe must be a function", out)
  end)

  it("names the line where a policy raised a non-string error while loading", function()
    local dir = fixture_policies()
    edit(dir .. "/routes.lua", 'local VERSION = "v1"', 'local VERSION = "v1"\nerror({ oops = true })')
    local code, out = check(dir)
    assert.equal(1, code)
    assert.matches("routes%.lua:6: ", out)
  end)

  it("rejects a reload on a running server with file:line, and the old generation keeps serving", function()
    local dir = server.copy_policies()
    local s = server.start { policies = dir }
    edit(dir .. "/roles.lua", "M.ttl_seconds = 2 * 60 * 60", "M.ttl_seconds = 30")
    local status, body = s:request("POST", "/admin/reload")
    assert.equal(422, status)
    local where = "roles%.lua:" .. line_of(dir .. "/roles.lua", "M.ttl_seconds =") .. ": ttl_seconds"
    assert.matches(where, body.error.message)
    local _, health = s:request("GET", "/health")
    assert.equal("degraded", health.status)
    assert.equal(1, health.policies.generation)
    assert.matches(where, health.policies.reload_error)
    assert.equal(200, (s:request("GET", "/")))
    assert.equal(0, s:stop())
  end)
end)

-- Policies may require qc.handlers.* so routes.lua can name handlers, not to call them: a
-- handler reaches the store and LiveKit, which a policy must not.
describe("handlers seen from a policy", function()
  local PROBE = [[pcall(require"qc.handlers.rooms".generate_token, {headers={}, json={room_name="r",participant_identity="x",participant_type="candidate"}})
]]

  local function check_in(cwd, dir)
    return server.run(("cd %s && env QC_ENV_FILE=/nonexistent %s check --policies %s"):format(cwd, server.bin, dir))
  end

  it("cannot be called while policies load: check leaves no database and no token", function()
    local dir = server.copy_policies()
    local cwd = server.tmpdir()
    -- ./data as `make run` leaves it: the store would open there.
    assert(os.execute("mkdir -p " .. cwd .. "/data"))
    server.write_file(dir .. "/speakers.lua", PROBE .. server.read_file(dir .. "/speakers.lua"))
    local code, out = check_in(cwd, dir)
    assert.equal(0, code, out)
    assert.is_nil(io.open(cwd .. "/data/quantcoach.db"), "check created a database")
    -- Without the pcall, the refusal is the policy's error, with its line.
    dir = server.copy_policies()
    server.write_file(dir .. "/speakers.lua", PROBE:gsub("^pcall%((.-), {", "%1({") .. server.read_file(dir .. "/speakers.lua"))
    code, out = check_in(cwd, dir)
    assert.equal(1, code, out)
    assert.matches("speakers%.lua:1: handlers run only when the router calls them", out)
    assert.is_nil(io.open(cwd .. "/data/quantcoach.db"), "check created a database")
  end)

  it("cannot be called from a policy the router's handler calls (speakers.role during a webhook)", function()
    local lk = require "support.fake_livekit"
    local dir = server.copy_policies()
    edit(dir .. "/speakers.lua", "function M.role(participant)\n", [[function M.role(participant)
  local ok, err = pcall(require"qc.handlers.rooms".generate_token, {headers={}, json={room_name="r",participant_identity="x",participant_type="candidate"}})
  require("qc.log").info("probe", "handler call", { ok = tostring(ok), err = tostring(err) })
]])
    local s = server.start { policies = dir }
    local body = ('{"event":"participant_joined","room":{"sid":"RM_p","name":"probe-1"},'
      .. '"participant":{"sid":"PA_p","identity":"cand-1","joinedAt":"%d"},"id":"EV_probe_%d","createdAt":"%d"}')
      :format(os.time(), os.time(), os.time())
    local status = s:request("POST", "/webhooks/livekit", body,
      { ["Content-Type"] = "application/webhook+json", Authorization = lk.sign_webhook(body) })
    assert.equal(200, status, s:log_text())
    server.wait_for(function() return s:log_text():find("handler call") end, 5, "the probe's log line")
    assert.matches("probe handler call err=\"[^\"]*handlers run only when the router calls them\" ok=false", s:log_text())
    local db = s:db()
    local rows = assert(db:query("SELECT count(*) AS n FROM tokens"))
    db:close()
    assert.equal(0, rows[1].n)
    assert.equal(0, s:stop())
  end)

  it("still serve their routes, wrapped in auth.required or not", function()
    local s = server.start { env = { QC_API_KEYS = "k1" } }
    local req = { room_name = "r", participant_identity = "x", participant_type = "candidate" }
    assert.equal(401, (s:request("POST", "/tokens/generate", req)))
    local status, body = s:request("POST", "/tokens/generate", req, { Authorization = "Bearer k1" })
    assert.equal(200, status)
    assert.is_string(body.token)
    assert.equal(200, (s:request("GET", "/health")))
    -- A later request on the same coroutine gets a fresh permit.
    assert.equal(200, (s:request("POST", "/tokens/generate", req, { Authorization = "Bearer k1" })))
    assert.equal(0, s:stop())
  end)
end)

-- A policy stopped by the time budget or the memory cap while it loads is named with the
-- file and the line it had reached (issue 8: every rejected policy names file and line).
describe("a policy stopped while it loads", function()
  local LOOP = "while true do end\n"
  local BOMB = 'local s=("x"):rep(2^28); local t=s..s..s\n'

  local function prepended(code)
    local dir = server.copy_policies()
    server.write_file(dir .. "/speakers.lua", code .. server.read_file(dir .. "/speakers.lua"))
    return dir
  end

  it("by the time budget names file and line, in check and in a live reload", function()
    local dir = prepended(LOOP)
    local code, out = server.run(("env QC_ENV_FILE=/nonexistent QC_LUA_BUDGET_MS=200 %s check --policies %s"):format(server.bin, dir))
    assert.equal(1, code, out)
    assert.matches("policies rejected: [^\n]*speakers%.lua:1: time budget exceeded %(200 ms of CPU%)", out)
    -- In a policy function a contract check calls: the line inside that function.
    dir = server.copy_policies()
    edit(dir .. "/speakers.lua", "function M.role(participant)\n", "function M.role(participant)\n  while true do end\n")
    code, out = server.run(("env QC_ENV_FILE=/nonexistent QC_LUA_BUDGET_MS=200 %s check --policies %s"):format(server.bin, dir))
    assert.equal(1, code, out)
    assert.matches("speakers%.lua:" .. line_of(dir .. "/speakers.lua", "while true do end") .. ": time budget exceeded", out)

    dir = server.copy_policies()
    local s = server.start { policies = dir, env = { QC_LUA_BUDGET_MS = "200" } }
    server.write_file(dir .. "/speakers.lua", LOOP .. server.read_file(dir .. "/speakers.lua"))
    local status, body = s:request("POST", "/admin/reload")
    assert.equal(422, status)
    assert.matches("speakers%.lua:1: time budget exceeded %(200 ms of CPU%)", body.error.message)
    assert.equal(200, (s:request("GET", "/health")))
    assert.equal(0, s:stop())
  end)

  it("is stopped inside its own xpcall message handler too", function()
    -- Lua calls a message handler for an error the budget hook raises inside that hook,
    -- where hooks do not fire: run there, a loop would never be stopped.
    local dir = prepended("xpcall(function() while true do end end, function() while true do end end)\n")
    local code, out = server.run(("env QC_ENV_FILE=/nonexistent QC_LUA_BUDGET_MS=200 timeout 20 %s check --policies %s"):format(server.bin, dir))
    assert.equal(1, code, out)
    assert.matches("speakers%.lua:1: time budget exceeded %(200 ms of CPU%)", out)
    -- A message handler still gets the error and its result is xpcall's.
    dir = prepended("local ok, m = xpcall(error, function(e) return 'handled: ' .. e end, 'x', 0)\n"
      .. "assert(ok == false and m == 'handled: x', tostring(m))\n"
      .. "assert(select('#', xpcall(function(...) return ... end, tostring, 1, nil)) == 3)\n")
    code, out = server.run(("env QC_ENV_FILE=/nonexistent %s check --policies %s"):format(server.bin, dir))
    assert.equal(0, code, out)
  end)

  it("by the memory cap names file and line, in check and in a live reload", function()
    local dir = prepended(BOMB)
    local code, out = server.run(("env QC_ENV_FILE=/nonexistent QC_LUA_MEMORY_MB=64 %s check --policies %s"):format(server.bin, dir))
    assert.equal(1, code, out)
    assert.matches("policies rejected: [^\n]*speakers%.lua:1: not enough memory", out)

    dir = server.copy_policies()
    local s = server.start { policies = dir, env = { QC_LUA_MEMORY_MB = "64" } }
    server.write_file(dir .. "/speakers.lua", BOMB .. server.read_file(dir .. "/speakers.lua"))
    local status, body = s:request("POST", "/admin/reload")
    assert.equal(422, status)
    assert.matches("speakers%.lua:1: not enough memory", body.error.message)
    assert.equal(200, (s:request("GET", "/health")))
    assert.equal(0, s:stop())
  end)
end)
