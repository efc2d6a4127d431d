-- POST /admin/reload: reload the policies now. Loopback callers, or the QC_ADMIN_KEY bearer.
local host = require "qc.host"
local auth = require "qc.auth"
local errors = require "qc.errors"

local M = {}

---@param req table
function M.reload(req)
  if not host.is_admin(req.peer, auth.bearer(req)) then
    errors.raise(403, "FORBIDDEN", "admin endpoints need loopback or the admin key")
  end
  local generation, err, code = host.reload()
  if not generation then
    errors.raise(422, code, err)
  end
  return 200, nil, { status = "reloaded", generation = generation }
end

return M
