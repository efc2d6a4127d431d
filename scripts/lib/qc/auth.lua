-- API keys for the room and token endpoints. With QC_API_KEYS set, a request needs
-- `Authorization: Bearer <key>`; keys are compared in constant time (in C) and never logged.
-- Without keys the server is open (dev mode) and says so in its start-up log.
local host = require "qc.host"
local errors = require "qc.errors"

local M = {}

-- Configuration is fixed for the life of the process; read it once per generation.
local keys_set = host.config().api_keys_set

---The token of an `Authorization: Bearer <token>` header, or nil.
---@param req table
---@return string|nil
function M.bearer(req)
  local auth = req.headers.authorization
  return auth and auth:match("^[Bb]earer%s+(%S+)%s*$")
end

---The id of the caller's key ("key:<hash prefix>"), "dev" when no keys are configured.
---Raises a 401 error otherwise.
---@param req table
---@return string
function M.caller(req)
  if not keys_set then return "dev" end
  local token = M.bearer(req)
  if not token then errors.raise(401, "UNAUTHORIZED", "missing API key: send Authorization: Bearer <key>") end
  local id = host.check_api_key(token)
  if not id then errors.raise(401, "UNAUTHORIZED", "invalid API key") end
  return id
end

---Wraps a handler so it runs only for a known key; the handler sees req.caller.
---@param handler function
---@return function
function M.required(handler)
  -- Level 2: a nil here is a typo in routes.lua, named with its line when policies load.
  if type(handler) ~= "function" then
    error("auth.required: handler must be a function, got " .. type(handler), 2)
  end
  return function(req)
    req.caller = M.caller(req)
    return handler(req)
  end
end

return M
