-- The record of rooms, tokens, participants, tracks, webhook deliveries, events, windows and
-- evaluations: one SQLite file (the data directory's, or QC_STORE_URL=sqlite:PATH) or one
-- PostgreSQL database shared by every instance (QC_STORE_URL=postgres://...), opened once per
-- process, its schema brought up to date on open, in the dialect of its backend.
--
-- Callers do not know which backend runs: query, first, run and exec made inside one of the
-- store's transactions, by the task that opened it, run in that transaction on both (qc.store
-- does it for PostgreSQL, which pins a transaction to one pool connection; a call on the pool
-- from inside it would run outside it and could wait on its own row locks).
local store = require "qc.store"
local host = require "qc.host"
local time = require "qc.time"

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

-- The same steps in PostgreSQL's dialect: INTEGER columns are BIGINT (unix milliseconds and
-- seconds do not fit int4), REAL is DOUBLE PRECISION, tokens.id is an identity column, and
-- there is no WITHOUT ROWID. PG_STEPS[1] is version 1 (SCHEMA with the columns added since),
-- PG_STEPS[v] takes a database from v - 1 to v. Append only, in step with MIGRATIONS.
local PG_STEPS = {
  [[
  CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY,
    sid TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT,
    max_participants BIGINT,
    empty_timeout BIGINT,
    metadata TEXT,
    ended_at BIGINT,
    state TEXT NOT NULL DEFAULT 'created'
  );
  CREATE TABLE IF NOT EXISTS tokens (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    room TEXT NOT NULL,
    identity TEXT NOT NULL,
    role TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    issued_by TEXT
  );
  CREATE TABLE IF NOT EXISTS participants (
    room TEXT NOT NULL,
    identity TEXT NOT NULL,
    sid TEXT,
    name TEXT,
    role TEXT,
    joined_at BIGINT,
    left_at BIGINT,
    PRIMARY KEY (room, identity)
  );
  CREATE TABLE IF NOT EXISTS tracks (
    sid TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    identity TEXT,
    kind TEXT,
    source TEXT,
    transcribe BIGINT NOT NULL DEFAULT 0,
    published_at BIGINT,
    unpublished_at BIGINT
  );
  CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    room TEXT,
    created_at BIGINT,
    received_at BIGINT NOT NULL,
    body TEXT NOT NULL
  );
  ]],
  [[
  CREATE INDEX IF NOT EXISTS tokens_room_identity ON tokens (room, identity, issued_at);
  ALTER TABLE tracks ADD COLUMN IF NOT EXISTS role TEXT;
  ALTER TABLE tracks ADD COLUMN IF NOT EXISTS egress_id TEXT;
  ALTER TABLE tracks ADD COLUMN IF NOT EXISTS egress_state TEXT;
  ALTER TABLE tracks ADD COLUMN IF NOT EXISTS egress_attempts BIGINT NOT NULL DEFAULT 0;
  ALTER TABLE tracks ADD COLUMN IF NOT EXISTS egress_error TEXT;
  ALTER TABLE rooms ADD COLUMN IF NOT EXISTS started_at DOUBLE PRECISION;
  ALTER TABLE rooms ADD COLUMN IF NOT EXISTS last_seq BIGINT NOT NULL DEFAULT 0;
  CREATE TABLE IF NOT EXISTS events (
    room TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    identity TEXT,
    role TEXT,
    track TEXT,
    start_s DOUBLE PRECISION,
    end_s DOUBLE PRECISION,
    text TEXT,
    body TEXT NOT NULL,
    PRIMARY KEY (room, seq)
  );
  CREATE INDEX IF NOT EXISTS events_room_time ON events (room, kind, start_s);
  ]],
  [[
  ALTER TABLE participants ADD COLUMN IF NOT EXISTS kind TEXT;
  ALTER TABLE participants ADD COLUMN IF NOT EXISTS metadata TEXT;
  ALTER TABLE participants ADD COLUMN IF NOT EXISTS attributes TEXT;
  ]],
  [[
  CREATE TABLE IF NOT EXISTS window_state (
    room TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
  );
  CREATE TABLE IF NOT EXISTS windows (
    room TEXT NOT NULL,
    idx BIGINT NOT NULL,
    seq BIGINT,
    start_s DOUBLE PRECISION NOT NULL,
    end_s DOUBLE PRECISION NOT NULL,
    text TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (room, idx)
  );
  CREATE TABLE IF NOT EXISTS evaluations (
    room TEXT NOT NULL,
    window_idx BIGINT NOT NULL,
    evaluator TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    raw TEXT,
    error TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    model TEXT,
    input_tokens BIGINT,
    output_tokens BIGINT,
    seq BIGINT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (room, window_idx, evaluator)
  );
  ]],
}
M.SCHEMA_VERSION = 1 + #MIGRATIONS
assert(#PG_STEPS == M.SCHEMA_VERSION, "qc.db: PG_STEPS out of step with MIGRATIONS")

local function migrate_sqlite(handle)
  local rows, err = handle:query("PRAGMA user_version")
  if not rows then return nil, err end
  local version = rows[1].user_version
  if version > M.SCHEMA_VERSION then
    return nil, ("the data file is at schema version %d; this release knows up to %d"):format(version, M.SCHEMA_VERSION)
  end
  if version == 0 then
    -- Under the write lock and looked at again, as the later steps are: two processes
    -- opening a new file at once would otherwise both run this, and the second's
    -- user_version = 1 would undo the first's later steps (which then ran twice).
    local ok, serr = handle:exec("BEGIN IMMEDIATE")
    if not ok then return nil, serr end
    local now = handle:query("PRAGMA user_version")
    if now and now[1].user_version == 0 then
      ok, serr = handle:exec(SCHEMA)
      if ok then ok, serr = add_missing_columns(handle) end
      if ok then ok, serr = handle:exec("PRAGMA user_version = 1") end
    end
    if ok then ok, serr = handle:exec("COMMIT") end
    if not ok then
      handle:exec("ROLLBACK")
      return nil, serr
    end
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

-- Every instance starting at once migrates once: each step runs in a transaction that first
-- takes this advisory lock (released at its commit), then reads the version again.
local MIGRATION_LOCK = 0x71632d736368656d -- "qc-schem"

local function pg_version(tx)
  local r = tx:first("SELECT version FROM qc_schema")
  return r and r.version or 0
end

local function migrate_postgres(handle)
  -- Quick look without the lock: an up-to-date database (every start but the first) takes
  -- one query. A missing qc_schema fails this; the locked path below creates it.
  local r, rerr, rcode = handle:first("SELECT version FROM qc_schema")
  if r and r.version == M.SCHEMA_VERSION then return true end
  if not r and rcode == "UNAVAILABLE" then return nil, tostring(rerr) .. " (UNAVAILABLE)" end
  while true do
    local done
    -- An error inside is raised again after the rollback: pcall turns it into the answer.
    local pok, ok, err, code = pcall(handle.transaction, handle, function(tx)
      tx:first("SELECT pg_advisory_xact_lock(?)", MIGRATION_LOCK)
      assert(tx:exec("CREATE TABLE IF NOT EXISTS qc_schema (version INTEGER NOT NULL)"))
      local version = pg_version(tx)
      if version > M.SCHEMA_VERSION then
        error(("the database is at schema version %d; this release knows up to %d"):format(version, M.SCHEMA_VERSION), 0)
      end
      if version == M.SCHEMA_VERSION then
        done = true
        return
      end
      local v = version + 1
      local sok, serr = tx:exec(PG_STEPS[v])
      if not sok then error(("schema migration to version %d: %s"):format(v, tostring(serr)), 0) end
      if version == 0 then
        assert(tx:run("INSERT INTO qc_schema (version) VALUES (?)", v))
      else
        assert(tx:run("UPDATE qc_schema SET version = ?", v))
      end
    end)
    if not pok then return nil, tostring(ok) end
    if not ok then return nil, tostring(err) .. (code and (" (" .. code .. ")") or "") end
    if done then return true end
  end
end

local function is_postgres(target)
  return target:sub(1, 11) == "postgres://" or target:sub(1, 13) == "postgresql://"
end

-- ---- the handle qc.db gives out ---------------------------------------------------------

---@class qc.DbHandle
---@field raw userdata the qc.store handle
local Handle = {}

local forwarded = {}
local HandleMeta = {
  __index = function(_, k)
    local f = Handle[k]
    if f then return f end
    -- Anything else the store handle has (listen, try_lock, pid, ...): called on it.
    f = forwarded[k]
    if not f then
      f = function(self, ...)
        local raw = self.raw
        return raw[k](raw, ...)
      end
      forwarded[k] = f
    end
    return f
  end,
  __close = function(self) self:close() end,
  __tostring = function(self) return "qc.db (" .. tostring(self.raw) .. ")" end,
}

---Runs fn(handle) in a transaction (a savepoint inside one): true and fn's results, or nil,
---err, code when it could not begin or commit. An error in fn rolls back and is raised again.
---Inside fn, this handle's query/first/run/exec (forwarded to the store) run in the
---transaction: the store routes a task's calls to the transaction it opened.
function Handle:transaction(fn)
  return self.raw:transaction(function() return fn(self) end)
end

function Handle:defer(sql, ...) return self.raw:defer(sql, ...) end
function Handle:close() return self.raw:close() end

---"sqlite" or "postgres".
function Handle:backend() return self.kind end

---{ backend, state = "ok" | "connecting" | "down", error?, connections?, busy?, waiting? }
function Handle:status()
  local raw = self.raw
  if raw.status then
    local st = raw:status()
    st.backend = st.backend or self.kind
    return st
  end
  return { backend = self.kind, state = "ok" }
end

---Takes a lock for the rest of the current transaction, on `name` (a room, say): on
---PostgreSQL an advisory transaction lock, so two transactions that read, change and write
---back one record (whose row may not exist yet) run one after the other; on SQLite a no-op,
---since BEGIN IMMEDIATE already lets one writer in at a time.
---@param name string
function Handle:xact_lock(name)
  if self.kind ~= "postgres" then return true end
  local r, err, code = self:first("SELECT pg_advisory_xact_lock(hashtextextended(?, 0)) AS locked", name)
  if not r and err then error(("store: lock %s: %s (%s)"):format(name, tostring(err), tostring(code)), 0) end
  return true
end

local function wrap(raw, kind)
  return setmetatable({ raw = raw, kind = kind }, HandleMeta)
end

---Opens a store (a SQLite file path, or a postgres:// / postgresql:// URI) and brings its
---schema up to date; raises a 503 error table when it cannot. Scripts and specs that work on
---a store of their own call it; the server's is M.get().
---@param target string
---@param opts { pool: integer|nil }|nil PostgreSQL's query connections (default 4)
---@return qc.DbHandle handle
function M.open(target, opts)
  local raw, err = store.open(target, opts)
  if not raw then error({ status = 503, code = "STORE_UNAVAILABLE", message = tostring(err) }) end
  local kind = is_postgres(target) and "postgres" or "sqlite"
  local ok, serr
  if kind == "postgres" then ok, serr = migrate_postgres(raw) else ok, serr = migrate_sqlite(raw) end
  if not ok then
    raw:close()
    error({ status = 503, code = "STORE_UNAVAILABLE", message = tostring(serr) })
  end
  return wrap(raw, kind)
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

---"sqlite" or "postgres": the backend QC_STORE_URL names (without opening it).
function M.backend()
  return is_postgres(M.target()) and "postgres" or "sqlite"
end

-- The server's store is the process's, not a policy generation's (this module is loaded
-- once per generation): a reload keeps its connections, PostgreSQL's pool and session (its
-- LISTENs and locks) included, and every generation gets the same handle object (callers
-- key per-store state by it). shared.db is the open qc.DbHandle.
local shared = host.shared("qc.db")
local db

