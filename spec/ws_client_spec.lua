-- qc.ws, the WebSocket client for scripts (bindings/ws_client.c on runtime/net/ws_client.c), against
-- the `ws` npm server in spec/support/fake_elevenlabs.js (its /echo endpoint).
local ws = require "qc.ws"
local cjson = require "cjson"
local el = require "support.fake_elevenlabs"

describe("qc.ws", function()
  local fake
  setup(function() fake = el.start() end)
  teardown(function() fake:stop() end)

  local function echo()
    local c, err, code = ws.connect(fake.ws .. "/echo")
    assert(c, tostring(err) .. " " .. tostring(code))
    return c
  end

  it("sends text and binary messages and receives them back whole", function()
    local c = echo()
    assert.is_true(c:is_open())
    assert.is_true(c:send("hello"))
    local bin = string.rep("\0\1\2\255", 1000)
    assert.is_true(c:send_binary(bin))
    local kind, data = c:receive(5)
    assert.equal("text", kind)
    assert.equal("hello", data)
    kind, data = c:receive(5)
    assert.equal("binary", kind)
    assert.equal(bin, data)
    assert.equal(0, c:buffered())
    assert.is_true(c:close())
  end)

  it("joins a message larger than one receive buffer", function()
    local c = echo()
    c:send("big 1500000")
    local kind, data = c:receive(10)
    assert.equal("text", kind)
    assert.equal(1500000, #data)
    assert.equal(string.rep("x", 1500000), data)
    c:close()
  end)

  it("closes with 1009 when a message passes max_message", function()
    local c = assert(ws.connect(fake.ws .. "/echo", { max_message = 1000 }))
    c:send("big 5000")
    local kind, what, code = c:receive(10)
    assert.is_nil(kind)
    assert.equal("closed", what)
    assert.equal(1009, code)
  end)

  it("sends the extra handshake headers it is given", function()
    local c = assert(ws.connect(fake.ws .. "/echo", { headers = { ["xi-api-key"] = "abc", ["X-Num"] = 42 } }))
    c:send("headers")
    local _, data = c:receive(5)
    local h = cjson.decode(data)
    assert.equal("abc", h["xi-api-key"])
    assert.equal("42", h["x-num"])
    assert.equal("127.0.0.1:" .. fake.port, h.host)
    c:close()
  end)

  it("reports the server's close code and reason", function()
    local c = echo()
    c:send("close 4001 going away now")
    local kind, what, code, reason = c:receive(5)
    assert.is_nil(kind)
    assert.equal("closed", what)
    assert.equal(4001, code)
    assert.equal("going away now", reason)
    assert.same({ nil, "CLOSED" }, { c:send("late") })
  end)

  it("reports a TCP drop without a Close as 1006", function()
    local c = echo()
    c:send("drop")
    local kind, what, code = c:receive(5)
    assert.is_nil(kind)
    assert.equal("closed", what)
    assert.equal(1006, code)
  end)

  it("answers a refused upgrade with its HTTP status", function()
    local c, err, code = ws.connect(fake.ws .. "/refuse/403")
    assert.is_nil(c)
    assert.equal("HTTP_403", code)
    assert.matches("403", err)
    c, err, code = ws.connect(fake.ws .. "/refuse/503")
    assert.is_nil(c)
    assert.equal("HTTP_503", code)
  end)

  it("fails with FAILED when nothing listens", function()
    -- a port that was free a moment ago
    local c, err, code = ws.connect("ws://127.0.0.1:1/none")
    assert.is_nil(c)
    assert.equal("FAILED", code)
    assert.is_string(err)
  end)

  it("fails with FAILED for a name that does not resolve", function()
    local c, _, code = ws.connect("ws://no-such-host.invalid/x")
    assert.is_nil(c)
    assert.equal("FAILED", code)
  end)

  it("raises on a URL that is not ws:// or wss://", function()
    assert.has_error(function() ws.connect("http://127.0.0.1/") end)
    assert.has_error(function() ws.connect("ws://127.0.0.1:99999/") end)
    assert.has_error(function() ws.connect("ws://127.0.0.1/a b") end)
    assert.has_error(function() ws.connect("wss://[]/1") end)
    assert.has_error(function() ws.connect("ws://[::1/") end)
    assert.has_error(function() ws.connect("ws://127.0.0.1/", { headers = { ["bad name"] = "x" } }) end)
    assert.has_error(function() ws.connect("ws://127.0.0.1/", { headers = { x = "a\r\nb: c" } }) end)
  end)

  it("times out a receive with nothing to read", function()
    local c = echo()
    assert.same({ nil, "timeout" }, { c:receive(0.1) })
    assert.same({ nil, "timeout" }, { c:receive(0) })
    c:send("still there")
    assert.same({ "text", "still there" }, { c:receive(5) })
    c:close()
  end)

  it("gets a pong for its ping", function()
    local c = echo()
    assert.is_true(c:ping("p1"))
    assert.same({ "pong", "p1" }, { c:receive(5) })
    c:close()
  end)

  it("close waits for the end and makes the connection unusable for sending", function()
    local c = echo()
    for i = 1, 100 do c:send("m" .. i) end
    local ok, code = c:close(1000, "done")
    assert.is_true(ok)
    assert.equal(1000, code)
    assert.is_false(c:is_open())
    assert.same({ nil, "CLOSED" }, { c:send("x") })
  end)

  it("sends an empty Close for close(0), as Egress ends a stream", function()
    fake:reset()
    local c = echo()
    c:send("last")
    assert.same({ "text", "last" }, { c:receive(5) })
    assert.is_true((c:close(0)))
    local closes
    require("support.server").wait_for(function()
      closes = fake:request("GET", "/_fake/echo_closes")
      return #closes > 0
    end, 5, "the echo server to see the Close")
    assert.equal(1005, closes[1].code)
  end)

  it("refuses to queue past max_queued", function()
    local c = assert(ws.connect(fake.ws .. "/echo", { max_queued = 10000 }))
    local refused
    for _ = 1, 100 do
      local ok, err = c:send_binary(string.rep("a", 4000))
      if not ok then refused = err break end
    end
    assert.equal("QUEUE_FULL", refused)
    c:close()
  end)

  it("holds many connections at once", function()
    local conns = {}
    for i = 1, 40 do
      conns[i] = echo()
      conns[i]:send("n" .. i)
    end
    for i = 1, 40 do
      assert.same({ "text", "n" .. i }, { conns[i]:receive(5) })
    end
    for i = 1, 40 do conns[i]:close() end
  end)

  it("drops a connection that is garbage-collected or closed with <close>", function()
    do
      local c <close> = echo()
      c:send("x")
    end
    local c = echo()
    c = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    local again = echo()
    again:send("y")
    assert.same({ "text", "y" }, { again:receive(5) })
    again:close()
    assert.has_error(function()
      local d <close> = echo()
      d:close()
      local e = d
      getmetatable(e).__close(e)
      e:send("z")
    end)
  end)
end)

describe("qc.ws over TLS", function()
  local server = require "support.server"
  local quote = server.quote
  local dir, fake
  setup(function()
    dir = server.tmpdir()
    assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem -days 2 "
      .. "-subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1"):format(dir, dir)))
    fake = el.start { tls_cert = dir .. "/cert.pem", tls_key = dir .. "/key.pem" }
    server.write_file(dir .. "/client.lua", [[
      local ws = require "qc.ws"
      local c, err, code = ws.connect(arg[1])
      if not c then print("failed", err, code) return 1 end
      c:send("over tls")
      print(c:receive(5))
      c:close()
      return 0
    ]])
  end)
  teardown(function() fake:stop() end)

  local function client(url, cafile)
    local cmd = ("SSL_CERT_FILE=%s %s run %s %s 2>&1"):format(quote(cafile), quote(server.bin),
      quote(dir .. "/client.lua"), quote(url))
    local p = io.popen(cmd)
    local out = p:read("a")
    p:close()
    return out
  end

  it("talks wss:// to a server the CA file vouches for, by name", function()
    assert.matches("text\tover tls", client(("wss://localhost:%d/echo"):format(fake.port), dir .. "/cert.pem"))
  end)

  it("refuses a server certificate no trusted CA signed", function()
    local out = client(("wss://localhost:%d/echo"):format(fake.port), "/etc/ssl/certs/ca-certificates.crt")
    assert.matches("failed", out)
    assert.not_matches("over tls", out)
  end)

  it("refuses a certificate for another name", function()
    -- the certificate names localhost only; 127.0.0.1 is not in it
    local out = client(("wss://127.0.0.1:%d/echo"):format(fake.port), dir .. "/cert.pem")
    assert.matches("failed", out)
  end)
end)
