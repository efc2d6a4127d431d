-- One owner per room's decisions: the windows runner and the evaluations of a room run only in
-- the process that holds the store's lock "qc.room:<room>" (db:try_lock: a PostgreSQL
-- session advisory lock, which dies with the process or its session connection; always
-- granted on SQLite, where one process owns its file's rooms).
--
-- The owner consumes the room's finals from the store in seq order, after the last one its
-- stored windows state took (window_state's last_seq), so it does not matter which instance
-- committed a final, and an instance that takes a room over continues exactly where the stored
-- state is. Every write of the state is a compare-and-set (qc.windows), so an owner that lost
-- its lock without knowing (cut off from PostgreSQL while another took over) writes nothing
-- over the newer owner's state. Rooms owned elsewhere are tried again on the windows clock's
-- tick (qc.evaluation.tick), so a dead owner is replaced within a couple of seconds.
local db = require "qc.db"
local events = require "qc.events"
local host = require "qc.host"
local log = require "qc.log"
local time = require "qc.time"

local M = {}

M.RETRY = 0.9 -- seconds between two tries of a lock held elsewhere (the clock ticks each 1 s)
M.BATCH = 64  -- finals read per query

-- room -> true: this process holds the room's lock. The lock is reentrant on PostgreSQL, so
-- it is taken once and remembered here.
local held = host.shared("qc.owner.held")
-- room -> when a try last found it held elsewhere
local denied = host.shared("qc.owner.denied")
-- room -> { running, again, cursor }: one consumer per room at a time
local runs = host.shared("qc.owner.runs")

local function lock_name(room)
  return "qc.room:" .. room
end

local function postgres()
  return events.backend() == "postgres"
end

---Whether this process holds the room's lock (it is taken when free). A room held elsewhere
---is tried again only after M.RETRY seconds.
---@param room string
---@param now number|nil
---@return boolean
function M.owns(room, now)
  if held[room] then return true end
  local store = db.get()
  if not store.try_lock then
    held[room] = true
    return true
  end
  now = now or time.now()
  local last = denied[room]
  if last and now - last < M.RETRY and now >= last then return false end
  local ok, err, code = store:try_lock(lock_name(room))
  if ok then
    denied[room] = nil
    held[room] = true
    if postgres() then
      log.info("owner", "room taken", { room = room })
      host.spawn(M.took, room)
    end
    return true
  end
  denied[room] = now
  if ok == nil then log.warn("owner", "lock failed", { room = room, error = tostring(err), code = code }) end
  return false
end

---Gives the room up (its interview ended, or another runner wrote its state).
---@param room string
function M.release(room)
  runs[room] = nil
  if not held[room] then return end
  held[room] = nil
  local store = db.get()
  if store.unlock then
    local ok, err = pcall(store.unlock, store, lock_name(room))
    if not ok then log.warn("owner", "unlock failed", { room = room, error = tostring(err) }) end
  end
end

---The rooms this process owns (for /metrics and specs).
function M.held()
  local out = {}
  for room in pairs(held) do out[#out + 1] = room end
  table.sort(out)
  return out
end

local function policies()
  local ok, p = pcall(require, "qc.policies")
  return ok and p or {}
end

local function consume(room, r)
  local store = db.get()
  local policy = policies().windows
  if not policy then return end
  local evaluation = require "qc.evaluation"
  local windows = require "qc.windows"
  repeat
    r.again = false
    if not r.cursor then r.cursor = windows.load_state(store, room).last_seq or 0 end
    local rows, err = store:query([[SELECT seq, identity, role, track, start_s, end_s, text FROM events
      WHERE room = ? AND kind = 'final' AND seq > ? ORDER BY seq LIMIT ?]], room, r.cursor, M.BATCH)
    if not rows then error("owner: " .. tostring(err), 0) end
    for _, f in ipairs(rows) do
      evaluation.step_final(store, policy, room, {
        seq = f.seq, identity = f.identity, role = f.role, track = f.track,
        start = f.start_s, ["end"] = f.end_s or f.start_s, text = f.text,
      })
      r.cursor = f.seq
    end
    if #rows == M.BATCH then r.again = true end
    -- The clock's tick after the finals: a window never closes by time before the finals
    -- stored before the tick (a backlog a new owner takes over) are in.
    if not r.again and r.tick then
      local t = r.tick
      r.tick = nil
      evaluation.step_tick(store, policy, room, t.clock, t.now)
    end
  until not r.again
end

---Runs the room's windows over its stored finals not taken yet, when this process owns the
---room (opts.force: whether or not, for the interview's end), then the clock's tick when
---opts.tick gives one ({ clock = seconds on the interview clock, now = unix seconds }). One
---run per room at a time: a call while it runs makes it read once more. Never raises.
---@param room string
---@param opts { force: boolean|nil, tick: table|nil }|nil
function M.run(room, opts)
  if not (opts and opts.force) and not M.owns(room) then return end
  local r = runs[room]
  if not r then
    r = {}
    runs[room] = r
  end
  if opts and opts.tick then r.tick = opts.tick end
  if r.running then
    r.again = true
    return
  end
  r.running = true
  local ok, err = pcall(consume, room, r)
  r.running = false
  if ok then return end
  r.cursor = nil -- read again from the stored state next time
  local msg = type(err) == "table" and err.message or tostring(err)
  if msg:find(require("qc.windows").STALE, 1, true) then
    -- Another runner wrote the room's state: it owns the room now, not this process.
    log.warn("owner", "room lost", { room = room })
    M.release(room)
    denied[room] = time.now()
  else
    log.error("owner", "windows run failed", { room = room, error = msg })
  end
end

---A room just taken over: the LLM evaluations its previous owner left pending are run again,
---then its finals not taken yet.
---@param room string
function M.took(room)
  local ok, err = pcall(function() require("qc.evaluation").rerun_pending(db.get(), room) end)
  if not ok then log.error("owner", "pending evaluations failed", { room = room, error = tostring(err) }) end
  M.run(room)
end

events.on("owner", {
  -- Another instance committed a final of a room owned here: its windows are ours to run.
  notify = function(_, kind, room)
    if kind == "final" and held[room] then M.run(room) end
    -- The interview was finished (on whichever instance): the room needs no owner now.
    if kind == "ended" and held[room] then M.release(room) end
  end,
  -- The session came back: its locks died with the old one. Each room is tried again (it may
  -- have been taken by another instance meanwhile).
  reconnect = function()
    local rooms = {}
    for room in pairs(held) do rooms[#rooms + 1] = room end
    for _, room in ipairs(rooms) do
      held[room] = nil
      denied[room] = nil
      runs[room] = nil
      if M.owns(room) then M.run(room) end
    end
  end,
})

return M
