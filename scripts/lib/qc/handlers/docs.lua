-- GET /openapi.json, GET /docs and the docs page's files: web/openapi.json (the API's
-- description, checked against policies/routes.lua by spec/openapi_spec.lua) and the page
-- under web/docs/ that browses it. Open to everyone: they describe, they do not do.
local static = require "qc.handlers.static"

local M = {}

---@param req table
function M.openapi(req)
  return static.serve(req, "openapi.json")
end

---@param req table
function M.page(req)
  return static.serve(req, "docs/index.html")
end

---@param req table
function M.asset(req)
  return static.serve(req, "docs/" .. req.params.file)
end

return M