-- M.open for the server's store, with one difference: a PostgreSQL that cannot be reached
-- keeps its pool (shared.pending), which reconnects by itself, and the migration is tried
-- again on the next call, rather than a new pool per call while it is away.
-- shared.last_error / last_state say why the last attempt failed (for /health).
local function open_server_store()
  local target = M.target()
  local kind = is_postgres(target) and "postgres" or "sqlite"
  local raw = shared.pending
  if not raw then
    local err
    raw, err = store.open(target, { pool = host.config().store_pool })
    if not raw then error({ status = 503, code = "STORE_UNAVAILABLE", message = tostring(err) }) end
  end
  local ok, serr
  if kind == "postgres" then ok, serr = migrate_postgres(raw) else ok, serr = migrate_sqlite(raw) end
  if not ok then
    local away = kind == "postgres" and raw:status().state ~= "ok"
    if away then
      shared.pending = raw
    else
      shared.pending = nil
      raw:close()
    end
    shared.last_error, shared.last_state = tostring(serr), away and "down" or "failed"
    error({ status = 503, code = "STORE_UNAVAILABLE", message = tostring(serr) })
  end
  shared.pending, shared.last_error, shared.last_state = nil, nil, nil
  return wrap(raw, kind)
end

---The open database (opened and migrated on first use). On PostgreSQL opening yields: a
---second caller meanwhile waits for the first's outcome rather than open a second pool.
---@return qc.DbHandle
function M.get()
  if db then return db end
  if shared.opening then
    -- Someone else's attempt: its outcome is ours too (opening again at once would wait as
    -- long again, and a stream of callers could keep each other waiting).
    while shared.opening do time.sleep(0.005) end
    if not shared.db then
      error({ status = 503, code = "STORE_UNAVAILABLE", message = tostring(shared.last_error or "store: not open") }, 0)
    end
  end
  if not shared.db then
    shared.opening = true
    local ok, h = pcall(open_server_store)
    shared.opening = false
    if not ok then error(h, 0) end
    shared.db = h
  end
  db = shared.db
  return db
