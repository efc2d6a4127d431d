-- Every HTTP error has one shape, {"error":{"code":"...","message":"..."[,"field":"..."]}},
-- rendered by one C function (runtime/net/http_error.c) whether it comes from the HTTP layer,
-- the host, dispatch or a handler's raised qc.errors table. Each answer is read back
-- strictly: valid UTF-8, no raw control bytes, and exactly those keys.
local server = require "support.server"
local lk = require "support.fake_livekit"
local cjson = require "cjson"

local KEY = "spec-key-1"

-- Routes of the shipped policies, plus a few that reach the remaining error paths.
local EXTRA_ROUTES = [[
  { "POST", "/admin/reload-as-remote", function(req)
      req.peer = "192.0.2.77" -- the admin handler's 403 is for callers off loopback
      return admin.reload(req)
    end },
  { "GET", "/odd", function()
      require("qc.errors").raise(409, "ODD", 'say "hi"\\\n\t\1 caf\xc3\xa9 \xff end')
    end },
  { "GET", "/invalid", function() require("qc.errors").invalid("when", "must be a date") end },
  { "GET", "/boom", function() error("boom on purpose") end },
  { "GET", "/trap", require("qc.handlers.errortrap").raise },
]]

-- A lib module (trusted code, so not sandboxed like a policy) that raises an error table
-- whose fields exist only through __index: the host must not run that code.
local TRAP = [[
local log = require "qc.log"
local M = {}
function M.raise()
  error(setmetatable({}, { __index = function(_, k)
    log.warn("spec", "error table __index ran", { key = k })
    return ({ status = 418, code = "TRAPPED", message = "from __index" })[k]
  end }), 0)
end
return M
]]

