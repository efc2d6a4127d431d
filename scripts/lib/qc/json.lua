-- JSON through lua-cjson, plus what Debian's cjson 2.1.0 lacks: an empty array. cjson
-- encodes every empty table as {}; a table marked with json.array() encodes as [] when
-- empty (a non-empty one is an array anyway).
local cjson = require "cjson"

local M = {}

local marked = setmetatable({}, { __mode = "k" })
-- A string no caller produces: cjson escapes control characters inside strings, so the
-- quoted token can only come from our substitution.
local TOKEN = "\1qc-empty-array\1"
local ENCODED_TOKEN = cjson.encode(TOKEN)

---Marks t as a JSON array and returns it.
---@generic T
---@param t T|nil
---@return T
function M.array(t)
  t = t or {}
  marked[t] = true
  return t
end

local function has_empty_marked(v, depth)
  if depth > 100 then return false end
  if type(v) ~= "table" then return false end
  if marked[v] and next(v) == nil then return true end
  for _, x in pairs(v) do
    if type(x) == "table" and has_empty_marked(x, depth + 1) then return true end
  end
  return false
end

local function substitute(v, seen)
  if type(v) ~= "table" then return v end
  if marked[v] and next(v) == nil then return TOKEN end
  if seen[v] then return v end
  seen[v] = true
  local copy = {}
  for k, x in pairs(v) do copy[k] = substitute(x, seen) end
  return copy
end

---@param v any
---@return string
function M.encode(v)
  -- Most answers hold no marked array at all: skip the walk then.
  if next(marked) == nil or not has_empty_marked(v, 0) then return cjson.encode(v) end
  local out = cjson.encode(substitute(v, {}))
  return (out:gsub(ENCODED_TOKEN:gsub("%p", "%%%0"), "[]"))
end

M.decode = cjson.decode

-- Headers of a JSON answer. Shared by every such answer, so nobody may change it: the C
-- side only reads it.
M.HEADERS = { ["content-type"] = "application/json" }

return M
