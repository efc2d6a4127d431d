-- The runtime: HTTP served from reloadable Lua routes, on a real server on a loopback port.
local server = require "support.server"
local fetch = require "qc.fetch"
local time = require "qc.time"
local tasks = require "qc.tasks"

local FIXTURES = server.source .. "/spec/fixtures/policies"

local fixture_policies = server.fixture_policies

local function edit(path, from, to)
  local text = server.read_file(path)
  local changed, n = text:gsub(from, to)
  assert(n > 0, "pattern not found in " .. path)
  server.write_file(path, changed)
end

describe("the HTTP server", function()
  local s
  setup(function()
    -- /bomb reaches the 16 MiB cap in ~0.3 s of CPU under ASan (page faults, shadow memory);
    -- the time budget leaves it five times that, so it is the cap that stops the bomb.
    s = server.start { policies = fixture_policies(), env = {
      QC_LUA_MEMORY_MB = "16", QC_LUA_BUDGET_MS = "1500", QC_MAX_BODY = "65536",
    } }
  end)
  teardown(function() s:stop() end)

  it("answers GET / with the service name and version", function()
    local status, body = s:request("GET", "/")
    assert.equal(200, status)
    assert.equal("quantcoach", body.service)
    assert.is_string(body.version)
  end)

  it("reports health with uptime and the policy generation", function()
    local status, body = s:request("GET", "/health")
    assert.equal(200, status)
    assert.equal("ok", body.status)
    assert.is_number(body.uptime_s)
    assert.equal(1, body.policies.generation)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", body.policies.reloaded_at)
  end)

  it("routes paths with parameters", function()
    local status, body, headers = s:request("GET", "/rooms/interview-7/participants/cand-42?verbose=1")
    assert.equal(200, status)
    assert.equal("yes", headers["x-echo"])
    assert.same({ room = "interview-7", identity = "cand-42" }, body.params)
    assert.equal("1", body.args.verbose)
    status, body = s:request("GET", "/rooms/r1/participants")
    assert.equal(200, status)
    assert.same({ room = "r1" }, body.params)
  end)

  it("decodes query arguments, an encoded & or = staying inside its value", function()
    local status, body = s:request("GET", "/rooms/r1/participants?x=1&e=a%26b%3Dc&sp=%20q&x=2&flag")
    assert.equal(200, status)
    assert.same({ x = "1", e = "a&b=c", sp = " q", flag = "" }, body.args)
  end)

  it("answers an unknown path with 404 and a JSON error", function()
    local status, body = s:request("GET", "/no/such/thing")
    assert.equal(404, status)
    assert.equal("NOT_FOUND", body.error.code)
    assert.is_string(body.error.message)
  end)

  it("answers a wrong method with 405 and an Allow header", function()
    local status, body, headers = s:request("PUT", "/rooms/r1/participants")
    assert.equal(405, status)
    assert.equal("METHOD_NOT_ALLOWED", body.error.code)
    assert.equal("GET, OPTIONS", headers["allow"])
  end)

  it("answers malformed JSON with 400", function()
    local status, body = s:request("POST", "/echo", "{not json", { ["Content-Type"] = "application/json" })
    assert.equal(400, status)
    assert.equal("BAD_JSON", body.error.code)
  end)

  it("parses a JSON body for the handler", function()
    local status, body = s:request("POST", "/echo", { a = 1, list = { "x" } })
    assert.equal(200, status)
    assert.same({ a = 1, list = { "x" } }, body.json)
  end)

  it("answers a body over the limit with 413", function()
    local status, body = s:request("POST", "/echo", string.rep("x", 70000), { ["Content-Type"] = "text/plain" })
    assert.equal(413, status)
    assert.equal("PAYLOAD_TOO_LARGE", body.error.code)
    assert.equal(200, (s:request("GET", "/health")))
  end)

  it("accepts a chunked request body", function()
    local code, out = server.run(("printf '{\"chunked\":true}' | curl -s -X POST -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/json' --data-binary @- %s/echo"):format(s.url))
    assert.equal(0, code)
    assert.matches('"chunked":true', out)
  end)

  it("refuses a chunked body over the limit with 413", function()
    local code, out = server.run(("head -c 100000 /dev/zero | tr '\\0' x | curl -s -o /dev/null -w '%%{http_code}' -X POST -H 'Transfer-Encoding: chunked' -H 'Content-Type: text/plain' --data-binary @- %s/echo"):format(s.url))
    assert.equal(0, code)
    assert.equal("413", out)
  end)

  it("keeps connections alive across requests", function()
    local code, out = server.run(("curl -sv %s/health %s/version -o /dev/null -o /dev/null"):format(s.url, s.url))
    assert.equal(0, code)
    assert.matches("Re%-using existing connection", out)
  end)

  it("turns a handler error into a 500 and goes on serving", function()
    local status, body = s:request("GET", "/boom")
    assert.equal(500, status)
    assert.equal("INTERNAL", body.error.code)
    assert.is_nil(body.error.message:find("boom on purpose"), "internal detail must not leak")
    assert.equal(200, (s:request("GET", "/health")))
    assert.matches("error host handler failed path=/boom.-boom on purpose", s:wait_log("error host handler failed path=/boom.-boom on purpose"))
  end)

  it("turns an error table into its own status and code", function()
    local status, body = s:request("GET", "/teapot")
    assert.equal(418, status)
    assert.same({ code = "TEAPOT", message = "short and stout" }, body.error)
  end)

  it("stops an infinite loop at its time budget and stays up", function()
    local status, body = s:request("GET", "/spin")
    assert.equal(500, status)
    assert.equal("BUDGET_EXCEEDED", body.error.code)
    assert.equal(200, (s:request("GET", "/health")))
    -- The log names the line of the loop that was stopped, not its caller's.
    local line = server.line_of(FIXTURES .. "/routes.lua", '"/spin"')
    assert.matches("routes%.lua:" .. line .. ": time budget exceeded", s:wait_log("path=/spin code=BUDGET_EXCEEDED"))
  end)

  it("stops a memory bomb at the memory cap and stays up", function()
    local status, body = s:request("GET", "/bomb")
    assert.equal(503, status)
    assert.equal("MEMORY_LIMIT", body.error.code)
    assert.equal(200, (s:request("GET", "/health")))
    assert.equal(200, (s:request("GET", "/rooms/a/participants")))
  end)

  it("answers CORS preflight and marks responses for browsers", function()
    local status, _, headers = s:request("OPTIONS", "/echo", nil, {
      Origin = "http://app.example", ["Access-Control-Request-Method"] = "POST",
      ["Access-Control-Request-Headers"] = "content-type" })
    assert.equal(204, status)
    assert.equal("*", headers["access-control-allow-origin"])
    assert.matches("POST", headers["access-control-allow-methods"])
    local _, _, h2 = s:request("GET", "/health", nil, { Origin = "http://app.example" })
    assert.equal("*", h2["access-control-allow-origin"])
  end)

  it("sends a string body with the handler's content type", function()
    local status, body, headers = s:request("GET", "/text")
    assert.equal(201, status)
    assert.equal("plain", body)
    assert.equal("text/plain", headers["content-type"])
  end)

  it("writes one access-log line per request", function()
    s:request("GET", "/version?x=1")
    assert.matches("info http request method=GET path=/version status=200 duration_ms=[%d%.]+", s:wait_log("info http request method=GET path=/version status=200 duration_ms=[%d%.]+"))
  end)
end)