local function keys_of(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return table.concat(ks, ",")
end

-- raw is exactly {"error":{code, message[, field]}} as strict JSON; returns the error.
local function error_shape(raw, with_field)
  assert.is_string(raw)
  assert.is_truthy(utf8.len(raw), "the body is valid UTF-8: " .. raw)
  assert.is_nil(raw:find("[%c]"), "no raw control bytes in the body: " .. raw)
  local ok, doc = pcall(cjson.decode, raw)
  assert.is_true(ok, "the body is JSON: " .. raw)
  assert.equal("error", keys_of(doc))
  local e = doc.error
  assert.equal(with_field and "code,field,message" or "code,message", keys_of(e))
  assert.is_string(e.code)
  assert.is_string(e.message)
  if with_field then assert.is_string(e.field) end
  return e
end

describe("error answers", function()
  local s, policies
  setup(function()
    local dir = server.tmpdir()
    policies = server.policies_with_routes(EXTRA_ROUTES, dir .. "/policies")
    local scripts = server.scripts_with({ errortrap = TRAP }, dir .. "/scripts")
    s = server.start { policies = policies, env = {
      QC_SCRIPTS = scripts, QC_API_KEYS = KEY, QC_MAX_BODY = "1024",
      LIVEKIT_URL = "ws://127.0.0.1:1", LIVEKIT_API_KEY = "devkey", LIVEKIT_API_SECRET = "secret",
    } }
  end)
  teardown(function() if s then s:stop() end end)

  local function req(method, path, body, headers)
    local status, _, hdrs, raw = s:request(method, path, body, headers)
    return status, raw, hdrs
  end
  local keyed = { Authorization = "Bearer " .. KEY }

  it("404 for an unknown path", function()
    local status, raw = req("GET", "/no/such/thing")
    assert.equal(404, status)
    assert.equal("NOT_FOUND", error_shape(raw).code)
  end)

  it("404 for a path with a quote and a byte that is not UTF-8", function()
    local status, raw = req("GET", "/caf%FF%22x")
    assert.equal(404, status)
    local e = error_shape(raw)
    assert.equal("NOT_FOUND", e.code)
    assert.equal("no route for /caf\u{FFFD}\"x", e.message)
  end)

  it("405 for a wrong method, with its Allow header", function()
    local status, raw, hdrs = req("PUT", "/health")
    assert.equal(405, status)
    assert.equal("METHOD_NOT_ALLOWED", error_shape(raw).code)
    assert.is_string(hdrs["allow"])
  end)

  it("400 BAD_JSON for a malformed body", function()
    local status, raw = req("POST", "/tokens/generate", "{bad", { ["Content-Type"] = "application/json", Authorization = keyed.Authorization })
    assert.equal(400, status)
    assert.equal("BAD_JSON", error_shape(raw).code)
  end)

  it("413 from the HTTP layer for a body over the limit", function()
    local status, raw = req("POST", "/tokens/generate", string.rep("x", 2000), { ["Content-Type"] = "text/plain" })
    assert.equal(413, status)
    assert.equal("PAYLOAD_TOO_LARGE", error_shape(raw).code)
  end)

  it("422 with field for a missing value", function()
    local status, raw = req("POST", "/tokens/generate", {}, { Authorization = keyed.Authorization })
    assert.equal(422, status)
    local e = error_shape(raw, true)
    assert.equal("VALIDATION_ERROR", e.code)
    assert.equal("room_name", e.field)
  end)

  it("422 with field for a JSON body that is not an object", function()
    local status, raw = req("POST", "/tokens/generate", "[1]", { ["Content-Type"] = "application/json", Authorization = keyed.Authorization })
    assert.equal(422, status)
    local e = error_shape(raw, true)
    assert.equal("body", e.field)
    assert.equal("body: must be a JSON object, got an array", e.message)
  end)

  it("422 with field from errors.invalid in a policy", function()
    local status, raw = req("GET", "/invalid")
    assert.equal(422, status)
    assert.same({ code = "VALIDATION_ERROR", message = "when: must be a date", field = "when" }, error_shape(raw, true))
  end)

  it("401 for a missing API key", function()
    local status, raw = req("GET", "/rooms")
    assert.equal(401, status)
    assert.equal("UNAUTHORIZED", error_shape(raw).code)
  end)

  it("401 for a webhook with a bad signature", function()
    local status, raw = req("POST", "/webhooks/livekit", '{"event":"room_started","id":"EV_1"}',
      { ["Content-Type"] = "application/webhook+json", Authorization = "not-a-jwt" })
    assert.equal(401, status)
    local e = error_shape(raw)
    assert.equal("UNAUTHORIZED", e.code)
    assert.matches("^webhook signature: ", e.message)
  end)

  it("400 for a signed webhook that is not a LiveKit event", function()
    local body = '{"hello":"world"}'
    local status, raw = req("POST", "/webhooks/livekit", body,
      { ["Content-Type"] = "application/webhook+json", Authorization = lk.sign_webhook(body) })
    assert.equal(400, status)
    assert.equal("BAD_EVENT", error_shape(raw).code)
  end)

  it("403 from the admin endpoint for a caller off loopback", function()
    local status, raw = req("POST", "/admin/reload-as-remote")
    assert.equal(403, status)
    assert.equal("FORBIDDEN", error_shape(raw).code)
  end)

  it("a raised message with quotes, control bytes and bad UTF-8 comes back intact and valid", function()
    local status, raw = req("GET", "/odd")
    assert.equal(409, status)
    local e = error_shape(raw)
    assert.equal("ODD", e.code)
    assert.equal('say "hi"\\\n\t\1 caf\xc3\xa9 \u{FFFD} end', e.message)
  end)

  it("500 for a handler that fails", function()
    local status, raw = req("GET", "/boom")
    assert.equal(500, status)
    assert.same({ code = "INTERNAL", message = "internal error" }, error_shape(raw))
  end)

  it("never runs an error table's __index after the call has ended", function()
    local status, raw = req("GET", "/trap")
    assert.equal(500, status)
    assert.equal("INTERNAL", error_shape(raw).code)
    assert.equal(200, (req("GET", "/health")))
    assert.matches("error host handler failed path=/trap", s:wait_log("error host handler failed path=/trap"))
    assert.is_nil(s:log_text():find("__index ran", 1, true), "the host read the table through its metatable")
  end)

  it("422 from the admin endpoint for a policy it rejects", function()
    local routes = server.read_file(policies .. "/routes.lua")
    server.write_file(policies .. "/routes.lua", routes .. "\nthis is not lua\n")
    local status, raw = req("POST", "/admin/reload")
    server.write_file(policies .. "/routes.lua", routes)
    assert.equal(422, status)
    assert.equal("POLICY_REJECTED", error_shape(raw).code)
  end)
end)
