-- What the Node fakes (fake_livekit.js, fake_elevenlabs.js, fake_llm.js) share on the Lua side:
-- start one on a free port, ask its /_fake control endpoints, stop it. Each driver makes its
-- class with node_fake.class() and adds its own methods.
--   local Fake = node_fake.class("fake LLM")
--   local fake = node_fake.start(Fake, "fake_llm.js", { "--key", "k" }, "Error")   -- fake.port, fake.http
--   fake:request("POST", "/_fake/reset", {})   fake:stop()
-- The fake's stdin is a pipe held by this process: if the spec dies, the fake exits on its own.
local cjson = require "cjson"
local fetch = require "qc.fetch"
local server = require "support.server"

local M = {}
local quote = server.quote

local Base = {}
Base.__index = Base

---A class for one kind of fake; name is how errors call it ("fake LiveKit").
function M.class(name)
  local C = setmetatable({ name = name }, Base)
  C.__index = C
  return C
end

---Starts spec/support/SCRIPT with args and --port 0, and waits for its "listening PORT" line. A
---line matching failed (a plain string) before that is a start that failed: raised with its output.
function M.start(C, script, args, failed)
  local dir = server.tmpdir()
  local self = setmetatable({ dir = dir, out = dir .. "/fake.out", pidfile = dir .. "/fake.pid" }, C)
  local q = { quote("--port"), quote("0") }
  for _, a in ipairs(args or {}) do q[#q + 1] = quote(a) end
  -- `exec` keeps the shell's pid, so $$ is node's pid.
  local cmd = ("echo $$ > %s; exec node %s %s > %s 2>&1"):format(quote(self.pidfile),
    quote(server.source .. "/spec/support/" .. script), table.concat(q, " "), quote(self.out))
  self.stdin = assert(io.popen(cmd, "w"))
  self.port = server.wait_for(function()
    local out = server.read_file(self.out) or ""
    if out:find(failed, 1, true) then error(C.name .. " failed to start:\n" .. out, 0) end
    return tonumber(out:match("listening (%d+)"))
  end, 20, "the " .. C.name .. " to listen")
  self.pid = tonumber(server.read_file(self.pidfile))
  self.http = "http://127.0.0.1:" .. self.port
  return self
end

---A call to the fake's control API: a JSON body in (if any), the decoded JSON answer out; anything
---but 200 raises.
function Base:request(method, path, body)
  local status, _, raw = fetch { method = method, url = self.http .. path, timeout = 10,
    body = body and cjson.encode(body) or nil,
    headers = body and { ["Content-Type"] = "application/json" } or nil }
  assert(status == 200, ("%s %s %s: %s %s"):format(self.name, method, path, tostring(status), tostring(raw)))
  return cjson.decode(raw)
end

function Base:reset() return self:request("POST", "/_fake/reset", {}) end

function Base:stop()
  if self.stopped then return end
  self.stopped = true
  if self.pid then os.execute(("kill -TERM %d 2>/dev/null"):format(self.pid)) end
  self.stdin:close() -- waits for node to exit
end

return M
