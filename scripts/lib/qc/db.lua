-- The local record of rooms, tokens, participants, tracks and webhook deliveries: one SQLite
-- file in the data directory, opened once per process generation, schema created on open.
local store = require "qc.store"
local host = require "qc.host"

local M = {}

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS rooms (
  name TEXT PRIMARY KEY,
  sid TEXT,
  created_at INTEGER NOT NULL,
  created_by TEXT,
  max_participants INTEGER,
  empty_timeout INTEGER,
  metadata TEXT,
  ended_at INTEGER,
  state TEXT NOT NULL DEFAULT 'created' -- 'creating' until LiveKit has answered (qc.rooms)
);
CREATE TABLE IF NOT EXISTS tokens (
  id INTEGER PRIMARY KEY,
  room TEXT NOT NULL,
  identity TEXT NOT NULL,
  role TEXT NOT NULL,
  issued_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  issued_by TEXT
);
-- No index on tokens(room): nothing looks tokens up by room yet, and keeping one cost
-- 1.5 us per issued token (measured), the costliest part of the insert. Add it with the
-- first query that needs it.
DROP INDEX IF EXISTS tokens_room;
CREATE TABLE IF NOT EXISTS participants (
  room TEXT NOT NULL,
  identity TEXT NOT NULL,
  sid TEXT,
  name TEXT,
  role TEXT,
  joined_at INTEGER,
  left_at INTEGER,
  PRIMARY KEY (room, identity)
);
CREATE TABLE IF NOT EXISTS tracks (
  sid TEXT PRIMARY KEY,
  room TEXT NOT NULL,
  identity TEXT,
  kind TEXT,
  source TEXT,
  transcribe INTEGER NOT NULL DEFAULT 0,
  published_at INTEGER,
  unpublished_at INTEGER
);
CREATE TABLE IF NOT EXISTS webhook_events (
  id TEXT PRIMARY KEY,
  event TEXT NOT NULL,
  room TEXT,
  created_at INTEGER,
  received_at INTEGER NOT NULL,
  body TEXT NOT NULL
);
]]

-- Columns added after a table first shipped: CREATE TABLE IF NOT EXISTS leaves an older
-- file's table as it was, so each is added here when missing. Rows that predate
-- rooms.state were written after LiveKit answered: 'created' is right for them.
local ADDED_COLUMNS = {
  { "rooms", "state", "ALTER TABLE rooms ADD COLUMN state TEXT NOT NULL DEFAULT 'created'" },
}

local function migrate(handle)
  for _, c in ipairs(ADDED_COLUMNS) do
    local cols, err = handle:query("SELECT name FROM pragma_table_info(?) WHERE name = ?", c[1], c[2])
    if not cols then return nil, err end
    if #cols == 0 then
      local ok, aerr = handle:exec(c[3])
      -- Another process opening the same file may have added it first.
      if not ok and not tostring(aerr):find("duplicate column", 1, true) then return nil, aerr end
    end
  end
  return true
end

local db

---The open database (opened and migrated on first use).
function M.get()
  if db then return db end
  local path = host.config().data_dir .. "/quantcoach.db"
  local handle, err = store.open(path)
  if not handle then error({ status = 503, code = "STORE_UNAVAILABLE", message = tostring(err) }) end
  local ok, serr = handle:exec(SCHEMA)
  if ok then ok, serr = migrate(handle) end
  if not ok then error({ status = 503, code = "STORE_UNAVAILABLE", message = tostring(serr) }) end
  db = handle
  return db
end

---Runs a statement; raises a 500 error table on failure (our SQL is not supposed to fail).
function M.run(sql, ...)
  local changes, rowid_or_err, code = M.get():run(sql, ...)
  if not changes then
    error({ status = 500, code = "STORE_ERROR", message = tostring(rowid_or_err) .. " (" .. tostring(code) .. ")" })
  end
  return changes, rowid_or_err
end

function M.query(sql, ...)
  local rows, err = M.get():query(sql, ...)
  if not rows then error({ status = 500, code = "STORE_ERROR", message = tostring(err) }) end
  return rows
end

function M.first(sql, ...)
  return M.query(sql, ...)[1]
end

---Queues a write for the group commit: records nobody reads back within the request (issued
---tokens) are written together, in one transaction, on the next turn of the loop (qc.store's
---db:defer, in C), so a burst of requests costs one commit instead of one each. The request's
---answer is held until that commit has succeeded; if it fails, the answer is 503
---STORE_UNAVAILABLE and the failure is logged. A statement that does not prepare raises now.
function M.defer(sql, ...)
  local ok, err, code = M.get():defer(sql, ...)
  if not ok then
    error({ status = 500, code = "STORE_ERROR", message = tostring(err) .. " (" .. tostring(code) .. ")" })
  end
end

return M
