-- Files of the web directory (share/quantcoach/web installed, web/ in the source tree):
-- the API docs page, /openapi.json and the console's assets. static.serve(req, rel_path)
-- answers one file with its content type, an ETag and Last-Modified (a matching
-- If-None-Match or If-Modified-Since gets 304), and Cache-Control; a path that would leave
-- the directory, a hidden name, a directory or a missing file is a JSON 404
-- (runtime/net/static_file.c decides which paths are refused).
--
-- Example route, for a handler module of its own:
--   function M.asset(req) return static.serve(req, "console/" .. req.params.file) end
--   { "GET", "/console/{file...}", console.asset }
local files = require "qc.static"
local errors = require "qc.errors"

local M = {}

-- By extension; anything else is served as bytes.
M.TYPES = {
  html = "text/html; charset=utf-8",
  css = "text/css; charset=utf-8",
  js = "text/javascript; charset=utf-8",
  mjs = "text/javascript; charset=utf-8",
  json = "application/json",
  map = "application/json",
  txt = "text/plain; charset=utf-8",
  md = "text/markdown; charset=utf-8",
  svg = "image/svg+xml",
  png = "image/png",
  jpg = "image/jpeg",
  ico = "image/x-icon",
  woff2 = "font/woff2",
  wav = "audio/wav",
}
local OCTETS = "application/octet-stream"

-- Pages and the API description change with a deploy and are small: revalidated on every
-- use (the ETag makes that a 304). Other assets may be used for an hour without asking.
local function cache_control(ext)
  if ext == "html" or ext == "json" then return "no-cache" end
  return "public, max-age=3600"
end

local function http_date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", t)
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10,
                 Nov = 11, Dec = 12 }

-- An IMF-fixdate (RFC 9110 5.6.7) as unix seconds; nil for anything else.
local function parse_http_date(s)
  local d, mon, y, hh, mm, ss = tostring(s):match("^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d or not MONTHS[mon] then return nil end
  -- os.time reads a table as local time: the offset of the epoch in local time undoes it.
  local t = os.time { year = tonumber(y), month = MONTHS[mon], day = tonumber(d), hour = tonumber(hh),
                      min = tonumber(mm), sec = tonumber(ss), isdst = false }
  local epoch = os.time { year = 1970, month = 1, day = 1, hour = 0, isdst = false }
  return t and t - epoch
end

-- qc.static.read's failure as an error answer: the reason stays in the log, not the body.
local function fail(rel, why, status)
  if status == 500 then
    require("qc.log").warn("static", "file unreadable", { path = rel, error = why })
    errors.raise(500, "FILE_UNREADABLE", "the file cannot be read: " .. rel)
  end
  errors.raise(404, "NOT_FOUND", "no such file: " .. rel)
end

---The content type served for a file name.
---@param rel string
---@return string
function M.type_of(rel)
  local ext = rel:match("%.([%w]+)$")
  return ext and M.TYPES[ext:lower()] or OCTETS
end

---Answers one file of the web directory.
---@param req table the request (its If-None-Match / If-Modified-Since are honoured)
---@param rel string path below the web directory, such as "docs/index.html"
---@return integer status, table headers, string body
function M.serve(req, rel)
  local found, size, mtime_ns = files.read(rel, false)
  if found == nil then fail(rel, size, mtime_ns) end
  local etag = ('"%x-%x"'):format(size, mtime_ns)
  local mtime = mtime_ns // 1000000000
  local ext = (rel:match("%.([%w]+)$") or ""):lower()
  local headers = {
    ["content-type"] = M.TYPES[ext] or OCTETS,
    ["etag"] = etag,
    ["last-modified"] = http_date(mtime),
    ["cache-control"] = cache_control(ext),
    ["x-content-type-options"] = "nosniff",
  }
  local inm = req:header("if-none-match")
  if inm then
    -- A list of tags, or *; a weak tag matches too (RFC 9110 13.1.2: weak comparison).
    for tag in inm:gmatch("[^,%s]+") do
      if tag == "*" or tag:gsub("^W/", "") == etag then return 304, headers, "" end
    end
  else
    local since = parse_http_date(req:header("if-modified-since"))
    if since and mtime <= since then return 304, headers, "" end
  end
  local data, err, status = files.read(rel, true)
  if not data then fail(rel, err, status) end
  return 200, headers, data
end

return M
