-- GET /metrics: Prometheus text format 0.0.4. Events counted where they happen live in the
-- C registry (qc.metrics: requests, latencies, Lua errors, reloads, windows, evaluations,
-- tokens); what the audio path and the host already keep is read here, at scrape time, and
-- rendered after it. Admin-only when the caller is not on loopback (as /admin/reload).
local host = require "qc.host"
local auth = require "qc.auth"
local errors = require "qc.errors"
local metrics = require "qc.metrics"
local audio = require "qc.audio"
local stt = require "qc.stt"
local live = require "qc.live"
local db = require "qc.db"
local stats = require "qc.stats"

local M = {}

local HEADERS = { ["content-type"] = "text/plain; version=0.0.4; charset=utf-8", ["cache-control"] = "no-store" }

-- A number as the format writes it: integers plain, the rest round-tripping.
local function num(v)
  if math.type(v) == "integer" then return tostring(v) end
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return ("%d"):format(v) end
  return ("%.17g"):format(v)
end

---One family: samples is a list of { labels_text|nil, value }.
local function family(out, name, kind, help, samples)
  out[#out + 1] = ("# HELP %s %s\n# TYPE %s %s\n"):format(name, help, name, kind)
  for _, s in ipairs(samples) do
    out[#out + 1] = ("%s%s %s\n"):format(name, s[1] and "{" .. s[1] .. "}" or "", num(s[2]))
  end
end

local function label_value(v)
  return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

---@param req table
function M.metrics(req)
  if not host.is_admin(req.peer, auth.bearer(req)) then
    errors.raise(403, "FORBIDDEN", "metrics need loopback or the admin key")
  end
  stats.declare()
  local out = { metrics.render() }

  local rooms = { open = 0, ended = 0, creating = 0 }
  for _, r in ipairs(db.query([[SELECT CASE WHEN state = 'creating' THEN 'creating'
      WHEN ended_at IS NULL THEN 'open' ELSE 'ended' END AS s, count(*) AS n FROM rooms GROUP BY s]])) do
    rooms[r.s] = r.n
  end
  family(out, "qc_rooms", "gauge", "Rooms this server created, by state (creating, open, ended)",
    { { 'state="creating"', rooms.creating }, { 'state="open"', rooms.open }, { 'state="ended"', rooms.ended } })

  local a = audio.stats()
  family(out, "qc_ingest_tracks", "gauge", "Ingest tracks being transcribed now", { { nil, a.tracks } })
  family(out, "qc_ingest_connections", "gauge", "Ingest WebSocket connections open now", { { nil, a.connections } })
  family(out, "qc_ingest_tracks_accepted_total", "counter", "Ingest connections accepted as tracks", { { nil, a.accepted } })
  family(out, "qc_ingest_bytes_total", "counter", "PCM bytes received on ingest connections", { { nil, a.bytes_in } })
  family(out, "qc_ingest_frames_total", "counter", "PCM frames (one sample per channel) received on ingest tracks of the running engine", { { nil, a.frames_in } })
  family(out, "qc_ingest_dropped_samples_total", "counter", "16 kHz samples the STT streams refused (their buffer was full)", { { nil, a.dropped } })

  local e = stt.engine() or {}
  local engine = label_value(e.name or "none")
  local ready = e.state == "ready" and 1 or 0
  family(out, "qc_stt_up", "gauge", "1 when the STT engine is ready", { { ('engine="%s"'):format(engine), ready } })
  family(out, "qc_stt_streams", "gauge", "STT streams (connections of a network engine) open now", { { nil, e.streams or 0 } })
  family(out, "qc_stt_results_total", "counter", "STT results, by kind (final, partial)",
    { { 'kind="final"', e.results_final or 0 }, { 'kind="partial"', e.results_partial or 0 } })
  family(out, "qc_stt_reconnects_total", "counter", "Reconnects of the network STT engine's streams", { { nil, e.reconnects or 0 } })
  family(out, "qc_stt_replayed_seconds_total", "counter", "Seconds of audio sent again after STT reconnects", { { nil, e.replayed_s or 0 } })

  family(out, "qc_live_clients", "gauge", "Live room WebSocket clients connected now", { { nil, live.count() } })

  local generation, _, reload_error = host.health()
  family(out, "qc_policy_generation", "gauge", "The live policy generation", { { nil, generation } })
  family(out, "qc_policy_degraded", "gauge", "1 when the last policy reload was rejected", { { nil, reload_error and 1 or 0 } })
  family(out, "qc_lua_memory_bytes", "gauge", "Memory the Lua state holds", { { nil, metrics.lua_bytes() } })
  return 200, HEADERS, table.concat(out)
end

return M
