-- Files of the web directory (scripts/lib/qc/handlers/static.lua, runtime/net/static_file.c)
-- from a server laid out as installed (bin/quantcoach beside share/quantcoach/web), whose web
-- directory holds a symlink out of it and one within it. The worst request paths are written
-- byte for byte on a raw socket (spec/support/rawhttp.py), so no client tidies them first.
local cjson = require "cjson"
local server = require "support.server"

local HELPER = server.source .. "/spec/support/rawhttp.py"
local SECRET = "static-spec-secret-outside-web"

local function raw(port, target)
  local dir = server.tmpdir()
  server.write_file(dir .. "/plan.json", cjson.encode {
    port = port, health = false, timeout_ms = 3000,
    steps = { { send = "GET " .. target .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" } },
  })
  local status, out = server.run(("/usr/bin/python3 %s < %s"):format(server.quote(HELPER), server.quote(dir .. "/plan.json")))
  os.execute("rm -rf " .. server.quote(dir))
  assert(status == 0, "raw helper failed: " .. out)
  local recv = cjson.decode(out).recv
  local head, body = recv:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no answer to " .. target .. ": " .. recv:sub(1, 200))
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[name:lower()] = value end
  return tonumber(head:match("^HTTP/1%.1 (%d%d%d)")), headers, body
end

describe("static files of the web directory", function()
  local s, root

  setup(function()
    root = server.tmpdir()
    local web = root .. "/share/quantcoach/web"
    assert(os.execute(("mkdir -p %s/bin %s/share/quantcoach && cp %s %s/bin/quantcoach && cp -r %s %s")
      :format(server.quote(root), server.quote(root), server.quote(server.bin), server.quote(root), server.quote(server.source .. "/web"),
        server.quote(web))))
    server.write_file(root .. "/secret.txt", SECRET)
    assert(os.execute(("ln -s %s %s/docs/escape.txt && ln -s ../../../.. %s/docs/up && ln -s docs.js %s/docs/inside.js && mkdir %s/docs/sub && printf 'x' > %s/docs/.hidden")
      :format(server.quote(root .. "/secret.txt"), server.quote(web), server.quote(web), server.quote(web), server.quote(web), server.quote(web))))
    -- The installed binary, started through a wrapper that swaps it in for the build's.
    server.write_file(root .. "/wrap.sh", ('#!/bin/sh\nshift\nexec %s "$@"\n'):format(server.quote(root .. "/bin/quantcoach")))
    assert(os.execute("chmod +x " .. server.quote(root .. "/wrap.sh")))
    s = server.start { wrap = server.quote(root .. "/wrap.sh") }
  end)
  teardown(function()
    if s then s:stop() end
    if root then os.execute("rm -rf " .. server.quote(root)) end
  end)

  it("serves a file with its type, validators and caching, and 304 on a matching validator", function()
    local status, headers, body = raw(s.port, "/docs/docs.js")
    assert.equal(200, status)
    assert.equal("text/javascript; charset=utf-8", headers["content-type"])
    assert.equal("public, max-age=3600", headers["cache-control"])
    assert.equal("nosniff", headers["x-content-type-options"])
    assert.truthy(headers["etag"]:match('^"%x+%-%x+"$'))
    assert.truthy(headers["last-modified"]:match("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$"))
    assert.equal(server.read_file(server.source .. "/web/docs/docs.js"), body)

    local st, _, h = s:request("GET", "/docs", nil, { ["If-None-Match"] = 'W/"x", ' .. select(3, s:request("GET", "/docs"))["etag"] })
    assert.equal(304, st)
    assert.equal("no-cache", h["cache-control"])
    st = s:request("GET", "/docs/docs.css", nil, { ["If-Modified-Since"] = headers["last-modified"] })
    assert.equal(304, st)
    st = s:request("GET", "/docs/docs.css", nil, { ["If-Modified-Since"] = "Thu, 01 Jan 1970 00:00:00 GMT" })
    assert.equal(200, st)
    st = s:request("GET", "/docs/docs.css", nil, { ["If-None-Match"] = '"nope"' })
    assert.equal(200, st)

    local _, _, hh = s:request("GET", "/docs")
    assert.equal("text/html; charset=utf-8", hh["content-type"])
    local _, _, hc = s:request("GET", "/docs/docs.css")
    assert.equal("text/css; charset=utf-8", hc["content-type"])
  end)

  it("follows a symlink that stays inside the directory", function()
    local status, _, body = raw(s.port, "/docs/inside.js")
    assert.equal(200, status)
    assert.equal(server.read_file(server.source .. "/web/docs/docs.js"), body)
  end)

  -- Each of these either never reaches the handler (normalised by the server to a path with
  -- no route, or refused as malformed) or is refused by it: none answers the file outside.
  local worst = {
    { "/docs/escape.txt", 404 },                         -- a symlink out
    { "/docs/up/secret.txt", 404 },                      -- through a symlinked directory
    { "/docs/../../secret.txt", 404 },
    { "/docs/%2e%2e/%2e%2e/secret.txt", 404 },
    { "/docs/%2E%2E%2F%2E%2E%2Fsecret.txt", 404 },
    { "/docs/..%2f..%2f..%2f..%2fsecret.txt", 404 },
    { "/docs/%252e%252e/%252e%252e/secret.txt", 404 },  -- decoded once only
    { "/docs/..%5c..%5c..%5csecret.txt", 404 },          -- backslashes
    { "/docs/.%2e/.%2e/secret.txt", 404 },
    { "/docs/.hidden", 404 },
    { "/docs/sub", 404 },                                -- a directory
    { "/docs/nothing.js", 404 },
    { "/docs/docs.js%00.png", 400 },                     -- NUL
    { "/docs/docs.js%00", 400 },
    { "/docs/%c0%ae%c0%ae/secret.txt", 404 },            -- overlong UTF-8 dots are not dots
  }
  for _, case in ipairs(worst) do
    it("refuses " .. case[1] .. " with a JSON " .. case[2], function()
      local status, headers, body = raw(s.port, case[1])
      assert.equal(case[2], status, body)
      assert.equal("application/json", headers["content-type"])
      local doc = cjson.decode(body)
      assert.is_string(doc.error.code)
      assert.falsy(body:find(SECRET, 1, true))
    end)
  end

  it("answers HEAD like GET without the body", function()
    local st, _, h, rawbody = s:request("HEAD", "/docs/docs.js")
    assert.equal(200, st)
    assert.equal("", rawbody)
    assert.equal("text/javascript; charset=utf-8", h["content-type"])
  end)
end)
