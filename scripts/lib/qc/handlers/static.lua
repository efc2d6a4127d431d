-- GET /console and /console/{file}: the operator console's files from web/console/
-- (share/quantcoach/web/console when installed). Only names made of letters, digits, `-`,
-- `_` and one `.` extension that the table below knows are served, so no request can name a
-- path outside the directory (no `/`, no `..`, no hidden file); the file is opened without
-- following symlinks. index.html is read per request with `no-cache`; it names the other
-- files with `?v=VERSION`, which are then cached for a day (a new release changes the query).
local errors = require "qc.errors"
local host = require "qc.host"

local M = {}

local config = host.config()
local VERSION = config.version
local WEB = config.web_dir
local MAX_BYTES = 1 << 20

local TYPES = {
  html = "text/html; charset=utf-8",
  css = "text/css; charset=utf-8",
  js = "text/javascript; charset=utf-8",
  svg = "image/svg+xml",
  png = "image/png",
  ico = "image/x-icon",
  txt = "text/plain; charset=utf-8",
}

-- Nothing the console runs comes from elsewhere: scripts, styles and connections are this
-- server's own (the live socket is ws: or wss: to the same host).
local CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
  .. "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

local function not_found(name)
  errors.raise(404, "NOT_FOUND", "console: no file " .. name)
end

---Serves one file of web/<dir>/.
local function serve(req, dir, name)
  local base, ext = name:match("^([%w_-]+)%.(%w+)$")
  local ctype = ext and TYPES[ext]
  if not base or not ctype then not_found(name) end
  local body = host.read_file(WEB .. "/" .. dir .. "/" .. name, MAX_BYTES)
  if not body then not_found(name) end
  local headers = {
    ["Content-Type"] = ctype,
    ["X-Content-Type-Options"] = "nosniff",
    ["Referrer-Policy"] = "no-referrer",
  }
  if ext == "html" then
    body = body:gsub("{{version}}", VERSION)
    headers["Cache-Control"] = "no-cache"
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
  elseif req.args and req.args.v == VERSION then
    headers["Cache-Control"] = "public, max-age=86400"
  else
    headers["Cache-Control"] = "no-cache"
  end
  return 200, headers, body
end

---GET /console
function M.console(req)
  return serve(req, "console", "index.html")
end

---GET /console/{file}
function M.console_file(req)
  return serve(req, "console", req.params.file)
end

return M