describe("CORS with a list of origins", function()
  it("echoes a listed origin and ignores others", function()
    local s = server.start { policies = fixture_policies(), env = { QC_CORS_ORIGINS = "http://a.example, http://b.example" } }
    local _, _, h = s:request("GET", "/health", nil, { Origin = "http://b.example" })
    assert.equal("http://b.example", h["access-control-allow-origin"])
    _, _, h = s:request("GET", "/health", nil, { Origin = "http://evil.example" })
    assert.is_nil(h["access-control-allow-origin"])
    assert.equal(0, s:stop())
  end)
end)

describe("policy reload", function()
  local s, dir
  before_each(function()
    dir = fixture_policies()
    s = server.start { policies = dir }
  end)
  after_each(function() s:stop() end)

  local function version() return select(2, s:request("GET", "/version")).version end

  it("changes behaviour on SIGHUP without a restart", function()
    assert.equal("v1", version())
    edit(dir .. "/routes.lua", 'VERSION = "v1"', 'VERSION = "v2"')
    s:signal("HUP")
    server.wait_for(function() return version() == "v2" end, 10, "v2 to serve")
    local _, health = s:request("GET", "/health")
    assert.equal(2, health.policies.generation)
  end)

  it("reloads through `quantcoach reload`", function()
    edit(dir .. "/routes.lua", 'VERSION = "v1"', 'VERSION = "v3"')
    local code, out = server.run(("%s reload --listen 127.0.0.1:%d"):format(server.bin, s.port))
    assert.equal(0, code, out)
    assert.matches("reloaded: generation 2", out)
    assert.equal("v3", version())
  end)

  it("reloads through POST /admin/reload from loopback", function()
    edit(dir .. "/routes.lua", 'VERSION = "v1"', 'VERSION = "v4"')
    local status, body = s:request("POST", "/admin/reload")
    assert.equal(200, status)
    assert.equal(2, body.generation)
    assert.equal("v4", version())
  end)

  it("rejects a syntax error with file and line, and the old policy keeps serving", function()
    edit(dir .. "/routes.lua", 'local VERSION = "v1"', 'local VERSION = "v5"\nlocal broken = = 1')
    local status, body = s:request("POST", "/admin/reload")
    assert.equal(422, status)
    assert.equal("POLICY_REJECTED", body.error.code)
    assert.matches("routes%.lua:%d+:", body.error.message)
    assert.equal("v1", version())
    local _, health = s:request("GET", "/health")
    assert.equal(1, health.policies.generation)
    assert.matches("routes%.lua:%d+:", health.policies.reload_error)
    assert.equal("degraded", health.status)
    assert.matches("error host reload rejected .*routes%.lua:%d+:", s:wait_log("error host reload rejected .*routes%.lua:%d+:"))

    local code, out = server.run(("%s reload --listen 127.0.0.1:%d"):format(server.bin, s.port))
    assert.equal(1, code)
    assert.matches("routes%.lua:%d+:", out)
  end)

  it("rejects a policy that breaks its contract", function()
    edit(dir .. "/routes.lua", '{ "GET", "/version"', '{ "FETCH", "/version"')
    local status, body = s:request("POST", "/admin/reload")
    assert.equal(422, status)
    assert.matches("routes%.lua:%d+: route %d+ %(FETCH /version%): method must be", body.error.message)
    assert.equal("v1", version())
  end)

  it("rejects a policy that writes an undeclared global", function()
    edit(dir .. "/routes.lua", 'local VERSION = "v1"', 'VERSION = "v6"')
    local status, body = s:request("POST", "/admin/reload")
    assert.equal(422, status)
    assert.matches("routes%.lua:%d+: assignment to undeclared global 'VERSION'", body.error.message)
  end)

  it("gives policies no io, os.exit or bytecode loading", function()
    edit(dir .. "/routes.lua", 'local VERSION = "v1"', [[
local VERSION = "v1"
assert(not pcall(function() return io end), "io is reachable")
assert(os.exit == nil, "os.exit is reachable")
assert(load(string.dump(function() end)) == nil, "bytecode loads")
assert(not pcall(require, "qc.fetch"), "qc.fetch reachable from a policy")
]])
    local status, body = s:request("POST", "/admin/reload")
    assert.equal(200, status, body and body.error and body.error.message)
  end)

  it("lets a request in flight finish on the generation it started with", function()
    local done = {}
    require("qc.host").spawn(function()
      local status, body, err = s:request("GET", "/sleep?s=1&tag=inflight")
      done.status, done.version, done.err = status or false, body and body.version, err
    end)
    server.wait_for(function() return s:log_text():find("sleeping tag=inflight") end, 10, "the request to arrive")
    edit(dir .. "/routes.lua", 'VERSION = "v1"', 'VERSION = "v7"')
    assert.equal(200, (s:request("POST", "/admin/reload")))
    assert.equal("v7", version())
    server.wait_for(function() return done.status ~= nil end, 10, "the sleeping request")
    assert.equal(200, done.status, done.err)
    assert.equal("v1", done.version)
  end)
end)

