-- The one writer of the events table: every stored event (final, participant, window,
-- evaluation) takes its number and its row here, inside the caller's transaction. The number
-- comes from rooms.last_seq in the same transaction, so on PostgreSQL the room's row lock
-- orders the commits of one room in seq order across instances; and on PostgreSQL the
-- transaction also sends NOTIFY qc_events '<seq> <kind> <room>', which the other instances
-- receive at commit, in commit order (qc.live wakes its pump on it, qc.owner its runner).
local cjson = require "cjson"
local host = require "qc.host"
local log = require "qc.log"

local M = {}

-- name -> { notify = fn(seq, kind, room), reconnect = fn() }: qc.live and qc.owner. Kept by the
-- process (a reload's modules replace their own entries); one LISTEN serves them all.
local handlers = host.shared("qc.events.handlers")
-- The db objects whose session LISTENs (a reload may open a new one).
local listening = host.shared("qc.events.listening")
if not getmetatable(listening) then setmetatable(listening, { __mode = "k" }) end

M.CHANNEL = "qc_events"

-- Which backend the process's store is on: the one QC_STORE_URL names (qc.db, which opens
-- nothing to say so).
local function backend()
  return require("qc.db").backend()
end
M.backend = backend

---The notification payload of an event: the room goes last, since it may hold spaces.
function M.payload(seq, kind, room)
  return ("%d %s %s"):format(seq, kind, room)
end

---Parses a payload back: seq, kind, room (nil for anything else: the channel is open to any
---session of the database, so its payloads are not trusted).
---@param s string
---@return integer|nil, string|nil, string|nil
function M.parse(s)
  if type(s) ~= "string" or #s > 1024 then return nil end
  local seq, kind, room = s:match("^(%d+) (%l+) (.+)$")
  seq = seq and math.tointeger(tonumber(seq))
  if not seq then return nil end
  return seq, kind, room
end

---Registers what to do on a notification and after the session connection came back.
---@param name string
---@param h { notify: fun(seq: integer, kind: string, room: string)|nil, reconnect: fun()|nil }
function M.on(name, h)
  handlers[name] = h
end

local function each(what, ...)
  for name, h in pairs(handlers) do
    if h[what] then
      local ok, err = pcall(h[what], ...)
      if not ok then log.error("events", "handler failed", { handler = name, on = what, error = tostring(err) }) end
    end
  end
end

---On PostgreSQL, makes sure the open store LISTENs on qc_events (once per db object); does
---nothing on SQLite, where every event is committed by this process. Yields on PostgreSQL.
function M.listen()
  if backend() ~= "postgres" then return true end
  local db = require("qc.db").get()
  if listening[db] or not db.listen then return true end
  listening[db] = true
  local ok, err = db:listen(M.CHANNEL, function(payload)
    local seq, kind, room = M.parse(payload)
    if seq then each("notify", seq, kind, room) end
  end)
  if not ok then
    listening[db] = nil -- tried again on the next call
    log.warn("events", "listen failed", { error = tostring(err) })
    return nil, err
  end
  db:on_reconnect(function() each("reconnect") end)
  return true
end

---Tells every instance something that is no stored event (seq 0), on PostgreSQL: "ended" when a
---room's interview was finished, so its owner gives the room's lock up. Nothing on SQLite.
---@param db table a qc.store handle
---@param kind string
---@param room string
function M.notify(db, kind, room)
  if not (db.backend and db:backend() == "postgres") then return true end
  return db:first("SELECT pg_notify(?, ?) AS n", M.CHANNEL, M.payload(0, kind, room))
end

---The room's next sequence number, or nil when the room has no row (a transcript replayed from
---elsewhere: then nothing is stored as an event and nothing goes on the live socket).
---@param tx table a qc.store handle inside a transaction
---@param room string
---@return integer|nil
function M.next_seq(tx, room)
  local r, err = tx:first("UPDATE rooms SET last_seq = last_seq + 1 WHERE name = ? RETURNING last_seq", room)
  if err then error("events: " .. tostring(err), 0) end
  return r and r.last_seq or nil
end

---Stores one event inside the caller's transaction and returns its number and its JSON (the
---live message). `make_body(seq)` returns the message table (seq nil: the room has no row, no
---event is stored, and the body is still returned for the caller's own row). `row` holds the
---events columns: identity, role, track, start_s, end_s, text.
---@param tx table
---@param room string
---@param kind string
---@param row table
---@param make_body fun(seq: integer|nil): table
---@param now number unix seconds
---@return integer|nil seq, string body
function M.append(tx, room, kind, row, make_body, now)
  local seq = M.next_seq(tx, room)
  local body = cjson.encode(make_body(seq))
  if not seq then return nil, body end
  local ok, err = tx:run([[INSERT INTO events (room, seq, kind, created_at, identity, role, track, start_s, end_s, text, body)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)]],
    room, seq, kind, now, row.identity, row.role, row.track, row.start_s, row.end_s, row.text, body)
  if not ok then error("events: " .. tostring(err), 0) end
  if tx.backend and tx:backend() == "postgres" then
    local n, nerr = tx:first("SELECT pg_notify(?, ?) AS n", M.CHANNEL, M.payload(seq, kind, room))
    if not n and nerr then error("events: notify: " .. tostring(nerr), 0) end
  end
  return seq, body
end

return M
