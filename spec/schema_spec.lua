-- The store's schema is versioned (PRAGMA user_version, scripts/lib/qc/db.lua MIGRATIONS): a
-- data directory made by the previous release opens and is brought up to date, keeping its
-- rows; one made by a newer release is refused, and /health says so.
local server = require "support.server"
local store = require "qc.store"

local FIXTURE = server.source .. "/spec/fixtures/store/release-0.1.0.db"
-- Both are about SQLite files: a data file of release 0.1.0, and PRAGMA user_version.
local it_sqlite = server.sqlite_only(it, pending, "a SQLite data file and its PRAGMA user_version")

local function data_dir_with(version)
  local dir = server.tmpdir() .. "/data"
  assert(os.execute("mkdir -p " .. server.quote(dir)))
  server.write_file(dir .. "/quantcoach.db", server.read_file(FIXTURE))
  if version then
    local db = assert(store.open(dir .. "/quantcoach.db"))
    assert(db:exec("PRAGMA user_version = " .. version))
    db:close()
  end
  return dir
end

local function user_version(dir)
  local db = assert(store.open(dir .. "/quantcoach.db"))
  local v = assert(db:query("PRAGMA user_version"))[1].user_version
  db:close()
  return v
end

describe("the store's schema versions", function()
  it_sqlite("upgrades a data directory of release 0.1.0 and keeps its tokens", function()
    local dir = data_dir_with(nil)
    assert.equal(0, user_version(dir))
    local s = server.start { data = dir }
    local status, body = s:request("POST", "/tokens/generate",
      { room_name = "interview-8", participant_identity = "ada@example.com", participant_type = "interviewer" })
    assert.equal(200, status)
    local _, health = s:request("GET", "/health")
    assert.equal("ok", health.store.state)
    assert.equal(0, s:stop())
    assert.is_string(body.token)
    assert.is_true(user_version(dir) >= 4)
    local db = assert(store.open(dir .. "/quantcoach.db"))
    local rows = assert(db:query("SELECT room, identity, role FROM tokens ORDER BY id"))
    db:close()
    assert.same({ room = "interview-7", identity = "cand-42", role = "candidate" }, rows[1])
    assert.same({ room = "interview-8", identity = "ada@example.com", role = "interviewer" }, rows[2])
  end)

  it_sqlite("refuses a data file of a newer schema and reports the store degraded", function()
    local dir = data_dir_with(99)
    local s = server.start { data = dir }
    local status, body = s:request("POST", "/tokens/generate",
      { room_name = "interview-8", participant_identity = "ada", participant_type = "interviewer" })
    assert.equal(503, status)
    assert.equal("STORE_UNAVAILABLE", body.error.code)
    local _, health = s:request("GET", "/health")
    assert.equal("degraded", health.status)
    assert.equal("failed", health.store.state)
    assert.matches("schema version 99", health.store.error)
    assert.equal(0, s:stop())
    assert.equal(99, user_version(dir))
  end)
end)