describe("qc.fetch", function()
  it("runs 200 requests at once against a local server", function()
    local s = server.start { policies = fixture_policies() }
    local items = {}
    for i = 1, 200 do items[i] = i end
    local started = time.monotonic()
    local results = tasks.map(items, 200, function()
      local status, _, body = fetch { url = s.url .. "/sleep?s=0.5", timeout = 30 }
      assert(status == 200, "status " .. tostring(status))
      return body
    end)
    local elapsed = time.monotonic() - started
    local ok = 0
    for _, r in ipairs(results) do
      if r.ok and r.value:find("v1") then ok = ok + 1 end
    end
    assert.equal(200, ok)
    -- 200 half-second sleeps one after another would take 100 s.
    assert.is_true(elapsed < 30, "took " .. elapsed .. " s")
    assert.equal(0, s:stop())
  end)

  it("returns nil, message, code when nothing listens", function()
    local status, err, code = fetch { url = "http://127.0.0.1:1/", timeout = 5 }
    assert.is_nil(status)
    assert.is_string(err)
    assert.equal("CONNECT", code)
  end)
end)

describe("graceful stop", function()
  it("finishes the request in flight, refuses new connections, and exits 0", function()
    local s = server.start { policies = fixture_policies() }
    local done = {}
    require("qc.host").spawn(function()
      local status, msg, code = s:request("GET", "/sleep?s=2&tag=stop")
      done.status, done.err = status or false, tostring(code) .. ": " .. tostring(msg)
    end)
    -- TERM only once the request is being handled (a loaded machine may be slow to send it).
    server.wait_for(function() return s:log_text():find("sleeping tag=stop") end, 10, "the request to arrive")
    s:signal("TERM")
    time.sleep(0.2)
    local status, _, code = fetch { url = s.url .. "/health", timeout = 2 }
    assert.is_nil(status)
    assert.equal("CONNECT", code)
    server.wait_for(function() return done.status ~= nil end, 10, "the request in flight")
    assert.equal(200, done.status, done.err and (done.err .. "\nserver log:\n" .. s:log_text()))
    assert.equal(0, s:stop())
    assert.matches("info server stopping signal=TERM inflight=1", s:wait_log("info server stopping signal=TERM inflight=1"))
  end)
end)

