-- The host's Lua half: builds policy generations (sandboxed environments, contract checks)
-- and dispatches each HTTP request through the live generation's routes.
-- Called from C only: new_generation() on reload and check, dispatch() once per request.
local cjson = require "cjson" -- the host's own instance: no policy or lib module gets it
local router = require "qc.router"
local contracts = require "qc.contracts"
local source = require "qc.source"
local host = require "qc.host"
local set_route = require("qc.metrics").route -- the route pattern labels the request metrics
-- Trusted code only: reading policy lines off the stack, telling protected metatables apart.
local debug = debug

local M = {}

-- Request bodies: numbers only as JSON spells them (cjson otherwise takes 0x10, inf and nan).
local body_json = cjson.new()
body_json.decode_invalid_numbers(false)

local SAFE_GLOBALS = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring",
  "type", "xpcall", "rawequal", "rawget", "rawlen", "rawset", "setmetatable", "getmetatable",
  "_VERSION",
}

-- What a policy may require. Each comes as a read-only view (writes raise, nested tables
-- too); lib modules and cjson are this generation's own instances, C modules the process's.
-- Nothing here reaches the store, the network, the host's settings or a secret: qc.jwt
-- signs and verifies with the secret its caller passes. Handlers do reach the store and
-- LiveKit, so a policy gets them sealed (see "sealed handlers" below): it can name them in
-- routes.lua, not call them.
local POLICY_C = { ["qc.log"] = true, ["qc.time"] = true, ["qc.jwt"] = true }
local POLICY_LIB = { ["qc.auth"] = true, ["qc.errors"] = true, ["qc.json"] = true, ["qc.csv"] = true }
local POLICY_HANDLERS = "^qc%.handlers%.[%w_]+$"
local POLICY_MAY = "cjson, qc.policies, qc.log, qc.time, qc.jwt, qc.auth, qc.errors, qc.json, qc.csv, qc.handlers.*"

-- Shallow copies, so a policy that assigns string.x changes only its own generation.
local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- The string metatable is shared by every string: lock it against getmetatable("").
do
  local mt = getmetatable("")
  if type(mt) == "table" then mt.__metatable = false end
end

-- view -> the table it shows. Dispatch uses it to hand C a real headers table (C reads
-- headers with lua_next, which does not see through a view).
local real_of = setmetatable({}, { __mode = "k" })

-- A table whose metatable is protected: a view, a shared empty table, an environment.
local function protected(t)
  local mt = debug.getmetatable(t)
  return mt ~= nil and rawget(mt, "__metatable") ~= nil
end

-- ---- sealed handlers ---------------------------------------------------------------------
-- A policy may require qc.handlers.* so routes.lua can name handlers, but a handler writes
-- to the store and calls LiveKit: called from a policy (at load, or from speakers.role
-- inside a webhook) it would do so on the policy's behalf. So the functions of a handler
-- module, seen from a policy, are sealed: dispatch hands a one-shot permit to the coroutine
-- it runs the route's function in, just before it calls it, and a sealed handler runs only
-- by taking that permit. The first sealed handler takes it, so policy code the handler runs
-- later (speakers.role during a webhook) finds none. A route's function may wrap a sealed
-- handler (auth.required does): the permit waits in the coroutine until the handler takes it.

