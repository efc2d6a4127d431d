-- The fake LiveKit server (fake_livekit.js) and the Node SDK oracles (lk_verify.js, lk_webhook.js),
-- driven from a spec.
--   local lk = require "support.fake_livekit"
--   local fake = lk.start { key = "devkey", secret = "secret" }   -- fake.port, fake.url (ws://...)
--   fake:calls()  fake:reset()  fake:mode("slow", 3000)  fake:add_participant { room = "r", identity = "i" }
--   fake:hold("CreateRoom", "r", 60000, "after")   -- stall one room's call (see fake_livekit.js)
--   fake:egress_config { webhook_url = s.url .. "/webhooks/livekit", fail = 1 }   fake:egresses()
--   fake:stop()
--   local fake, s = lk.serve { QC_API_KEYS = "k" }   lk.shutdown(fake, s)   -- with a server that uses it
--   local results = lk.verify { tok1, tok2 }      -- { {ok=true, claims={...}}, {ok=false, error="..."} }
--   local header = lk.sign_webhook(body)          -- Authorization value, as LiveKit sends it
--   local ok, res = lk.receive_webhook(body, header)
-- The fake's stdin is a pipe held by this process: if the spec dies, the fake exits on its own.
local cjson = require "cjson"
local server = require "support.server"
local node_fake = require "support.node_fake"

local M = {}

local SUPPORT = server.source .. "/spec/support"
local quote = server.quote

local Fake = node_fake.class("fake LiveKit")

---@param opts { key: string|nil, secret: string|nil, mode: string|nil, delay_ms: integer|nil }|nil
function M.start(opts)
  opts = opts or {}
  local args = { "--key", opts.key or "devkey", "--secret", opts.secret or "secret" }
  if opts.mode then args[#args + 1] = "--mode"; args[#args + 1] = opts.mode end
  if opts.delay_ms then args[#args + 1] = "--delay-ms"; args[#args + 1] = tostring(opts.delay_ms) end
  local self = node_fake.start(Fake, "fake_livekit.js", args, "fake_livekit:")
  self.url = "ws://127.0.0.1:" .. self.port
  return self
end

---A fake and a quantcoach server that talks to it (extra: more of the server's env).
function M.serve(extra)
  local fake = M.start()
  local ok, s = pcall(server.start, { env = fake:env(extra) })
  if not ok then
    fake:stop()
    error(s, 0)
  end
  return fake, s
end

---Stops what M.serve started: the server first (it may be calling the fake), then the fake.
function M.shutdown(fake, s)
  if s then s:stop() end
  if fake then fake:stop() end
end

---The env a quantcoach server needs to talk to this fake.
function Fake:env(extra)
  local env = { LIVEKIT_URL = self.url, LIVEKIT_API_KEY = "devkey", LIVEKIT_API_SECRET = "secret" }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

---Every Twirp call the fake saw: {seq, method, path, body, grants, claims, status, error, ...}.
function Fake:calls(method)
  local all = self:request("GET", "/_fake/calls")
  if not method then return all end
  local out = {}
  for _, c in ipairs(all) do
    if c.method == method then out[#out + 1] = c end
  end
  return out
end

function Fake:clear_calls() return self:request("DELETE", "/_fake/calls") end
function Fake:mode(mode, delay_ms) return self:request("POST", "/_fake/mode", { mode = mode, delay_ms = delay_ms or 0 }) end
function Fake:add_participant(p) return self:request("POST", "/_fake/participants", p) end
function Fake:rooms() return self:request("GET", "/_fake/rooms").rooms end
---Stalls calls of method for one room by ms, before LiveKit acts ("before") or after it
---acted but before it answers ("after"). fake:hold() clears every hold and lets the calls
---still held go on.
function Fake:hold(method, room, ms, when)
  return self:request("POST", "/_fake/hold", method and { method = method, room = room, ms = ms, when = when } or {})
end

---What a started Track Egress does (see fake_livekit.js): { webhook_url = s.url .. "/webhooks/livekit",
---dial = true, wav = path, fail = n }. {} or nil puts every knob back.
function Fake:egress_config(cfg) return self:request("POST", "/_fake/egress_config", cfg or {}) end
---Every egress the fake started: EgressInfo as LiveKit answers it (snake_case) plus conn, the fake
---egress's connection (nil unless it dialled).
function Fake:egresses() return self:request("GET", "/_fake/egress") end

-- Runs cmd_fmt with %s = a temporary file holding text; removes the file afterwards.
local function run_with_file(text, cmd_fmt)
  local dir = server.tmpdir()
  local path = dir .. "/in"
  server.write_file(path, text)
  local code, out = server.run(cmd_fmt:format(quote(path)))
  os.remove(path)
  os.remove(dir)
  return code, out
end

---Verifies tokens with the SDK's TokenVerifier; one result per token, in order.
---@param tokens string[]
---clock_tolerance (seconds, default the SDK's 10) lets a spec read the claims of a token that
---is not valid yet or any more.
---@param opts { key: string|nil, secret: string|nil, clock_tolerance: integer|nil }|nil
function M.verify(tokens, opts)
  opts = opts or {}
  local lines = {}
  for i, t in ipairs(tokens) do lines[i] = cjson.encode { token = t, clock_tolerance = opts.clock_tolerance } end
  local code, out = run_with_file(table.concat(lines, "\n") .. "\n", ("node %s --key %s --secret %s < %%s"):format(
    quote(SUPPORT .. "/lk_verify.js"), quote(opts.key or "devkey"), quote(opts.secret or "secret")))
  assert(code == 0, "lk_verify.js failed: " .. out)
  local results = {}
  for line in out:gmatch("[^\n]+") do results[#results + 1] = cjson.decode(line) end
  assert(#results == #tokens, "lk_verify.js answered " .. #results .. " lines for " .. #tokens .. " tokens: " .. out)
  return results
end

---The Authorization header LiveKit would send with this body (raw JWT, no "Bearer ").
---@param body string exact bytes
---@param opts { key: string|nil, secret: string|nil, ttl: string|nil }|nil
function M.sign_webhook(body, opts)
  opts = opts or {}
  local code, out = run_with_file(body, ("node %s --key %s --secret %s --ttl %s --body-file %%s"):format(
    quote(SUPPORT .. "/lk_webhook.js"), quote(opts.key or "devkey"), quote(opts.secret or "secret"),
    quote(opts.ttl or "5m")))
  assert(code == 0, "lk_webhook.js failed: " .. out)
  return (out:match("^%s*(%S+)%s*$") or error("lk_webhook.js printed: " .. out))
end

---The SDK's WebhookReceiver verdict: ok (boolean), and the event or the error message.
---@param body string
---@param auth string|nil
function M.receive_webhook(body, auth, opts)
  opts = opts or {}
  local cmd = ("node %s --receive --key %s --secret %s --body-file %%s"):format(quote(SUPPORT .. "/lk_webhook.js"),
    quote(opts.key or "devkey"), quote(opts.secret or "secret"))
  if auth then cmd = cmd .. " --auth " .. quote(auth):gsub("%%", "%%%%") end
  local _, out = run_with_file(body, cmd)
  local res = cjson.decode(out:match("[^\n]+"))
  return res.ok, res.ok and res.event or res.error
end

return M
