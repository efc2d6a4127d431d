-- Answers after records: a token answered 200 is already committed to the store, so a crash
-- (kill -9) right after the answers cannot lose it. Real server, real SQLite file (or its
-- PostgreSQL database under SPEC_PG_URL), opened after the kill.
local server = require "support.server"
local time = require "qc.time"
local cjson = require "cjson"

local STORM = server.source .. "/spec/support/token_storm.js"

-- The identities recorded in the server's token table (the file as the crash left it).
local function recorded(data_dir)
  local db = server.open_store(data_dir)
  local seen = {}
  for _, r in ipairs(assert(db:query("SELECT identity FROM tokens"))) do seen[r.identity] = true end
  db:close()
  return seen
end

-- Fires `concurrency` requests at a time, kill -9's the server right after `answers` 200s.
local function storm(s, answers, concurrency)
  local status, out = server.run(("node %s --url %s --pid %d --answers %d --concurrency %d"):format(
    server.quote(STORM), s.url, s.pid, answers, concurrency))
  assert(status == 0, "token_storm failed:\n" .. out)
  local result = cjson.decode(out:match("[^\n]*\n?$"))
  s.stopped = true -- killed: nothing left to stop
  server.wait_for(function() return server.read_file(s.exitfile) end, 10, "the killed server to exit")
  return result
end

-- The fixture routes plus one that records a token, then waits (as a handler waiting on
-- LiveKit would) before it answers: its record is committed while it still runs. Policies
-- may not reach the store, so the route's handler is trusted lib code, in a copy of the
-- shipped scripts (QC_SCRIPTS) with one handler added.
local WAITER = [[
local db = require "qc.db"
local time = require "qc.time"
return {
  record_then_wait = function(req)
    db.defer("INSERT INTO tokens (room, identity, role, issued_at, expires_at) VALUES (?, ?, ?, ?, ?)",
      "storm", req.json.identity, "candidate", 0, 0)
    time.sleep(0.2)
    return 200, nil, { recorded = req.json.identity }
  end,
}
]]

---@return string policies_dir, string scripts_dir
local function policies_with_waiting_writer()
  local scripts = server.scripts_with { spec_waiter = WAITER }
  local dir = server.fixture_policies(
    '  { "POST", "/record-then-wait", require("qc.handlers.spec_waiter").record_then_wait },\n')
  return dir, scripts
end