end

---What /health shows of the store, without waiting on it: its status once open, "connecting"
---while it opens, and else the outcome of opening it now (SQLite: at once).
---@return table { backend, state, error?, connections?, busy?, waiting? }
function M.status()
  if db then return db:status() end
  if shared.db then return M.get():status() end
  if M.backend() == "postgres" then
    -- Opened off this request: opening waits for PostgreSQL (up to 5 s while it is away),
    -- and a health check must answer now.
    if not shared.opening then host.spawn(function() pcall(M.get) end) end
    return { backend = "postgres", state = shared.last_state or "connecting", error = shared.last_error }
  end
  local ok, err = pcall(M.get)
  if ok then return db:status() end
  return { backend = "sqlite", state = "failed", error = type(err) == "table" and err.message or tostring(err) }
end

---Runs a statement; raises a 500 error table on failure (our SQL is not supposed to fail).
---A store that is away (PostgreSQL down) is a 503 STORE_UNAVAILABLE instead.
---@return integer changes
function M.run(sql, ...)
  local changes, err, code = M.get():run(sql, ...)
  if not changes then M.raise(err, code) end
  return changes
end

---Rows of a query; raises as M.run does.
function M.query(sql, ...)
  local rows, err, code = M.get():query(sql, ...)
  if not rows then M.raise(err, code) end
  return rows
