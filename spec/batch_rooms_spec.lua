-- scripts/batch_rooms.lua end to end: a CSV, the real binary, a fake LiveKit.
local server = require "support.server"
local lk = require "support.fake_livekit"
local cjson = require "cjson"
local csv = require "qc.csv"

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
    local vars = { "QC_ENV_FILE=/nonexistent", "QC_DATA=" .. server.quote(dir .. "/data") }
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

  local GOOD = "room_name,interviewer,candidate,scheduled_at\n" ..
    "interview-a,Ada Lovelace,Bob,2026-12-01T14:00:00Z\n" ..
    '"interview-b","Hopper, Grace",Carl,2026-12-02\n'

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
    assert.same({ scheduled_at = "2026-12-01T14:00:00Z", interviewer = "Ada Lovelace", candidate = "Bob" }, meta)
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
    local vars = { "QC_ENV_FILE=/nonexistent", "QC_DATA=" .. server.quote(dir .. "/data") }
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

  it("documents its columns with --help", function()
    local code, out = batch("--help")
    assert.equal(0, code)
    assert.matches("room_name", out)
    assert.matches("scheduled_at", out)
    assert.matches("%-%-dry%-run", out)
  end)
end)
