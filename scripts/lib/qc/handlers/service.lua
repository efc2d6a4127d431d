-- GET / and GET /health: what this service is and whether it is well.
local host = require "qc.host"
local time = require "qc.time"

local M = {}

-- /health is polled often and the reload time rarely changes: format it once.
local iso_cache_t, iso_cache_s
local function iso(t)
  if not t or t == 0 then return nil end
  t = math.floor(t)
  if t ~= iso_cache_t then iso_cache_t, iso_cache_s = t, os.date("!%Y-%m-%dT%H:%M:%SZ", t) end
  return iso_cache_s
end

---@param req table
function M.info(req)
  local s = host.status()
  return 200, nil, { service = "quantcoach", version = s.version, docs = "/docs", health = "/health" }
end

---@param req table
function M.health(req)
  local s = host.status()
  return 200, nil, {
    status = s.reload_error and "degraded" or "ok",
    version = s.version,
    uptime_s = math.floor((time.now() - s.started_at) * 1000) / 1000,
    policies = {
      generation = s.generation,
      reloaded_at = iso(s.reloaded_at),
      reload_error = s.reload_error,
    },
  }
end

return M
