-- GET /ingest?t=TOKEN: one track's PCM over a WebSocket (LiveKit Track Egress, or any source
-- that sends s16le interleaved audio). The signed token in the URL is the only credential
-- (Egress sends no auth header): it is checked before the upgrade is accepted, so nothing is
-- read from a connection without one. Then the track's role is looked up, the room's
-- interview clock started if this is its first audio, and the connection handed to C
-- (qc.audio): from there on no Lua runs per message.
local audio = require "qc.audio"
local db = require "qc.db"
local errors = require "qc.errors"
local ingest = require "qc.ingest"
local log = require "qc.log"
local policies = require "qc.policies"
local time = require "qc.time"
local tracks = require "qc.tracks"

local M = {}

-- A format the query declares (sources other than Egress); the token's wins when it has one.
local function query_int(req, name, check)
  local v = req.args and req.args[name]
  if v == nil then return nil end
  local n = check(tonumber(v))
  if not n then errors.invalid(name, "is out of range") end
  return n
end

---The role of a track's speaker: what the webhook recorded for the track, else the role of
---the token we issued for room + identity (authoritative), else what the speakers policy says.
---@return string|nil
function M.role_of(room, identity, track)
  local t = db.first("SELECT role FROM tracks WHERE sid = ? AND room = ?", track, room)
  if t and t.role and t.role ~= "" then return t.role end
  local issued = tracks.issued_role(room, identity)
  if issued then return issued end
  return policies.speakers.role({ identity = identity }, nil)
end

---Sets the room's interview clock (rooms.started_at) if this is its first audio, committed,
---and returns it.
---@return number started_at unix seconds
function M.start_clock(room, now)
  local started
  local ok, err, code = db.get():transaction(function(tx)
    db.check(tx:run("INSERT INTO rooms (name, created_at, state) VALUES (?, ?, 'created') ON CONFLICT(name) DO NOTHING",
      room, math.floor(now)))
    -- Two tracks (on two instances) starting at once: the second UPDATE waits for the
    -- first's row lock, then finds started_at set and leaves it; both read the first's.
    db.check(tx:run("UPDATE rooms SET started_at = ? WHERE name = ? AND started_at IS NULL", now, room))
    started = db.check(tx:first("SELECT started_at FROM rooms WHERE name = ?", room)).started_at
  end)
  if not ok then errors.raise(503, "STORE_UNAVAILABLE", "ingest: " .. tostring(err) .. " (" .. tostring(code) .. ")") end
  return started
end

---GET /ingest?t=TOKEN[&rate=N&channels=N]
function M.ingest(req)
  local claims, err, code = ingest.verify(req.args and req.args.t)
  if not claims then
    log.warn("ingest", "refused", { code = code, peer = req.peer })
    errors.raise(401, "UNAUTHORIZED", err)
  end
  if not req.websocket then
    errors.raise(426, "UPGRADE_REQUIRED", "/ingest is a WebSocket endpoint: connect with Upgrade: websocket")
  end
  local rate = claims.rate_in_token and claims.rate or query_int(req, "rate", ingest.check_rate) or claims.rate
  local channels = claims.channels_in_token and claims.channels
    or query_int(req, "channels", ingest.check_channels) or claims.channels
  local now = time.now()
  local started = M.start_clock(claims.room, now)
  local info = {
    room = claims.room, identity = claims.identity, track = claims.track,
    role = M.role_of(claims.room, claims.identity, claims.track) or "",
    rate = rate, channels = channels, clock_offset = math.max(0, now - started),
  }
  local ok, ierr, icode = audio.ingest(req, info)
  if not ok and icode ~= "ANSWERED" then errors.raise(503, "STT_UNAVAILABLE", ierr) end
end

return M
