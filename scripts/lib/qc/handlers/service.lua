-- GET / and GET /health: what this service is and whether it is well.
local host = require "qc.host"
local time = require "qc.time"
local json = require "qc.json"
local stt = require "qc.stt"
local audio = require "qc.audio"
local live = require "qc.live"
local db = require "qc.db"

local M = {}

local VERSION = host.config().version
-- PostgreSQL's URI as /health shows it: never its password.
local store_url = host.config().store_url_masked
local JSON_HEADERS = json.HEADERS

local function iso(t)
  if not t or t == 0 then return nil end
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end

---@param req table
function M.info(req)
  return 200, nil, { service = "quantcoach", version = VERSION, docs = "/docs", health = "/health" }
end

-- /health is polled by load balancers and monitors: the part that changes only on a reload
-- is encoded once per reload, and the rest is put together as text.
local seen_generation, seen_at, seen_error, policies_json, status_json

---@param req table
function M.health(req)
  local generation, reloaded_at, reload_error, started_at = host.health()
  if generation ~= seen_generation or reloaded_at ~= seen_at or reload_error ~= seen_error then
    seen_generation, seen_at, seen_error = generation, reloaded_at, reload_error
    policies_json = json.encode { generation = generation, reloaded_at = iso(reloaded_at), reload_error = reload_error }
    status_json = json.encode(reload_error and "degraded" or "ok")
  end
  -- Audio: the STT engine and its state, live ingest tracks and live sockets. Changes all
  -- the time, so encoded per call (a small table).
  local engine, a = stt.engine(), audio.stats()
  local stt_json = json.encode(engine and { engine = engine.name, state = engine.state, streams = engine.streams,
                                             seconds_in = engine.samples_in and engine.samples_in / 16000 }
    or { engine = "none", state = "not running" })
  local status = status_json
  if engine and engine.state ~= "ready" then status = '"degraded"' end
  -- The store opens (and migrates) on first use; a file it cannot use (a newer release's
  -- schema, a disk error) fails every stored request, and so does a PostgreSQL that is away
  -- (its pool reconnects meanwhile), so health says so, without waiting on the store.
  local st = db.status()
  local store_json
  if st.state == "ok" and st.backend == "sqlite" then
    store_json = '{"backend":"sqlite","state":"ok"}'
  else
    -- "connecting": no connection yet and none failed (just started); calls wait for it.
    if st.state ~= "ok" and st.state ~= "connecting" then status = '"degraded"' end
    store_json = json.encode { backend = st.backend, state = st.state, error = st.error, url = store_url,
                               connections = st.connections, busy = st.busy, waiting = st.waiting }
  end
  local ms = math.floor((time.now() - started_at) * 1000)
  local frac = ms % 1000
  return 200, JSON_HEADERS, '{"status":' .. status .. ',"version":"' .. VERSION .. '","uptime_s":'
    .. (ms // 1000) .. (frac < 10 and ".00" or frac < 100 and ".0" or ".") .. frac
    .. ',"policies":' .. policies_json .. ',"stt":' .. stt_json .. ',"tracks":{"live":' .. a.tracks
    .. ',"connections":' .. a.connections .. ',"p99_added_us":' .. a.p99_added_us
    .. ',"p99_added_oncpu_us":' .. a.p99_added_oncpu_us .. '},"live_clients":' .. live.count() .. ',"store":' .. store_json .. "}"
end

return M
