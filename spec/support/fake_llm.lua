-- The fake LLM server (fake_llm.js), driven from a spec.
--   local fl = require "support.fake_llm"
--   local fake = fl.start()        -- fake.base (http://127.0.0.1:PORT/v1)
--   fake:queue { { content = '{"x":1}' }, { status = 429, headers = { ["retry-after"] = "1" } } }
--   fake:calls()  fake:stats()  fake:reset()  fake:stop()
-- The fake's stdin is a pipe held by this process: if the spec dies, the fake exits on its own.
local node_fake = require "support.node_fake"

local M = {}

local Fake = node_fake.class("fake LLM")

function M.start()
  local self = node_fake.start(Fake, "fake_llm.js", {}, "Error")
  self.base = self.http .. "/v1"
  return self
end

function Fake:queue(replies) return self:request("POST", "/_fake/queue", replies) end
function Fake:calls() return self:request("GET", "/_fake/calls") end
function Fake:stats() return self:request("GET", "/_fake/stats") end

return M
