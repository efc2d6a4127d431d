-- Our string.find/match/gmatch/gsub (runtime/host/strmatch.c, installed by quantcoach) against the
-- stock Lua 5.4 ones (the same liblua's, kept by the binding), in one process, on patterns of
-- the kind handlers and policies use:
--   build/quantcoach run bench/strmatch.lua     (or ./bench/run strmatch)
-- Prints ns per call for each and stock/ours (above 1: ours is faster). CPU time (os.clock),
-- median of ROUNDS rounds (environment, default 9), the two sides alternating.

local ROUNDS = tonumber(os.getenv("ROUNDS")) or 9

local words = {}
for i = 1, 600 do words[i] = ({ "alpha", "beta", "gamma", "delta", "eps" })[i % 5 + 1] .. i end
local text = table.concat(words, " ") -- ~6 KB
local query = "room=interview-7&identity=cand%2D42&name=Ada%20Lovelace&ttl=3600"
local header = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

local cases = {
  { "find plain, 6 KB", 500, function() return text:find("delta599", 1, true) end },
  { "find no specials, 6 KB", 500, function() return text:find("gamma597") end },
  { "match trim", 50000, function() return ("   some value  "):match("^%s*(.-)%s*$") end },
  { "match route", 50000, function() return ("/rooms/interview-7/participants"):match("^/rooms/([^/]+)/participants$") end },
  { "match date", 50000, function() return ("2026-11-26T13:25:00Z"):match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T") end },
  { "match bearer", 50000, function() return header:match("^Bearer%s+([%w%-_%.]+)$") end },
  { "find %f word, 6 KB", 500, function() return text:find("%f[%w]eps600%f[%W]") end },
  { "gmatch words, 6 KB", 150, function()
      local n = 0
      for _ in text:gmatch("%a+%d*") do n = n + 1 end
      return n
    end },
  { "gmatch query pairs", 25000, function()
      local t = {}
      for k, v in query:gmatch("([^&=]+)=([^&]*)") do t[k] = v end
      return t
    end },
  { "gsub url-decode (function)", 25000, function()
      return (query:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
    end },
  { "gsub swap (string), 6 KB", 60, function() return (text:gsub("(%a+)(%d+)", "%2%1")) end },
  { "gsub escape (table)", 25000, function() return (("<a href='x'>&</a>"):gsub("[<>&']", { ["<"] = "&lt;", [">"] = "&gt;", ["&"] = "&amp;", ["'"] = "&#39;" })) end },
}

-- The same cases with string.find and friends set to one library or the other; method
-- calls (s:find) reach them through the string metatable, which points at this table.
local stock_lib = require("qc.strmatch").stock
local ours_lib = { find = string.find, match = string.match, gmatch = string.gmatch, gsub = string.gsub }
local function use(lib)
  for k, f in pairs(lib) do string[k] = f end
end

local function time_one(fn, n)
  local t0 = os.clock()
  for _ = 1, n do fn() end
  return (os.clock() - t0) / n * 1e9
end

-- Round by round, the two sides alternate on each case, so a drift of this shared machine
-- falls on both.
local ours, stock = {}, {}
for _, c in ipairs(cases) do
  local name, n, fn = c[1], c[2], c[3]
  ours[name], stock[name] = {}, {}
  for _, lib in ipairs { ours_lib, stock_lib } do
    use(lib)
    time_one(fn, n // 10) -- warm up
  end
  for _ = 1, ROUNDS do
    use(ours_lib)
    table.insert(ours[name], time_one(fn, n))
    use(stock_lib)
    table.insert(stock[name], time_one(fn, n))
  end
end
use(ours_lib)

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

print(("%-30s %12s %12s %10s"):format("pattern", "stock ns", "ours ns", "stock/ours"))
for _, c in ipairs(cases) do
  local s, o = median(stock[c[1]]), median(ours[c[1]])
  print(("%-30s %12.1f %12.1f %9.2fx"):format(c[1], s, o, s / o))
end
