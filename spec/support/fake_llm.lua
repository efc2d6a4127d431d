-- The fake LLM server (fake_llm.js), driven from a spec.
--   local fl = require "support.fake_llm"
--   local fake = fl.start()        -- fake.base (http://127.0.0.1:PORT/v1)
--   fake:queue { { content = '{"x":1}' }, { status = 429, headers = { ["retry-after"] = "1" } } }
--   fake:calls()  fake:stats()  fake:reset()  fake:stop()
-- The fake's stdin is a pipe held by this process: if the spec dies, the fake exits on its own.
local cjson = require "cjson"
local fetch = require "qc.fetch"
local server = require "support.server"

local M = {}

local Fake = {}
Fake.__index = Fake

function M.start()
  local dir = server.tmpdir()
  local self = setmetatable({ dir = dir, out = dir .. "/fake.out", pidfile = dir .. "/fake.pid" }, Fake)
  local cmd = ("echo $$ > %s; exec node %s --port 0 > %s 2>&1"):format(server.quote(self.pidfile),
    server.quote(server.source .. "/spec/support/fake_llm.js"), server.quote(self.out))
  self.stdin = assert(io.popen(cmd, "w"))
  self.port = server.wait_for(function()
    local out = server.read_file(self.out) or ""
    if out:find("Error") then error("fake LLM failed to start:\n" .. out, 0) end
    return tonumber(out:match("listening (%d+)"))
  end, 20, "the fake LLM to listen")
  self.pid = tonumber(server.read_file(self.pidfile))
  self.http = "http://127.0.0.1:" .. self.port
  self.base = self.http .. "/v1"
  return self
end

function Fake:request(method, path, body)
  local status, _, raw = fetch { method = method, url = self.http .. path, timeout = 10,
    body = body and cjson.encode(body) or nil, headers = body and { ["Content-Type"] = "application/json" } or nil }
  assert(status == 200, ("fake LLM %s %s: %s %s"):format(method, path, tostring(status), tostring(raw)))
  return cjson.decode(raw)
end

function Fake:queue(replies) return self:request("POST", "/_fake/queue", replies) end
function Fake:calls() return self:request("GET", "/_fake/calls") end
function Fake:stats() return self:request("GET", "/_fake/stats") end
function Fake:reset() return self:request("POST", "/_fake/reset", {}) end

function Fake:stop()
  if self.stopped then return end
  self.stopped = true
  if self.pid then os.execute(("kill -TERM %d 2>/dev/null"):format(self.pid)) end
  self.stdin:close()
end

return M
