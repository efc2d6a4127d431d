-- scripts/batch_rooms.lua end to end: a CSV, the real binary, a fake LiveKit.
local server = require "support.server"
local lk = require "support.fake_livekit"
local cjson = require "cjson"
local csv = require "qc.csv"
local time = require "qc.time"

local SCRIPT = server.source .. "/scripts/batch_rooms.lua"

describe("batch room creation", function()
  local fake, dir

  setup(function()
    fake = lk.start()
  end)
  teardown(function() fake:stop() end)
  before_each(function()
    fake:reset()
    dir = server.tmpdir()
  end)

  -- Runs the script; returns exit code, stdout, stderr.
  local function batch(args, env)
    local vars = { "QC_ENV_FILE=/nonexistent", server.store_env_text(dir .. "/data") }
    for k, v in pairs(fake:env(env)) do vars[#vars + 1] = k .. "=" .. server.quote(v) end
    local cmd = ("( env %s %s run %s %s > %s 2> %s )"):format(table.concat(vars, " "), server.quote(server.bin),
      server.quote(SCRIPT), args, server.quote(dir .. "/out"), server.quote(dir .. "/err"))
    local code = server.run(cmd)
    return code, server.read_file(dir .. "/out") or "", server.read_file(dir .. "/err") or ""
  end

  local function input(text)
    local path = dir .. "/interviews.csv"
    server.write_file(path, text)
    return path
  end

  local function rows_of(out)
    local records = csv.parse(out)
    local header, rows = records[1], {}
    for i = 2, #records do
      local r = {}
      for j, name in ipairs(header) do r[name] = records[i][j] end
      rows[#rows + 1] = r
    end
    return rows
  end

  -- Starts the script in the background; returns its pid (the quantcoach process itself).
  local function batch_bg(args)
    local vars = { "QC_ENV_FILE=/nonexistent", server.store_env_text(dir .. "/data") }
    for k, v in pairs(fake:env()) do vars[#vars + 1] = k .. "=" .. server.quote(v) end
    server.write_file(dir .. "/bg.sh", ("echo $$ > %s\nexec env %s %s run %s %s > %s 2> %s\n"):format(
      server.quote(dir .. "/bg.pid"), table.concat(vars, " "), server.quote(server.bin), server.quote(SCRIPT), args,
      server.quote(dir .. "/bg.out"), server.quote(dir .. "/bg.err")))
    os.remove(dir .. "/bg.pid")
    server.run("sh " .. server.quote(dir .. "/bg.sh") .. " > /dev/null 2>&1 &")
    return server.wait_for(function() return tonumber(server.read_file(dir .. "/bg.pid") or "") end, 10, "the batch pid")
  end

  local function kill9(pid)
    os.execute(("kill -9 %d"):format(pid))
    server.wait_for(function() return not os.execute(("kill -0 %d 2>/dev/null"):format(pid)) end, 10,
      "the killed batch to go")
  end

  -- Rooms we hold as created (and not ended), as "name sid" lines in name order.
  local function our_rooms()
    local db = server.open_store(dir .. "/data")
    local has_state = server.is_pg(db) -- PostgreSQL's schema is new: it has rooms.state
    if not has_state then
      for _, c in ipairs(assert(db:query("PRAGMA table_info(rooms)"))) do
        if c.name == "state" then has_state = true end
      end
    end
    local rows = assert(db:query("SELECT name, sid FROM rooms WHERE ended_at IS NULL" ..
      (has_state and " AND state = 'created'" or "") .. " ORDER BY name"))
    db:close()
    local out = {}
    for i, r in ipairs(rows) do out[i] = r.name .. " " .. tostring(r.sid) end
    return out
  end

  local function livekit_rooms()
    local list = fake:rooms()
    table.sort(list, function(a, b) return a.name < b.name end)
    local out = {}
    for i, r in ipairs(list) do out[i] = r.name .. " " .. r.sid end
    return out
  end

  local function has_room(name)
    for _, r in ipairs(fake:rooms()) do if r.name == name then return true end end
    return false
  end

  local function called(method, room)
    for _, c in ipairs(fake:calls(method)) do
      if c.body and (c.body.name == room or c.body.room == room) then return true end
    end
    return false
  end

  -- Interviews in ten minutes and today: their tokens are valid now, so the SDK takes them.
  local SOON = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 600)
  local GOOD = "room_name,interviewer,candidate,scheduled_at\n" ..
    "interview-a,Ada Lovelace,Bob," .. SOON .. "\n" ..
    '"interview-b","Hopper, Grace",Carl,' .. os.date("!%Y-%m-%d") .. '\n'

  it("creates every room with tokens and reports them as CSV", function()
    local code, out, err = batch(input(GOOD))
    assert.equal(0, code, err)
    local rows = rows_of(out)
    assert.equal(2, #rows)
    assert.same({ "2", "interview-a", "created" }, { rows[1].line, rows[1].room_name, rows[1].status })
    assert.equal("created", rows[2].status)
    assert.equal(fake.url, rows[1].url)
    local verified = lk.verify { rows[1].interviewer_token, rows[1].candidate_token, rows[2].agent_token }
    assert.is_true(verified[1].ok)
    assert.equal("Ada Lovelace", verified[1].claims.name)
    assert.equal("interview-a", verified[1].claims.video.room)
    assert.equal("candidate", verified[2].claims.sub)
    assert.is_true(verified[3].claims.video.hidden)
    local names = {}
    for _, r in ipairs(fake:rooms()) do names[#names + 1] = r.name end
    table.sort(names)
    assert.same({ "interview-a", "interview-b" }, names)
    -- The interview's details travel as room metadata.
    local created = fake:calls("CreateRoom")
    assert.equal(2, #created)
    local meta
    for _, call in ipairs(created) do
      if call.body.name == "interview-a" then meta = cjson.decode(call.body.metadata) end
    end
    assert.same({ scheduled_at = SOON, interviewer = "Ada Lovelace", candidate = "Bob" }, meta)
  end)

  it("reports bad and duplicate rows with their line numbers and still creates the rest", function()
    local code, out = batch(input("room_name,interviewer\n" ..
      "interview-c,A\nbad room,B\ninterview-c,C\n,D\ninterview-d,E\n"))
    assert.equal(1, code)
    local rows = rows_of(out)
    assert.equal(5, #rows)
    assert.same({ "created", "error", "error", "error", "created" },
      { rows[1].status, rows[2].status, rows[3].status, rows[4].status, rows[5].status })
    assert.equal("3", rows[2].line)
    assert.matches("room_name: may contain only", rows[2].error)
    assert.matches("duplicate of line 2", rows[3].error)
    assert.matches("room_name: must not be empty", rows[4].error)
    assert.equal(2, #fake:calls("CreateRoom"))
  end)

  it("is idempotent: a re-run reports existing rooms and creates nothing twice", function()
    assert.equal(0, (batch(input(GOOD))))
    assert.equal(2, #fake:calls("CreateRoom"))
    local code, out = batch(input(GOOD))
    assert.equal(0, code)
    local rows = rows_of(out)
    assert.same({ "exists", "exists" }, { rows[1].status, rows[2].status })
    assert.is_true(lk.verify({ rows[1].candidate_token })[1].ok, "an existing room still gets join tokens")
    assert.equal(2, #fake:calls("CreateRoom"))
  end)

  it("creates nothing in a dry run", function()
    local code, out = batch("--dry-run " .. input(GOOD))
    assert.equal(0, code)
    local rows = rows_of(out)
    assert.same({ "would_create", "would_create" }, { rows[1].status, rows[2].status })
    assert.equal(0, #fake:calls("CreateRoom"))
  end)

  it("writes JSON to --out", function()
    local out_path = dir .. "/result.json"
    local code, stdout, err = batch(input(GOOD) .. " --out " .. out_path)
    assert.equal(0, code)
    assert.equal("", stdout)
    local doc = cjson.decode(server.read_file(out_path))
    assert.equal(2, #doc.rows)
    assert.equal("created", doc.rows[1].status)
    assert.matches("batch_rooms: 2/2", err, 1, true)
    assert.matches("2 rows, 0 failed", err, 1, true)
  end)

  it("reports every row as failed when LiveKit is down", function()
    local code, out = batch(input(GOOD), { LIVEKIT_URL = "ws://127.0.0.1:1" })
    assert.equal(1, code)
    local rows = rows_of(out)
    assert.equal("error", rows[1].status)
    assert.matches("LiveKit unreachable at http://127%.0%.0%.1:1/", rows[1].error)
  end)

  it("refuses a file without a room_name column or a malformed CSV", function()
    local code, _, err = batch(input("name,interviewer\nx,y\n"))
    assert.equal(2, code)
    assert.matches("no room_name column", err)
    code, _, err = batch(input('room_name\n"open\n'))
    assert.equal(2, code)
    assert.matches("line 2: a quoted field is not closed", err)
    code, _, err = batch(dir .. "/missing.csv")
    assert.equal(2, code)
    assert.matches("missing%.csv", err)
  end)

  it("draws a progress bar when stderr is a terminal", function()
    local vars = { "QC_ENV_FILE=/nonexistent", server.store_env_text(dir .. "/data") }
    for k, v in pairs(fake:env()) do vars[#vars + 1] = k .. "=" .. server.quote(v) end
    -- script(1) runs the command on a pseudo-terminal.
    local inner = ("env %s %s run %s %s --out %s"):format(table.concat(vars, " "), server.bin, SCRIPT,
      input(GOOD), dir .. "/result.csv")
    local code, out = server.run("script -qec " .. server.quote(inner) .. " /dev/null")
    assert.equal(0, code, out)
    assert.matches("\r%[#+%.*%] 1/2", out)
    assert.matches("\r%[#+%] 2/2", out)
    assert.equal(3, #csv.parse(server.read_file(dir .. "/result.csv")))
  end)

  describe("after a kill -9", function()
    local FIVE = "room_name,interviewer\nk-a,A\nk-b,B\nk-c,C\nk-d,D\nk-e,E\n"

    -- Each case stalls one CreateRoom, kills the batch while it waits, re-runs it, and then
    -- LiveKit's rooms and ours must be the same, sid for sid, with tokens for every row.
    local cases = {
      { what = "between LiveKit creating the room and our record of it", room = "k-c", when = "after", j = 1 },
      { what = "before LiveKit has the room", room = "k-c", when = "before", j = 1 },
      { what = "with other rooms in flight", room = "k-e", when = "after", j = 3 },
    }
    for _, case in ipairs(cases) do
      it("re-running leaves LiveKit's rooms and ours exactly the same: killed " .. case.what, function()
        local path = input(FIVE)
        fake:hold("CreateRoom", case.room, 60000, case.when)
        local pid = batch_bg(("-j %d %s --out %s"):format(case.j, path, dir .. "/first.csv"))
        server.wait_for(function()
          if case.when == "after" then return has_room(case.room) end
          return called("CreateRoom", case.room)
        end, 20, "the stalled CreateRoom")
        kill9(pid)
        fake:hold() -- LiveKit is well again

        local code, out, err = batch(path)
        assert.equal(0, code, err)
        local rows = rows_of(out)
        assert.equal(5, #rows)
        for _, r in ipairs(rows) do
          assert.is_true(r.status == "created" or r.status == "exists", r.room_name .. ": " .. r.status)
          assert.is_true(lk.verify({ r.candidate_token })[1].ok, r.room_name .. " has a join token")
        end
        -- The stalled room was never reported to anyone: this run is the one that creates it.
        for _, r in ipairs(rows) do
          if r.room_name == case.room then assert.equal("created", r.status) end
        end
        assert.same(livekit_rooms(), our_rooms())
        assert.equal(5, #our_rooms())
        -- A third run changes nothing.
        code, out = batch(path)
        assert.equal(0, code)
        for _, r in ipairs(rows_of(out)) do assert.equal("exists", r.status) end
        assert.same(livekit_rooms(), our_rooms())
      end)
    end

    it("adopts a room LiveKit already has under a row's name, so ours still match LiveKit's", function()
      fake:add_participant { room = "k-foreign", identity = "cand-1" } -- joining creates a room
      local code, out, err = batch(input("room_name\nk-foreign\nk-new\n"))
      assert.equal(0, code, err)
      local rows = rows_of(out)
      assert.same({ "exists", "created" }, { rows[1].status, rows[2].status })
      assert.same(livekit_rooms(), our_rooms())
      assert.equal(1, #fake:calls("CreateRoom"), "the room LiveKit had is not created again")
    end)
  end)

  it("makes tokens valid around scheduled_at, not around the run", function()
    local now = os.time()
    local soon = now + 600
    local next_month = now + 30 * 24 * 3600
    local iso = function(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t) end
    local code, out, err = batch(input("room_name,scheduled_at\n" ..
      "w-soon," .. iso(soon) .. "\nw-later," .. iso(next_month) .. "\nw-offset,2030-01-15T14:00:00+02:00\n" ..
      "w-past," .. iso(now - 2 * 24 * 3600) .. "\n"))
    assert.equal(1, code, err)
    local rows = rows_of(out)
    -- An interview in ten minutes: the SDK takes its tokens now, and they last 3 h past the start.
    local r = lk.verify({ rows[1].interviewer_token, rows[1].candidate_token, rows[1].agent_token })
    for i = 1, 3 do
      assert.is_true(r[i].ok, r[i].error)
      assert.equal(soon - 30 * 60, r[i].claims.nbf)
      assert.equal(soon + 3 * 3600, r[i].claims.exp)
    end
    -- Next month: not yet valid (the SDK honours nbf), and valid from 30 min before the start.
    r = lk.verify({ rows[2].candidate_token })[1]
    assert.is_false(r.ok)
    assert.matches("nbf", r.error)
    r = lk.verify({ rows[2].candidate_token }, { clock_tolerance = 40 * 24 * 3600 })[1]
    assert.is_true(r.ok, r.error)
    assert.equal(next_month - 30 * 60, r.claims.nbf)
    assert.equal(next_month + 3 * 3600, r.claims.exp)
    -- A UTC offset is honoured: 14:00+02:00 is 12:00Z.
    r = lk.verify({ rows[3].agent_token }, { clock_tolerance = 10 * 366 * 24 * 3600 })[1]
    assert.is_true(r.ok, r.error)
    assert.equal(1894708800 - 30 * 60, r.claims.nbf) -- date -u -d 2030-01-15T12:00:00Z +%s
    -- Two days ago: its tokens would be dead on arrival, so the row is an error.
    assert.equal("error", rows[4].status)
    assert.matches("scheduled_at", rows[4].error)
  end)

  it("reports an impossible date or a row with the wrong number of fields as a row error with its line", function()
    local code, out, err = batch(input("room_name,interviewer,candidate,scheduled_at\n" ..
      "d-ok,A,B,2030-02-28T10:00:00Z\n" ..
      "d-month,A,B,2026-13-40T25:00:00Z\n" ..
      "d-feb,A,B,2031-02-29T10:00:00Z\n" ..
      "d-short,A\n" ..
      "d-long,A,B,2030-02-28T10:00:00Z,extra\n"))
    assert.equal(1, code, err)
    local rows = rows_of(out)
    assert.equal(5, #rows)
    assert.same({ "created", "error", "error", "error", "error" },
      { rows[1].status, rows[2].status, rows[3].status, rows[4].status, rows[5].status })
    assert.same({ "2", "3", "4", "5", "6" }, { rows[1].line, rows[2].line, rows[3].line, rows[4].line, rows[5].line })
    assert.matches("scheduled_at", rows[2].error)
    assert.matches("scheduled_at", rows[3].error)
    assert.matches("2 fields, the header has 4", rows[4].error)
    assert.matches("5 fields, the header has 4", rows[5].error)
    assert.equal("d-short", rows[4].room_name)
    assert.equal(1, #fake:calls("CreateRoom"))
  end)

  it("refuses room names that cannot be a URL path segment, and names that are not clean UTF-8", function()
    local code, out = batch(input("room_name,interviewer,candidate\n.,A,B\n..,A,B\nu-bad,\255\254,B\n" ..
      "u-ctl,A,\"x\1y\"\nu-ok,Zoë,Łukasz\n"))
    assert.equal(1, code)
    local rows = rows_of(out)
    assert.same({ "error", "error", "error", "error", "created" },
      { rows[1].status, rows[2].status, rows[3].status, rows[4].status, rows[5].status })
    assert.matches("room_name", rows[1].error)
    assert.matches("room_name", rows[2].error)
    assert.matches("interviewer", rows[3].error)
    assert.matches("candidate", rows[4].error)
    assert.equal("Zoë", lk.verify({ rows[5].interviewer_token })[1].claims.name)
    assert.equal(1, #fake:calls("CreateRoom"))
  end)

  it("names the failed rows on a terminal even when the results go to --out", function()
    local vars = { "QC_ENV_FILE=/nonexistent", server.store_env_text(dir .. "/data") }
    for k, v in pairs(fake:env()) do vars[#vars + 1] = k .. "=" .. server.quote(v) end
    local inner = ("env %s %s run %s %s --out %s"):format(table.concat(vars, " "), server.bin, SCRIPT,
      input("room_name\nt-good\nbad room\nt-good2\n"), dir .. "/result.csv")
    local code, out = server.run("script -qec " .. server.quote(inner) .. " /dev/null")
    assert.equal(1, code, out)
    assert.matches("line 3[^\n]*bad room[^\n]*may contain only", out)
    assert.is_nil(out:find("t-good2", 1, true), "rows that worked are not listed")
  end)

  it("refuses an --out it cannot write before it creates any room", function()
    local bad = dir .. "/nonexistent/dir/x.csv"
    local code, out, err = batch(input(GOOD) .. " --out " .. server.quote(bad))
    assert.equal(2, code, err)
    assert.equal("", out)
    local lines = {}
    for l in err:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(1, #lines, err)
    assert.truthy(err:find(bad, 1, true), err)
    assert.equal(0, #fake:calls("CreateRoom"), "no room created")
    assert.same({}, fake:rooms())
  end)

  it("clears the progress bar before a log line or a failed row on a terminal, and names an empty room_name", function()
    fake:add_participant { room = "t-foreign", identity = "cand-1" } -- adopted, with a warn log line
    local vars = { "QC_ENV_FILE=/nonexistent", server.store_env_text(dir .. "/data") }
    for k, v in pairs(fake:env()) do vars[#vars + 1] = k .. "=" .. server.quote(v) end
    local inner = ("env %s %s run %s %s --out %s -j 1"):format(table.concat(vars, " "), server.bin, SCRIPT,
      input("room_name,interviewer\nt-one,A\nt-foreign,B\n,C\nt-two,D\n"), dir .. "/result.csv")
    local code, out = server.run("script -qec " .. server.quote(inner) .. " /dev/null")
    assert.equal(1, code, out)
    assert.truthy(out:find("\r\27%[Kwarn rooms adopted"), out)
    -- Every log line and row message starts on a cleared line: none follows the bar.
    assert.is_nil(out:find("%d/%d[^\r\n]", 1), out)
    assert.is_nil(out:find("nil", 1, true), out)
    assert.truthy(out:find("line 4 (no room_name): room_name: must not be empty", 1, true), out)
    assert.matches("\r%[#+%] 4/4\r?\n", out)
  end)

  it("exits 2 and names the option on a usage error, and its help fits 80 columns", function()
    local cases = {
      { "-j 0 x.csv", "%-%-concurrency" },
      { "--concurrency -5 x.csv", "%-%-concurrency" },
      { "--bogus x.csv", "%-%-bogus" },
      { "", "csv" },
    }
    for _, c in ipairs(cases) do
      local code, _, err = batch(c[1])
      assert.equal(2, code, c[1] .. ": " .. err)
      assert.matches(c[2], err)
    end
    local code, out = batch("--help")
    assert.equal(0, code)
    for line in out:gmatch("[^\n]*") do
      assert.is_true(utf8.len(line) <= 80, "too wide: " .. line)
    end
  end)

  it("documents its columns with --help", function()
    local code, out = batch("--help")
    assert.equal(0, code)
    assert.matches("room_name", out)
    assert.matches("scheduled_at", out)
    assert.matches("%-%-dry%-run", out)
  end)
end)