describe("quantcoach run", function()
  local dir
  setup(function() dir = server.tmpdir() end)

  local function script(name, text)
    local path = dir .. "/" .. name
    server.write_file(path, text)
    return path
  end

  it("exits with the script's integer return value and passes arguments", function()
    local path = script("ret.lua", "local a, b = ...\nassert(arg[1] == a and arg[2] == b)\nreturn tonumber(a) + tonumber(b)")
    local code = server.run(("%s run %s 2 5"):format(server.bin, path))
    assert.equal(7, code)
  end)

  it("exits 0 when the script returns nothing", function()
    assert.equal(0, (server.run(("%s run %s"):format(server.bin, script("nothing.lua", "local x = 1")))))
  end)

  it("prints a traceback and exits 1 on an uncaught error", function()
    local code, out = server.run(("%s run %s"):format(server.bin, script("err.lua", "local function f()\n  error('kaput')\nend\nf()")))
    assert.equal(1, code)
    assert.matches("err%.lua:2: kaput", out)
    assert.matches("stack traceback", out)
  end)

  it("runs qc.fetch and qc.time.sleep from the script's task", function()
    local s = server.start { policies = fixture_policies() }
    local path = script("fetch.lua", ([[
      local fetch = require "qc.fetch"
      require("qc.time").sleep(0.05)
      local status, headers, body = fetch { url = %q }
      assert(status == 200 and headers["content-type"] == "application/json", tostring(status))
      return body:find('"v1"') and 0 or 3
    ]]):format(s.url .. "/version"))
    assert.equal(0, (server.run(("%s run %s"):format(server.bin, path))))
    s:stop()
  end)

  it("exits 1 with a message when the script file is missing", function()
    local code, out = server.run(("%s run %s/none.lua"):format(server.bin, dir))
    assert.equal(1, code)
    assert.matches("none%.lua", out)
  end)

  it("shows its usage with --help", function()
    local code, out = server.run(("%s run --help"):format(server.bin))
    assert.equal(0, code)
    assert.matches("usage: quantcoach run SCRIPT", out)
  end)
end)

