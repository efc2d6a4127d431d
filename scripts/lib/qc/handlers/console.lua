-- GET /console and /console/{file...}: the operator console (web/console/, installed as
-- share/quantcoach/web/console), served by qc.handlers.static (content types, ETag and
-- revalidation, paths that would leave the web directory refused), with the headers a page
-- that holds API keys wants: nothing it runs comes from elsewhere, and no other site frames it.
local static = require "qc.handlers.static"

local M = {}

-- Scripts, styles and connections are this server's own (the live socket is ws: or wss: to
-- the same host).
local CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
  .. "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

local function guarded(status, headers, body)
  headers["referrer-policy"] = "no-referrer"
  if (headers["content-type"] or ""):find("^text/html") then
    headers["content-security-policy"] = CSP
    headers["x-frame-options"] = "DENY"
  end
  return status, headers, body
end

---GET /console
---@param req table
function M.page(req)
  return guarded(static.serve(req, "console/index.html"))
end

---GET /console/{file...}
---@param req table
function M.asset(req)
  return guarded(static.serve(req, "console/" .. req.params.file))
end

return M
