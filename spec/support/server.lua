-- Starts a real quantcoach server on a loopback port for a spec, and talks to it.
--   local server = require "support.server"
--   local s = server.start { policies = dir, env = { QC_LUA_BUDGET_MS = "200" } }
--   local status, body = s:request("GET", "/health")
--   s:stop()
local fetch = require "qc.fetch"
local time = require "qc.time"
local cjson = require "cjson"

local M = {}

local BIN = os.getenv("QC_BIN") or "./build/quantcoach"
M.source = os.getenv("QC_SOURCE_DIR") or "."
M.bin = BIN

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
M.read_file = read_file

function M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

function M.tmpdir()
  local p = io.popen("mktemp -d /tmp/qc_spec.XXXXXX")
  local dir = p:read("l")
  p:close()
  return dir
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = quote

--- Copies the shipped policies into a fresh directory a spec may edit.
function M.copy_policies(dir)
  dir = dir or M.tmpdir() .. "/policies"
  assert(sh("mkdir -p " .. quote(dir) .. " && cp " .. quote(M.source) .. "/policies/*.lua " .. quote(dir)))
  return dir
end

--- Copies the shipped policies and puts `entries` (text of route entries, each line ending in
--- a newline) first in routes.lua, before the shipped routes.
function M.policies_with_routes(entries, dir)
  dir = M.copy_policies(dir)
  local routes = read_file(dir .. "/routes.lua")
  local at = routes:find("\nreturn {\n", 1, true)
  assert(at, "shipped routes changed: no `return {` line")
  local head = at + #"\nreturn {\n" - 1
  M.write_file(dir .. "/routes.lua", routes:sub(1, head) .. entries .. routes:sub(head + 1))
  return dir
end

--- Copies the shipped scripts into dir (a fresh one by default) with spec-only handlers added:
--- handlers maps NAME to the Lua source of qc.handlers.NAME. Point QC_SCRIPTS at the result.
function M.scripts_with(handlers, dir)
  dir = dir or M.tmpdir() .. "/scripts"
  assert(sh(("cp -r %s %s"):format(quote(M.source .. "/scripts"), quote(dir))))
  for name, code in pairs(handlers) do M.write_file(dir .. "/lib/qc/handlers/" .. name .. ".lua", code) end
  return dir
end

--- Copies spec/fixtures/policies into a fresh directory a spec may edit. `extra_routes`, when
--- given, is text of route entries put in before the fixture's GET /text route.
function M.fixture_policies(extra_routes)
  local dir = M.tmpdir() .. "/policies"
  assert(sh("mkdir -p " .. quote(dir) .. " && cp " .. quote(M.source) .. "/spec/fixtures/policies/*.lua " .. quote(dir)))
  if extra_routes then
    local routes = read_file(dir .. "/routes.lua")
    local at = routes:find('\n  { "GET", "/text",', 1, true)
    assert(at, "fixture routes changed: the GET /text route is not found")
    M.write_file(dir .. "/routes.lua", routes:sub(1, at) .. extra_routes .. routes:sub(at + 1))
  end
  return dir
end

