-- The windows runner: keeps each room's window state (recent finals, open windows, the clock)
-- and asks policies/windows.lua what to do with it after every committed final. The state
-- lives in the store (window_state, one JSON row per room) and is read and written in the
-- transaction that stores the windows it closes, so a reload (a new generation of this
-- module) or a restart loses and repeats no window; the policy itself keeps nothing.
--
--   local windows = require "qc.windows"
--   local st = windows.new_state()                          -- in memory (evaluate_room.lua)
--   local out = windows.step(policy, st, "room-1", final)   -- windows closed by this final
--   local rest = windows.finish(policy, st, "room-1")       -- the interview ended
--   local ticked = windows.tick(policy, st, "room-1", 42.0)  -- a silence: the clock alone
--   windows.commit(db, policy, "room-1", final, now)        -- the same, on the store
local cjson = require "cjson"
local events = require "qc.events"
local counted = require "qc.stats" -- GET /metrics
local log = require "qc.log"

local M = {}

local type, ipairs, tostring, pcall, next = type, ipairs, tostring, pcall, next
local huge = math.huge

-- A policy that keeps answering (a bug, or a clock far ahead) is stopped after this many
-- decisions for one final; what it left open stays open for the next final.
local MAX_STEPS = 256

---@class qc.WindowFinal
---@field seq integer|nil
---@field identity string
---@field role string|nil
---@field track string|nil
---@field start number
---@field end number
---@field text string
---@field placed boolean|nil  in a window already (runner bookkeeping)

---@class qc.Window
---@field room string
---@field index integer
---@field start number
---@field end number
---@field finals qc.WindowFinal[]
---@field text string

---A fresh state for one room.
---@return table
function M.new_state()
  return { clock = 0, open = {}, finals = {}, next_id = 1, next_index = 1 }
end

local LABEL = { interviewer = "Interviewer", candidate = "Candidate", agent = "Agent" }

