-- The command line and the operator's settings: usage errors, help texts, misspelt or
-- unknown setting names, LiveKit's dev keys against a remote LiveKit, log settings, and
-- what a `quantcoach run` script sees (README, Scripts).
local server = require "support.server"

local quote = server.quote
local SRC = server.source

-- Runs quantcoach with ARGS (a string) and extra environment; no .env unless env says so.
-- Returns exit status, stdout, stderr.
local function qc(args, env)
  local dir = server.tmpdir()
  local vars = { "QC_ENV_FILE=/nonexistent" }
  for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. quote(v) end
  -- timeout: a server that starts when it should have refused must not hang the spec
  local status = server.run(("(timeout -s KILL 60 env %s %s %s > %s 2> %s < /dev/null)"):format(table.concat(vars, " "),
    quote(server.bin), args, quote(dir .. "/out"), quote(dir .. "/err")))
  return status, server.read_file(dir .. "/out") or "", server.read_file(dir .. "/err") or ""
end

local function count(hay, needle)
  local n, i = 0, 1
  while true do
    local s, e = hay:find(needle, i, true)
    if not s then return n end
    n, i = n + 1, e + 1
  end
end

local CHECK = "check --policies " .. quote(SRC .. "/policies")

describe("usage errors", function()
  local cases = {
    { "serve --bogus", "unknown option --bogus" },
    { "serve --listen", "--listen needs a value" },
    { "serve --listen=", "--listen needs a value" },
    { "serve --listen nope", "--listen" },
    { "serve --listen 127.0.0.1:99999", "--listen" },
    { "serve --data", "--data needs a value" },
    { "serve extra", "unexpected argument extra" },
    { "check --listen 127.0.0.1:1", "unknown option --listen" },
    { "check --data /tmp", "unknown option --data" },
    { "run --bogus x.lua", "unknown option --bogus" },
    { "token --bogus", "--bogus" },
    { "token --room r", "--identity" },
    { "reload --bogus", "--bogus" },
    { "frobnicate", 'unknown command "frobnicate"' },
  }
  for _, c in ipairs(cases) do
    it(("exit 2 and name the option: quantcoach %s"):format(c[1]), function()
      local status, out, err = qc(c[1])
      assert.equal(2, status, out .. err)
      assert.truthy(err:find(c[2], 1, true), err)
    end)
  end

  it("print the usage and exit 2 without a command, or without a script for run", function()
    local status, _, err = qc("")
    assert.equal(2, status)
    assert.truthy(err:find("usage: quantcoach COMMAND", 1, true), err)
    status, _, err = qc("run")
    assert.equal(2, status)
    assert.truthy(err:find("usage: quantcoach run SCRIPT", 1, true), err)
  end)

  it("are reported before a broken setting is", function()
    local status, _, err = qc("serve --bogus", { QC_MAX_BODY = "lots" })
    assert.equal(2, status)
    assert.truthy(err:find("--bogus", 1, true), err)
  end)
end)

