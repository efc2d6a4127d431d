-- Live fan-out: the WebSocket clients of each room (GET /rooms/{room}/live) and what they
-- may see. The registry is the process's (qc.host.shared), so sockets survive a policy
-- reload. Every step here is non-yielding: a replay from the store and the registration
-- that follows it happen with no event in between, so `?since=N` resumes with no gap and
-- no duplicate. A client whose queue passes QC_LIVE_QUEUE_KB is closed with a reason that
-- says where to resume; it never makes the server hold more for it.
local cjson = require "cjson"
local db = require "qc.db"
local host = require "qc.host"
local log = require "qc.log"

local M = {}

-- room -> { [conn] = subscriber }
local rooms = host.shared("qc.live.rooms")

-- What a candidate's connection may receive: an allow-list, so kinds added later (window,
-- evaluation) never reach a candidate unless named here.
local CANDIDATE_KINDS = { final = true, partial = true, participant = true, stt = true }

M.QUEUE_BYTES = host.config().live_queue_bytes
M.MAX_MESSAGE = 4096 -- what a client may send us (it has nothing to say; pings are answered by C)

local function allowed(sub, kind)
  if sub.candidate then return CANDIDATE_KINDS[kind] == true end
  return true
end

local function drop(sub)
  local subs = rooms[sub.room]
  if subs then
    subs[sub.conn] = nil
    if next(subs) == nil then rooms[sub.room] = nil end
  end
end

-- Sends one message; on a full queue the client is closed as too slow (it resumes with
-- ?since= from the last event it did receive).
local function deliver(sub, body, seq)
  local ok, why = sub.conn:send(body)
  if ok then
    if seq then sub.seq = seq end
    return true
  end
  drop(sub)
  if why == "QUEUE_FULL" then
    local queued = sub.conn:queued()
    local reason = ("too slow: %d bytes queued; resume with ?since=%d"):format(queued, sub.seq)
    log.warn("live", "client dropped", { room = sub.room, who = sub.who, reason = reason })
    sub.conn:close(1008, reason)
  end
  return false
end

---Announces one message to the room's clients. kind: 'final', 'partial', 'participant',
---'stt', later 'window' / 'evaluation'; seq: the stored event's number (nil for partials).
---@param room string
---@param kind string
---@param body string JSON text
---@param seq integer|nil
function M.broadcast(room, kind, body, seq)
  local subs = rooms[room]
  if not subs then return 0 end
  local n = 0
  -- Collected first: deliver drops slow subscribers, and the walk should not depend on
  -- what next() does after a removal.
  local list = {}
  for _, sub in pairs(subs) do list[#list + 1] = sub end
  for _, sub in ipairs(list) do
    if allowed(sub, kind) and deliver(sub, body, seq) then n = n + 1 end
  end
  return n
end

---Replays the stored events after `since`, then registers the connection for what follows.
---Returns false when the replay alone filled the client's queue (it was closed with a reason
---that says where to resume).
---@param conn userdata qc.ws.Server
---@param o { room: string, since: integer, candidate: boolean, who: string }
---@return boolean
function M.subscribe(conn, o)
  local sub = { conn = conn, room = o.room, candidate = o.candidate, who = o.who, seq = o.since }
  local rows = db.query("SELECT seq, kind, body FROM events WHERE room = ? AND seq > ? ORDER BY seq", o.room, o.since)
  for _, r in ipairs(rows) do
    if allowed(sub, r.kind) then
      if not deliver(sub, r.body, r.seq) then return false end
    else
      sub.seq = r.seq -- filtered out for this client: not a gap it should resume before
    end
  end
  local subs = rooms[o.room]
  if not subs then
    subs = {}
    rooms[o.room] = subs
  end
  subs[conn] = sub
  conn:on_close(function() drop(sub) end)
  return true
end

---How many live clients a room has (all rooms when room is nil).
function M.count(room)
  local n = 0
  for r, subs in pairs(rooms) do
    if room == nil or r == room then
      for _ in pairs(subs) do n = n + 1 end
    end
  end
  return n
end

M.CANDIDATE_KINDS = CANDIDATE_KINDS
M.encode = cjson.encode

return M
