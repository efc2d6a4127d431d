-- POST /admin/reload: reload the policies now. Loopback callers, or the QC_ADMIN_KEY bearer.
local host = require "qc.host"
local auth = require "qc.auth"

local M = {}

---@param req table
function M.reload(req)
  if not host.is_admin(req.peer, auth.bearer(req)) then
    return 403, nil, { error = { code = "FORBIDDEN", message = "admin endpoints need loopback or the admin key" } }
  end
  local generation, err, code = host.reload()
  if not generation then
    return 422, nil, { error = { code = code, message = err } }
  end
  return 200, nil, { status = "reloaded", generation = generation }
end

return M
