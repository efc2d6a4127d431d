-- POST /webhooks/livekit: LiveKit's signed webhooks. The Authorization JWT and its sha256
-- claim over the raw body are checked before anything is recorded; a delivery seen before
-- (same event id) is answered 200 and changes nothing.
local jwt = require "qc.jwt"
local log = require "qc.log"
local time = require "qc.time"
local cjson = require "cjson"
local db = require "qc.db"
local livekit = require "qc.livekit"
local policies = require "qc.policies"
local errors = require "qc.errors"

local M = {}

local function int(v) return math.tointeger(tonumber(v)) end

-- What each event changes in the local room state.
local apply = {}

function apply.room_started(ev, now)
  local r = ev.room or {}
  db.run([[INSERT INTO rooms (name, sid, created_at, max_participants, empty_timeout, metadata)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT(name) DO UPDATE SET sid = excluded.sid, ended_at = NULL]],
    r.name, r.sid, int(r.creationTime) or now, r.maxParticipants, r.emptyTimeout, r.metadata)
end

function apply.room_finished(ev, now)
  db.run("UPDATE rooms SET ended_at = ? WHERE name = ?", now, (ev.room or {}).name)
end

function apply.participant_joined(ev, now)
  local p = ev.participant or {}
  db.run([[INSERT INTO participants (room, identity, sid, name, role, joined_at) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT(room, identity) DO UPDATE SET sid = excluded.sid, name = excluded.name,
             role = excluded.role, joined_at = excluded.joined_at, left_at = NULL]],
    ev.room.name, p.identity, p.sid, p.name, policies.speakers.role(p), int(p.joinedAt) or now)
end

function apply.participant_left(ev, now)
  db.run("UPDATE participants SET left_at = ? WHERE room = ? AND identity = ?", now, ev.room.name,
    (ev.participant or {}).identity)
end
apply.participant_connection_aborted = apply.participant_left

function apply.track_published(ev, now)
  local p, t = ev.participant or {}, ev.track or {}
  -- track_* events carry only {sid, identity}: the role comes from what we recorded, or
  -- from the identity alone.
  local known = db.first("SELECT role FROM participants WHERE room = ? AND identity = ?", ev.room.name, p.identity)
  local role = known and known.role or policies.speakers.role(p)
  local transcribe = policies.speakers.transcribe(p, t, role)
  db.run([[INSERT INTO tracks (sid, room, identity, kind, source, transcribe, published_at) VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(sid) DO UPDATE SET transcribe = excluded.transcribe, unpublished_at = NULL]],
    t.sid, ev.room.name, p.identity, t.type or "AUDIO", t.source or "UNKNOWN", transcribe and 1 or 0, now)
  if transcribe then
    log.info("webhooks", "track to transcribe", { room = ev.room.name, identity = p.identity, track = t.sid, role = role })
  end
end

function apply.track_unpublished(ev, now)
  db.run("UPDATE tracks SET unpublished_at = ? WHERE sid = ?", now, (ev.track or {}).sid)
end

-- What each part of an event must be before anything is recorded (LiveKit's WebhookEvent,
-- shared/protocols/livekit.md). A signed event of another shape is refused with 400, never
-- a 500 from deep inside apply: the signature says who sent it, not that it is well formed.
local TEXT = { string = true }
local NUMBER = { number = true, string = true } -- protobuf JSON sends int64 as a string
local FIELDS = {
  room = { name = TEXT, sid = TEXT, metadata = TEXT, creationTime = NUMBER, maxParticipants = NUMBER,
           emptyTimeout = NUMBER },
  participant = { identity = TEXT, sid = TEXT, name = TEXT, metadata = TEXT, joinedAt = NUMBER },
  track = { sid = TEXT, type = TEXT, source = TEXT },
}
-- Events whose apply needs a part, and the field of it that identifies it.
local NEEDS = {
  participant_joined = { participant = "identity" }, participant_left = { participant = "identity" },
  participant_connection_aborted = { participant = "identity" },
  track_published = { participant = "identity", track = "sid" }, track_unpublished = { track = "sid" },
}

---@return string|nil problem "field: what is wrong", nil when the event can be applied
local function shape_problem(ev)
  for part, fields in pairs(FIELDS) do
    local v = ev[part]
    if v ~= nil and v ~= cjson.null then
      if type(v) ~= "table" then return part .. ": must be an object" end
      for k, kinds in pairs(fields) do
        local f = v[k]
        if f ~= nil and f ~= cjson.null and not kinds[type(f)] then
          return ("%s.%s: must be %s"):format(part, k, kinds.number and "a number" or "a string")
        end
      end
    end
  end
  for part, key in pairs(NEEDS[ev.event] or {}) do
    local v = ev[part]
    if type(v) ~= "table" or type(v[key]) ~= "string" or v[key] == "" then
      return ("%s.%s: %s needs it"):format(part, key, ev.event)
    end
  end
  return nil
end

---@param req table
function M.livekit(req)
  local s = livekit.settings()
  local ok, err, code = jwt.verify_webhook(req.headers.authorization, req.body, s.key, s.secret)
  if not ok then
    log.warn("webhooks", "rejected", { code = code, peer = req.peer })
    errors.raise(401, "UNAUTHORIZED", "webhook signature: " .. tostring(err))
  end
  local parsed, ev = pcall(cjson.decode, req.body)
  if not parsed or type(ev) ~= "table" or type(ev.event) ~= "string" or type(ev.id) ~= "string" then
    errors.raise(400, "BAD_EVENT", "webhook body is not a LiveKit event")
  end
  local problem = shape_problem(ev)
  if problem then errors.raise(400, "BAD_EVENT", "webhook event " .. problem) end
  local now = math.floor(time.now())
  local duplicate = false
  db.get():transaction(function(tx)
    local changes = tx:run([[INSERT OR IGNORE INTO webhook_events (id, event, room, created_at, received_at, body)
                             VALUES (?, ?, ?, ?, ?, ?)]],
      ev.id, ev.event, ev.room and ev.room.name, int(ev.createdAt), now, req.body)
    if changes == 0 then
      duplicate = true
      return
    end
    local f = apply[ev.event]
    if f and (ev.room and ev.room.name or ev.event:match("^egress_")) then f(ev, now) end
  end)
  -- Joined/left become room events after the delivery's own commit: stored, then announced.
  if not duplicate then require("qc.transcripts").participant_webhook(ev) end
  log.info("webhooks", duplicate and "duplicate ignored" or "accepted", { event = ev.event, id = ev.id })
  return 200, nil, { status = duplicate and "duplicate" or "accepted", event = ev.event, id = ev.id }
end

return M