describe("quantcoach check", function()
  it("passes the shipped policies", function()
    local code, out = server.run(("%s check --policies %s/policies"):format(server.bin, server.source))
    assert.equal(0, code, out)
    assert.matches("^ok: policies in", out)
  end)

  it("fails a broken policy directory with file and line", function()
    local dir = fixture_policies()
    edit(dir .. "/routes.lua", 'local VERSION = "v1"', 'local VERSION = "v1" +')
    local code, out = server.run(("%s check --policies %s"):format(server.bin, dir))
    assert.equal(1, code)
    assert.matches("routes%.lua:%d+:", out)
  end)

  it("fails a directory without the policies a server needs", function()
    local dir = server.tmpdir()
    local code, out = server.run(("%s check --policies %s"):format(server.bin, dir))
    assert.equal(1, code)
    assert.matches("missing", out)
  end)
end)

describe("the command line", function()
  it("prints its version", function()
    local code, out = server.run(server.bin .. " --version")
    assert.equal(0, code)
    assert.matches("^quantcoach %d+%.%d+%.%d+", out)
  end)

  it("refuses an unknown command or option with a one-line message", function()
    local code, out = server.run(server.bin .. " frobnicate")
    assert.equal(2, code)
    assert.matches('unknown command "frobnicate"', out)
    code, out = server.run(server.bin .. " serve --bogus")
    assert.equal(2, code)
    assert.matches("unknown option %-%-bogus", out)
  end)

  it("reads settings from the .env file", function()
    local dir = server.tmpdir()
    server.write_file(dir .. "/.env", "QC_CORS_ORIGINS=http://from-dotenv.example\n")
    local s = server.start { policies = fixture_policies(), env = { QC_ENV_FILE = dir .. "/.env" } }
    local _, _, h = s:request("GET", "/health", nil, { Origin = "http://from-dotenv.example" })
    assert.equal("http://from-dotenv.example", h["access-control-allow-origin"])
    s:stop()
  end)
end)

describe("a handler's status", function()
  local s
  setup(function()
    local dir = fixture_policies()
    edit(dir .. "/routes.lua", '\n  { "GET", "/text",', [[

  { "GET", "/status", function(req) return math.tointeger(tonumber(req.args.code)), nil, "body" end },
  { "GET", "/text",]])
    s = server.start { policies = dir }
  end)
  teardown(function() s:stop() end)

  -- Only a final status, 200 to 599, may come from a handler: a 1xx would promise an Upgrade
  -- or a second answer, and anything else is not an HTTP status. Each is a handler bug.
  for _, code in ipairs { 100, 101, 199, 600, 99999, -1, 0, 4294967496 } do
    it(("turns %d into a JSON 500 logged with the route"):format(code), function()
      local status, body, headers = s:request("GET", "/status?code=" .. code, nil, nil, 5)
      assert.equal(500, status)
      assert.equal("application/json", headers["content-type"])
      assert.equal("INTERNAL", body.error.code)
      local want = ("error host handler returned an invalid status method=GET path=/status status=%s\n")
        :format((tostring(code):gsub("%-", "%%-")))
      server.wait_for(function() return s:log_text():match(want) end, 5, want)
      assert.matches("info http request method=GET path=/status status=500 ", s:log_text())
      assert.equal(200, (s:request("GET", "/health")))
    end)
  end

  it("sends 200 to 599 as the handler says", function()
    for _, code in ipairs { 200, 299, 404, 418, 599 } do
      local status, body = s:request("GET", "/status?code=" .. code, nil, nil, 5)
      assert.equal(code, status)
      assert.equal("body", body)
    end
  end)
end)