local running = coroutine.running
-- permit[1]: the coroutine dispatch is calling a route's function in, until a sealed handler
-- takes it. One slot is enough: the loop runs one coroutine at a time, and nothing yields
-- between the grant and the sealed handler's entry unless a route's own function does. Weak,
-- so a request that failed before a sealed handler took it (a memory bomb in a route of
-- the policy's own) does not keep its dead coroutine, and all it held, from the collector.
local permit = setmetatable({}, { __mode = "v" })
local SEALED = "handlers run only when the router calls them"

-- fn -> its sealed form, per generation (so rooms.create == rooms.create in a policy).
local function new_sealer()
  local cache = setmetatable({}, { __mode = "k" })
  return function(fn)
    local sealed = cache[fn]
    if sealed then return sealed end
    sealed = function(...)
      local co = permit[1]
      if co == nil or co ~= running() then error(SEALED, 2) end
      permit[1] = nil
      return fn(...)
    end
    cache[fn] = sealed
    return sealed
  end
end

-- Read-only views, one per table per generation (so a module required twice is the same
-- value). A named view is a module: reading a field it lacks raises, which turns a typo in
-- routes.lua (rooms.craete) into "routes.lua:LINE: qc.handlers.rooms has no field 'craete'"
-- at load time instead of a nil handler. Functions are given as they are (without debug,
-- nothing reaches their upvalues), or through `wrap` when one is given (sealed handlers).
local function new_viewer(wrap)
  local cache = setmetatable({}, { __mode = "k" })
  local function view(t, name)
    if type(t) ~= "table" then
      if wrap and type(t) == "function" then return wrap(t) end
      return t
    end
    local v = cache[t]
    if v then return v end
    v = {}
    local what = name or "this table"
    setmetatable(v, {
      __index = function(_, k)
        local x = t[k]
        if x == nil and name and type(k) == "string" then error(("%s has no field '%s'"):format(name, tostring(k)), 2) end
        return view(x)
      end,
      __newindex = function(_, k)
        error(("%s is read-only (assignment to '%s')"):format(what, tostring(k)), 2)
      end,
      __pairs = function()
        local k
        return function()
          local x
          k, x = next(t, k)
          if k ~= nil then return view(k), view(x) end
        end, v, nil
      end,
      __len = function() return #t end,
      __metatable = "read-only",
    })
    cache[t] = v
    real_of[v] = t
    return v
  end
  return view
end

local function strict(env)
  return setmetatable(env, {
    __index = function(_, k)
      error(("undeclared global '%s'"):format(tostring(k)), 2)
    end,
    __newindex = function(_, k)
      error(("assignment to undeclared global '%s'"):format(tostring(k)), 2)
    end,
    __metatable = false,
  })
end

local MODULE_NAME = "^[%w_]+[%w_%.]*$"

local function check_name(name)
  if type(name) ~= "string" or not name:match(MODULE_NAME) or name:find("..", 1, true) then
    error(("require: bad module name %q"):format(tostring(name)), 3)
  end
end

-- A scripts/lib module, loaded once per generation into the generation's lib environment.
local function load_lib(gen, name)
  local cached = gen.modules[name]
  if cached ~= nil then return cached end
  local path = gen.scripts_dir .. "/lib/" .. name:gsub("%.", "/") .. ".lua"
  local chunk, err = loadfile(path, "t", gen.lib_env)
  if not chunk then error(err, 3) end
  local mod = chunk(name)
  if mod == nil then mod = true end
  gen.modules[name] = mod
  return mod
end

local function base_env()
  local env = {}
  for _, name in ipairs(SAFE_GLOBALS) do env[name] = _G[name] end
  env.string, env.table, env.math, env.utf8 = copy(string), copy(table), copy(math), copy(utf8)
  env.os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }
  env.load = function(chunk, chunkname, _, e)
    return load(chunk, chunkname, "t", e or env) -- text only: bytecode can break the VM
  end
  return env
end

-- scripts/lib code (handlers, services): trusted, with every qc.* C module, but with this
-- generation's own lib modules and cjson instance.
local function lib_env(gen)
  local env = base_env()
  -- Which coroutine (task) is running: qc.db routes a task's calls to the transaction it
  -- opened. Not resume or yield: the C scheduler owns those.
  env.coroutine = { running = coroutine.running, isyieldable = coroutine.isyieldable }
  env.qc = setmetatable({}, {
    __index = function(t, k)
      if not package.preload["qc." .. tostring(k)] then
        error(("qc.%s is not available here"):format(tostring(k)), 2)
      end
      local m = require("qc." .. k)
      rawset(t, k, m)
      return m
    end,
  })
  env.require = function(name)
    check_name(name)
    if name == "cjson" then return gen.lib_cjson end
    if name == "qc.policies" then return gen.policies end -- this generation's, live or not
    if package.preload[name] then return require(name) end
    return load_lib(gen, name)
  end
  return strict(env)
end

