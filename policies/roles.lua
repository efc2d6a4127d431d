-- Roles: which kinds of participant an interview room has, what each may do, how long its
-- tokens are valid, and how to tell a participant's role from its identity or metadata.
--
-- Called when a token is issued (roles, grants, ttl_seconds, token_window), when rooms are
-- created (a token for each of `roles`), and when participants are listed or a webhook names
-- one (role_of). This file is the one list of roles: the REST API, `quantcoach token` and
-- scripts/batch_rooms.lua all read it. Loaded and checked on start, reload and
-- `quantcoach check`; a broken file is rejected and the previous roles stay live.
--
-- roles lists the role names, in the order tokens are issued; every one needs grants.
-- grants[role] holds LiveKit video-grant keys (livekit.md §1); `room` and `roomJoin` are
-- added by the token service. role_of returns one of `roles` or nil.
-- token_window(scheduled_at, date_only, now) returns nbf, exp (unix seconds) for the tokens
-- of an interview that starts at scheduled_at: from 30 minutes before the start until 3 hours
-- after it. A date without a time (date_only) means the whole UTC day, so the window runs
-- from 30 minutes before that day until 3 hours after it. Tokens issued with no schedule
-- (the REST API, `quantcoach token`) last ttl_seconds from now instead.
--
-- Examples: role_of("cand-42", '{"role":"candidate"}') --> "candidate"
--           token_window(1796133600, false, 1790000000) --> 1796131800, 1796144400
local M = {}

---@type string[]
M.roles = { "interviewer", "candidate", "agent" }

---@type table<string, table<string, boolean>>
M.grants = {
  interviewer = { canPublish = true, canSubscribe = true, canPublishData = true },
  candidate = { canPublish = true, canSubscribe = true, canPublishData = true },
  -- The AI agent listens and may send data messages, but is never seen or heard.
  agent = { hidden = true, canSubscribe = true, canPublish = false, canPublishData = true },
}

---Token lifetime when there is no schedule, as the FastAPI seed issued them.
M.ttl_seconds = 2 * 60 * 60

local EARLY = 30 * 60     -- people join a little before the start
local LATE = 3 * 60 * 60  -- an interview that overruns keeps its room

---@param scheduled_at integer unix seconds of the start (midnight UTC when date_only)
---@param date_only boolean the schedule named a day, not a time
---@param now integer unix seconds (the window does not depend on it here)
---@return integer nbf, integer exp
function M.token_window(scheduled_at, date_only, now) -- luacheck: ignore now
  if date_only then return scheduled_at - EARLY, scheduled_at + 24 * 60 * 60 + LATE end
  return scheduled_at - EARLY, scheduled_at + LATE
end

---@param identity string
---@param metadata string|nil participant metadata (JSON with a "role" field, or anything)
---@return string|nil role
function M.role_of(identity, metadata)
  if type(metadata) == "string" then
    local role = metadata:match('"role"%s*:%s*"(%a+)"')
    if role and M.grants[role] then return role end
  end
  for _, prefix in ipairs(M.roles) do
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

-- token_window examples: 2026-12-01T14:00:00Z, then the day 2026-12-01.
M.window_examples = {
  { scheduled_at = 1796133600, date_only = false, now = 1790000000, nbf = 1796131800, exp = 1796144400 },
  { scheduled_at = 1796083200, date_only = true, now = 1790000000, nbf = 1796081400, exp = 1796180400 },
}

return M