end

---The first row of a query, or nil; raises as M.run does.
function M.first(sql, ...)
  local row, err, code = M.get():first(sql, ...)
  if not row and err then M.raise(err, code) end
  return row
end

---Runs fn(handle) in a transaction of the server's store (see Handle:transaction); raises a
---503 when it could not begin or commit, so nothing is acknowledged that was not stored.
function M.transaction(fn)
  local res = table.pack(M.get():transaction(fn))
  if not res[1] then M.raise(res[2], res[3]) end
  return table.unpack(res, 2, res.n)
end

---Raises the error table for a store failure: 503 STORE_UNAVAILABLE when the store is away
---or busy, 500 STORE_ERROR otherwise.
function M.raise(err, code)
  if code == "UNAVAILABLE" or code == "BUSY" then
    error({ status = 503, code = "STORE_UNAVAILABLE", message = tostring(err) .. " (" .. tostring(code) .. ")" })
  end
  error({ status = 500, code = "STORE_ERROR", message = tostring(err) .. " (" .. tostring(code) .. ")" })
end

---Passes a store call's results through, or raises as M.raise does when it failed (inside a
---transaction: a statement that failed must not be followed by a COMMIT as if it had not).
---@return any ...
function M.check(first, err, code, ...)
  if first == nil and err ~= nil then M.raise(err, code) end
  return first, err, code, ...
end

---Queues a write for the group commit: records nobody reads back within the request (issued
---tokens) are written together, in one transaction, on the next turn of the loop (qc.store's
---db:defer, in C), so a burst of requests costs one commit instead of one each. The request's
---answer is held until that commit has succeeded; if it fails, the answer is 503
---STORE_UNAVAILABLE and the failure is logged. A statement that does not prepare raises now.
function M.defer(sql, ...)
  local ok, err, code = M.get():defer(sql, ...)
  if not ok then M.raise(err, code) end
end

return M