---"Interviewer: ... / Candidate: ...": consecutive finals of one speaker joined.
---@param finals qc.WindowFinal[] in time order
---@return string
function M.text(finals)
  local parts, who, words = {}, nil, {}
  for _, f in ipairs(finals) do
    local label = LABEL[f.role] or (f.role and (f.role:sub(1, 1):upper() .. f.role:sub(2))) or f.identity or "Speaker"
    if label ~= who and #words > 0 then
      parts[#parts + 1] = who .. ": " .. table.concat(words, " ")
      words = {}
    end
    who = label
    if f.text and f.text ~= "" then words[#words + 1] = f.text end
  end
  if who and #words > 0 then parts[#parts + 1] = who .. ": " .. table.concat(words, " ") end
  return table.concat(parts, " / ")
end

local function by_time(a, b)
  if a.start ~= b.start then return a.start < b.start end
  return (a.seq or 0) < (b.seq or 0)
end

local function finite(x)
  return type(x) == "number" and x == x and x ~= huge and x ~= -huge
end

-- Times are kept to the millisecond: the state goes through JSON (cjson writes 14
-- significant digits), and a run from the store must decide exactly as one in memory.
local function ms(x)
  return math.floor(x * 1000 + 0.5) / 1000
end

local function plain_final(f)
  return { seq = f.seq, identity = f.identity, role = f.role, track = f.track,
           start = f.start, ["end"] = f["end"], text = f.text }
end

-- The window [start, end) takes the finals that overlap it, and any final that came too late
-- for the windows its time belonged to (they had closed): no final is left out.
local function takes(f, start, stop)
  local overlaps = (f.start < stop and f["end"] > start) or (f.start == f["end"] and f.start >= start and f.start < stop)
  return overlaps or (not f.placed and f["end"] <= start)
end

-- Also answers whether the window adds anything: a final not in any window yet, or one that
-- goes on past the end of every window emitted so far (st.covered).
local function collect(st, start, stop)
  local out, adds = {}, false
  local covered = st.covered or -huge
  for _, f in ipairs(st.finals) do
    if takes(f, start, stop) then
      out[#out + 1] = f
      if not f.placed or f["end"] > covered then adds = true end
    end
  end
  if not adds then return out, false end
  for i, f in ipairs(out) do
    f.placed = true
    out[i] = plain_final(f)
  end
  return out, true
end

local function emit(st, room, start, stop, out)
  local finals, adds = collect(st, start, stop)
  if #finals == 0 then return end -- silence is not a window
  -- A window whose finals are all judged already, each in full (the interview's end closing
  -- [30, 30.3] after [20, 30.3]), would only judge them again over a sliver of time.
  if not adds then return end
  if not st.covered or stop > st.covered then st.covered = stop end
  local w = { room = room, index = st.next_index, start = start, ["end"] = stop, finals = finals,
              text = M.text(finals) }
  st.next_index = st.next_index + 1
  out[#out + 1] = w
end

-- Applies one decision after checking it; false when there was nothing to do.
local function apply(st, room, d, out)
  if type(d) ~= "table" then error("decide must return a table, got " .. type(d), 0) end
  local opens, closes = d.open or {}, d.close or {}
  if type(opens) ~= "table" or type(closes) ~= "table" then error("decide: open and close must be lists", 0) end
  local by_id = {}
  for i, w in ipairs(st.open) do by_id[w.id] = i end
  local length = st.max_length
  for _, c in ipairs(closes) do
    local i = type(c) == "table" and by_id[c.id]
    if not i then error("decide: close names a window that is not open: " .. tostring(type(c) == "table" and c.id or c), 0) end
    local w, stop = st.open[i], c["end"]
    if not finite(stop) or stop <= w.start or (length and stop > w.start + length + 1e-9) then
      error(("decide: window %d (start %s) cannot end at %s"):format(w.id, tostring(w.start), tostring(stop)), 0)
    end
  end
  for _, s in ipairs(opens) do
    if not finite(s) or (st.last_start and ms(s) <= st.last_start) or s > st.clock + 1e-9 then
      error(("decide: cannot open a window at %s (last start %s, clock %s)"):format(
        tostring(s), tostring(st.last_start), tostring(st.clock)), 0)
    end
  end
  -- Closed in the order of their ends, so indices follow time.
  local closing = {}
  for _, c in ipairs(closes) do closing[#closing + 1] = { w = st.open[by_id[c.id]], stop = ms(c["end"]) } end
  table.sort(closing, function(a, b)
    if a.stop ~= b.stop then return a.stop < b.stop end
    return a.w.start < b.w.start
  end)
  local gone = {}
  for _, c in ipairs(closing) do
    emit(st, room, c.w.start, c.stop, out)
    gone[c.w.id] = true
  end
  if next(gone) then
    local keep = {}
    for _, w in ipairs(st.open) do if not gone[w.id] then keep[#keep + 1] = w end end
    st.open = keep
  end
  for _, s in ipairs(opens) do
    s = ms(s)
    st.open[#st.open + 1] = { id = st.next_id, start = s }
    st.next_id = st.next_id + 1
    st.last_start = s
  end
  return #opens > 0 or #closes > 0
end

-- Finals no future window can take: placed, and over before every open window starts. The
-- latest final stays (the next one's `previous`).
local function prune(st)
  local floor_t = huge
  for _, w in ipairs(st.open) do if w.start < floor_t then floor_t = w.start end end
  if floor_t == huge then floor_t = st.last_start or -huge end
  local keep, n = {}, #st.finals
  for i, f in ipairs(st.finals) do
    if i == n or not f.placed or f["end"] > floor_t then keep[#keep + 1] = f end
  end
  st.finals = keep
end

local function view(st, new, previous, ended)
  local open = {}
  for i, w in ipairs(st.open) do open[i] = { id = w.id, start = w.start } end
  return { clock = st.clock, new = new and plain_final(new) or nil,
           previous = previous and plain_final(previous) or nil,
           open = open, last_start = st.last_start, ended = ended or nil }
end

local function run(policy, st, room, new, previous, ended, out)
  st.max_length = type(policy.length) == "number" and policy.length or nil
  for _ = 1, MAX_STEPS do
    local ok, more = pcall(function() return apply(st, room, policy.decide(view(st, new, previous, ended)), out) end)
    if not ok then
      log.error("windows", "policy decision failed, windows stay open", { room = room, error = tostring(more) })
      return false
    end
    if not more then return true end
  end
  log.warn("windows", "policy still deciding after the step limit", { room = room, steps = MAX_STEPS })
  return false
end

---Adds a final to the room's state and returns the windows it closed (in order).
---@param policy table policies/windows.lua
---@param st table the room's state (changed in place)
---@param room string
---@param final qc.WindowFinal
---@return qc.Window[]
function M.step(policy, st, room, final)
  if not finite(final.start) or not finite(final["end"]) then error("final: start and end must be numbers", 2) end
  local f = plain_final(final)
  f.start, f["end"] = ms(f.start), ms(f["end"])
  -- The last final (by event number) this state has taken: the room's owner consumes the
  -- stored finals after it, so a takeover continues exactly here (qc.owner).
  local n = math.tointeger(f.seq)
  if n and n > (math.tointeger(st.last_seq) or 0) then st.last_seq = n end
  if f["end"] < f.start then f["end"] = f.start end
  local finals = st.finals
  finals[#finals + 1] = f
  table.sort(finals, by_time)
  local previous
  for i, x in ipairs(finals) do
    if x == f then previous = finals[i - 1] break end
  end
  if f["end"] > st.clock then st.clock = f["end"] end
  local out = {}
  run(policy, st, room, f, previous, false, out)
  prune(st)
  return out
end

---The interview clock moved on with no new final (a silence): the policy may close windows
---whose time is up. Returns the windows closed, and whether the state changed (nothing to
---store when it did not: a tick of a room in silence writes nothing).
---@param policy table
---@param st table
---@param room string
---@param clock number seconds on the interview clock, now
---@return qc.Window[] windows, boolean changed
function M.tick(policy, st, room, clock)
  local out = {}
  if not finite(clock) or #st.open == 0 then return out, false end
  local before_clock, before_open = st.clock, #st.open
  if clock > st.clock then st.clock = ms(clock) end
  local next_id = st.next_id
  run(policy, st, room, nil, nil, false, out)
  local changed = #out > 0 or #st.open ~= before_open or st.next_id ~= next_id
  if changed then prune(st) else st.clock = before_clock end
  return out, changed
end

---The interview ended: closes every open window and returns them.
---@param policy table
---@param st table
---@param room string
---@return qc.Window[]
function M.finish(policy, st, room)
  local out = {}
  run(policy, st, room, nil, nil, true, out)
  -- Whatever the policy left (it failed, or closed nothing): one last window, so that no
  -- final is lost.
  local start, stop = huge, -huge
  for _, f in ipairs(st.finals) do
    if not f.placed then
      if f.start < start then start = f.start end
      if f["end"] > stop then stop = f["end"] end
    end
  end
  if start ~= huge then
    emit(st, room, start, math.max(stop, start + 0.001), out)
  end
  st.open = {}
  prune(st)
  return out
end

-- ---- on the store ---------------------------------------------------------------------

-- Returns the state and the stored text it came from (the compare-and-set's witness).
local function load_state(db, room)
  local row = db:first("SELECT state FROM window_state WHERE room = ?", room)
  if not row then return M.new_state(), nil end
  local ok, st = pcall(cjson.decode, row.state)
  if not ok or type(st) ~= "table" then return M.new_state(), row.state end
  st.open, st.finals = st.open or {}, st.finals or {}
  st.last_seq = math.tointeger(st.last_seq)
  if not st.last_seq then
    -- A state written before the runner recorded it: its newest final is the last consumed.
    local last = 0
    for _, f in ipairs(st.finals) do
      local n = math.tointeger(f.seq)
      if n and n > last then last = n end
    end
    st.last_seq = last
  end
  return st, row.state
end
M.load_state = load_state

M.STALE = "window_state: changed by another runner"

-- Compare-and-set on the text read in this transaction: a runner that lost the room (a stale
-- owner, cut off from PostgreSQL while another instance took over) writes nothing over the
-- newer owner's state; the write fails and its whole transaction rolls back.
local function save_state(db, room, st, now, old)
  st.max_length = nil
  local n, err
  if old == nil then
    n, err = db:run("INSERT INTO window_state (room, state, updated_at) VALUES (?, ?, ?) ON CONFLICT (room) DO NOTHING",
      room, cjson.encode(st), now)
  else
    n, err = db:run("UPDATE window_state SET state = ?, updated_at = ? WHERE room = ? AND state = ?",
      cjson.encode(st), now, room, old)
  end
  if not n then error("window_state: " .. tostring(err), 0) end
  if n == 0 then error(M.STALE, 0) end
end

---The next event sequence number of a room (rooms.last_seq + 1), or nil when the room has
---no row (a transcript replayed from elsewhere): then nothing goes on the live socket.
---@return integer|nil
M.next_seq = events.next_seq

---The live message of a window.
---@param w qc.Window
---@param seq integer|nil
---@return table
function M.message(w, seq)
  local finals = {}
  for i, f in ipairs(w.finals) do finals[i] = f end
  return { type = "window", seq = seq, room = w.room, index = w.index, start = w.start, ["end"] = w["end"],
           text = w.text, finals = finals }
end

---Stores windows (and their events) inside the caller's transaction.
---@return table[] the live messages, in order: { seq, body (JSON text) }
function M.store(db, windows, now)
  local msgs = {}
  for _, w in ipairs(windows) do
    local seq, body = events.append(db, w.room, "window", { start_s = w.start, end_s = w["end"], text = w.text },
      function(seq) return M.message(w, seq) end, now)
    local ok, err = db:run("INSERT INTO windows (room, idx, seq, start_s, end_s, text, body, created_at) "
      .. "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room, idx) DO UPDATE SET seq = excluded.seq, "
      .. "start_s = excluded.start_s, end_s = excluded.end_s, text = excluded.text, body = excluded.body",
      w.room, w.index, seq, w.start, w["end"], w.text, body, now)
    if not ok then error("windows: " .. tostring(err), 0) end
    msgs[#msgs + 1] = { seq = seq, body = body }
  end
  return msgs
end

---One committed final through the policy, on the store: the room's state is read, stepped
---and written back with the windows it closed, in one transaction. Returns the windows and
---their live messages (announce them after this returns: they are committed).
---@param db table a qc.store handle
---@param policy table
---@param room string
---@param final qc.WindowFinal|number|nil nil: the interview ended; a number: a clock tick, the
---interview clock now (M.tick)
---@param now number unix seconds
---@param within fun(tx: table, windows: qc.Window[], messages: table[]): any|nil runs inside the same
---transaction when windows closed (the evaluation runner stores their analytics there: one
---commit per final instead of one per window)
---@param opts { consume: boolean|nil }|nil
---@return qc.Window[] windows, table[] messages, any within's result
function M.commit(db, policy, room, final, now, within, opts)
  -- Consuming the room's stored finals in seq order (qc.owner): one at or before the state's
  -- last_seq was taken already and is skipped.
  local consume = opts and opts.consume and type(final) == "table" and math.tointeger(final.seq)
  local ok, windows, msgs, extra = db:transaction(function(tx)
    -- A final and a clock tick of one room, in two tasks, each read, step and write back
    -- its state: one after the other (PostgreSQL reads without locking; this lock, taken
    -- before the read, orders them even when the room has no state row yet). Across
    -- instances the compare-and-set of save_state is what keeps a stale owner out.
    if tx.xact_lock then tx:xact_lock("qc.windows:" .. room) end
    local st, old = load_state(tx, room)
    local out
    if consume and final.seq <= (st.last_seq or 0) then
      return {}, {}, nil -- taken already (by this runner or the room's owner before it)
    end
    if type(final) == "number" then
      local changed
      out, changed = M.tick(policy, st, room, final)
      if not changed then return out, {}, nil end
    elseif final then
      out = M.step(policy, st, room, final)
    else
      out = M.finish(policy, st, room)
    end
    save_state(tx, room, st, now, old)
    local stored = M.store(tx, out, now)
    local more
    if within and #out > 0 then more = within(tx, out, stored) end
    return out, stored, more
  end)
  if not ok then error("windows: " .. tostring(windows), 0) end
  if #windows > 0 then counted.windows(#windows) end
  return windows, msgs, extra
end

---Every stored window of a room, oldest first, decoded.
---@return qc.Window[]
function M.list(db, room)
  local rows = db:query("SELECT body FROM windows WHERE room = ? ORDER BY idx", room)
  local out = {}
  for i, r in ipairs(rows or {}) do
    local w = cjson.decode(r.body)
    w.type = nil
    out[i] = w
  end
  return out
end

return M
