-- Transcript and participant events: stored, numbered per room, then announced live.
-- A final (and a participant joined/left) is committed to the events table, with
-- seq = rooms.last_seq + 1 in the same transaction, BEFORE it goes to the live sockets, in
-- the same non-yielding step, so what a client saw is on disk and nothing is announced out
-- of order. Partials are not stored: they carry the room's current last_seq and
-- "partial": true. qc.stt delivers every result of every track here (on_event, set when
-- this module loads; each policy generation's copy registers itself, the last one wins).
local cjson = require "cjson"
local db = require "qc.db"
local events = require "qc.events"
local live = require "qc.live"
local log = require "qc.log"
local stt = require "qc.stt"
local time = require "qc.time"

local M = {}

local encode = cjson.encode
local EMPTY_ARRAY = cjson.empty_array

local function ensure_room(tx, room, now)
  -- A room fed by `quantcoach token --ingest` or a demo feeder need not have been created
  -- through the API: its events still need a row to number them.
  db.check(tx:run("INSERT INTO rooms (name, created_at, state) VALUES (?, ?, 'created') ON CONFLICT(name) DO NOTHING",
    room, math.floor(now)))
end

---Stores one event and returns its sequence number and its JSON (the live message).
---`make_body(seq)` returns the message table; `row` holds the events columns.
---@param room string
---@param kind string 'final' | 'participant' | ...
---@param row table {identity?, role?, track?, start_s?, end_s?, text?}
---@param make_body fun(seq: integer): table
---@return integer seq, string body
function M.commit(room, kind, row, make_body)
  local now = time.now()
  local seq, body
  local ok, err, code = db.get():transaction(function(tx)
    ensure_room(tx, room, now)
    seq, body = events.append(tx, room, kind, row, make_body, now)
  end)
  if not ok then
    error({ status = 503, code = "STORE_UNAVAILABLE", message = "event not stored: " .. tostring(err) .. " (" .. tostring(code) .. ")" })
  end
  return seq, body
end

---The room's last sequence number (0 for a room with no events or none at all).
---@param room string
---@return integer
function M.last_seq(room)
  local r = db.first("SELECT last_seq FROM rooms WHERE name = ?", room)
  return r and r.last_seq or 0
end

local function words_of(ev)
  local out = {}
  for i, w in ipairs(ev.words or {}) do
    out[i] = { text = w.text, start = w.start, ["end"] = w["end"] }
  end
  if #out == 0 then return EMPTY_ARRAY end
  return out
end

local function message(ev, seq)
  return { type = "transcript", seq = seq, room = ev.room, identity = ev.identity, role = ev.role,
           track = ev.track, text = ev.text, start = ev.start, ["end"] = ev["end"], words = words_of(ev),
           final = ev.final == true, partial = not ev.final or nil }
end

---One result of a track's STT stream (qc.stt's event): a final is stored, then announced;
---a partial is announced only. An empty final (nothing was said) is dropped.
---@param ev table {room, identity, role, track, final, text, start, end, words} or {state="failed", detail}
function M.on_event(ev)
  if ev.state then
    -- The track's STT stream gave up (auth, quota): said in the log and on the live socket.
    log.error("transcripts", "stt failed", { room = ev.room, identity = ev.identity, track = ev.track, detail = ev.detail })
    live.broadcast(ev.room, "stt", encode { type = "stt", state = ev.state, detail = ev.detail, room = ev.room,
                                            identity = ev.identity, track = ev.track, seq = M.last_seq(ev.room) })
    return
  end
  if not ev.final then
    live.broadcast(ev.room, "partial", encode(message(ev, M.last_seq(ev.room))))
    return
  end
  if not ev.text or ev.text:match("^%s*$") then return end
  local seq, body = M.commit(ev.room, "final", {
    identity = ev.identity, role = ev.role, track = ev.track, start_s = ev.start, end_s = ev["end"], text = ev.text,
  }, function(seq) return message(ev, seq) end)
  live.broadcast(ev.room, "final", body, seq)
  -- Windows and evaluation (qc.evaluation): in the same step, so windows follow the finals' order.
  require("qc.evaluation").on_final(ev, seq)
end

local PARTICIPANT_EVENTS = { participant_joined = "joined", participant_left = "left",
                             participant_connection_aborted = "left" }

---The webhook handler's one hook, inside the delivery's own transaction (tx): a participant
---who joined or left becomes a stored room event, with the role just recorded for them. One
---commit holds the delivery's id and the event, so a delivery that was not answered 200 left
---nothing behind and its retry applies it. Returns what to announce once tx has committed.
---@param tx table the webhook delivery's transaction
---@param ev table a LiveKit WebhookEvent (already checked by handlers/webhooks.lua)
---@return string|nil room, integer|nil seq, string|nil body
function M.participant_webhook(tx, ev)
  local event = PARTICIPANT_EVENTS[ev.event]
  if not event or type(ev.room) ~= "table" or type(ev.participant) ~= "table" then return nil end
  local room, identity = ev.room.name, ev.participant.identity
  if type(room) ~= "string" or type(identity) ~= "string" then return nil end
  local p = db.check(tx:first("SELECT role FROM participants WHERE room = ? AND identity = ?", room, identity))
  local role = p and p.role or nil
  local at = math.tointeger(tonumber(ev.createdAt)) or math.floor(time.now())
  local now = time.now()
  ensure_room(tx, room, now)
  local seq, body = events.append(tx, room, "participant", { identity = identity, role = role }, function(seq)
    return { type = "participant", seq = seq, room = room, event = event, identity = identity, role = role, at = at }
  end, now)
  return room, seq, body
end

---The stored transcript of a room: finals ordered by start time across speakers.
---@param room string
---@return table[] {seq, identity, role, track, text, start, end, words}
function M.finals(room)
  local rows = db.query([[SELECT seq, identity, role, track, start_s, end_s, text, body FROM events
                          WHERE room = ? AND kind = 'final' ORDER BY start_s, seq]], room)
  local out = {}
  for i, r in ipairs(rows) do
    local ok, msg = pcall(cjson.decode, r.body)
    local words = ok and type(msg) == "table" and msg.words or EMPTY_ARRAY
    out[i] = { seq = r.seq, identity = r.identity, role = r.role, track = r.track, text = r.text,
               start = r.start_s, ["end"] = r.end_s, words = words }
  end
  return out
end

stt.on_event(M.on_event)

return M
