-- Contract checks run on every policy file when a generation is built (reload, start,
-- `quantcoach check`). A check raises "file: problem" and the whole generation is rejected.
local M = {}

-- Policies a server cannot run without.
M.required = { routes = true, roles = true, speakers = true }

-- No role list here: check.roles reads roles.lua's own `roles`, the one list there is.
local GRANT_KEYS = {
  roomCreate = true, roomList = true, roomRecord = true, roomAdmin = true, roomJoin = true,
  canPublish = true, canSubscribe = true, canPublishData = true, canUpdateOwnMetadata = true,
  ingressAdmin = true, hidden = true, recorder = true, agent = true, canSubscribeMetrics = true,
}

-- name -> function(policy, path, generation). routes.lua is checked by compiling it
-- (qc.router), which every generation does anyway.
M.check = {}

-- roles.lua's token_window(scheduled_at, date_only, now) -> nbf, exp: integers, nbf < exp,
-- the window at most 8 days, and each of window_examples answered as it says.
local function check_token_window(p, path)
  if type(p.token_window) ~= "function" then error(path .. ": token_window must be a function", 0) end
  for i, ex in ipairs(p.window_examples or {}) do
    local nbf, exp = p.token_window(ex.scheduled_at, ex.date_only, ex.now)
    if math.type(nbf) ~= "integer" or math.type(exp) ~= "integer" or nbf >= exp or exp - nbf > 8 * 24 * 3600 then
      error(("%s: window example %d: token_window must return integers nbf < exp at most 8 days apart, got %s, %s")
        :format(path, i, tostring(nbf), tostring(exp)), 0)
    end
    if nbf ~= ex.nbf or exp ~= ex.exp then
      error(("%s: window example %d: token_window returned %d, %d, expected %s, %s"):format(
        path, i, nbf, exp, tostring(ex.nbf), tostring(ex.exp)), 0)
    end
  end
end

function M.check.roles(p, path)
  if type(p.grants) ~= "table" then error(path .. ": grants must be a table", 0) end
  if type(p.roles) ~= "table" or #p.roles == 0 then error(path .. ": roles must be a list of role names", 0) end
  local seen = {}
  for i, role in ipairs(p.roles) do
    if type(role) ~= "string" or not role:match("^[%a][%w_]*$") or seen[role] then
      error(("%s: roles[%d] must be a new name of letters, digits and _"):format(path, i), 0)
    end
    seen[role] = true
  end
  for _, role in ipairs(p.roles) do
    local g = p.grants[role]
    if type(g) ~= "table" then error(("%s: grants.%s is missing"):format(path, role), 0) end
    for k, v in pairs(g) do
      if not GRANT_KEYS[k] then error(("%s: grants.%s.%s is not a LiveKit grant"):format(path, role, tostring(k)), 0) end
      if type(v) ~= "boolean" then error(("%s: grants.%s.%s must be true or false"):format(path, role, k), 0) end
    end
  end
  if math.type(p.ttl_seconds) ~= "integer" or p.ttl_seconds < 60 or p.ttl_seconds > 7 * 24 * 3600 then
    error(path .. ": ttl_seconds must be an integer between 60 and 604800", 0)
  end
  if type(p.role_of) ~= "function" then error(path .. ": role_of must be a function", 0) end
  check_token_window(p, path)
  for i, ex in ipairs(p.examples or {}) do
    local got = p.role_of(ex.identity, ex.metadata)
    if got ~= ex.role then
      error(("%s: example %d: role_of(%q) returned %s, expected %s"):format(
        path, i, ex.identity, tostring(got), tostring(ex.role)), 0)
    end
  end
end

function M.check.speakers(p, path, gen)
  if type(p.role) ~= "function" then error(path .. ": role must be a function", 0) end
  if type(p.transcribe) ~= "function" then error(path .. ": transcribe must be a function", 0) end
  if not gen.policies.roles then return end -- roles.lua loads first (files load in name order)
  for i, ex in ipairs(p.examples or {}) do
    local role = p.role(ex.participant)
    local got = p.transcribe(ex.participant, ex.track, role)
    if type(got) ~= "boolean" then error(("%s: example %d: transcribe must return true or false"):format(path, i), 0) end
    if got ~= ex.transcribe then
      error(("%s: example %d: transcribe returned %s, expected %s"):format(path, i, tostring(got), tostring(ex.transcribe)), 0)
    end
  end
end

return M