describe("help", function()
  for _, args in ipairs { "--help", "-h", "help", "serve --help", "check --help", "run --help", "token --help",
    "reload --help" } do
    it(("goes to stdout, exits 0 and fits 80 columns: quantcoach %s"):format(args), function()
      local status, out, err = qc(args)
      assert.equal(0, status, err)
      assert.truthy(out:find("^[Uu]sage: quantcoach"), out)
      for line in out:gmatch("[^\n]*") do
        assert.is_true(#line <= 80, ("%d columns: %s"):format(#line, line))
      end
    end)
  end

  it("answers even when a setting is broken", function()
    local status, out = qc("serve --help", { QC_LOG_LEVEL = "loud" })
    assert.equal(0, status)
    assert.truthy(out:find("--listen HOST:PORT", 1, true))
  end)
end)

describe("setting names", function()
  it("warn once about a misspelt name in the environment, naming the likely one", function()
    local status, out, err = qc(CHECK, { LIVEKIT_SECRET = "abc" })
    assert.equal(0, status, out .. err)
    assert.equal(1, count(err, "warn config unknown setting name=LIVEKIT_SECRET did_you_mean=LIVEKIT_API_SECRET\n"), err)
  end)

  it("warn about a misspelt name in .env the same way", function()
    local dir = server.tmpdir()
    server.write_file(dir .. "/.env", "QC_LOGLEVEL=debug\nQC_FROBNICATE=1\n")
    local status, out, err = qc(CHECK, { QC_ENV_FILE = dir .. "/.env" })
    assert.equal(0, status, out .. err)
    assert.equal(1, count(err, "warn config unknown setting name=QC_LOGLEVEL did_you_mean=QC_LOG_LEVEL\n"), err)
    assert.equal(1, count(err, "warn config unknown setting name=QC_FROBNICATE\n"), err)
  end)

  it("leave other prefixes alone", function()
    local _, _, err = qc(CHECK, { QCX_THING = "1", MY_LIVEKIT_SECRET = "x" })
    assert.falsy(err:find("unknown setting", 1, true), err)
  end)

  -- Every name the README documents and every name the sources read must be known, or an
  -- operator who sets it is told it does nothing.
  it("know every setting the README's table lists and every name the sources read", function()
    local names, seen = {}, {}
    local function add(n)
      if n:match("^QC_") or n:match("^LIVEKIT_") or n:match("^ELEVENLABS_") then
        if not seen[n] then seen[n], names[#names + 1] = true, n end
      end
    end
    local readme = assert(server.read_file(SRC .. "/README.md"))
    local table_part = readme:match("\n## Configuration\n(.-)\n## ")
    assert.truthy(table_part, "README has a Configuration section")
    for row in table_part:gmatch("\n| ([^|]+) |") do
      for n in row:gmatch("`([%w_]+)`") do add(n) end
    end
    -- (spec/c's made-up QC_T_* names are test data, not settings)
    local p = io.popen(("cd %s && { find runtime bindings -name '*.c'; find scripts spec -name '*.lua' | grep -v node_modules; }")
      :format(quote(SRC)))
    local files = p:read("a")
    p:close()
    for f in files:gmatch("[^\n]+") do
      local text = server.read_file(SRC .. "/" .. f) or ""
      for n in text:gmatch('getenv%(%s*"([%w_]+)"') do add(n) end
      for n in text:gmatch('getenv%s*"([%w_]+)"') do add(n) end
    end
    assert.is_true(#names >= 20, table.concat(names, " "))
    local env = {}
    for _, n in ipairs(names) do env[n] = "" end -- empty is "unset" for every setting
    local status, out, err = qc(CHECK, env)
    assert.equal(0, status, out .. err)
    assert.falsy(err:find("unknown setting", 1, true), err)
  end)
end)

describe("LiveKit's dev keys", function()
  local REMOTE = "wss://lk.example.com"

  it("refuse to start against a remote LIVEKIT_URL, in one line naming both variables", function()
    local status, out, err = qc("serve --listen 127.0.0.1:0 --data " .. quote(server.tmpdir()), { LIVEKIT_URL = REMOTE })
    assert.equal(2, status, out .. err)
    local lines = {}
    for l in err:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(1, #lines, err)
    assert.truthy(err:find("LIVEKIT_API_KEY/LIVEKIT_API_SECRET", 1, true), err)
    assert.truthy(err:find("QC_ALLOW_DEV_KEYS=1", 1, true), err)
    assert.falsy(err:find("listening", 1, true), err)
  end)

  it("refuse a token signed with the dev secret because LIVEKIT_API_SECRET was misspelt", function()
    local status, out, err = qc("token --room r --identity i --role candidate",
      { LIVEKIT_URL = REMOTE, LIVEKIT_API_KEY = "APIrealkey", LIVEKIT_SECRET = "the-real-secret" })
    assert.equal(2, status, out .. err)
    assert.equal("", out)
    assert.truthy(err:find("unknown setting name=LIVEKIT_SECRET did_you_mean=LIVEKIT_API_SECRET", 1, true), err)
    assert.truthy(err:find("LIVEKIT_API_KEY/LIVEKIT_API_SECRET", 1, true), err)
  end)

  it("start with a warning when QC_ALLOW_DEV_KEYS=1", function()
    local s = server.start { env = { LIVEKIT_URL = REMOTE, QC_ALLOW_DEV_KEYS = "1" } }
    local log = s:log_text()
    s:stop()
    assert.truthy(log:find("warn config LiveKit dev keys with a remote LIVEKIT_URL", 1, true), log)
  end)

  it("are fine against a LiveKit on this machine", function()
    local status, out, err = qc(CHECK, { LIVEKIT_URL = "ws://localhost:7880" })
    assert.equal(0, status, out .. err)
    assert.falsy(err:find("dev keys", 1, true), err)
  end)
end)

describe("log settings", function()
  it("refuse a QC_LOG_LEVEL they do not know, naming the allowed values", function()
    local status, _, err = qc(CHECK, { QC_LOG_LEVEL = "verbose" })
    assert.equal(2, status, err)
    assert.truthy(err:find("QC_LOG_LEVEL", 1, true) and err:find("debug, info, warn or error", 1, true), err)
  end)

  it("refuse a QC_LOG_FORMAT they do not know, naming the allowed values", function()
    local status, _, err = qc(CHECK, { QC_LOG_FORMAT = "xml" })
    assert.equal(2, status, err)
    assert.truthy(err:find("QC_LOG_FORMAT", 1, true) and err:find("text or json", 1, true), err)
  end)

  it("take the level in any case", function()
    local dir = server.tmpdir()
    server.write_file(dir .. "/x.lua", 'local log = require "qc.log"; log.info("t", "hidden"); log.warn("t", "shown")')
    local status, _, err = qc("run " .. quote(dir .. "/x.lua"), { QC_LOG_LEVEL = "WARN" })
    assert.equal(0, status, err)
    assert.falsy(err:find("hidden", 1, true), err)
    assert.truthy(err:find("warn t shown", 1, true), err)
  end)

  it("refuse a bad QC_LISTEN by name", function()
    local status, _, err = qc(CHECK, { QC_LISTEN = "nowhere" })
    assert.equal(2, status, err)
    assert.truthy(err:find("QC_LISTEN", 1, true), err)
  end)
end)

describe("a quantcoach run script", function()
  -- The README's own example, run as it stands, so the README cannot promise what a script
  -- does not get.
  it("runs the README's example: every binding through require, no global qc", function()
    local readme = assert(server.read_file(SRC .. "/README.md"))
    local section = assert(readme:match("\n## Scripts\n(.-)\n## "), "README has a Scripts section")
    local example = assert(section:match("```lua\n(.-)```"), "the Scripts section has a Lua example")
    for _, m in ipairs { "fetch", "time", "host", "jwt", "store", "log" } do
      assert.truthy(example:find('require "qc.' .. m .. '"', 1, true), "the example loads qc." .. m)
    end
    local dir = server.tmpdir()
    server.write_file(dir .. "/example.lua", 'assert(rawget(_G, "qc") == nil, "a global qc")\n' .. example)
    local s = server.start {}
    local status, out, err = qc(("run %s %s %s"):format(quote(dir .. "/example.lua"), quote(s.url .. "/health"),
      quote(dir .. "/example.db")))
    s:stop()
    assert.equal(0, status, out .. err)
    assert.truthy(err:find('info example done status=200 sub=ada type=application/json', 1, true), err)
  end)
end)

describe("stray arguments", function()
  for _, args in ipairs { "--version extra", "version extra", "--help extra", "-h extra", "help extra",
    "run --help extra", "reload extra", "token --room R --identity I --role agent extra" } do
    it(("exit 2 naming the argument: quantcoach %s"):format(args), function()
      local status, out, err = qc(args)
      assert.equal(2, status, out .. err)
      assert.equal("", out)
      assert.truthy(err:find("unexpected argument extra", 1, true), err)
    end)
  end

  it("leave --version alone", function()
    local status, out, err = qc("--version")
    assert.equal(0, status, err)
    assert.truthy(out:find("^quantcoach %S+\n$"), out)
  end)
end)

describe("QC_STORE_SYNC", function()
  -- The synchronous mode a store opened by a script gets: 1 NORMAL, 2 FULL.
  local function sync_mode(value)
    local dir = server.tmpdir()
    server.write_file(dir .. "/s.lua", ([[
      local store = require "qc.store"
      local db = assert(store.open(%q))
      io.stdout:write(tostring(db:query("PRAGMA synchronous")[1].synchronous))
      db:close()]]):format(dir .. "/s.db"))
    return qc("run " .. quote(dir .. "/s.lua"), { QC_STORE_SYNC = value })
  end

  it("takes normal and full in any case", function()
    for value, want in pairs { full = "2", FULL = "2", Full = "2", normal = "1", NORMAL = "1", [""] = "1" } do
      local status, out, err = sync_mode(value)
      assert.equal(0, status, err)
      assert.equal(want, out, "QC_STORE_SYNC=" .. value)
    end
  end)

  it("refuses any other value, naming the variable and the allowed values", function()
    for _, value in ipairs { "bogus", "fsync", "2", "full " } do
      local status, out, err = sync_mode(value)
      assert.equal(2, status, "QC_STORE_SYNC=" .. value .. ": " .. out .. err)
      assert.equal("", out)
      assert.truthy(err:find("QC_STORE_SYNC", 1, true) and err:find("normal or full", 1, true), err)
    end
  end)
end)

describe("QC_STORE_URL and QC_STORE_POOL", function()
  -- What host.config() shows of the store.
  local function store_config(env)
    local dir = server.tmpdir()
    server.write_file(dir .. "/s.lua", [[
      local c = require("qc.host").config()
      io.stdout:write(tostring(c.store_url), " ", tostring(c.store_url_masked), " ", tostring(c.store_pool))]])
    return qc("run " .. quote(dir .. "/s.lua"), env)
  end

  it("default to SQLite in the data directory with a pool of 4", function()
    local status, out, err = store_config {}
    assert.equal(0, status, err)
    assert.equal("nil nil 4", out)
  end)

  it("take sqlite:PATH and PostgreSQL URIs, masking the password wherever it is", function()
    local cases = {
      ["sqlite:/tmp/x.db"] = "sqlite:/tmp/x.db",
      ["postgres://qc@127.0.0.1:5433/qc"] = "postgres://qc@127.0.0.1:5433/qc",
      ["postgresql://qc:hunter2@db.example:5432/qc?sslmode=require"] = "postgresql://qc:***@db.example:5432/qc?sslmode=require",
      ["postgres://db/qc?user=qc&password=hunter2&connect_timeout=5"] = "postgres://db/qc?user=qc&password=***&connect_timeout=5",
    }
    for url, masked in pairs(cases) do
      local status, out, err = store_config { QC_STORE_URL = url, QC_STORE_POOL = "7" }
      assert.equal(0, status, url .. ": " .. err)
      assert.equal(url .. " " .. masked .. " 7", out)
    end
  end)

  it("refuse any other store or pool size with one line, exit 2, and no password", function()
    for _, env in ipairs {
      { QC_STORE_URL = "mysql://qc:hunter2@db/qc", want = "QC_STORE_URL: expected sqlite:PATH" },
      { QC_STORE_URL = "POSTGRES://qc:hunter2@db/qc", want = "QC_STORE_URL: expected sqlite:PATH" },
      { QC_STORE_URL = "/var/lib/qc.db", want = "QC_STORE_URL: expected sqlite:PATH" },
      { QC_STORE_URL = "sqlite:", want = "QC_STORE_URL: sqlite: needs a file path" },
      { QC_STORE_URL = "postgres://qc:p@sshunter2@127.0.0.1/qc", want = "QC_STORE_URL: an '@' in the user or password must be written %40" },
      { QC_STORE_URL = "postgres://qc:hunter2@127.0.0.1/qc?PASSWORD=hunter2", want = "QC_STORE_URL: libpq refuses it: invalid URI query parameter" },
      { QC_STORE_POOL = "0", want = "QC_STORE_POOL" },
      { QC_STORE_POOL = "65", want = "QC_STORE_POOL: expected 1 to 64" },
      { QC_STORE_POOL = "four", want = "QC_STORE_POOL" },
    } do
      local want = env.want
      env.want = nil
      local status, out, err = store_config(env)
      assert.equal(2, status, want .. ": " .. out .. err)
      assert.equal("", out)
      assert.truthy(err:find(want, 1, true), err)
      assert.equal(1, count(err, "\n"), err)
      assert.falsy(err:find("hunter2", 1, true), err)
    end
  end)

  it("name the store on the start-up line", function()
    local dir = server.tmpdir()
    local s = server.start { env = { QC_STORE_URL = "sqlite:" .. dir .. "/own.db" } }
    local line = s:wait_log("info server started"):match("info server started[^\n]*")
    assert.truthy(line:find(" store=sqlite:" .. dir .. "/own.db ", 1, true), line)
    assert.truthy(s:request("GET", "/health"))
    s:stop()
    assert.truthy(io.open(dir .. "/own.db"), "the store is the file QC_STORE_URL names")
  end)
end)

describe("LIVEKIT_URL", function()
  it("must be ws, wss, http or https with a host, checked before the dev keys", function()
    for _, url in ipairs { "ftp://127.0.0.1", "notaurl", "ws://", "http:///x", "127.0.0.1:7880", "wss//lk.example.com" } do
      local status, out, err = qc(CHECK, { LIVEKIT_URL = url })
      assert.equal(2, status, url .. ": " .. out .. err)
      assert.truthy(err:find("LIVEKIT_URL", 1, true) and err:find("ws://HOST[:PORT]", 1, true), url .. ": " .. err)
      assert.falsy(err:find("dev keys", 1, true), url .. ": " .. err)
    end
  end)

  it("takes each of the four schemes, in any case, with a port, a path or IPv6", function()
    for _, url in ipairs { "ws://127.0.0.1:7880", "WSS://localhost", "http://127.0.0.1/lk", "https://[::1]:7880" } do
      local status, out, err = qc(CHECK, { LIVEKIT_URL = url })
      assert.equal(0, status, url .. ": " .. out .. err)
    end
  end)
end)

describe("a script's return value", function()
  local function ret(expr)
    local dir = server.tmpdir()
    server.write_file(dir .. "/e.lua", "return " .. expr)
    return qc("run " .. quote(dir .. "/e.lua"))
  end

  it("is the exit status when it is an integer from 0 to 255", function()
    for expr, want in pairs { ["0"] = 0, ["7"] = 7, ["255"] = 255, ["3.0"] = 3, ["nil"] = 0, [""] = 0,
      ["true"] = 0, ["false"] = 1 } do
      local status, _, err = ret(expr)
      assert.equal(want, status, "return " .. expr .. ": " .. err)
      assert.equal("", err)
    end
  end)

  it("is an error, naming the value, when it cannot be an exit status", function()
    for expr, shown in pairs { ["256"] = "256", ["300"] = "300", ["-1"] = "-1", ["1.5"] = "1.5",
      ["'3'"] = '"3"', ["{}"] = "table", ["math.huge"] = "inf" } do
      local status, _, err = ret(expr)
      assert.equal(1, status, "return " .. expr .. ": " .. err)
      assert.truthy(err:find("exit status", 1, true) and err:find(shown, 1, true), "return " .. expr .. ": " .. err)
    end
  end)
end)
