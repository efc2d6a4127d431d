-- Retention: token and webhook-delivery rows older than QC_RETENTION_DAYS are purged by the
-- server itself, in batches, off the request path; newer rows and other tables stay.
local server = require "support.server"
local store = require "qc.store"

local quote = server.quote
local DAY = 86400

-- A data directory whose store holds `old` tokens issued 100 days ago, then 7 issued now,
-- 3 webhook deliveries received 100 days ago and 2 received now, and one room.
local function backdated_store(old)
  local dir = server.tmpdir()
  local script = dir .. "/fill.lua"
  server.write_file(script, ([[
    local db = require "qc.db"
    local now = os.time()
    -- One transaction (on PostgreSQL, pinned to one pool connection).
    assert(db.get():transaction(function(h)
      for i = 1, %d do
        assert(h:run("INSERT INTO tokens (room, identity, role, issued_at, expires_at) VALUES (?, ?, ?, ?, ?)",
          "r-old", "id" .. i, "candidate", now - 100 * 86400, now - 100 * 86400 + 3600))
      end
      for i = 1, 7 do
        assert(h:run("INSERT INTO tokens (room, identity, role, issued_at, expires_at) VALUES (?, ?, ?, ?, ?)",
          "r-new", "id" .. i, "candidate", now - 60, now + 3600))
      end
      for i = 1, 3 do
        assert(h:run("INSERT INTO webhook_events (id, event, received_at, body) VALUES (?, ?, ?, ?)",
          "EV_old" .. i, "room_started", now - 100 * 86400, "{}"))
      end
      for i = 1, 2 do
        assert(h:run("INSERT INTO webhook_events (id, event, received_at, body) VALUES (?, ?, ?, ?)",
          "EV_new" .. i, "room_started", now, "{}"))
      end
      assert(h:run("INSERT INTO rooms (name, created_at) VALUES (?, ?)", "r-old", now - 100 * 86400))
    end))
  ]]):format(old))
  local status, out = server.run(("env QC_ENV_FILE=/nonexistent %s %s run %s")
    :format(server.store_env_text(dir), quote(server.bin), quote(script)))
  assert(status == 0, out)
  return dir
end

local function count(dir, sql)
  local h <close> = server.open_store(dir)
  return assert(h:query(sql))[1].n
end

describe("retention", function()
  it("purges tokens and webhook deliveries past QC_RETENTION_DAYS in batches of 1000, keeping the rest", function()
    local data = backdated_store(2500)
    assert.equal(2507, count(data, "SELECT count(*) AS n FROM tokens"))
    local s = server.start { data = data, env = { QC_RETENTION_DAYS = "30" } }
    local log = s:wait_log("retention sweep done", 20)
    assert.truthy(log:find("info retention purged batches=3 cutoff=%d+ days=30 rows=2500 table=tokens"), log)
    assert.truthy(log:find("info retention purged batches=1 cutoff=%d+ days=30 rows=3 table=webhook_events"), log)
    assert.truthy(log:find("retention sweep done days=30 tokens=2500 webhook_events=3", 1, true), log)
    assert.equal(200, (s:request("GET", "/health")))
    assert.equal(0, s:stop())
    assert.equal(7, count(data, "SELECT count(*) AS n FROM tokens"))
    assert.equal(0, count(data, "SELECT count(*) AS n FROM tokens WHERE room = 'r-old'"))
    assert.equal(2, count(data, "SELECT count(*) AS n FROM webhook_events WHERE id LIKE 'EV_new%'"))
    assert.equal(2, count(data, "SELECT count(*) AS n FROM webhook_events"))
    assert.equal(1, count(data, "SELECT count(*) AS n FROM rooms"))
  end)

  it("keeps rows newer than the retention", function()
    local data = backdated_store(20)
    local s = server.start { data = data, env = { QC_RETENTION_DAYS = "365" } }
    local log = s:wait_log("retention sweep done", 20)
    assert.truthy(log:find("retention sweep done days=365 tokens=0 webhook_events=0", 1, true), log)
    assert.equal(0, s:stop())
    assert.equal(27, count(data, "SELECT count(*) AS n FROM tokens"))
    assert.equal(5, count(data, "SELECT count(*) AS n FROM webhook_events"))
  end)

  it("keeps everything with QC_RETENTION_DAYS=0, and says so", function()
    local data = backdated_store(20)
    local s = server.start { data = data, env = { QC_RETENTION_DAYS = "0" } }
    local log = s:wait_log("retention off", 20)
    assert.truthy(log:find("info retention off: rows are kept forever days=0", 1, true), log)
    assert.equal(0, s:stop())
    assert.equal(27, count(data, "SELECT count(*) AS n FROM tokens"))
  end)

  it("deletes by 90 days when QC_RETENTION_DAYS is not set", function()
    local data = backdated_store(5)
    local s = server.start { data = data }
    local log = s:wait_log("retention sweep done", 20)
    assert.truthy(log:find("retention sweep done days=90 tokens=5 webhook_events=3", 1, true), log)
    assert.equal(0, s:stop())
  end)

  it("refuses a QC_RETENTION_DAYS that is not a whole number of days", function()
    for _, bad in ipairs { "-1", "ninety", "1.5", "99999" } do
      local status, out = server.run(("env QC_ENV_FILE=/nonexistent QC_RETENTION_DAYS=%s %s check")
        :format(quote(bad), quote(server.bin)))
      assert.equal(2, status, out)
      assert.truthy(out:find("QC_RETENTION_DAYS", 1, true), out)
    end
  end)
end)

describe("retention.purge_table", function()
  it("walks a table in rowid batches and stops at the first batch with nothing old", function()
    local retention = require "qc.retention"
    local dir = server.tmpdir()
    local h <close> = assert(store.open(dir .. "/t.db"))
    assert(h:exec("CREATE TABLE t (at INTEGER NOT NULL)"))
    for i = 1, 25 do assert(h:run("INSERT INTO t (at) VALUES (?)", i <= 23 and 100 or 900)) end
    local pauses = 0
    local n, batches = retention.purge_table(h, { name = "t", column = "at" }, 500, 10, function() pauses = pauses + 1 end)
    assert.equal(23, n)
    assert.equal(3, batches)
    assert.equal(3, pauses)
    assert.equal(2, h:query("SELECT count(*) AS n FROM t")[1].n)
    assert.same({ 0, 1 }, { retention.purge_table(h, { name = "t", column = "at" }, 500, 10) })
  end)
end)