--- The number of the first line of `path` that contains `needle` (plain text).
function M.line_of(path, needle)
  local n = 0
  for line in (read_file(path) .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find(needle, 1, true) then return n end
  end
  error(("%q not found in %s"):format(needle, path), 2)
end

-- PostgreSQL runs of the suite (ctest's pg_* entries): SPEC_PG_URL is the base URL of a
-- throwaway cluster (spec/support/pg.sh). Each data directory a spec starts a server on is
-- tied to a fresh database of its own, so a restart on the same data finds its rows again, as
-- it does with the SQLite file. Databases are created and dropped with psql.
M.pg_url = os.getenv("SPEC_PG_URL")
if M.pg_url == "" then M.pg_url = nil end

local databases = {}   -- data dir -> URL of its database
local created = {}     -- names of the databases this run created, dropped by stop_all

local function psql(url, sql)
  local status, out = M.run(("psql -X -q -v ON_ERROR_STOP=1 -d %s -c %s"):format(quote(url), quote(sql)))
  if status ~= 0 then error(("psql failed (%s): %s"):format(sql, out), 2) end
end

-- The URL of database `name` on the cluster of `base` (its path replaced, any query kept).
local function with_database(base, name)
  local head, query = base:match("^([a-z]+://[^/?]*)/?[^?]*(.*)$")
  assert(head, "SPEC_PG_URL is not a postgres:// URL")
  return head .. "/" .. name .. query
end

local pid
local function own_pid()
  if not pid then
    local f = assert(io.open("/proc/self/stat"))
    pid = f:read("n")
    f:close()
  end
  return pid
end

--- A fresh, empty database on the SPEC_PG_URL cluster; returns its URL. It is dropped when
--- the run ends (stop_all). For specs that start several servers sharing one store.
function M.create_database()
  assert(M.pg_url, "create_database needs SPEC_PG_URL")
  local name = ("qc_%d_%d"):format(own_pid(), #created + 1)
  psql(M.pg_url, "CREATE DATABASE " .. name)
  created[#created + 1] = name
  return with_database(M.pg_url, name)
end

--- The store URL a server on data directory `data` gets: under SPEC_PG_URL, the database tied
--- to that directory (created the first time); without it, nil (the SQLite file in `data`).
function M.store_url_for(data)
  if not M.pg_url then return nil end
  if not databases[data] then databases[data] = M.create_database() end
  return databases[data]
end

--- Opens the store a server on `data` uses (or `store_url`, when given): the PostgreSQL
--- database of store_url_for, or the SQLite file data/quantcoach.db. Raises when it cannot.
function M.open_store(data, store_url)
  local target = store_url or M.store_url_for(data)
  if target then target = target:gsub("^sqlite:", "") else target = data .. "/quantcoach.db" end
  return assert(require("qc.store").open(target))
end

--- qc.db's handle (opened and migrated by qc.db) on the store of data directory `data`, for
--- specs that seed or read rows without a server.
function M.open_db(data)
  return require("qc.db").open(M.store_url_for(data) or data .. "/quantcoach.db")
end

--- The environment settings a `quantcoach run` script needs for the store of `data`: QC_DATA,
--- and QC_STORE_URL under SPEC_PG_URL. Added to `env` when given; returns it.
function M.store_env(data, env)
  env = env or {}
  env.QC_DATA = data
  env.QC_STORE_URL = M.store_url_for(data)
  return env
end

--- The same as "env KEY=VALUE ..." text for a shell command line.
function M.store_env_text(data)
  local out = { "QC_DATA=" .. quote(data) }
  local url = M.store_url_for(data)
  if url then out[#out + 1] = "QC_STORE_URL=" .. quote(url) end
  return table.concat(out, " ")
end

--- `it` for a test about SQLite files themselves (the upgrade fixture, WAL and sync modes, file
--- permissions): under SPEC_PG_URL it reports itself pending with `why`, so the PostgreSQL run
--- says what it leaves out. Pass the spec's own `it` and `pending` (busted's globals live in
--- the spec file's environment, not here).
function M.sqlite_only(it, pending, why)
  if not M.pg_url then return it end
  return function(name) pending(name .. " [SQLite only: " .. why .. "]") end
end

--- Whether a qc.store handle is on PostgreSQL (for the few specs whose SQL must differ).
function M.is_pg(db) return db.backend ~= nil and db:backend() == "postgres" end
local is_pg = M.is_pg

--- Makes every INSERT into `tbl` fail from outside the server, as a broken or full disk would
--- (a trigger that raises 'refused by the spec'); allow_inserts undoes it.
function M.refuse_inserts(db, tbl)
  if is_pg(db) then
    assert(db:exec(([[CREATE FUNCTION spec_refuse() RETURNS trigger LANGUAGE plpgsql AS
                      'BEGIN RAISE EXCEPTION ''refused by the spec''; END';
                      CREATE TRIGGER refuse_%s BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION spec_refuse()]])
      :format(tbl, tbl)))
  else
    assert(db:exec(([[CREATE TRIGGER refuse_%s BEFORE INSERT ON %s
                      BEGIN SELECT RAISE(ABORT, 'refused by the spec'); END]]):format(tbl, tbl)))
  end
end

function M.allow_inserts(db, tbl)
  if is_pg(db) then
    assert(db:exec(("DROP TRIGGER refuse_%s ON %s; DROP FUNCTION spec_refuse()"):format(tbl, tbl)))
  else
    assert(db:exec(("DROP TRIGGER refuse_%s"):format(tbl)))
  end
end

--- Drops the databases this run created (the servers on them must have stopped).
function M.drop_databases()
  for i = #created, 1, -1 do
    local ok, err = pcall(psql, M.pg_url, ("DROP DATABASE IF EXISTS %s WITH (FORCE)"):format(created[i]))
    if not ok then io.stderr:write("spec: ", err, "\n") end
    created[i] = nil
  end
  databases = {}
end

local Server = {}
Server.__index = Server

-- Every server a spec starts, so none outlives the run when a spec fails before its stop.
local started = {}

---Stops every server still running (the runner calls this before it exits).
function M.stop_all()
  for _, s in ipairs(started) do
    if not s.stopped then pcall(Server.stop, s, 5) end
  end
  if M.pg_url then M.drop_databases() end
end

--- Waits until pred() is true, polling every 20 ms; gives up after `timeout` seconds.
function M.wait_for(pred, timeout, what)
  local deadline = time.monotonic() + (timeout or 10)
  while time.monotonic() < deadline do
    local v = pred()
    if v then return v end
    time.sleep(0.02)
  end
  error("timed out waiting for " .. (what or "a condition"), 2)
end

---@param opts table { policies=dir, data=dir, store_url=url, env={...}, args={...}, ulimit_nofile=n, wrap=cmd }
--- store_url: the QC_STORE_URL of the server (instances that share one store); by default, under
--- SPEC_PG_URL, the database tied to its data directory (store_url_for), else the SQLite file.
function M.start(opts)
  opts = opts or {}
  local dir = M.tmpdir()
  local self = setmetatable({
    dir = dir,
    log = dir .. "/server.log",
    pidfile = dir .. "/pid",
    exitfile = dir .. "/exit",
    policies = opts.policies or M.copy_policies(dir .. "/policies"),
    data = opts.data or dir .. "/data",
  }, Server)
  self.store_url = opts.store_url or (opts.env and opts.env.QC_STORE_URL) or M.store_url_for(self.data)
  local env = { "QC_ENV_FILE=/nonexistent" }
  if self.store_url then env[#env + 1] = "QC_STORE_URL=" .. quote(self.store_url) end
  for k, v in pairs(opts.env or {}) do
    if k ~= "QC_STORE_URL" then env[#env + 1] = k .. "=" .. quote(v) end
  end
  -- ulimit_nofile: a descriptor limit for the server alone (the connection-flood spec).
  local limit = opts.ulimit_nofile and ("ulimit -n %d; "):format(opts.ulimit_nofile) or ""
  -- wrap: a command the server runs under (it must exec the server, keeping its pid).
  local cmd = (limit .. "( env %s %s serve --listen 127.0.0.1:0 --policies %s --data %s %s & echo $! > %s; wait $!; echo $? > %s ) > %s 2>&1 < /dev/null &")
    :format(table.concat(env, " "), (opts.wrap and opts.wrap .. " " or "") .. quote(BIN), quote(self.policies), quote(self.data),
      table.concat(opts.args or {}, " "), quote(self.pidfile), quote(self.exitfile), quote(self.log))
  assert(sh(cmd))
  self.port = M.wait_for(function()
    local log = read_file(self.log) or ""
    if log:find("policies rejected") or read_file(self.exitfile) then
      error("server failed to start:\n" .. log, 0)
    end
    return tonumber(log:match("listening address=%S+ port=(%d+)") or log:match('"msg":"listening"[^\n]-"port":(%d+)'))
  end, 20, "the server to listen")
  self.pid = tonumber(read_file(self.pidfile))
  self.url = "http://127.0.0.1:" .. self.port
  started[#started + 1] = self
  return self
end

--- Opens the server's store for a spec that reads or writes its rows directly: its PostgreSQL
--- database under SPEC_PG_URL (or its store_url), else the SQLite file in its data directory.
--- A store handle of qc.store (close it, or let it go with <close>).
function Server:db()
  return M.open_store(self.data, self.store_url)
end

--- Sends a request; returns status, decoded JSON body (or raw text), headers.
function Server:request(method, path, body, headers, timeout)
  headers = headers or {}
  if type(body) == "table" then
    body = cjson.encode(body)
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
  end
  local status, hdrs, raw = fetch { method = method, url = self.url .. path, body = body,
    headers = headers, timeout = timeout or 30 }
  if not status then return nil, hdrs, raw end
  local decoded = raw
  if (hdrs["content-type"] or ""):find("json", 1, true) and raw ~= "" then
    decoded = cjson.decode(raw)
  end
  return status, decoded, hdrs, raw
end

function Server:signal(sig)
  if sig == "TERM" then self.term_sent = true end
  return sh(("kill -%s %d"):format(sig, self.pid))
end

function Server:log_text()
  return read_file(self.log) or ""
end

--- The log once it matches `pattern`, waiting up to `timeout` seconds (default 5): the server
--- writes its log through a buffer flushed once per loop turn, so a line about a request can
--- land just after the client has its answer. Returns the log as it is at the timeout when the
--- pattern never shows, so the caller's assertion shows what was there.
function Server:wait_log(pattern, timeout)
  local deadline = time.monotonic() + (timeout or 5)
  while true do
    local text = self:log_text()
    if text:find(pattern) or time.monotonic() >= deadline then return text end
    time.sleep(0.02)
  end
end

--- Stops the server (SIGTERM) and returns its exit status.
function Server:stop(timeout)
  if self.stopped then return self.exit_status end
  if not self.term_sent then self:signal("TERM") end
  local status = M.wait_for(function()
    local s = read_file(self.exitfile)
    return s and tonumber(s)
  end, timeout or 20, "the server to exit")
  self.stopped, self.exit_status = true, status
  return status
end

--- Runs a command, returns its exit status and combined output.
function M.run(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"__exit=$?\"")
  local out = p:read("a")
  p:close()
  local status = tonumber(out:match("__exit=(%d+)%s*$"))
  return status, (out:gsub("__exit=%d+%s*$", ""))
end

return M
