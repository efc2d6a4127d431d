-- web/openapi.json against the server it describes: every route of policies/routes.lua
-- (compiled by the router, as the server compiles it) has a description and every
-- description a route; the document is well formed (ids, $refs, the error shape on every
-- error answer); and every documented example (an operation's x-examples) is sent to a real
-- server with the fake LiveKit and answered with the documented status, content type and a
-- body of the documented shape.
local cjson = require "cjson"
local server = require "support.server"
local lk = require "support.fake_livekit"
local generation = require "qc.generation"

local DOC_PATH = server.source .. "/web/openapi.json"
local METHODS = { get = true, post = true, put = true, patch = true, delete = true }

local function load_doc()
  local text = assert(server.read_file(DOC_PATH), "web/openapi.json is missing")
  return cjson.decode(text)
end

local function resolve(doc, node)
  local seen = 0
  while type(node) == "table" and node["$ref"] do
    local ref = node["$ref"]
    assert(ref:sub(1, 2) == "#/", "only local $refs: " .. ref)
    node = doc
    for part in ref:sub(3):gmatch("[^/]+") do
      node = node[part]
      assert(node ~= nil, "dangling $ref " .. ref)
    end
    seen = seen + 1
    assert(seen < 20, "a $ref loop at " .. ref)
  end
  return node
end

-- "METHOD /path" of every compiled route; a tail {x...} is written {x}, as OpenAPI does.
local function compiled_routes()
  local gen = generation.new_generation(server.source .. "/policies", server.source .. "/scripts", 1)
  local out = {}
  for path, entry in pairs(gen.router.static) do
    for m in pairs(entry.methods) do out[m .. " " .. path] = true end
  end
  for _, d in ipairs(gen.router.dynamic) do
    local path = d.pattern:gsub("{([%a_][%w_]*)%.%.%.}", "{%1}")
    for m in pairs(d.methods) do out[m .. " " .. path] = true end
  end
  return out
end

local function documented(doc)
  local out = {}
  for path, ops in pairs(doc.paths) do
    for m in pairs(ops) do
      if METHODS[m] then out[m:upper() .. " " .. path] = true end
    end
  end
  return out
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

-- A strict reading of the JSON Schema keywords the document uses. Returns nil or "where: why".
local function check(doc, schema, v, where)
  schema = resolve(doc, schema)
  if schema == nil then return nil end
  local want = schema.type
  if want then
    local types = type(want) == "table" and want or { want }
    local ok = false
    for _, t in ipairs(types) do
      if t == "object" and type(v) == "table" and (next(v) ~= nil and v[1] == nil or next(v) == nil) then ok = true
      elseif t == "array" and type(v) == "table" and (v[1] ~= nil or next(v) == nil) then ok = true
      elseif t == "string" and type(v) == "string" then ok = true
      elseif t == "integer" and type(v) == "number" and math.tointeger(v) then ok = true -- cjson decodes to floats
      elseif t == "number" and type(v) == "number" then ok = true
      elseif t == "boolean" and type(v) == "boolean" then ok = true
      elseif t == "null" and v == cjson.null then ok = true end
    end
    if not ok then return ("%s: expected %s, got %s"):format(where, cjson.encode(want), cjson.encode(v)) end
  end
  if schema.enum then
    local ok = false
    for _, e in ipairs(schema.enum) do if e == v then ok = true end end
    if not ok then return ("%s: %s is not one of %s"):format(where, cjson.encode(v), cjson.encode(schema.enum)) end
  end
  if type(v) == "table" and schema.required then
    for _, k in ipairs(schema.required) do
      if v[k] == nil then return ("%s: missing %s"):format(where, k) end
    end
  end
  if type(v) == "table" and schema.properties then
    for k, sub in pairs(schema.properties) do
      if v[k] ~= nil and v[k] ~= cjson.null then
        local e = check(doc, sub, v[k], where .. "." .. k)
        if e then return e end
      end
    end
    if schema.additionalProperties == false then
      for k in pairs(v) do
        if not schema.properties[k] then return ("%s: unexpected member %s"):format(where, tostring(k)) end
      end
    end
  end
  if type(v) == "table" and schema.items then
    for i, x in ipairs(v) do
      local e = check(doc, schema.items, x, ("%s[%d]"):format(where, i))
      if e then return e end
    end
  end
  return nil
end

describe("web/openapi.json", function()
  local doc = load_doc()

  it("is an OpenAPI 3.1 document with an id, a summary and answers for every operation", function()
    assert.equal("3.1.0", doc.openapi)
    assert.is_string(doc.info.title)
    assert.is_table(doc.components.securitySchemes.apiKey)
    local ids = {}
    for _, path in ipairs(sorted_keys(doc.paths)) do
      for m, op in pairs(doc.paths[path]) do
        local where = m:upper() .. " " .. path
        assert.is_true(METHODS[m] ~= nil, where .. ": not an HTTP method")
        assert.is_string(op.operationId, where)
        assert.is_nil(ids[op.operationId], where .. ": operationId used twice")
        ids[op.operationId] = true
        assert.is_string(op.summary, where .. ": no summary")
        assert.is_table(op.responses, where)
        -- Path parameters: each {name} of the path declared, and only those.
        local declared = {}
        for _, p in ipairs(op.parameters or {}) do
          p = resolve(doc, p)
          if p["in"] == "path" then
            assert.is_true(p.required, where .. ": path parameter " .. p.name .. " must be required")
            declared[p.name] = true
          end
        end
        for name in path:gmatch("{([^}]+)}") do
          assert.is_true(declared[name], where .. ": {" .. name .. "} is not declared")
          declared[name] = nil
        end
        assert.same({}, declared, where .. ": parameters declared in path but not in it")
      end
    end
  end)

  it("describes every error answer with the one error shape, and every $ref resolves", function()
    local function walk(node, where)
      if type(node) ~= "table" then return end
      if node["$ref"] then resolve(doc, node) end
      for k, v in pairs(node) do walk(v, where .. "/" .. tostring(k)) end
    end
    walk(doc, "#")
    local err = resolve(doc, doc.components.schemas.Error)
    assert.same({ "error" }, err.required)
    assert.same({ "code", "message" }, err.properties.error.required)
    assert.is_table(err.properties.error.properties.field)
    for path, ops in pairs(doc.paths) do
      for m, op in pairs(ops) do
        for status, r in pairs(op.responses) do
          local n = tonumber(status)
          if n and n >= 400 then
            r = resolve(doc, r)
            local json = r.content and r.content["application/json"]
            assert.is_table(json, ("%s %s %s: no JSON error body"):format(m, path, status))
            assert.equal("#/components/schemas/Error", json.schema["$ref"], ("%s %s %s"):format(m, path, status))
          end
        end
      end
    end
  end)

  it("has a description for every route, and a route for every description", function()
    local routes, docs = compiled_routes(), documented(doc)
    local missing, extra = {}, {}
    for _, r in ipairs(sorted_keys(routes)) do if not docs[r] then missing[#missing + 1] = r end end
    for _, d in ipairs(sorted_keys(docs)) do if not routes[d] then extra[#extra + 1] = d end end
    assert.same({}, missing, "routes without a description in web/openapi.json")
    assert.same({}, extra, "descriptions without a route in policies/routes.lua")
    assert.is_true(#sorted_keys(routes) >= 18)
  end)

  it("fails the check above when a route is added without a description", function()
    -- The comparison itself, against a routes file with one route more.
    local dir = server.tmpdir()
    local policies = server.copy_policies(dir .. "/policies")
    local text = server.read_file(policies .. "/routes.lua")
    text = text:gsub("\n}%s*$", '\n  { "GET", "/undocumented", service.info },\n}\n')
    server.write_file(policies .. "/routes.lua", text)
    local gen = generation.new_generation(policies, server.source .. "/scripts", 1)
    assert.is_table(gen.router.static["/undocumented"])
    assert.is_nil(documented(doc)["GET /undocumented"])
    os.execute("rm -rf " .. server.quote(dir))
  end)
end)

describe("the documented examples", function()
  local doc = load_doc()
  local s, fake

  setup(function()
    fake = lk.start()
    s = server.start { env = { LIVEKIT_URL = fake.url } }
  end)
  teardown(function()
    if s then s:stop() end
    if fake then fake:stop() end
  end)

  it("serves the document itself at /openapi.json, as the file says", function()
    local status, body, headers = s:request("GET", "/openapi.json")
    assert.equal(200, status)
    assert.equal("application/json", headers["content-type"])
    assert.same(doc, body)
  end)

  it("are each answered with the documented status, content type and body shape", function()
    local list = {}
    for path, ops in pairs(doc.paths) do
      for m, op in pairs(ops) do
        for _, ex in ipairs(op["x-examples"] or {}) do
          list[#list + 1] = { method = m:upper(), template = path, op = op, ex = ex }
        end
      end
    end
    table.sort(list, function(a, b) return a.ex.order < b.ex.order end)
    assert.is_true(#list >= 25, "examples: " .. #list)
    local covered = {}
    for _, e in ipairs(list) do
      local ex, op = e.ex, e.op
      local what = ("%s %s (%s)"):format(e.method, ex.path, ex.summary)
      assert.is_table(op.responses[("%d"):format(ex.status)], what .. ": its status is not a documented answer")
      covered[e.method .. " " .. e.template] = true
      local target = ex.path .. (ex.query and "?" .. ex.query or "")
      if ex.websocket then
        -- The upgrade, by hand: the answer is a 101 with the RFC 6455 accept key.
        local status, out = server.run(("curl -s -i -m 3 -H 'Connection: Upgrade' -H 'Upgrade: websocket' "
          .. "-H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' %s 2>&1 || true")
          :format(server.quote(s.url .. target)))
        assert(status == 0, out)
        assert.truthy(out:find("^HTTP/1%.1 101"), what .. ": " .. out:sub(1, 200))
        assert.truthy(out:lower():find("sec%-websocket%-accept: s3pplmbitxaq9kygzzhzrbk%+xoo="), what)
      else
        local body, headers = ex.body, {}
        if ex.raw_body then
          body = ex.raw_body
          headers["Content-Type"] = "application/json"
        end
        local status, decoded, hdrs, raw = s:request(e.method, target, body, headers)
        assert.equal(math.tointeger(ex.status), status, what .. ": " .. tostring(raw))
        local ctype = hdrs["content-type"] or ""
        local want_type = ex.content_type or "application/json"
        assert.equal(want_type, ctype:sub(1, #want_type), what .. ": content type " .. ctype)
        local r = resolve(doc, op.responses[("%d"):format(ex.status)])
        local media = r.content and r.content[want_type]
        if want_type == "application/json" then
          assert.is_table(decoded, what .. ": not JSON")
          assert.is_table(media, what .. ": no JSON body documented")
          local problem = check(doc, media.schema, decoded, what)
          assert.is_nil(problem, problem)
        else
          assert.is_string(raw, what)
          assert.is_table(media, what .. ": " .. want_type .. " is not a documented body")
        end
      end
    end
    -- Every operation has at least one example, so none goes untried.
    for _, r in ipairs(sorted_keys(documented(doc))) do
      assert.is_true(covered[r] == true, r .. " has no example")
    end
  end)
end)
