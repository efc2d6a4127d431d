-- The one writer of the events table: every stored event (final, participant, window,
-- evaluation) takes its number and its row here, inside the caller's transaction. The number
-- comes from rooms.last_seq in the same transaction, so on PostgreSQL the room's row lock
-- orders the commits of one room in seq order across instances; and on PostgreSQL the
-- transaction also sends NOTIFY qc_events '<seq> <kind> <room>', which the other instances
-- receive at commit, in commit order (qc.live wakes its pump on it, qc.owner its runner).
local cjson = require "cjson"

local M = {}

M.CHANNEL = "qc_events"

local function backend()
  local ok, db = pcall(require, "qc.db")
  if ok and type(db) == "table" and db.backend then
    local bok, name = pcall(db.backend)
    if bok then return name end
  end
  return "sqlite"
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
  if backend() == "postgres" then
    local n, nerr = tx:first("SELECT pg_notify(?, ?) AS n", M.CHANNEL, M.payload(seq, kind, room))
    if not n and nerr then error("events: notify: " .. tostring(nerr), 0) end
  end
  return seq, body
end

return M
