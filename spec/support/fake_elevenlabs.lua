-- The fake ElevenLabs realtime server (fake_elevenlabs.js), driven from a spec.
--   local el = require "support.fake_elevenlabs"
--   local fake = el.start { key = "k", order = "ts-first" }  -- fake.port, fake.url (the realtime endpoint)
--   fake:script { connections = { { drop_after_chunks = 3 }, {} }, refuse = 1 }
--   fake:connections()  fake:reset()  fake:stop()
-- The fake's stdin is a pipe held by this process: if the spec dies, the fake exits on its own.
local node_fake = require "support.node_fake"

local M = {}

local Fake = node_fake.class("fake ElevenLabs")

function M.start(opts)
  opts = opts or {}
  local key = opts.key or "test-key"
  local args = { "--key", key, "--order", opts.order or "alternate" }
  if opts.tls_cert then
    for _, a in ipairs { "--tls-cert", opts.tls_cert, "--tls-key", opts.tls_key } do args[#args + 1] = a end
  end
  local self = node_fake.start(Fake, "fake_elevenlabs.js", args, "Error")
  self.key = key
  self.ws = "ws://127.0.0.1:" .. self.port
  self.url = self.ws .. "/v1/speech-to-text/realtime"
  return self
end

function Fake:script(s) return self:request("POST", "/_fake/script", s) end
function Fake:connections() return self:request("GET", "/_fake/connections") end

return M