-- Policy files: the safe globals, read-only views of what a policy may require, and
-- nothing that outlives the generation.
local function policy_env(gen)
  local view = gen.view
  local env = base_env()
  env.rawset = function(t, k, v)
    if type(t) == "table" and protected(t) then error("rawset: this table is protected", 2) end
    return rawset(t, k, v)
  end
  env.setmetatable = function(t, mt)
    -- A finaliser would run at some later collection, in no call's time budget and maybe
    -- after its generation is gone.
    if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
      error("setmetatable: __gc is not allowed in policies", 2)
    end
    return setmetatable(t, mt)
  end
  -- The host reads an error table's status/code/message/field after the call has ended,
  -- outside any time budget: a table with metamethods there could loop or yield. What a
  -- policy raises is a plain copy of those four fields.
  local function plain(v)
    if type(v) ~= "table" then return v end
    local function field(k, want)
      local x = rawget(v, k)
      if want == "integer" then return math.type(x) == "integer" and x or nil end
      return type(x) == want and x or nil
    end
    local status = field("status", "integer")
    -- Without a status it is no intended HTTP error but a bug: logged, and a 500.
    if not status then return "error object: a table without an integer status" end
    return { status = status, code = field("code", "string"),
             message = field("message", "string"), field = field("field", "string") }
  end
  env.error = function(v, level)
    if type(v) == "table" then error(plain(v), 0) end
    level = math.tointeger(level) or 1
    error(v, level > 0 and level + 1 or 0)
  end
  -- Lua calls a message handler for an error the budget hook raises inside that hook, where
  -- hooks do not fire: a policy's handler that looped there would never be stopped. So a
  -- policy's handler runs after the stack has unwound, hooks on. It loses nothing a policy
  -- could see: without debug, a handler cannot read the stack it was called on.
  env.xpcall = function(f, handler, ...)
    if type(handler) ~= "function" then
      error(("bad argument #2 to 'xpcall' (function expected, got %s)"):format(type(handler)), 2)
    end
    local r = table.pack(pcall(f, ...))
    if r[1] then return table.unpack(r, 1, r.n) end
    local _, m = pcall(handler, r[2])
    return false, m
  end
  env.assert = function(v, message, ...)
    if v then return v, message, ... end
    if message == nil then error("assertion failed!", 2) end
    error(plain(message), 0)
  end
  env.qc = setmetatable({}, {
    __index = function(_, k)
      local name = "qc." .. tostring(k)
      if not POLICY_C[name] then error(("%s is not available to policies"):format(name), 2) end
      return view(require(name), name)
    end,
    __newindex = function(_, k) error(("qc is read-only (assignment to '%s')"):format(tostring(k)), 2) end,
    __metatable = "read-only",
  })
  env.require = function(name)
    check_name(name)
    if name == "cjson" then return view(gen.policy_cjson, "cjson") end
    if name == "qc.policies" then return view(gen.policies) end
    if POLICY_C[name] then return view(require(name), name) end
    if POLICY_LIB[name] then return view(load_lib(gen, name), name) end
    if name:match(POLICY_HANDLERS) then return gen.handler_view(load_lib(gen, name), name) end
    error(("require: %s is not available to policies (they may require %s)"):format(name, POLICY_MAY), 2)
  end
  return strict(env)
end

-- ---- where a rejected policy went wrong ------------------------------------------------

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local text = f:read("a")
  f:close()
  return text
end

-- at(key, ...) for a policy file: "path:LINE" of the value at that key path (see
-- qc.contracts), else of the file's last return, else line 1. Tokenised on first use.
local function locator(path)
  local toks
  local function tokens()
    toks = toks or source.tokens(read_file(path))
    return toks
  end
  local function at(...)
    local t = tokens()
    local line = source.line_of(t, { ... }) or source.return_line(t) or 1
    return ("%s:%d"):format(path, line)
  end
  return at, tokens
end

-- The innermost line of `path` on the stack, from a message handler.
local function policy_frame_line(path)
  local src = "@" .. path
  for level = 2, 60 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.source == src and info.currentline and info.currentline > 0 then return info.currentline end
  end
end

local BUDGET = "time budget exceeded ("

