-- qc.store: SQLite through the binding, on real database files in a temp dir.
local store = require "qc.store"
local time = require "qc.time"

local function tmpdir()
  local p = assert(io.popen("mktemp -d /tmp/qc_store_spec.XXXXXX"))
  local dir = p:read("l")
  p:close()
  return dir
end

local SCHEMA = [[
  CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, score REAL,
                     active INTEGER, photo BLOB, note TEXT);
  CREATE TABLE sessions(id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id));
]]

describe("qc.store", function()
  local dir, path, db

  before_each(function()
    dir = tmpdir()
    path = dir .. "/qc.db"
    db = assert(store.open(path))
    assert(db:exec(SCHEMA))
  end)

  after_each(function()
    db:close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("opens the database in WAL mode with normal sync and foreign keys", function()
    assert.equal("wal", db:first("PRAGMA journal_mode").journal_mode)
    assert.equal(1, db:first("PRAGMA synchronous").synchronous)
    assert.equal(1, db:first("PRAGMA foreign_keys").foreign_keys)
  end)

  it("round-trips integers, floats, text, binary strings, booleans and NULL", function()
    local changes, id = db:run("INSERT INTO users(email, score, active, photo, note) VALUES (?, ?, ?, ?, ?)",
      "ada@example.com", 2.5, true, "\0\1\255png", nil)
    assert.equal(1, changes)
    assert.equal(1, id)
    local rows = assert(db:query("SELECT * FROM users"))
    assert.equal(1, #rows)
    local r = rows[1]
    assert.equal("integer", math.type(r.id))
    assert.equal("ada@example.com", r.email)
    assert.equal("float", math.type(r.score))
    assert.equal(2.5, r.score)
    assert.equal(1, r.active)
    assert.equal("\0\1\255png", r.photo)
    assert.is_nil(r.note)
    assert.is_nil(next(db:query("SELECT * FROM users WHERE id = ?", 99)))
  end)

  it("keeps 64-bit integers and tells 3 from 3.0", function()
    local big = math.maxinteger
    local r = db:first("SELECT ? AS i, ? AS f, typeof(?) AS t", big, 3.0, 3.0)
    assert.equal(big, r.i)
    assert.equal("float", math.type(r.f))
    assert.equal("real", r.t)
  end)

  it("binds named parameters from a table", function()
    db:run("INSERT INTO users(email, score) VALUES (:email, @score)", { email = "bob@example.com", score = 7 })
    local r = db:first("SELECT email, score FROM users WHERE email = $email", { email = "bob@example.com" })
    assert.same({ email = "bob@example.com", score = 7.0 }, r)
  end)

  it("raises on a named parameter the statement does not have", function()
    assert.has_error(function()
      db:first("SELECT * FROM users WHERE email = :email", { emial = "x" })
    end, "bad argument #2 to 'first' (no parameter :emial in the statement)")
  end)

  it("raises when the number of parameters does not match", function()
    assert.has_error(function() db:query("SELECT ?, ?", 1) end)
    assert.has_error(function() db:query("SELECT ?", {}, 2) end)
  end)

  it("returns the first row, or nil when there is none", function()
    db:run("INSERT INTO users(email) VALUES ('a@x'), ('b@x')")
    assert.equal("a@x", db:first("SELECT email FROM users ORDER BY id").email)
    assert.is_nil(db:first("SELECT email FROM users WHERE id = 42"))
  end)

  it("reports the changed row count, not a stale one, from run", function()
    db:run("INSERT INTO users(email) VALUES ('a@x'), ('b@x'), ('c@x')")
    assert.equal(2, (db:run("UPDATE users SET note = 'n' WHERE id > 1")))
    assert.equal(0, (db:run("SELECT * FROM users")))
    assert.equal(0, (db:run("UPDATE users SET note = 'n' WHERE id > 99")))
  end)

  it("reports a constraint violation with the CONSTRAINT code", function()
    assert(db:run("INSERT INTO users(email) VALUES (?)", "ada@example.com"))
    local ok, msg, code = db:run("INSERT INTO users(email) VALUES (?)", "ada@example.com")
    assert.is_nil(ok)
    assert.matches("UNIQUE constraint failed: users.email", msg, 1, true)
    assert.equal("CONSTRAINT", code)
    ok, msg, code = db:run("INSERT INTO sessions(user_id) VALUES (?)", 999)
    assert.is_nil(ok)
    assert.matches("FOREIGN KEY", msg, 1, true)
    assert.equal("CONSTRAINT", code)
  end)

  it("reports bad SQL with SQL_ERROR", function()
    local ok, msg, code = db:query("SELEKT 1")
    assert.is_nil(ok)
    assert.matches("syntax error", msg, 1, true)
    assert.equal("SQL_ERROR", code)
    ok, msg, code = db:exec("CREATE TABLE users(id)")
    assert.is_nil(ok)
    assert.matches("already exists", msg, 1, true)
    assert.equal("SQL_ERROR", code)
    ok, msg, code = db:run("INSERT INTO users(email) VALUES ('a'); DROP TABLE users")
    assert.is_nil(ok)
    assert.matches("more than one statement", msg, 1, true)
    assert.equal("SQL_ERROR", code)
    assert.equal(0, db:first("SELECT count(*) AS n FROM users").n)
  end)

  it("commits a transaction and returns what its function returned", function()
    local ok, id = db:transaction(function(tx)
      local _, rowid = assert(tx:run("INSERT INTO users(email) VALUES ('t@x')"))
      assert(tx:run("INSERT INTO sessions(user_id) VALUES (?)", rowid))
      return rowid
    end)
    assert.is_true(ok)
    assert.equal(1, id)
    assert.equal(1, db:first("SELECT count(*) AS n FROM sessions").n)
  end)

  it("rolls a transaction back when its function raises, and raises again", function()
    assert.has_error(function()
      db:transaction(function(tx)
        assert(tx:run("INSERT INTO users(email) VALUES ('gone@x')"))
        error({ code = "NOPE" })
      end)
    end, { code = "NOPE" })
    assert.is_nil(db:first("SELECT * FROM users WHERE email = 'gone@x'"))
    -- The connection is usable and outside any transaction afterwards.
    assert(db:transaction(function(tx) assert(tx:run("INSERT INTO users(email) VALUES ('kept@x')")) end))
    assert.equal(1, db:first("SELECT count(*) AS n FROM users").n)
  end)

  it("rolls back only the inner part of a nested transaction", function()
    db:transaction(function(tx)
      assert(tx:run("INSERT INTO users(email) VALUES ('outer@x')"))
      assert.is_false(pcall(tx.transaction, tx, function(inner)
        assert(inner:run("INSERT INTO users(email) VALUES ('inner@x')"))
        error("inner fails")
      end))
    end)
    local rows = db:query("SELECT email FROM users")
    assert.same({ { email = "outer@x" } }, rows)
  end)

  it("holds the write lock for the whole transaction (BEGIN IMMEDIATE)", function()
    local other = assert(store.open(path))
    other:exec("PRAGMA busy_timeout = 0")
    local ok, msg, code
    db:transaction(function(tx)
      assert(tx:run("INSERT INTO users(email) VALUES ('w@x')"))
      ok, msg, code = other:run("INSERT INTO users(email) VALUES ('other@x')")
    end)
    other:close()
    assert.is_nil(ok)
    assert.matches("locked", msg, 1, true)
    assert.equal("BUSY", code)
  end)

  it("raises on any use of a closed database, and closes idempotently", function()
    db:close()
    db:close()
    assert.equal("qc.store.DB (closed)", tostring(db))
    for _, call in ipairs {
      function() db:query("SELECT 1") end,
      function() db:first("SELECT 1") end,
      function() db:run("SELECT 1") end,
      function() db:exec("SELECT 1") end,
      function() db:transaction(function() end) end,
    } do
      assert.has_error(call, "attempt to use a closed database")
    end
  end)

  it("closes at the end of a <close> scope", function()
    local kept
    do
      local scoped <close> = assert(store.open(path))
      kept = scoped
      assert(scoped:run("INSERT INTO users(email) VALUES ('scoped@x')"))
    end
    assert.has_error(function() kept:first("SELECT 1") end, "attempt to use a closed database")
  end)

  it("defers writes to one commit on the next turn of the loop", function()
    local sql = "INSERT INTO users(email, score, active, note) VALUES (?, ?, ?, ?)"
    assert.is_true(db:defer(sql, "a@example.com", 1.5, true, nil))
    assert.is_true(db:defer(sql, "b@example.com", 2, false, "second"))
    assert.equal(0, db:first("SELECT count(*) AS n FROM users").n)
    time.sleep(0.01) -- the loop turns: the queued rows are committed
    local rows = db:query("SELECT email, score, active, note FROM users ORDER BY id")
    assert.same({ { email = "a@example.com", score = 1.5, active = 1 },
                  { email = "b@example.com", score = 2, active = 0, note = "second" } }, rows)
  end)

  it("refuses a deferred statement that does not prepare, at once", function()
    local ok, msg, code = db:defer("INSERT INTO nowhere VALUES (?)", 1)
    assert.is_nil(ok)
    assert.matches("no such table", msg, 1, true)
    assert.equal("SQL_ERROR", code)
    ok, msg = db:defer("INSERT INTO users(email) VALUES (?)")
    assert.is_nil(ok)
    assert.matches("number of values", msg, 1, true)
    assert.has_error(function() db:defer("INSERT INTO users(email) VALUES (?)", {}) end)
  end)

  it("writes deferred rows when the database closes before the loop turns", function()
    assert.is_true(db:defer("INSERT INTO users(email) VALUES (?)", "late@example.com"))
    db:close()
    db = assert(store.open(path))
    assert.equal("late@example.com", db:first("SELECT email FROM users").email)
  end)

  it("keeps committed data across close and reopen", function()
    assert(db:run("INSERT INTO users(email, score) VALUES (?, ?)", "durable@x", 9.5))
    db:close()
    db = assert(store.open(path))
    assert.same({ email = "durable@x", score = 9.5 }, db:first("SELECT email, score FROM users"))
  end)

  it("fails to open a path whose directory is missing with OPEN_FAILED", function()
    local ok, msg, code = store.open(dir .. "/missing/qc.db")
    assert.is_nil(ok)
    assert.matches("cannot open", msg, 1, true)
    assert.equal("OPEN_FAILED", code)
  end)
end)
