-- The fake ElevenLabs realtime server (fake_elevenlabs.js), driven from a spec.
--   local el = require "support.fake_elevenlabs"
--   local fake = el.start { key = "k", order = "ts-first" }  -- fake.port, fake.url (the realtime endpoint)
--   fake:script { connections = { { drop_after_chunks = 3 }, {} }, refuse = 1 }
--   fake:connections()  fake:reset()  fake:stop()
-- The fake's stdin is a pipe held by this process: if the spec dies, the fake exits on its own.
local cjson = require "cjson"
local fetch = require "qc.fetch"
local server = require "support.server"

local M = {}
local quote = server.quote

local Fake = {}
Fake.__index = Fake

function M.start(opts)
  opts = opts or {}
  local dir = server.tmpdir()
  local self = setmetatable({ dir = dir, out = dir .. "/fake.out", pidfile = dir .. "/fake.pid" }, Fake)
  self.key = opts.key or "test-key"
  local args = { "--port", "0", "--key", self.key, "--order", opts.order or "alternate" }
  if opts.tls_cert then
    for _, a in ipairs { "--tls-cert", opts.tls_cert, "--tls-key", opts.tls_key } do args[#args + 1] = a end
  end
  for i, a in ipairs(args) do args[i] = quote(a) end
  local cmd = ("echo $$ > %s; exec node %s %s > %s 2>&1"):format(quote(self.pidfile),
    quote(server.source .. "/spec/support/fake_elevenlabs.js"), table.concat(args, " "), quote(self.out))
  self.stdin = assert(io.popen(cmd, "w"))
  self.port = server.wait_for(function()
    local out = server.read_file(self.out) or ""
    if out:find("Error") then error("fake ElevenLabs failed to start:\n" .. out, 0) end
    return tonumber(out:match("listening (%d+)"))
  end, 20, "the fake ElevenLabs to listen")
  self.pid = tonumber(server.read_file(self.pidfile))
  self.http = "http://127.0.0.1:" .. self.port
  self.ws = "ws://127.0.0.1:" .. self.port
  self.url = self.ws .. "/v1/speech-to-text/realtime"
  return self
end

function Fake:request(method, path, body)
  local status, _, raw = fetch { method = method, url = self.http .. path, timeout = 10,
    body = body and cjson.encode(body) or nil,
    headers = body and { ["Content-Type"] = "application/json" } or nil }
  assert(status == 200, ("fake ElevenLabs %s %s: %s %s"):format(method, path, tostring(status), tostring(raw)))
  return cjson.decode(raw)
end

function Fake:script(s) return self:request("POST", "/_fake/script", s) end
function Fake:connections() return self:request("GET", "/_fake/connections") end
function Fake:reset() return self:request("POST", "/_fake/reset", {}) end

function Fake:stop()
  if self.stdin then
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    self.stdin:close()
    self.stdin = nil
  end
end

return M
