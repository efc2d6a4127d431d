-- Roles: what each kind of participant may do in an interview room, and how to tell a
-- participant's role from its identity or metadata.
--
-- Called when a token is issued (grants, ttl_seconds) and when participants are listed or
-- a webhook names one (role_of). Loaded and checked on start, reload and `quantcoach check`;
-- a broken file is rejected and the previous roles stay live.
--
-- grants[role] holds LiveKit video-grant keys (livekit.md §1); `room` and `roomJoin` are
-- added by the token service. role_of returns "interviewer" | "candidate" | "agent" | nil.
--
-- Example: role_of("cand-42", '{"role":"candidate"}') --> "candidate"
local M = {}

---@type table<string, table<string, boolean>>
M.grants = {
  interviewer = { canPublish = true, canSubscribe = true, canPublishData = true },
  candidate = { canPublish = true, canSubscribe = true, canPublishData = true },
  -- The AI agent listens and may send data messages, but is never seen or heard.
  agent = { hidden = true, canSubscribe = true, canPublish = false, canPublishData = true },
}

---Token lifetime, as the FastAPI seed issued them.
M.ttl_seconds = 2 * 60 * 60

local PREFIXES = { "interviewer", "candidate", "agent" }

---@param identity string
---@param metadata string|nil participant metadata (JSON with a "role" field, or anything)
---@return string|nil role
function M.role_of(identity, metadata)
  if type(metadata) == "string" then
    local role = metadata:match('"role"%s*:%s*"(%a+)"')
    if role and M.grants[role] then return role end
  end
  for _, prefix in ipairs(PREFIXES) do
    if identity == prefix or identity:sub(1, #prefix + 1) == prefix .. "-" then return prefix end
  end
  return nil
end

-- Contract examples, run by `quantcoach check` and on every reload.
M.examples = {
  { identity = "cand-42", metadata = '{"role":"candidate"}', role = "candidate" },
  { identity = "interviewer-ada", metadata = "", role = "interviewer" },
  { identity = "agent", role = "agent" },
  { identity = "someone", role = nil },
}

return M
