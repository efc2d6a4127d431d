-- Route matching for policies/routes.lua: exact paths by table lookup, paths with
-- parameters ("/rooms/{room}/participants") by segment comparison. A last segment written
-- {name...} takes the rest of the path, one segment or more, joined by "/"
-- ("/docs/{file...}" gives req.params.file = "assets/app.js").
local M = {}

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true, HEAD = true }
-- Shared by every match without parameters: protected, so no handler can change it for the
-- next request (rawset in the policy sandbox refuses tables with a protected metatable).
local EMPTY = setmetatable({}, { __newindex = function() error("route params are read-only", 2) end,
                                 __metatable = "read-only" })

local Router = {}
Router.__index = Router

local function split(path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do segs[#segs + 1] = seg end
  return segs
end

local function normalise(path)
  if #path > 1 and path:sub(-1) == "/" then return path:sub(1, -2) end
  return path
end

local function allow_of(methods)
  local list = {}
  for m in pairs(methods) do list[#list + 1] = m end
  list[#list + 1] = "OPTIONS"
  table.sort(list)
  return table.concat(list, ", ")
end

---Compiles a routes policy. Raises "file:LINE: route N (...): problem" on a bad entry
---("file: ..." when line_of is not given or cannot tell).
---@param routes table array of { method, path, handler } or { method=, path=, handler= }
---@param where string file name used in error messages
---@param line_of fun(i: integer, method: any, path: any, occurrence: integer): integer|nil
---@return table router
function M.compile(routes, where, line_of)
  local r = setmetatable({ static = {}, dynamic = {} }, Router)
  if type(routes) ~= "table" then error(where .. ": must return a table of routes", 0) end
  if #routes == 0 then error(where .. ": declares no routes", 0) end
  -- seen: "METHOD shape" -> the first route with it. A shape is the path with every
  -- parameter written {}: /rooms/{room} and /rooms/{x} match the same requests, so the
  -- second could never be reached.
  local seen, occurrences = {}, {}
  for i, route in ipairs(routes) do
    if type(route) ~= "table" then
      local line = line_of and line_of(i)
      error(("%s%s: route %d must be a table { METHOD, PATH, handler }, got %s"):format(
        where, line and ":" .. line or "", i, type(route)), 0)
    end
    local method = route.method or route[1]
    local path = route.path or route[2]
    local handler = route.handler or route[3]
    local id = tostring(method) .. " " .. tostring(path)
    occurrences[id] = (occurrences[id] or 0) + 1
    local occurrence = occurrences[id]
    -- Only a rejected route needs its line (finding it tokenises the file).
    local function label()
      local line = line_of and line_of(i, method, path, occurrence)
      return ("%s%s: route %d (%s %s)"):format(where, line and ":" .. line or "", i, tostring(method), tostring(path))
    end
    if type(method) ~= "string" or not METHODS[method] then
      error(label() .. ": method must be one of GET POST PUT PATCH DELETE HEAD", 0)
    end
    if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
      error(label() .. ": path must be a string starting with /", 0)
    end
    if type(handler) ~= "function" then
      error(label() .. ": handler must be a function, got " .. type(handler), 0)
    end
    local written = path
    path = normalise(path)
    -- A tail {x...} matches more than {x}: it has a shape of its own.
    local key = method .. " " .. path:gsub("{[^/]*%.%.%.}$", "{...}"):gsub("{[%a_][%w_]*}", "{}")
    local first = seen[key]
    if first then
      local line = line_of and line_of(first.i, method, first.written, first.occurrence)
      local where_first = line and (" at %s:%d"):format(where, line) or ""
      if first.path == path then
        error(("%s: declared twice (first as route %d%s)"):format(label(), first.i, where_first), 0)
      end
      error(("%s: same path as route %d (%s %s)%s, which would always match first"):format(
        label(), first.i, method, first.written, where_first), 0)
    end
    seen[key] = { i = i, path = path, written = written, occurrence = occurrence }
    if not path:find("{", 1, true) then
      local entry = r.static[path] or { methods = {} }
      entry.methods[method] = handler
      entry.allow = allow_of(entry.methods)
      r.static[path] = entry
    else
      local segs, names, tail = split(path), {}, false
      for j, seg in ipairs(segs) do
        local name = seg:match("^{([%a_][%w_]*)}$")
        local rest = seg:match("^{([%a_][%w_]*)%.%.%.}$")
        if rest and j ~= #segs then
          error(label() .. ": {" .. rest .. "...} must be the last segment", 0)
        end
        if seg:find("[{}]") and not name and not rest then
          error(label() .. ": parameter segment must look like {name} (or {name...} last)", 0)
        end
        name = name or rest
        if name then
          if names[name] then error(label() .. ": parameter {" .. name .. "} appears twice", 0) end
          names[name] = true
          segs[j] = { name = name, rest = rest ~= nil }
          tail = rest ~= nil
        end
      end
      local found
      for _, d in ipairs(r.dynamic) do
        if d.pattern == path then found = d end
      end
      if not found then
        found = { pattern = path, segs = segs, n = #segs, tail = tail, methods = {} }
        r.dynamic[#r.dynamic + 1] = found
      end
      found.methods[method] = handler
      found.allow = allow_of(found.methods)
    end
  end
  return r
end

-- The Allow of a path several routes match (a static one and a pattern, or two patterns):
-- every method any of them takes. Only a 405 or an OPTIONS pays for it.
local function allow_union(a, b)
  if not a then return b end
  if not b or a == b then return a end
  local methods = {}
  for m in (a .. ", " .. b):gmatch("[^, ]+") do methods[m] = true end
  methods.OPTIONS = nil
  return allow_of(methods)
end

---A path that both a static route and a pattern match (a room named "create" against
---POST /rooms/create and DELETE /rooms/{room}) goes to whichever of them takes the method:
---the static route first.
---The fourth result is the route's path as policies/routes.lua wrote it (normalised): the
---label of the request's metrics.
---@return function|nil handler, table|nil params, string|nil allow, string|nil pattern
function Router:match(method, path)
  path = normalise(path)
  local entry = self.static[path]
  local allow
  if entry then
    local h = entry.methods[method]
    if h then return h, EMPTY, nil, path end
    allow = entry.allow
  end
  if #self.dynamic == 0 then return nil, nil, allow end
  local segs = split(path)
  local n = #segs
  for _, d in ipairs(self.dynamic) do
    if d.n == n or (d.tail and n > d.n) then
      local params = {}
      for i = 1, d.n do
        local want = d.segs[i]
        if type(want) == "table" then
          params[want.name] = want.rest and table.concat(segs, "/", i, n) or segs[i]
        elseif want ~= segs[i] then
          params = nil
          break
        end
      end
      if params then
        local h = d.methods[method]
        if h then return h, params, nil, d.pattern end
        allow = allow_union(allow, d.allow)
      end
    end
  end
  return nil, nil, allow
end

return M
