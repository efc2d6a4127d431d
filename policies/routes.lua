-- Routes: which handler answers each method + path.
--
-- Called when policies load (start, reload, `quantcoach check`); the table it returns is
-- compiled and checked, and a broken file keeps the previous routes serving.
-- Each entry is { METHOD, "/path/with/{params}", handler }. A handler receives the request
-- (req.method, req.path, req.params, req.args, req.headers, req.body, req.json, req.peer,
-- req:header(name)) and returns status, headers, body; a table body is sent as JSON.
--
-- Example: { "GET", "/rooms/{room}/participants", rooms.participants }
local service = require "qc.handlers.service"
local admin = require "qc.handlers.admin"

return {
  { "GET", "/", service.info },
  { "GET", "/health", service.health },
  { "POST", "/admin/reload", admin.reload },
}
