-- qc.db on both backends (scripts/lib/qc/db.lua): the two dialects of the schema define the
-- same tables and columns, instances that open one fresh PostgreSQL database at once migrate
-- it once, events of a room are numbered by the store without gaps or repeats however many
-- writers commit at once, and a webhook delivered twice at once is stored once. Runs on the
-- SQLite file or, under SPEC_PG_URL, on a PostgreSQL database of its own.
local server = require "support.server"

local quote = server.quote
local describe_pg = server.pg_url and describe or pending

-- A store target for `quantcoach run` scripts: a fresh database under SPEC_PG_URL, else a
-- SQLite file in a temp dir (as QC_STORE_URL spells them).
local function fresh_store()
  if server.pg_url then return server.create_database() end
  return "sqlite:" .. server.tmpdir() .. "/qc.db"
end

-- Runs `n` copies of a script at once against one store; returns their exit statuses and
-- outputs (stdout and stderr together).
local function run_together(script_text, store_url, n, args)
  local dir = server.tmpdir()
  server.write_file(dir .. "/s.lua", script_text)
  local cmds = {}
  for i = 1, n do
    cmds[i] = ("(env QC_ENV_FILE=/nonexistent QC_DATA=%s QC_STORE_URL=%s %s run %s %s > %s 2>&1; echo $? > %s)")
      :format(quote(dir), quote(store_url), quote(server.bin), quote(dir .. "/s.lua"), args or "",
        quote(dir .. "/out" .. i), quote(dir .. "/rc" .. i))
  end
  assert.equal(0, server.run("timeout -s KILL 120 sh -c " .. quote(table.concat(cmds, " & ") .. " & wait")))
  local codes, outs = {}, {}
  for i = 1, n do
    codes[i] = tonumber((server.read_file(dir .. "/rc" .. i) or ""):match("%d+"))
    outs[i] = server.read_file(dir .. "/out" .. i) or ""
  end
  return codes, outs
end

local function cjson_text(t) return require("cjson").encode(t) end

local function open(store_url)
  return require("qc.db").open((store_url:gsub("^sqlite:", "")))
end

