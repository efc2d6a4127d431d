-- POST /webhooks/livekit: LiveKit's signed webhooks. The Authorization JWT and its sha256
-- claim over the raw body are checked before anything is recorded; a delivery seen before
-- (same event id) is answered 200 and changes nothing.
local jwt = require "qc.jwt"
local log = require "qc.log"
local time = require "qc.time"
local cjson = require "cjson"
local db = require "qc.db"
local live = require "qc.live"
local livekit = require "qc.livekit"
local policies = require "qc.policies"
local tracks = require "qc.tracks"
local errors = require "qc.errors"

local M = {}

local function int(v) return math.tointeger(tonumber(v)) end

-- What each event changes in the local room state, inside the webhook's transaction.
-- `after` collects work that must wait until that transaction has committed (LiveKit
-- calls: starting and stopping egresses), run as tasks of their own after it.
local apply = {}

function apply.room_started(ev, now)
  local r = ev.room or {}
  db.run([[INSERT INTO rooms (name, sid, created_at, max_participants, empty_timeout, metadata)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT(name) DO UPDATE SET sid = excluded.sid, ended_at = NULL]],
    r.name, r.sid, int(r.creationTime) or now, r.maxParticipants, r.emptyTimeout, r.metadata)
end

function apply.room_finished(ev, now, after)
  local room = (ev.room or {}).name
  db.run("UPDATE rooms SET ended_at = ? WHERE name = ?", now, room)
  local sids = tracks.end_tracks(room, nil, now)
  after[#after + 1] = function() tracks.stop_later(sids) end
  -- The interview is over: its last windows and, with an LLM evaluator, its report (a task
  -- of its own: the report waits for the LLM).
  after[#after + 1] = function() require("qc.host").spawn(require("qc.evaluation").finish, room) end
end

function apply.participant_joined(ev, now)
  local p = ev.participant or {}
  local role, view = tracks.speaker(ev.room.name, p)
  local attrs = next(view.attributes) and cjson.encode(view.attributes) or nil
  db.run([[INSERT INTO participants (room, identity, sid, name, role, joined_at, kind, metadata, attributes)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(room, identity) DO UPDATE SET sid = excluded.sid, name = excluded.name,
             role = excluded.role, joined_at = excluded.joined_at, left_at = NULL, kind = excluded.kind,
             metadata = excluded.metadata, attributes = excluded.attributes]],
    ev.room.name, p.identity, p.sid, p.name, role, int(p.joinedAt) or now, view.kind, view.metadata, attrs)
end

function apply.participant_left(ev, now, after)
  local identity = (ev.participant or {}).identity
  db.run("UPDATE participants SET left_at = ? WHERE room = ? AND identity = ?", now, ev.room.name, identity)
  local sids = tracks.end_tracks(ev.room.name, identity, now)
  after[#after + 1] = function() tracks.stop_later(sids) end
end
apply.participant_connection_aborted = apply.participant_left

function apply.track_published(ev, now, after)
  local t = ev.track or {}
  -- track_* events carry only {sid, identity}: the rest of the participant is what its
  -- participant_joined recorded, and the role is the issued token's first (qc.tracks).
  local p = tracks.known_participant(ev.room.name, ev.participant or {})
  local role, view = tracks.speaker(ev.room.name, p)
  local transcribe = policies.speakers.transcribe(view, t, role) == true
  db.run([[INSERT INTO tracks (sid, room, identity, kind, source, transcribe, published_at, role)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(sid) DO UPDATE SET transcribe = excluded.transcribe, role = excluded.role,
             unpublished_at = NULL]],
    t.sid, ev.room.name, view.identity, t.type or "AUDIO", t.source or "UNKNOWN", transcribe and 1 or 0, now, role)
  if transcribe then
    log.info("webhooks", "track to transcribe", { room = ev.room.name, identity = view.identity, track = t.sid,
      role = role })
    after[#after + 1] = function() tracks.spawn("egress start", tracks.start_egress, t.sid) end
  end
end

function apply.track_unpublished(ev, now, after)
  local sid = (ev.track or {}).sid
  db.run("UPDATE tracks SET unpublished_at = ? WHERE sid = ? AND unpublished_at IS NULL", now, sid)
  after[#after + 1] = function() tracks.stop_later({ sid }) end
end

local function egress_event(ev, _, after)
  if type(ev.egressInfo) == "table" then tracks.egress_event(ev.event, ev.egressInfo, after) end
end
apply.egress_started, apply.egress_updated, apply.egress_ended = egress_event, egress_event, egress_event

-- What each part of an event must be before anything is recorded (LiveKit's WebhookEvent,
-- shared/protocols/livekit.md). A signed event of another shape is refused with 400, never
-- a 500 from deep inside apply: the signature says who sent it, not that it is well formed.
local TEXT = { string = true }
local NUMBER = { number = true, string = true } -- protobuf JSON sends int64 as a string
local STRINGS = { strings = true }               -- an object of string values (attributes)
local OBJECT = { table = true }
local FIELDS = {
  room = { name = TEXT, sid = TEXT, metadata = TEXT, creationTime = NUMBER, maxParticipants = NUMBER,
           emptyTimeout = NUMBER },
  participant = { identity = TEXT, sid = TEXT, name = TEXT, metadata = TEXT, joinedAt = NUMBER,
                  attributes = STRINGS, kind = TEXT },
  track = { sid = TEXT, type = TEXT, source = TEXT },
  egressInfo = { egressId = TEXT, roomName = TEXT, status = TEXT, error = TEXT, track = OBJECT },
}
-- Events whose apply needs a part, and the field of it that identifies it.
local NEEDS = {
  participant_joined = { participant = "identity" }, participant_left = { participant = "identity" },
  participant_connection_aborted = { participant = "identity" },
  track_published = { participant = "identity", track = "sid" }, track_unpublished = { track = "sid" },
  egress_started = { egressInfo = "egressId" }, egress_updated = { egressInfo = "egressId" },
  egress_ended = { egressInfo = "egressId" },
}

local function kind_problem(f, kinds)
  if kinds.strings then
    if type(f) ~= "table" then return "must be an object of strings" end
    for k, v in pairs(f) do
      if type(k) ~= "string" or type(v) ~= "string" then return "must be an object of strings" end
    end
    return nil
  end
  if kinds.table then return type(f) ~= "table" and "must be an object" or nil end
  if not kinds[type(f)] then return kinds.number and "must be a number" or "must be a string" end
  return nil
end

---A JSON null where a part or a field of FIELDS may be is taken as absent (protojson leaves
---unset fields out; a null is nobody's default) and removed, so apply never binds one.
---@return string|nil problem "field: what is wrong", nil when the event can be applied
local function shape_problem(ev)
  for part, fields in pairs(FIELDS) do
    local v = ev[part]
    if v == cjson.null then ev[part], v = nil, nil end
    if v ~= nil then
      if type(v) ~= "table" then return part .. ": must be an object" end
      for k, kinds in pairs(fields) do
        local f = v[k]
        if f == cjson.null then v[k], f = nil, nil end
        local why = f ~= nil and kind_problem(f, kinds)
        if why then return ("%s.%s: %s"):format(part, k, why) end
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
  local after = {}
  local announce -- the participant event stored with the delivery: { room, seq, body }
  -- The event id is the key of webhook_events in the store every instance shares: a delivery
  -- repeated to another instance, even at the same moment, inserts nothing there (on
  -- PostgreSQL the second insert waits for the first's commit) and is answered "duplicate".
  db.transaction(function(tx)
    local changes = db.check(tx:run([[INSERT INTO webhook_events (id, event, room, created_at, received_at, body)
                                      VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING]],
      ev.id, ev.event, ev.room and ev.room.name, int(ev.createdAt), now, req.body))
    if changes == 0 then
      duplicate = true
      return
    end
    local f = apply[ev.event]
    if f and (ev.room and ev.room.name or ev.event:match("^egress_")) then f(ev, now, after) end
    -- Joined/left become room events in the same commit as the delivery's id.
    local room, seq, body = require("qc.transcripts").participant_webhook(tx, ev)
    if seq then announce = { room, seq, body } end
  end)
  -- Committed: now the LiveKit calls, each a task of its own, off this answer's path.
  for _, fn in ipairs(after) do fn() end
  -- Stored with the delivery: announced now that it is committed.
  if announce then live.broadcast(announce[1], "participant", announce[3], announce[2]) end
  log.info("webhooks", duplicate and "duplicate ignored" or "accepted", { event = ev.event, id = ev.id })
  return 200, nil, { status = duplicate and "duplicate" or "accepted", event = ev.event, id = ev.id }
end

return M
