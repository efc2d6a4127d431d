-- `make install`: the installed tree works on its own, moved away from the source tree and
-- the build, with no QC_SOURCE_DIR, QC_SCRIPTS or QC_POLICIES to lead it back; the
-- .env.example, the man page and the systemd unit cover what an operator needs.
local server = require "support.server"
local fetch = require "qc.fetch"
local time = require "qc.time"

local quote = server.quote
local SRC = server.source
local UNSET = "env -u QC_SOURCE_DIR -u QC_SCRIPTS -u QC_POLICIES -u QC_BIN -u QC_DATA QC_ENV_FILE=/nonexistent "

-- The settings an operator may set: runtime/config.c's one list, less the names only the
-- test harness reads and the one that is refused.
local function known_settings()
  local src = assert(server.read_file(SRC .. "/runtime/config.c"))
  local list = assert(src:match("known_settings%[%] = {(.-)\n};"), "known_settings not found in config.c")
  local names, skip = {}, { QC_BIN = true, QC_SOURCE_DIR = true, QC_LUA_BUDGET = true }
  for n in list:gmatch('"([%w_]+)"') do
    if not skip[n] then names[#names + 1] = n end
  end
  assert(#names >= 25, table.concat(names, " "))
  return names
end

describe("make install", function()
  local tmp, root, installed
  setup(function()
    tmp = server.tmpdir()
    -- The build directory of the binary under test: make install builds nothing new there.
    local build = server.bin:match("^(.*)/[^/]+$")
    local status, out = server.run(("make -C %s install BUILD=%s PREFIX=/usr DESTDIR=%s JOBS=2")
      :format(quote(SRC), quote(build), quote(tmp .. "/dest")))
    assert(status == 0, out)
    installed = tmp .. "/dest/usr"
    -- Moved as a whole to a place no path in the build knows.
    root = tmp .. "/elsewhere/opt/qc"
    assert(server.run(("mkdir -p %s && cp -a %s/. %s"):format(quote(root), quote(installed), quote(root))) == 0)
  end)

  it("lays out the binary, scripts, policies, web assets, man page, unit and env example", function()
    for _, f in ipairs {
      "bin/quantcoach", "share/quantcoach/scripts/lib/qc/generation.lua", "share/quantcoach/scripts/batch_rooms.lua",
      "share/quantcoach/scripts/cli/token.lua", "share/quantcoach/policies/routes.lua",
      "share/man/man1/quantcoach.1", "lib/systemd/system/quantcoach.service",
      "share/doc/quantcoach/quantcoach.env.example",
    } do
      assert.truthy(server.read_file(installed .. "/" .. f), f)
    end
    assert.equal(0, (server.run("test -d " .. quote(installed .. "/share/quantcoach/web"))))
    assert.equal(0, (server.run("test -x " .. quote(installed .. "/bin/quantcoach"))))
  end)

  it("gives a binary that checks its own policies, outside the source tree", function()
    local status, out = server.run(("cd %s && %s %s/bin/quantcoach check"):format(quote(tmp), UNSET, quote(root)))
    assert.equal(0, status, out)
    assert.truthy(out:find("ok: policies in " .. root .. "/share/quantcoach/policies pass", 1, true), out)
  end)

  it("runs the installed batch_rooms.lua", function()
    local status, out = server.run(("cd %s && %s %s/bin/quantcoach run %s/share/quantcoach/scripts/batch_rooms.lua --help")
      :format(quote(tmp), UNSET, quote(root), quote(root)))
    assert.equal(0, status, out)
    assert.truthy(out:find("room_name", 1, true), out)
  end)

  it("serves /health with the installed scripts and policies, and logs where they are", function()
    local log, pidfile = tmp .. "/serve.log", tmp .. "/serve.pid"
    assert(server.run(("cd %s && ( %s %s/bin/quantcoach serve --listen 127.0.0.1:0 --data %s > %s 2>&1 & echo $! > %s )")
      :format(quote(tmp), UNSET, quote(root), quote(tmp .. "/data"), quote(log), quote(pidfile))) == 0)
    local pid = tonumber(server.wait_for(function() return server.read_file(pidfile) end, 5, "the pid"))
    local ok, err = pcall(function()
      local port = server.wait_for(function()
        return tonumber((server.read_file(log) or ""):match("listening address=%S+ port=(%d+)"))
      end, 20, "the installed server to listen")
      local status, _, body = fetch { url = ("http://127.0.0.1:%d/health"):format(port), timeout = 10 }
      assert.equal(200, status, body)
      local text = server.wait_for(function()
        local t = server.read_file(log)
        return t:find("info server started", 1, true) and t
      end, 5, "the start-up line")
      assert.truthy(text:find("policies=" .. root .. "/share/quantcoach/policies", 1, true), text)
      assert.truthy(text:find("scripts=" .. root .. "/share/quantcoach/scripts", 1, true), text)
      assert.falsy(text:find(SRC, 1, true), text)
    end)
    os.execute(("kill -TERM %d"):format(pid))
    server.wait_for(function() return (server.read_file(log) or ""):find("info server stopped", 1, true) end, 20, "the stop")
    assert(ok, err)
  end)
end)

describe("the server under MemoryDenyWriteExecute (the unit's rule)", function()
  it("serves health, tokens and a room request with no memory both writable and executable", function()
    local probe = server.run("/usr/bin/python3 " .. quote(SRC .. "/spec/support/mdwe.py") .. " /bin/true")
    if probe == 77 then
      pending("the kernel has no PR_SET_MDWE (Linux 6.3+): not checked")
      return
    end
    assert.equal(0, probe)
    local s = server.start { env = { LIVEKIT_URL = "ws://127.0.0.1:1" },
      wrap = "/usr/bin/python3 " .. quote(SRC .. "/spec/support/mdwe.py") }
    assert.equal(200, (s:request("GET", "/health")))
    assert.equal(200, (s:request("POST", "/tokens/generate",
      { room_name = "r", participant_identity = "p", participant_type = "candidate" })))
    assert.equal(503, (s:request("POST", "/rooms/create", { room_name = "r" })))
    assert.equal(0, s:stop())
  end)
end)

describe(".env.example", function()
  local text = assert(server.read_file(SRC .. "/.env.example"))

  it("has every setting quantcoach reads, with its default", function()
    for _, n in ipairs(known_settings()) do
      assert.truthy(text:find("\n#? ?" .. n .. "=", 1) , n .. " is missing from .env.example")
    end
  end)

  it("is a .env quantcoach reads without a warning, and changes nothing from the defaults", function()
    local dir = server.tmpdir()
    local status, out = server.run(("cd %s && env -u QC_BIN -u QC_SOURCE_DIR QC_ENV_FILE=%s %s check")
      :format(quote(dir), quote(SRC .. "/.env.example"), quote(server.bin)))
    assert.equal(0, status, out)
    assert.falsy(out:find("warn", 1, true), out)
    -- The configuration a script sees, with the example as .env and with no .env at all.
    server.write_file(dir .. "/cfg.lua", [[
      local c, keys = require "qc.host".config(), {}
      for k in pairs(c) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do print(k, tostring(c[k])) end
    ]])
    local function config(env_file)
      local st, text = server.run(("cd %s && env -u QC_BIN -u QC_SOURCE_DIR QC_ENV_FILE=%s %s run cfg.lua")
        :format(quote(dir), quote(env_file), quote(server.bin)))
      assert.equal(0, st, text)
      return text
    end
    local with, without = config(SRC .. "/.env.example"), config("/nonexistent")
    assert.truthy(with:find("retention_days\t90", 1, true), with)
    assert.equal(without, with)
  end)
end)

describe("the documentation", function()
  it("names every setting in the man page and in the README", function()
    local man = assert(server.read_file(SRC .. "/docs/quantcoach.1"))
    local readme = assert(server.read_file(SRC .. "/README.md"))
    for _, n in ipairs(known_settings()) do
      assert.truthy(man:find(n, 1, true), n .. " is missing from docs/quantcoach.1")
      assert.truthy(readme:find("`" .. n .. "`", 1, true), n .. " is missing from README.md")
    end
  end)
end)

describe("the systemd unit", function()
  local unit = assert(server.read_file(SRC .. "/dist/quantcoach.service.in"))

  it("runs as a dynamic user with a state directory, reloads with SIGHUP, and is hardened", function()
    for _, line in ipairs {
      "DynamicUser=yes", "StateDirectory=quantcoach", "Environment=QC_DATA=/var/lib/quantcoach",
      "EnvironmentFile=-/etc/quantcoach/quantcoach.env", "ExecReload=/bin/kill -HUP $MAINPID",
      "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
      "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service",
      "MemoryDenyWriteExecute=yes", "LimitNOFILE=65536",
      "ExecStart=@CMAKE_INSTALL_FULL_BINDIR@/quantcoach serve",
    } do
      assert.truthy(unit:find("\n" .. line .. "\n", 1, true), line)
    end
  end)

  it("passes systemd-analyze verify with no warning", function()
    if server.run("command -v systemd-analyze >/dev/null") ~= 0 then
      pending("systemd-analyze is not installed: the unit was not verified")
      return
    end
    local dir = server.tmpdir()
    -- verify wants ExecStart to exist and the Documentation= man page to be found.
    local build = server.bin:match("^(.*)/[^/]+$")
    local text = unit:gsub("@CMAKE_INSTALL_FULL_BINDIR@", build):gsub("@CMAKE_INSTALL_FULL_DOCDIR@", "/usr/share/doc/quantcoach")
    server.write_file(dir .. "/quantcoach.service", text)
    assert(server.run(("mkdir -p %s/man/man1 && cp %s/docs/quantcoach.1 %s/man/man1/"):format(quote(dir), quote(SRC), quote(dir))) == 0)
    local status, out = server.run(("cd %s && MANPATH=%s/man: systemd-analyze verify %s/quantcoach.service")
      :format(quote(dir), quote(dir), quote(dir)))
    assert.equal(0, status, out)
    assert.equal("", out)
  end)
end)
