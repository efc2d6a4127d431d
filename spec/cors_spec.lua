-- CORS has one home, the host's C side (runtime/net/cors.c): it adds every CORS header, on
-- handler answers, raised errors and preflights alike. Dispatch only answers OPTIONS with
-- the route's Allow header, as HTTP has it.
local server = require "support.server"

local function preflight(s, origin, extra)
  local headers = { ["Access-Control-Request-Method"] = "POST" }
  if origin then headers.Origin = origin end
  for k, v in pairs(extra or {}) do headers[k] = v end
  local status, _, h = s:request("OPTIONS", "/tokens/generate", nil, headers)
  return status, h
end

local CORS = { "access-control-allow-origin", "access-control-allow-methods",
               "access-control-allow-headers", "access-control-max-age" }

describe("CORS", function()
  local s
  setup(function()
    s = server.start { env = { QC_CORS_ORIGINS = "http://a.example, http://b.example" } }
  end)
  teardown(function() if s then s:stop() end end)

  it("answers a preflight from a listed origin with what it may send", function()
    local status, h = preflight(s, "http://b.example", { ["Access-Control-Request-Headers"] = "authorization, x-trace" })
    assert.equal(204, status)
    assert.equal("http://b.example", h["access-control-allow-origin"])
    assert.equal("Origin", h["vary"])
    assert.equal("OPTIONS, POST", h["access-control-allow-methods"])
    assert.equal("authorization, x-trace", h["access-control-allow-headers"])
    assert.equal("600", h["access-control-max-age"])
    assert.equal("OPTIONS, POST", h["allow"])
  end)

  it("names the usual request headers when a preflight asks for none", function()
    local _, h = preflight(s, "http://a.example")
    assert.equal("authorization, content-type", h["access-control-allow-headers"])
  end)

  it("gives a preflight from an origin not listed no CORS headers at all", function()
    local status, h = preflight(s, "http://evil.example")
    assert.equal(204, status)
    for _, name in ipairs(CORS) do assert.is_nil(h[name], name) end
    assert.equal("OPTIONS, POST", h["allow"])
  end)

  it("answers OPTIONS without an Origin with Allow only", function()
    local status, h = preflight(s, nil)
    assert.equal(204, status)
    for _, name in ipairs(CORS) do assert.is_nil(h[name], name) end
    assert.equal("OPTIONS, POST", h["allow"])
  end)

  it("marks error answers for a listed origin, from dispatch and from a raised error", function()
    local status, _, h = s:request("GET", "/no/such", nil, { Origin = "http://a.example" })
    assert.equal(404, status)
    assert.equal("http://a.example", h["access-control-allow-origin"])
    status, _, h = s:request("POST", "/tokens/generate", {}, { Origin = "http://a.example" })
    assert.equal(422, status)
    assert.equal("http://a.example", h["access-control-allow-origin"])
    assert.is_nil(h["access-control-allow-methods"], "only a preflight gets the preflight headers")
  end)
end)