-- A message handler for code run on behalf of a policy file: every message it returns
-- starts with "path:LINE: ".
local function where_handler(path, at)
  return function(err)
    local msg = type(err) == "string" and err or nil
    local budget = msg and msg:find(BUDGET, 1, true)
    if budget then
      -- The host's budget hook raised this, and stays armed so that a policy's pcall cannot
      -- swallow it: every Lua instruction after this handler would raise it again, without
      -- the line found here. This handler runs inside the hook (hooks do not fire), and the
      -- policy is being abandoned: what runs next is this file's own code, which only
      -- reports the error. So disarm it.
      debug.sethook()
      -- The hook names the caller of the function it stopped (or nothing, or this file's
      -- xpcall): the policy's own frame, found below, is the place.
      msg = msg:sub(budget)
    end
    if msg and msg:sub(1, #path + 1) == path .. ":" and msg:sub(#path + 2):match("^%d+:") then return msg end
    if msg and msg:sub(1, #path + 2) == path .. ": " then
      -- A check that names the file only: the line of the key its message starts with.
      local rest = msg:sub(#path + 3)
      local keys = {}
      local ex = rest:match("^example (%d+):")
      if ex then
        keys = { "examples", math.tointeger(tonumber(ex)) }
      else
        for k in (rest:match("^[%a_][%w_%.]*") or ""):gmatch("[^%.]+") do keys[#keys + 1] = k end
      end
      return at(table.unpack(keys)) .. ": " .. rest
    end
    if not msg then
      msg = ("raised a %s value"):format(type(err))
      if type(err) == "table" and type(err.message) == "string" then msg = msg .. ": " .. err.message end
    end
    local line = policy_frame_line(path)
    if line then return ("%s:%d: %s"):format(path, line, msg) end
    return at() .. ": " .. msg
  end
end

-- Runs fn(...) on behalf of the policy file at `path`; raises "path:LINE: message" if it
-- fails. A memory error calls no message handler and leaves no stack to read, so while fn
-- runs a line hook keeps the last line of the file reached (when no other hook is set, such
-- as the fuzzers' coverage hook): a policy stopped by the memory cap is named at that line.
local function run_policy(path, at, fn, ...)
  local src, last = "@" .. path, nil
  local hooked = debug.gethook() == nil
  if hooked then
    debug.sethook(function(_, line)
      local info = debug.getinfo(2, "S")
      if info and info.source == src then last = line end
    end, "l")
  end
  local ok, res = xpcall(fn, where_handler(path, at), ...)
  if hooked then debug.sethook() end
  if ok then return res end
  if type(res) == "string" and res:sub(1, #path + 1) ~= path .. ":" then
    -- The message handler did not see it (a memory error) or failed itself.
    res = (last and ("%s:%d"):format(path, last) or at()) .. ": " .. res
  end
  error(res, 0)
end

---Builds a complete generation from the policy files, or raises "file:line: message".
---@param policies_dir string
---@param scripts_dir string
---@param id integer
---@return table generation
function M.new_generation(policies_dir, scripts_dir, id)
  local gen = {
    id = id, modules = {}, policies = {}, scripts_dir = scripts_dir,
    policies_dir = policies_dir, loaded_at = os.time(),
    view = new_viewer(), handler_view = new_viewer(new_sealer()),
    lib_cjson = cjson.new(), policy_cjson = cjson.new(),
  }
  gen.lib_cjson.decode_invalid_numbers(false)
  gen.lib_env = lib_env(gen)
  gen.policy_env = policy_env(gen)
  -- The generation's qc.json: handlers mark arrays with it and dispatch encodes with it.
  gen.json = load_lib(gen, "qc.json")

  local files, err = host.list_dir(policies_dir, ".lua")
  if not files then error(err, 0) end
  local present = {}
  for _, f in ipairs(files) do present[f] = true end
  for name in pairs(contracts.required) do
    if not present[name .. ".lua"] then
      error(("%s/%s.lua: missing (every policy set needs it)"):format(policies_dir, name), 0)
    end
  end

  local routes_tokens
  for _, file in ipairs(files) do
    local path = policies_dir .. "/" .. file
    local name = file:sub(1, -5)
    local at, tokens = locator(path)
    if name == "routes" then routes_tokens = tokens end
    local chunk, lerr = loadfile(path, "t", gen.policy_env)
    if not chunk then error(lerr, 0) end
    local policy = run_policy(path, at, chunk)
    if type(policy) ~= "table" then
      error(("%s: must return a table, got %s"):format(at(), type(policy)), 0)
    end
    gen.policies[name] = policy
    local check = contracts.check[name]
    if check then
      run_policy(path, at, check, policy, path, gen, at)
    end
  end
  gen.router = router.compile(gen.policies.routes, policies_dir .. "/routes.lua", function(i, method, path, occurrence)
    return source.route_line(routes_tokens(), i, method, path, occurrence)
  end)
  return gen
end

local JSON = "application/json"
-- Plain tables the C side only reads (with lua_next): shared by every answer that has no
-- headers of its own. No policy or handler ever holds them.
local JSON_HEADERS = { ["content-type"] = JSON }
local NO_HEADERS = {}

-- The error answers dispatch gives itself (404, 405, 400, 422) render their body in C, as
-- the host renders a handler's raised qc.errors table: one renderer for every error body.
-- Returned, not raised, so the request's coroutine is reused (a raise discards it).
local error_body = host.error_body

local REQUEST = {}
REQUEST.__index = REQUEST
-- Every request shares this metatable: getmetatable(req) must not hand it to a handler.
REQUEST.__metatable = "request"

-- Shared by every request without a query string / without headers of its own: no table
-- is made per request for them. Read-only and protected, so one handler cannot leak into
-- the next.
local function frozen(t)
  return setmetatable({}, { __index = t, __newindex = function() error("read-only table", 2) end,
                            __pairs = function() return next, t, nil end, __metatable = "read-only" })
end
local NO_ARGS = frozen({})

-- True unless v holds an infinite or NaN number (a JSON number too large for a double,
-- such as 1e999, decodes to inf).
local function finite(v, depth)
  if type(v) == "number" then return v == v and v ~= math.huge and v ~= -math.huge end
  if type(v) ~= "table" or depth > 1000 then return true end
  for _, x in pairs(v) do
    if not finite(x, depth + 1) then return false end
  end
  return true
end

local SHAPE = { string = "a string", number = "a number", boolean = "a boolean", userdata = "null" }

---A request header by name, case-insensitive.
---@param name string
---@return string|nil
function REQUEST:header(name)
  return self.headers[name:lower()]
end

---Handlers return status, headers, body. Tables become JSON; nil becomes an empty body.
---A JSON request body (a content type naming json) is decoded here, once, into req.json:
---it must be an object; anything else is refused before a handler runs.
---@param gen table
---@param req table
---@return integer status, table headers, string body
function M.dispatch(gen, req)
  setmetatable(req, REQUEST)
  local handler, params, allow, pattern = gen.router:match(req.method, req.path)
  if not handler then
    if allow then
      -- OPTIONS is answered with the route's methods; for a browser's preflight the host
      -- adds the CORS headers from this Allow (runtime/net/cors.c, CORS's one home).
      if req.method == "OPTIONS" then return 204, { allow = allow }, "" end
      return 405, { allow = allow, ["content-type"] = JSON },
        error_body("METHOD_NOT_ALLOWED", req.method .. " is not allowed on " .. req.path)
    end
    return 404, { ["content-type"] = JSON }, error_body("NOT_FOUND", "no route for " .. req.path)
  end
  req.params = params
  set_route(pattern)
  req.args = req.args or NO_ARGS -- set by the server from the decoded query string (runtime/net/http_server.c)
  local body = req.body
  if body ~= "" then
    local ctype = req.headers["content-type"] or ""
    if ctype:find("json", 1, true) then
      local ok, value = pcall(body_json.decode, body)
      -- The walk costs less than a pattern that would tell which bodies need it
      -- (measured: 0.35 us against 1.5 us for a token request's body).
      if ok and not finite(value, 0) then
        ok, value = false, "a number is too large for a double"
      end
      if not ok then
        return 400, { ["content-type"] = JSON },
          error_body("BAD_JSON", "request body is not valid JSON: " .. tostring(value))
      end
      -- Every route takes a JSON object: refuse other shapes here, in one place. cjson
      -- decodes [] and {} alike, so the first character tells an array.
      if type(value) ~= "table" or not body:find("^%s*{") then
        local shape = type(value) == "table" and "an array" or SHAPE[type(value)] or type(value)
        return 422, { ["content-type"] = JSON },
          error_body("VALIDATION_ERROR", "body: must be a JSON object, got " .. shape, "body")
      end
      req.json = value
    end
  end

  local co = running()
  permit[1] = co
  local status, headers, out = handler(req)
  -- A route's own function that called no sealed handler leaves the permit unused.
  if permit[1] == co then permit[1] = nil end
  -- A handler that accepted a WebSocket upgrade (req:accept_websocket) has answered it with
  -- the 101 already: C took the connection over and marked the request.
  if rawget(req, "upgraded") then return end
  if math.type(status) ~= "integer" then
    error(("handler for %s %s returned status %s, not an integer"):format(req.method, req.path, tostring(status)))
  end
  if headers then headers = real_of[headers] or headers end
  local t = type(out)
  if t == "table" then
    out = gen.json.encode(out)
    if not headers then
      headers = JSON_HEADERS
    elseif not headers["content-type"] then
      headers["content-type"] = JSON
    end
  elseif out == nil then
    out = ""
  elseif t ~= "string" then
    out = tostring(out)
  end
  return status, headers or NO_HEADERS, out
end

return M
