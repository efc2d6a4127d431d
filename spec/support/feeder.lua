-- Transcript events without audio: a server with a spec-only handler in a copy of the scripts,
-- POST /spec/finals { room, events }, that hands each event to the real qc.transcripts as the
-- STT binding does (stored, announced, then through the windows runner). An event is a final
-- unless it says final = false.
--   local feeder = require "support.feeder"
--   local s = feeder.start { env = { QC_API_KEYS = KEY }, without = { "windows.lua" } }
--   s:request("POST", "/spec/finals", { room = "r", events = { {identity=, role=, track=, text=, start=, ["end"]=} } }, AUTH)
local server = require "support.server"

local M = {}

M.HANDLER = [[
local transcripts = require "qc.transcripts"
return {
  finals = function(req)
    for _, ev in ipairs(req.json.events) do
      ev.room = req.json.room
      ev.final = ev.final ~= false
      transcripts.on_event(ev)
    end
    return 200, nil, { last_seq = transcripts.last_seq(req.json.room) }
  end,
}
]]

---Starts the server (the null STT engine; opts.env adds to its env). opts.without names shipped
---policy files to leave out.
function M.start(opts)
  opts = opts or {}
  local scripts = server.scripts_with { spec_feeder = M.HANDLER }
  local policies = server.policies_with_routes(
    '  { "POST", "/spec/finals", require("qc.handlers.spec_feeder").finals },\n')
  for _, f in ipairs(opts.without or {}) do assert(os.remove(policies .. "/" .. f)) end
  local env = { QC_SCRIPTS = scripts, QC_STT_ENGINE = "null" }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  return server.start { policies = policies, env = env }
end

return M