describe("answers after records", function()
  it("has committed every token it answered 200 when it is killed right after the answers", function()
    -- One crash hits the window between answer and commit about half the time on a build
    -- that answers first: four in a row, on the same file, make a miss near certain.
    local data = server.tmpdir() .. "/data"
    local answered, missing = 0, {}
    for round = 1, 4 do
      local s = server.start { data = data }
      -- The first request creates the schema; the storm then only adds rows.
      assert.equal(200, (s:request("POST", "/tokens/generate", {
        room_name = "storm", participant_identity = "warm-up", participant_type = "candidate" })))
      local result = storm(s, 3000, 512)
      assert.is_true(result.killed)
      assert.is_true(#result.answered >= 3000, "too few answers: " .. cjson.encode(result.statuses))
      local seen = recorded(data)
      for _, identity in ipairs(result.answered) do
        if not seen[identity] then missing[#missing + 1] = ("round %d: %s"):format(round, identity) end
      end
      answered = answered + #result.answered
    end
    assert.equal(0, #missing, ("%d of %d tokens answered 200 are not in the store (first: %s)"):format(
      #missing, answered, tostring(missing[1])))
  end)

  it("has not answered 200 for a token whose commit waits on the write lock when it is killed", function()
    -- A second connection holds SQLite's write lock (on PostgreSQL, an exclusive lock on
    -- tokens), so the group commit waits (on SQLite up to the 5 s busy timeout): a server that
    -- answers before it commits has answered that batch by then, and the kill after its first
    -- answer loses those rows every time.
    local s = server.start {}
    assert.equal(200, (s:request("POST", "/tokens/generate", {
      room_name = "storm", participant_identity = "warm-up", participant_type = "candidate" })))
    local db = s:db()
    local out = server.tmpdir() .. "/storm.json"
    local function storm_while_locked()
      assert(os.execute(("node %s --url %s --pid %d --answers 1 --concurrency 64 > %s 2>&1 &"):format(
        server.quote(STORM), s.url, s.pid, server.quote(out))))
      time.sleep(1.5) -- the lock is held meanwhile; then the commit can go
    end
    if server.is_pg(db) then
      assert(db:transaction(function(tx)
        assert(tx:exec("LOCK TABLE tokens IN EXCLUSIVE MODE"))
        storm_while_locked()
      end))
    else
      assert(db:exec("BEGIN IMMEDIATE"))
      storm_while_locked()
      assert(db:exec("ROLLBACK"))
    end
    local line = server.wait_for(function()
      local text = server.read_file(out) or ""
      return text:match("{[^\n]*}%s*$")
    end, 30, "the storm to end")
    s.stopped = true
    server.wait_for(function() return server.read_file(s.exitfile) end, 10, "the killed server to exit")
    local result = cjson.decode(line)
    assert.is_true(result.killed)
    assert.is_true(#result.answered >= 1, "nothing answered 200: " .. cjson.encode(result.statuses))
    local seen = recorded(s.data)
    db:close()
    local missing = {}
    for _, identity in ipairs(result.answered) do
      if not seen[identity] then missing[#missing + 1] = identity end
    end
    assert.equal(0, #missing, ("%d of %d tokens answered 200 are not in the store"):format(#missing, #result.answered))
  end)

  it("answers 503 when the commit of its record failed while the handler was still waiting", function()
    local policies, scripts = policies_with_waiting_writer()
    local s = server.start { policies = policies, env = { QC_SCRIPTS = scripts } }
    assert.equal(200, (s:request("POST", "/record-then-wait", { identity = "first" })))
    local db = s:db()
    server.refuse_inserts(db, "tokens")
    local status, body = s:request("POST", "/record-then-wait", { identity = "second" })
    assert.equal(503, status)
    assert.equal("STORE_UNAVAILABLE", body.error.code)
    server.allow_inserts(db, "tokens")
    assert.equal(200, (s:request("POST", "/record-then-wait", { identity = "third" })))
    local n = db:first("SELECT count(*) AS n FROM tokens WHERE identity IN ('first', 'second', 'third')").n
    db:close()
    assert.equal(2, n)
    s:stop()
  end)

  it("answers 503 STORE_UNAVAILABLE, not 200, when the commit of its token fails", function()
    local s = server.start {}
    assert.equal(200, (s:request("POST", "/tokens/generate", {
      room_name = "storm", participant_identity = "warm-up", participant_type = "candidate" })))
    -- From outside, as a broken disk or a full one would: every insert into tokens fails.
    local db = s:db()
    server.refuse_inserts(db, "tokens")
    local status, body = s:request("POST", "/tokens/generate", {
      room_name = "storm", participant_identity = "cand-1", participant_type = "candidate" })
    assert.equal(503, status)
    assert.equal("STORE_UNAVAILABLE", body.error.code)
    assert.is_nil(body.token)
    assert.matches("deferred write failed", s:wait_log("deferred write failed"))
    -- Once the store takes writes again, so does the server; the failed batch stays dropped.
    server.allow_inserts(db, "tokens")
    assert.equal(200, (s:request("POST", "/tokens/generate", {
      room_name = "storm", participant_identity = "cand-2", participant_type = "candidate" })))
    local rows = assert(db:query("SELECT identity FROM tokens ORDER BY id"))
    db:close()
    local ids = {}
    for _, r in ipairs(rows) do ids[#ids + 1] = r.identity end
    assert.same({ "warm-up", "cand-2" }, ids)
    s:stop()
  end)

  it("leaves nothing of a webhook it did not answer 200, so LiveKit's retry applies it", function()
    local hooks = require "support.webhooks"
    local s = server.start {}
    local body = hooks.event("participant_joined", "dur-wh",
      { participant = { sid = "PA_dur", identity = "p-dur", name = "P", kind = "STANDARD" } })
    -- The store is opened and migrated on first use: one request first, so the tables exist.
    assert.equal(200, (s:request("POST", "/tokens/generate", {
      room_name = "dur-wh", participant_identity = "warm-up", participant_type = "candidate" })))
    -- The joined event cannot be stored: the delivery as a whole must not count as received.
    local db = s:db()
    server.refuse_inserts(db, "events")
    local status = hooks.post(s, body)
    assert.is_true(status >= 500, "status " .. tostring(status))
    server.allow_inserts(db, "events")
    local status2, res = hooks.post(s, body)
    assert.equal(200, status2)
    assert.equal("accepted", res.status)
    local rows = assert(db:query("SELECT kind, identity FROM events WHERE room = ? ORDER BY seq", "dur-wh"))
    local ids = assert(db:query("SELECT id FROM webhook_events WHERE room = ?", "dur-wh"))
    db:close()
    assert.same({ { kind = "participant", identity = "p-dur" } }, rows)
    assert.equal(1, #ids)
    -- And a third delivery of it is the duplicate it now is.
    local _, res3 = hooks.post(s, body)
    assert.equal("duplicate", res3.status)
    s:stop()
  end)
end)
