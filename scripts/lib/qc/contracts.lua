-- Contract checks run on every policy file when a generation is built (reload, start,
-- `quantcoach check`). A check raises "file:LINE: problem" and the whole generation is
-- rejected.
local M = {}

-- Policies a server cannot run without.
M.required = { routes = true, roles = true, speakers = true }

-- No role list here: check.roles reads roles.lua's own `roles`, the one list there is.
local GRANT_KEYS = {
  roomCreate = true, roomList = true, roomRecord = true, roomAdmin = true, roomJoin = true,
  canPublish = true, canSubscribe = true, canPublishData = true, canUpdateOwnMetadata = true,
  ingressAdmin = true, hidden = true, recorder = true, agent = true, canSubscribeMetrics = true,
}

-- name -> function(policy, path, generation, at). routes.lua is checked by compiling it
-- (qc.router), which every generation does anyway.
--
-- at(key, ...) is "path:LINE" for the value at that key path in the policy's source:
-- strings are keys, integers items of a table constructor (at("examples", 2)). A check
-- raises error(at(...) .. ": problem", 0). (A message that names only the file, "path:
-- problem", gets the line of the key it starts with, added by qc.generation.)
M.check = {}

-- roles.lua's token_window(scheduled_at, date_only, now) -> nbf, exp: integers, nbf < exp,
-- the window at most 8 days, and each of window_examples answered as it says.
local function check_token_window(p, at)
  if type(p.token_window) ~= "function" then error(at("token_window") .. ": token_window must be a function", 0) end
  for i, ex in ipairs(p.window_examples or {}) do
    local nbf, exp = p.token_window(ex.scheduled_at, ex.date_only, ex.now)
    if math.type(nbf) ~= "integer" or math.type(exp) ~= "integer" or nbf >= exp or exp - nbf > 8 * 24 * 3600 then
      error(("%s: window example %d: token_window must return integers nbf < exp at most 8 days apart, got %s, %s")
        :format(at("window_examples", i), i, tostring(nbf), tostring(exp)), 0)
    end
    if nbf ~= ex.nbf or exp ~= ex.exp then
      error(("%s: window example %d: token_window returned %d, %d, expected %s, %s"):format(
        at("window_examples", i), i, nbf, exp, tostring(ex.nbf), tostring(ex.exp)), 0)
    end
  end
end

function M.check.roles(p, path, _, at)
  if type(p.grants) ~= "table" then error(at("grants") .. ": grants must be a table", 0) end
  if type(p.roles) ~= "table" or #p.roles == 0 then error(at("roles") .. ": roles must be a list of role names", 0) end
  local seen = {}
  for i, role in ipairs(p.roles) do
    if type(role) ~= "string" or not role:match("^[%a][%w_]*$") or seen[role] then
      error(("%s: roles[%d] must be a new name of letters, digits and _"):format(at("roles", i), i), 0)
    end
    seen[role] = true
  end
  for _, role in ipairs(p.roles) do
    local g = p.grants[role]
    if type(g) ~= "table" then error(("%s: grants.%s is missing"):format(at("grants", role), role), 0) end
    for k, v in pairs(g) do
      if not GRANT_KEYS[k] then
        error(("%s: grants.%s.%s is not a LiveKit grant"):format(at("grants", role, k), role, tostring(k)), 0)
      end
      if type(v) ~= "boolean" then
        error(("%s: grants.%s.%s must be true or false"):format(at("grants", role, k), role, k), 0)
      end
    end
  end
  if math.type(p.ttl_seconds) ~= "integer" or p.ttl_seconds < 60 or p.ttl_seconds > 7 * 24 * 3600 then
    error(at("ttl_seconds") .. ": ttl_seconds must be an integer between 60 and 604800", 0)
  end
  if type(p.role_of) ~= "function" then error(at("role_of") .. ": role_of must be a function", 0) end
  check_token_window(p, at)
  for i, ex in ipairs(p.examples or {}) do
    local got = p.role_of(ex.identity, ex.metadata)
    if got ~= ex.role then
      error(("%s: example %d: role_of(%q) returned %s, expected %s"):format(
        at("examples", i), i, ex.identity, tostring(got), tostring(ex.role)), 0)
    end
  end
end

function M.check.speakers(p, path, gen, at)
  if type(p.role) ~= "function" then error(at("role") .. ": role must be a function", 0) end
  if type(p.transcribe) ~= "function" then error(at("transcribe") .. ": transcribe must be a function", 0) end
  if not gen.policies.roles then return end -- roles.lua loads first (files load in name order)
  for i, ex in ipairs(p.examples or {}) do
    -- role(participant, issued_role): an example names the issued role in its participant.
    local role = p.role(ex.participant, ex.participant.issued_role)
    if ex.role ~= nil and role ~= (ex.role or nil) then
      error(("%s: example %d: role returned %s, expected %s"):format(
        at("examples", i), i, tostring(role), tostring(ex.role or nil)), 0)
    end
    local got = p.transcribe(ex.participant, ex.track, role)
    if type(got) ~= "boolean" then
      error(("%s: example %d: transcribe must return true or false"):format(at("examples", i), i), 0)
    end
    if got ~= ex.transcribe then
      error(("%s: example %d: transcribe returned %s, expected %s"):format(
        at("examples", i), i, tostring(got), tostring(ex.transcribe)), 0)
    end
  end
end

return M
