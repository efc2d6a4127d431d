-- Concurrency for scripts and handlers: run work items as separate tasks, a bounded number
-- at a time, and wait for all of them.
local host = require "qc.host"
local time = require "qc.time"

local M = {}

---Calls fn(item, index) for every item, at most `limit` at once, each in its own task.
---Returns an array: results[i] = { ok = true, value = <first result> } or { ok = false, error = msg }.
---@param items any[]
---@param limit integer
---@param fn fun(item: any, index: integer): any
---@return table[]
function M.map(items, limit, fn)
  local results, next_index, running = {}, 1, 0
  local n = #items
  local function worker()
    while next_index <= n do
      local i = next_index
      next_index = i + 1
      local ok, value = pcall(fn, items[i], i)
      results[i] = ok and { ok = true, value = value } or { ok = false, error = tostring(value) }
    end
    running = running - 1
  end
  for _ = 1, math.min(limit, n) do
    running = running + 1
    host.spawn(worker)
  end
  -- The workers finish on their own tasks; this one checks back every few milliseconds.
  while running > 0 do time.sleep(0.005) end
  return results
end

return M