describe_pg("qc.db on PostgreSQL", function()
  it("has the same tables and columns, of the same kinds, as on SQLite", function()
    local lite = open("sqlite:" .. server.tmpdir() .. "/qc.db")
    local pg = open(server.create_database())
    assert.equal("sqlite", lite:backend())
    assert.equal("postgres", pg:backend())
    local KIND = { INTEGER = "integer", REAL = "real", TEXT = "text",
                   bigint = "integer", integer = "integer", ["double precision"] = "real", text = "text" }
    local function columns(rows)
      local out = {}
      for _, r in ipairs(rows) do out[r.tbl .. "." .. r.col] = KIND[r.kind] or r.kind end
      return out
    end
    local want = columns(assert(lite:query([[SELECT m.name AS tbl, p.name AS col, p.type AS kind
      FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table']])))
    local got = columns(assert(pg:query([[SELECT table_name AS tbl, column_name AS col, data_type AS kind
      FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'qc_schema']])))
    assert.same(want, got)
    assert.is_true(next(want) ~= nil)
    -- Times in unix milliseconds must fit: every INTEGER column is BIGINT on PostgreSQL.
    local narrow = assert(pg:query([[SELECT table_name || '.' || column_name AS c FROM information_schema.columns
      WHERE table_schema = 'public' AND table_name <> 'qc_schema' AND data_type = 'integer']]))
    assert.same({}, narrow)
    lite:close()
    pg:close()
  end)

  it("is migrated once when three instances open one fresh database at once", function()
    local url = server.create_database()
    local codes, outs = run_together([[
      local db = require "qc.db"
      io.write(db.get():first("SELECT version FROM qc_schema").version, " ", db.SCHEMA_VERSION)]], url, 3)
    for i = 1, 3 do
      assert.equal(0, codes[i], outs[i])
      local v, want = outs[i]:match("^(%d+) (%d+)$")
      assert.truthy(v, outs[i])
      assert.equal(want, v)
    end
    local pg = open(url)
    assert.same({ { n = 1 } }, pg:query("SELECT count(*) AS n FROM qc_schema"))
    pg:close()
  end)

  it("refuses a database of a newer schema, naming both versions", function()
    local url = server.create_database()
    local pg = open(url)
    assert(pg:run("UPDATE qc_schema SET version = 99"))
    pg:close()
    local codes, outs = run_together([[
      local ok, err = pcall(require("qc.db").get)
      io.write(tostring(ok), " ", type(err) == "table" and err.code .. " " .. err.message or tostring(err))]], url, 1)
    assert.equal(0, codes[1], outs[1])
    assert.truthy(outs[1]:find("false STORE_UNAVAILABLE the database is at schema version 99; this release knows up to", 1, true),
      outs[1])
  end)
end)

describe("qc.db on either backend", function()
  it("numbers a room's events 1..N, once each, when two processes of 25 tasks commit at once", function()
    local url = fresh_store()
    -- Made first: two processes creating one SQLite file in the same instant can find it
    -- locked while the other sets up its WAL (qc_store_open), which is not what this is about.
    open(url):close()
    local codes, outs = run_together([[
      local host = require "qc.host"
      local time = require "qc.time"
      local transcripts = require "qc.transcripts"
      local n, done, errs = 25, 0, {}
      for i = 1, n do
        host.spawn(function()
          local ok, err = pcall(transcripts.commit, "room one", "final", { identity = "a", text = "t" .. i },
            function(seq) return { type = "final", seq = seq } end)
          if not ok then errs[#errs + 1] = type(err) == "table" and err.message or tostring(err) end
          done = done + 1
        end)
      end
      while done < n do time.sleep(0.01) end
      io.write(table.concat(errs, "\n"))
      return #errs == 0]], url, 2)
    for i = 1, 2 do assert.equal(0, codes[i], outs[i]) end
    local db = open(url)
    local rows = assert(db:query("SELECT seq, body FROM events WHERE room = 'room one' ORDER BY seq"))
    assert.equal(50, #rows)
    for i, r in ipairs(rows) do
      assert.equal(i, r.seq)
      assert.same({ type = "final", seq = i }, require("cjson").decode(r.body))
    end
    assert.same({ last_seq = 50 }, db:first("SELECT last_seq FROM rooms WHERE name = 'room one'"))
    db:close()
  end)

  it("stores a webhook delivered to two servers at once once, and answers the other duplicate", function()
    local webhooks = require "support.webhooks"
    local url = server.pg_url and server.create_database() or nil
    local data = server.tmpdir() .. "/data"
    -- Two servers on one store: one PostgreSQL database, or (SQLite) one data file.
    local a = server.start { data = data, store_url = url }
    local b = server.start { data = data, store_url = url }
    local body = webhooks.event("room_started", "r-twice")
    local id = body:match('"id":"([^"]+)"')
    local results = {}
    local host, time = require "qc.host", require "qc.time"
    for i, s in ipairs { a, b } do
      host.spawn(function()
        local status, resp = webhooks.post(s, body)
        results[i] = { status = status, answer = type(resp) == "table" and resp.status or tostring(resp) }
      end)
    end
    while not (results[1] and results[2]) do time.sleep(0.01) end
    assert.equal(200, results[1].status)
    assert.equal(200, results[2].status)
    local answers = { results[1].answer, results[2].answer }
    table.sort(answers)
    assert.same({ "accepted", "duplicate" }, answers)
    local db = server.open_store(data, url)
    assert.same({ n = 1 }, db:first("SELECT count(*) AS n FROM webhook_events WHERE id = ?", id))
    db:close()
    a:stop()
    b:stop()
  end)
end)

-- A PostgreSQL this spec stops and starts: a cluster of its own (spec/support/pg.sh), never
-- the suite's shared one. The plain run has PostgreSQL installed; under SPEC_PG_URL it is
-- pending, as the plain run covers it.
local describe_own_pg = (not server.pg_url) and describe or pending

describe_own_pg("a server whose PostgreSQL goes away", function()
  local dir, url, port
  local PG_SH = server.source .. "/spec/support/pg.sh"
  local function pg(cmd)
    local status, out = server.run("sh " .. quote(PG_SH) .. " " .. cmd)
    assert(status == 0, out)
    return out
  end

  setup(function()
    dir = server.tmpdir()
    local out = pg("start " .. quote(dir))
    url = assert(out:match("postgres://%S+"), out)
    port = url:match(":(%d+)/")
  end)
  teardown(function()
    if dir then server.run("sh " .. quote(PG_SH) .. " stop " .. quote(dir) .. " --rm") end
  end)

  it("answers 503 STORE_UNAVAILABLE and reports degraded while it is away, and recovers", function()
    local time = require "qc.time"
    local with_password = url:gsub("^postgres://([^@/]+)@", "postgres://%1:hunter2@")
    local s = server.start { store_url = with_password }
    local function tokens(identity)
      return s:request("POST", "/tokens/generate",
        { room_name = "r-away", participant_identity = identity, participant_type = "candidate" })
    end
    assert.equal(200, (tokens("before")))
    local _, health = s:request("GET", "/health")
    assert.equal("ok", health.status)
    assert.same("postgres", health.store.backend)
    assert.equal("ok", health.store.state)
    assert.truthy(health.store.url:find(":***@127.0.0.1:" .. port, 1, true), health.store.url)
    assert.falsy(cjson_text(health):find("hunter2", 1, true))

    pg("stop " .. quote(dir))
    local status, body = tokens("while-away")
    assert.equal(503, status)
    assert.equal("STORE_UNAVAILABLE", body.error.code)
    status, body = s:request("GET", "/rooms/r-away/transcript")
    assert.equal(503, status)
    assert.equal("STORE_UNAVAILABLE", body.error.code)
    _, health = s:request("GET", "/health")
    assert.equal("degraded", health.status)
    assert.equal("down", health.store.state)
    assert.is_string(health.store.error)
    assert.falsy(s:log_text():find("hunter2", 1, true))

    pg("start " .. quote(dir) .. " " .. port)
    local deadline = time.monotonic() + 20
    repeat
      time.sleep(0.1)
      _, health = s:request("GET", "/health")
    until health.status == "ok" or time.monotonic() > deadline
    assert.equal("ok", health.status)
    assert.equal(200, (tokens("after")))
    assert.equal(0, s:stop())
    local db = open(url)
    local rows = assert(db:query("SELECT identity FROM tokens WHERE room = 'r-away' ORDER BY id"))
    assert.same({ { identity = "before" }, { identity = "after" } }, rows)
    db:close()
  end)

  it("starts while it is away: /health answers at once, degraded once a connection failed, then ok", function()
    local time = require "qc.time"
    pg("stop " .. quote(dir))
    local s = server.start { store_url = url }
    local _, health
    local deadline = time.monotonic() + 20
    repeat
      local t0 = time.monotonic()
      _, health = s:request("GET", "/health")
      -- not a speed test: a health check that waited on the store would take its 5 s
      assert.is_true(time.monotonic() - t0 < 4)
      assert.equal("postgres", health.store.backend)
      time.sleep(0.1)
    until health.store.state == "down" or time.monotonic() > deadline
    assert.equal("down", health.store.state)
    assert.equal("degraded", health.status)
    local status, body = s:request("POST", "/tokens/generate",
      { room_name = "r-late", participant_identity = "x", participant_type = "candidate" })
    assert.equal(503, status)
    assert.equal("STORE_UNAVAILABLE", body.error.code)
    pg("start " .. quote(dir) .. " " .. port)
    deadline = time.monotonic() + 20
    repeat
      time.sleep(0.1)
      _, health = s:request("GET", "/health")
    until health.status == "ok" or time.monotonic() > deadline
    assert.equal("ok", health.status)
    assert.equal(200, (s:request("POST", "/tokens/generate",
      { room_name = "r-late", participant_identity = "y", participant_type = "candidate" })))
    assert.equal(0, s:stop())
  end)
end)
