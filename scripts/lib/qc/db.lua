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
-- No index on tokens(room) in version 1: nothing looked tokens up by room, and keeping one cost
-- 1.5 us per issued token (measured), the costliest part of the insert. Version 2 adds one
-- (tokens_room_identity), for the issued role, which is authoritative for room + identity.
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

-- Versioned migrations (PRAGMA user_version). Version 1 is the schema releases before
-- migrations shipped (SCHEMA above, plus the columns they added one by one); a file of any
-- such release, user_version 0, is brought to version 1 by running SCHEMA and adding what
-- is missing. Each later version is one function run in a transaction with the version
-- bump, so a crash mid-migration leaves the file at the version before it. Append only:
-- never edit a shipped step; a PostgreSQL backend will carry the same steps in its dialect.
local ADDED_COLUMNS = {
  -- Rows that predate rooms.state were written after LiveKit answered: 'created' is right.
  { "rooms", "state", "ALTER TABLE rooms ADD COLUMN state TEXT NOT NULL DEFAULT 'created'" },
}

local function add_missing_columns(handle)
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

---@type string[] SQL of version 2, 3, ...: MIGRATIONS[1] takes a file from version 1 to 2.
local MIGRATIONS = {
  -- 2: audio. The role a token was issued for is authoritative for room + identity, so
  -- tokens get the index that lookup needs; tracks carry their egress; the room's
  -- interview clock starts at started_at; every event announced on the live socket is
  -- stored with its per-room sequence number (finals carry the transcript columns).
  [[
  CREATE INDEX IF NOT EXISTS tokens_room_identity ON tokens (room, identity, issued_at);
  ALTER TABLE tracks ADD COLUMN role TEXT;
  ALTER TABLE tracks ADD COLUMN egress_id TEXT;
  ALTER TABLE tracks ADD COLUMN egress_state TEXT;
  ALTER TABLE tracks ADD COLUMN egress_attempts INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE tracks ADD COLUMN egress_error TEXT;
  ALTER TABLE rooms ADD COLUMN started_at REAL;
  ALTER TABLE rooms ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
  CREATE TABLE IF NOT EXISTS events (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,      -- 'final', 'participant', later 'window', 'evaluation'
    created_at REAL NOT NULL,
    identity TEXT,
    role TEXT,
    track TEXT,
    start_s REAL,            -- on the interview clock: seconds since rooms.started_at
    end_s REAL,
    text TEXT,
    body TEXT NOT NULL,      -- the JSON object sent on the live socket
    PRIMARY KEY (room, seq)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS events_room_time ON events (room, kind, start_s);
  ]],
  -- 3: what the speakers policy needs of a participant when a track_* webhook names it by
  -- identity alone: its kind (AGENT, EGRESS, ...), metadata and attributes (JSON object
  -- text), kept from its participant_joined.
  [[
  ALTER TABLE participants ADD COLUMN kind TEXT;
  ALTER TABLE participants ADD COLUMN metadata TEXT;
  ALTER TABLE participants ADD COLUMN attributes TEXT;
  ]],
  -- 4: windows and evaluation (qc.windows, qc.evaluation). window_state is the windows
  -- runner's state per room (JSON: recent finals, open windows, the clock), written in the
  -- transaction that stores the windows it closed. evaluations has one row per window and
  -- evaluator (window_idx 0: the whole interview), rewritten when it is run again; a failed
  -- one keeps its error and the reply as received.
  [[
  CREATE TABLE IF NOT EXISTS window_state (
    room TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
  );
  CREATE TABLE IF NOT EXISTS windows (
    room TEXT NOT NULL,
    idx INTEGER NOT NULL,    -- 1, 2, ... in the order windows closed
    seq INTEGER,             -- its event (NULL when the room has no row)
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    text TEXT NOT NULL,
    body TEXT NOT NULL,      -- the window as sent on the live socket, finals included
    created_at REAL NOT NULL,
    PRIMARY KEY (room, idx)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS evaluations (
    room TEXT NOT NULL,
    window_idx INTEGER NOT NULL,
    evaluator TEXT NOT NULL, -- 'analytics', 'openai', 'anthropic'
    status TEXT NOT NULL,    -- 'pending', 'ok', 'invalid' (reply failed the schema), 'error'
    result TEXT,             -- JSON
    raw TEXT,                -- the reply as received, when it was not valid
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    model TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    seq INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (room, window_idx, evaluator)
  ) WITHOUT ROWID;
  ]],
}
M.SCHEMA_VERSION = 1 + #MIGRATIONS

local function migrate(handle)
  local rows, err = handle:query("PRAGMA user_version")
  if not rows then return nil, err end
  local version = rows[1].user_version
  if version > M.SCHEMA_VERSION then
    return nil, ("the data file is at schema version %d; this release knows up to %d"):format(version, M.SCHEMA_VERSION)
  end
  if version == 0 then
    local ok, serr = handle:exec(SCHEMA)
    if ok then ok, serr = add_missing_columns(handle) end
    if ok then ok, serr = handle:exec("PRAGMA user_version = 1") end
    if not ok then return nil, serr end
    version = 1
  end
  for v = version + 1, M.SCHEMA_VERSION do
    -- BEGIN IMMEDIATE: two processes opening one old file migrate one after the other; the
    -- second sees the new version and skips the step.
    local ok, merr = handle:exec("BEGIN IMMEDIATE")
    if not ok then return nil, merr end
    local now = handle:query("PRAGMA user_version")
    if now and now[1].user_version < v then
      ok, merr = handle:exec(MIGRATIONS[v - 1] .. ("; PRAGMA user_version = %d;"):format(v))
    end
    if ok then ok, merr = handle:exec("COMMIT") end
    if not ok then
      handle:exec("ROLLBACK")
      return nil, ("schema migration to version %d: %s"):format(v, tostring(merr))
    end
  end
  return true
end

local db

---Opens a store file and brings its schema up to date (scripts and specs that work on a file
---of their own); raises a 503 error table when it cannot.
---@param path string
---@return table handle qc.store
function M.open(path)
  local handle, err = store.open(path)
  if not handle then error({ status = 503, code = "STORE_UNAVAILABLE", message = tostring(err) }) end
  local ok, serr = migrate(handle)
  if not ok then
    handle:close()
    error({ status = 503, code = "STORE_UNAVAILABLE", message = tostring(serr) })
  end
  return handle
end

---What QC_STORE_URL names, as qc.store.open takes it: a SQLite file path (the data
---directory's quantcoach.db when unset, PATH for sqlite:PATH) or the PostgreSQL URI.
---@return string
function M.target()
  local c = host.config()
  local url = c.store_url
  if not url then return c.data_dir .. "/quantcoach.db" end
  if url:sub(1, 7) == "sqlite:" then return url:sub(8) end
  return url
end

---The open database (opened and migrated on first use).
function M.get()
  if db then return db end
  db = M.open(M.target())
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
