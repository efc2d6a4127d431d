-- The host's Lua half: builds policy generations (sandboxed environments, contract checks)
-- and dispatches each HTTP request through the live generation's routes.
-- Called from C only: new_generation() on reload and check, dispatch() once per request.
local cjson = require "cjson"
local json = require "qc.json"
local router = require "qc.router"
local contracts = require "qc.contracts"
local host = require "qc.host"

local M = {}

-- The C modules a policy file may use; scripts/lib modules may use all of them.
local POLICY_QC = { log = true, time = true, jwt = true }
local ALL_QC = setmetatable({}, { __index = function() return true end })

local SAFE_GLOBALS = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring",
  "type", "xpcall", "rawequal", "rawget", "rawlen", "rawset", "setmetatable", "getmetatable",
  "_VERSION",
}

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

local function new_env(gen, allowed_qc)
  local env = {}
  for _, name in ipairs(SAFE_GLOBALS) do env[name] = _G[name] end
  env.string, env.table, env.math, env.utf8 = copy(string), copy(table), copy(math), copy(utf8)
  env.os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }
  env.load = function(chunk, chunkname, _, e)
    return load(chunk, chunkname, "t", e or env) -- text only: bytecode can break the VM
  end
  env.qc = setmetatable({}, {
    __index = function(t, k)
      if not allowed_qc[k] or not package.preload["qc." .. k] then
        error(("qc.%s is not available here"):format(tostring(k)), 2)
      end
      local m = require("qc." .. k)
      rawset(t, k, m)
      return m
    end,
  })
  env.require = function(name)
    if type(name) ~= "string" or not name:match(MODULE_NAME) or name:find("..", 1, true) then
      error(("require: bad module name %q"):format(tostring(name)), 2)
    end
    if name == "cjson" then return cjson end
    if name == "qc.policies" then return gen.policies end -- this generation's, live or not
    if name == "qc.json" then return json end -- shared: its array marks must reach dispatch
    local cname = name:match("^qc%.([%w_]+)$")
    if cname and package.preload[name] then
      if not allowed_qc[cname] then error(("%s is not available here"):format(name), 2) end
      return require(name)
    end
    local cached = gen.modules[name]
    if cached ~= nil then return cached end
    local path = gen.scripts_dir .. "/lib/" .. name:gsub("%.", "/") .. ".lua"
    local chunk, err = loadfile(path, "t", gen.lib_env)
    if not chunk then error(err, 2) end
    local mod = chunk(name)
    if mod == nil then mod = true end
    gen.modules[name] = mod
    return mod
  end
  return strict(env)
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
  }
  gen.lib_env = new_env(gen, ALL_QC)
  gen.policy_env = new_env(gen, POLICY_QC)

  local files, err = host.list_dir(policies_dir, ".lua")
  if not files then error(err, 0) end
  local present = {}
  for _, f in ipairs(files) do present[f] = true end
  for name in pairs(contracts.required) do
    if not present[name .. ".lua"] then
      error(("%s/%s.lua: missing (every policy set needs it)"):format(policies_dir, name), 0)
    end
  end

  for _, file in ipairs(files) do
    local path = policies_dir .. "/" .. file
    local name = file:sub(1, -5)
    local chunk, lerr = loadfile(path, "t", gen.policy_env)
    if not chunk then error(lerr, 0) end
    local ok, policy = pcall(chunk)
    if not ok then error(tostring(policy), 0) end
    if type(policy) ~= "table" then
      error(("%s: must return a table, got %s"):format(path, type(policy)), 0)
    end
    gen.policies[name] = policy
    local check = contracts.check[name]
    if check then
      local cok, cerr = pcall(check, policy, path, gen)
      if not cok then error(tostring(cerr), 0) end
    end
  end
  gen.router = router.compile(gen.policies.routes, policies_dir .. "/routes.lua")
  return gen
end

local JSON = "application/json"
-- Plain tables the C side only reads (with lua_next): shared by every answer that has no
-- headers of its own.
local JSON_HEADERS = json.HEADERS
local NO_HEADERS = {}

local function error_body(code, message)
  return cjson.encode({ error = { code = code, message = message } })
end

local REQUEST = {}
REQUEST.__index = REQUEST

-- Shared by every request without a query string / without headers of its own: no table
-- is made per request for them. Read-only, so one handler cannot leak into the next.
local function frozen(t)
  return setmetatable({}, { __index = t, __newindex = function() error("read-only table", 2) end,
                            __pairs = function() return next, t, nil end })
end
local NO_ARGS = frozen({})

---A request header by name, case-insensitive.
---@param name string
---@return string|nil
function REQUEST:header(name)
  return self.headers[name:lower()]
end

---Handlers return status, headers, body. Tables become JSON; nil becomes an empty body.
---@param gen table
---@param req table
---@return integer status, table headers, string body
function M.dispatch(gen, req)
  setmetatable(req, REQUEST)
  local handler, params, allow = gen.router:match(req.method, req.path)
  if not handler then
    if allow then
      if req.method == "OPTIONS" then
        return 204, {
          allow = allow,
          ["access-control-allow-methods"] = allow,
          ["access-control-allow-headers"] = req.headers["access-control-request-headers"]
            or "authorization, content-type",
          ["access-control-max-age"] = "600",
        }, ""
      end
      return 405, { allow = allow, ["content-type"] = JSON },
        error_body("METHOD_NOT_ALLOWED", req.method .. " is not allowed on " .. req.path)
    end
    return 404, { ["content-type"] = JSON }, error_body("NOT_FOUND", "no route for " .. req.path)
  end
  req.params = params
  req.args = req.args or NO_ARGS -- set by the server from lws' decoded query fragments
  local body = req.body
  if body ~= "" then
    local ctype = req.headers["content-type"] or ""
    if ctype:find("json", 1, true) then
      local ok, value = pcall(cjson.decode, body)
      if not ok then
        return 400, { ["content-type"] = JSON }, error_body("BAD_JSON", "request body is not valid JSON")
      end
      req.json = value
    end
  end

  local status, headers, out = handler(req)
  if math.type(status) ~= "integer" then
    error(("handler for %s %s returned status %s, not an integer"):format(req.method, req.path, tostring(status)))
  end
  local t = type(out)
  if t == "table" then
    out = json.encode(out)
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
