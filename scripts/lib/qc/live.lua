-- Live fan-out: the WebSocket clients of each room (GET /rooms/{room}/live) and what they
-- may see. The registry is the process's (qc.host.shared), so sockets survive a policy
-- reload. A client whose queue passes QC_LIVE_QUEUE_KB is closed with a reason that says
-- where to resume; it never makes the server hold more for it.
--
-- Stored events reach clients through one pump per room, driven by the store: it reads the
-- room's events after the lowest position of its clients, in seq order, and gives each
-- client what it has not had yet. The store is the one order, so a client sees no gap and no
-- duplicate whoever committed the event: this process (a local commit wakes the pump), or
-- another instance sharing the PostgreSQL store (its NOTIFY qc_events wakes it, qc.events),
-- and a `?since=N` replay is the same read as going live. The same pump runs on SQLite, in the
-- caller's step (nothing yields there); on PostgreSQL it runs as a task and a wake while it
-- reads makes it read again. After the session connection came back every room is pumped,
-- which makes good a notification lost while it was away. Partials and STT states are not
-- stored: they go to the room's clients at once, from this process only.
local cjson = require "cjson"
local db = require "qc.db"
local events = require "qc.events"
local host = require "qc.host"
local log = require "qc.log"

local M = {}

-- room -> { [conn] = subscriber }
local rooms = host.shared("qc.live.rooms")
-- room -> { running = bool, again = bool, seen = highest seq read }
local pumps = host.shared("qc.live.pumps")

-- What a candidate's connection may receive: an allow-list, so kinds added later (window,
-- evaluation) never reach a candidate unless named here.
local CANDIDATE_KINDS = { final = true, partial = true, participant = true, stt = true }

M.QUEUE_BYTES = host.config().live_queue_bytes
M.MAX_MESSAGE = 4096 -- what a client may send us (it has nothing to say; pings are answered by C)
M.BATCH = 256 -- events read per query: a long replay goes in steps

local function allowed(sub, kind)
  if sub.candidate then return CANDIDATE_KINDS[kind] == true end
  return true
end

local function drop(sub)
  sub.gone = true
  local subs = rooms[sub.room]
  if subs and subs[sub.conn] == sub then
    subs[sub.conn] = nil
    if next(subs) == nil then
      rooms[sub.room] = nil
      local p = pumps[sub.room]
      if p and not p.running then pumps[sub.room] = nil end
    end
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

local function postgres()
  return events.backend() == "postgres"
end

-- One pass of reads until every client of the room has had every stored event (or left).
local function pump_reads(room, p)
  repeat
    p.again = false
    local subs = rooms[room]
    if not subs then return end
    local lo
    for _, sub in pairs(subs) do
      if not lo or sub.seq < lo then lo = sub.seq end
    end
    if not lo then return end
    local rows = db.query("SELECT seq, kind, body FROM events WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?",
      room, lo, M.BATCH)
    for _, r in ipairs(rows) do
      if not p.seen or r.seq > p.seen then p.seen = r.seq end
      -- Collected first: deliver drops slow subscribers, and the walk should not depend on
      -- what next() does after a removal.
      local list = {}
      for _, sub in pairs(rooms[room] or {}) do list[#list + 1] = sub end
      for _, sub in ipairs(list) do
        if not sub.gone and sub.seq < r.seq then
          if allowed(sub, r.kind) then
            deliver(sub, r.body, r.seq)
          else
            sub.seq = r.seq -- filtered out for this client: not a gap it should resume before
          end
        end
      end
    end
    if #rows == M.BATCH then p.again = true end
  until not p.again
end

---Gives the room's clients what the store has for them. One pump per room at a time: a call
---while it runs makes it read once more.
---@param room string
function M.pump(room)
  if not rooms[room] then return end
  local p = pumps[room]
  if not p then
    p = {}
    pumps[room] = p
  end
  if p.running then
    p.again = true
    return
  end
  p.running = true
  local ok, err = pcall(pump_reads, room, p)
  p.running = false
  if not rooms[room] and pumps[room] == p then pumps[room] = nil end
  if not ok then
    -- The store is away: the next commit, notification or reconnect pumps again, from the
    -- clients' own positions, so nothing is skipped.
    log.warn("live", "pump failed", { room = room, error = type(err) == "table" and err.message or tostring(err) })
  end
end

-- Wakes the room's pump: in this step on SQLite (nothing yields), as a task of its own on
-- PostgreSQL unless the caller is one already made for it (a notification's).
local function wake(room, inline)
  if not rooms[room] then return end
  local p = pumps[room]
  if p and p.running then
    p.again = true
    return
  end
  if inline or not postgres() then
    M.pump(room)
  else
    host.spawn(M.pump, room)
  end
end
M.wake = wake

events.on("live", {
  -- Our own commits are announced too (by broadcast); the pump has read those already.
  notify = function(seq, _, room)
    local p = pumps[room]
    if p and p.seen and seq <= p.seen and not p.running then return end
    wake(room, true)
  end,
  reconnect = function()
    for room in pairs(rooms) do wake(room) end
  end,
})

---Announces one message to the room's clients. kind: 'final', 'partial', 'participant',
---'stt', 'window', 'evaluation'; seq: the stored event's number (nil for what is not stored:
---partials and STT states, sent as they are). A stored event is not sent from here: its
---commit wakes the room's pump, which reads it back in order.
---@param room string
---@param kind string
---@param body string JSON text
---@param seq integer|nil
function M.broadcast(room, kind, body, seq)
  local subs = rooms[room]
  if not subs then return 0 end
  if seq then
    wake(room)
    return 0
  end
  local n = 0
  local list = {}
  for _, sub in pairs(subs) do list[#list + 1] = sub end
  for _, sub in ipairs(list) do
    if allowed(sub, kind) and deliver(sub, body, nil) then n = n + 1 end
  end
  return n
end

---Registers the connection and gives it the stored events after `since`, then what follows.
---Returns false when the replay alone filled the client's queue (it was closed with a reason
---that says where to resume).
---@param conn userdata qc.ws.Server
---@param o { room: string, since: integer, candidate: boolean, who: string }
---@return boolean
function M.subscribe(conn, o)
  local sub = { conn = conn, room = o.room, candidate = o.candidate, who = o.who, seq = o.since }
  events.listen()
  local subs = rooms[o.room]
  if not subs then
    subs = {}
    rooms[o.room] = subs
  end
  subs[conn] = sub
  conn:on_close(function() drop(sub) end)
  -- In the handler's own task: on SQLite the whole replay happens here, with no event in
  -- between; on PostgreSQL the pump reads until the room has nothing newer.
  wake(o.room, true)
  return not sub.gone
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
