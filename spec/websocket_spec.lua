-- WebSockets on our own HTTP server (runtime/net/websocket.c, bindings/ws_server.c): the
-- handshake, real clients (the npm `ws` library), the worst shapes a raw socket can send
-- (spec/support/rawws.py), the close codes, the bounded send queue, and the Lua API of
-- req:accept_websocket, through an echo route of a fixture policy.
local cjson = require "cjson"
local server = require "support.server"
local time = require "qc.time"

local PYTHON = "/usr/bin/python3"
local RAW = server.source .. "/spec/support/rawws.py"
local CLIENT = server.source .. "/spec/support/ws_client.js"

local ROUTES = [[
  { "GET", "/ws/echo", function(req)
      if req.args.wait then qc.time.sleep(tonumber(req.args.wait)) end
      local conn = req:accept_websocket{ max_message = tonumber(req.args.max or ""),
        max_queued = tonumber(req.args.q or ""), idle_timeout_ms = tonumber(req.args.idle or "") }
      conn:on_message(function(data, kind)
        if data == "close" then conn:close(4000, "asked to") return end
        if data == "flood" then
          local chunk, n, ok, err = string.rep("f", 16384), 0, true, nil
          while n < 4096 do
            ok, err = conn:send(chunk)
            if not ok then break end
            n = n + 1
          end
          qc.log.info("spec", "flood stopped", { err = err, sent = n, queued = conn:queued() })
          return
        end
        if kind == "text" then conn:send(data) else conn:send_binary(data) end
      end)
      conn:on_close(function(code, reason)
        local ok, err = conn:send("late")
        qc.log.info("spec", "ws closed", { code = code, reason = reason, tag = req.args.tag or "-",
          late = tostring(ok) .. "/" .. tostring(err), open = tostring(conn:is_open()) })
      end)
    end },
  { "GET", "/ws/refuse", function(req)
      if req.websocket then
        return 401, nil, { error = { code = "UNAUTHORIZED", message = "no token for this socket" } }
      end
      return 200, nil, { plain = true }
    end },
  { "GET", "/ws/drop", function(req) req:accept_websocket() end },
  { "GET", "/ws/scoped", function(req)
      local conn <close> = req:accept_websocket()
      conn:send("bye")
    end },
  { "GET", "/ws/slow", function(req)
      local conn = req:accept_websocket()
      local running, peak, done = 0, 0, 0
      conn:on_message(function()
        running = running + 1
        if running > peak then peak = running end
        qc.time.sleep(0.02)
        running = running - 1
        done = done + 1
        if done == 300 then
          qc.log.info("spec", "slow handler done", { peak = peak })
          conn:send("done")
        end
      end)
    end },
  { "GET", "/garbage", function()
      local keep = {}
      for i = 1, 300000 do keep[i % 100 + 1] = { i, tostring(i) } end
      return 200, nil, { ok = #keep }
    end },
]]

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end

--- A client frame, masked unless opts.unmasked.
local function frame(b0, payload, opts)
  opts = opts or {}
  local n, hdr = #payload, string.char(b0)
  local mbit = opts.unmasked and 0 or 0x80
  if n < 126 then
    hdr = hdr .. string.char(mbit | n)
  elseif n < 65536 then
    hdr = hdr .. string.char(mbit | 126) .. string.pack(">I2", n)
  else
    hdr = hdr .. string.char(mbit | 127) .. string.pack(">I8", n)
  end
  if opts.unmasked then return hdr .. payload end
  local m = { 0x37, 0xfa, 0x21, 0x3d }
  local out = {}
  for i = 1, n do out[i] = string.char(payload:byte(i) ~ m[(i - 1) % 4 + 1]) end
  return hdr .. string.char(table.unpack(m)) .. table.concat(out)
end

local function text(s, opts) return frame(0x81, s, opts) end
local function close_frame(code, reason) return frame(0x88, code and string.pack(">I2", code) .. (reason or "") or "") end

local function raw(port, plan)
  plan.port = port
  for _, step in ipairs(plan.steps or {}) do
    if step.send then step.send = hex(step.send) end
    if step.send_slow then step.send_slow = hex(step.send_slow) end
  end
  local dir = server.tmpdir()
  server.write_file(dir .. "/plan.json", cjson.encode(plan))
  local status, out = server.run(("%s %s < %s"):format(PYTHON, server.quote(RAW), server.quote(dir .. "/plan.json")))
  os.execute("rm -rf " .. server.quote(dir))
  assert(status == 0, "raw helper failed: " .. out)
  local report = cjson.decode(out)
  for _, f in ipairs(report.frames) do
    f.data = unhex(f.payload)
    if f.op == 8 and #f.data >= 2 then
      f.code = string.unpack(">I2", f.data)
      f.reason = f.data:sub(3)
    end
  end
  return report
end

local function client(port, plan, background)
  plan.url = plan.url or ("ws://127.0.0.1:%d%s"):format(port, plan.path or "/ws/echo")
  local dir = server.tmpdir()
  server.write_file(dir .. "/plan.json", cjson.encode(plan))
  local cmd = ("node %s %s"):format(server.quote(CLIENT), server.quote(dir .. "/plan.json"))
  if background then
    os.execute(cmd .. " > " .. server.quote(dir .. "/out.json") .. " 2>&1 &")
    return dir .. "/out.json"
  end
  local status, out = server.run(cmd)
  os.execute("rm -rf " .. server.quote(dir))
  assert(status == 0, "ws client failed: " .. out)
  return cjson.decode(out)
end

--- The server's Close frame is the last frame, and the socket ended after it.
local function assert_closed_with(report, code, reason)
  assert.are.equal(101, report.status)
  local last = report.frames[#report.frames]
  assert.is_truthy(last, "no frame came back")
  assert.are.equal(8, last.op)
  assert.are.equal(code, last.code)
  if reason then assert.are.equal(reason, last.reason) end
  assert.is_false(last.masked)
  assert.are.equal("eof", report["end"])
end

describe("WebSockets", function()
  local s
  setup(function()
    s = server.start { policies = server.fixture_policies(ROUTES), env = { QC_REQUEST_TIMEOUT_MS = "1000" } }
  end)
  teardown(function() if s then s:stop() end end)

  local function log_has(pattern)
    local text = s:wait_log(pattern)
    assert.is_truthy(text:find(pattern), "log lacks " .. pattern .. "\n" .. text:sub(-3000))
  end

  describe("with the ws client library", function()
    it("echoes text and binary messages and joins fragments", function()
      local r = client(s.port, { path = "/ws/echo?tag=echo1", steps = {
        { send = "hello" }, { send_binary = 3000 }, { send_fragments = { "Hel", "lo ", "there" } },
        { wait_messages = 3 }, { close = { 1000, "done" } } } })
      assert.is_true(r.opened)
      assert.are.equal("hello", r.messages[1].text)
      assert.is_true(r.messages[2].binary)
      assert.are.equal(3000, r.messages[2].len)
      local sum = 0
      for i = 0, 2999 do sum = (sum + ((i * 7 + 3) & 255)) % 65536 end
      assert.are.equal(sum, r.messages[2].sum)
      assert.are.equal("Hello there", r.messages[3].text)
      assert.are.equal(1000, r.close.code)
      log_has('ws closed code=1000 late=nil/CLOSED open=false reason=done tag=echo1')
    end)

    it("answers a ping with a pong carrying the same payload", function()
      local r = client(s.port, { steps = { { ping = "are you there" }, { wait_ms = 200 }, { close = { 1000, "" } } } })
      assert.are.same({ "are you there" }, r.pongs)
      assert.are.equal(1000, r.close.code)
    end)

    it("closes from the server with the code and reason the handler gave", function()
      local r = client(s.port, { path = "/ws/echo?tag=byserver", steps = { { send = "close" } } })
      assert.are.equal(4000, r.close.code)
      assert.are.equal("asked to", r.close.reason)
      log_has("ws closed code=4000 late=nil/CLOSED open=false reason=\"asked to\" tag=byserver")
    end)

    it("closes a socket held in a <close> variable with 1000 when its scope ends", function()
      local r = client(s.port, { path = "/ws/scoped" })
      assert.are.equal("bye", r.messages[1].text)
      assert.are.equal(1000, r.close.code)
    end)

    it("refuses an upgrade with the handler's JSON error, and a route that is not there with 404", function()
      local r = client(s.port, { path = "/ws/refuse" })
      assert.are.equal(401, r.status)
      assert.are.equal("UNAUTHORIZED", cjson.decode(r.body).error.code)
      r = client(s.port, { path = "/no/such/socket" })
      assert.are.equal(404, r.status)
      assert.are.equal("NOT_FOUND", cjson.decode(r.body).error.code)
    end)

    it("keeps a socket open past the request timeout (it bounds the handshake only)", function()
      local r = client(s.port, { steps = { { wait_ms = 1600 }, { send = "still here" }, { wait_messages = 1 },
        { close = { 1000, "" } } } })
      assert.are.equal("still here", r.messages[1].text)
      assert.are.equal(1000, r.close.code)
    end)

    it("keeps a socket whose handle Lua dropped open through garbage collection", function()
      local out = client(s.port, { path = "/ws/drop", steps = { { wait_ms = 1200 }, { ping = "p" }, { wait_ms = 200 },
        { close = { 1000, "" } } } }, true)
      time.sleep(0.3)
      for _ = 1, 5 do assert.are.equal(200, (s:request("GET", "/garbage"))) end
      local r = server.wait_for(function()
        local t = server.read_file(out)
        return t and t ~= "" and cjson.decode(t)
      end, 10, "the client to finish")
      assert.are.same({ "p" }, r.pongs)
      assert.are.equal(1000, r.close.code)
    end)
  end)

  it("runs at most 32 message tasks of one socket at a time, and reads the rest later in order", function()
    local steps = {}
    for i = 1, 300 do steps[i] = { send = "m" .. i } end
    steps[#steps + 1] = { wait_messages = 1 }
    steps[#steps + 1] = { close = { 1000, "" } }
    local r = client(s.port, { path = "/ws/slow", steps = steps, timeout_ms = 20000 })
    assert.are.equal("done", r.messages[1].text)
    local peak = tonumber(s:wait_log("slow handler done"):match("slow handler done peak=(%d+)"))
    assert.is_true(peak >= 2 and peak <= 32, "peak " .. tostring(peak))
  end)

  describe("the handshake", function()
    local function head(lines)
      return "GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n" .. table.concat(lines, "\r\n") .. "\r\n\r\n"
    end
    local UP, CONN = "Upgrade: websocket", "Connection: Upgrade"
    local KEY, V13 = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"

    it("answers RFC 6455's example key with its accept value", function()
      local r = raw(s.port, { steps = { { send = close_frame(1000) } } })
      assert.are.equal(101, r.status)
      assert.is_truthy(r.head:lower():find("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=", 1, true))
    end)

    it("takes Upgrade and Connection as token lists in any case", function()
      local r = raw(s.port, { head = head { "upgrade: WebSocket", "connection: keep-alive, UPGRADE", KEY, V13 },
        steps = { { send = text("hi") }, { sleep_ms = 200 }, { send = close_frame(1000) } } })
      assert.are.equal(101, r.status)
      assert.are.equal("hi", r.frames[1].data)
    end)

    it("answers another version with 426 and the version it speaks", function()
      local r = raw(s.port, { head = head { UP, CONN, KEY, "Sec-WebSocket-Version: 8" } })
      assert.are.equal(426, r.status)
      assert.is_truthy(r.head:lower():find("sec-websocket-version: 13", 1, true))
      assert.are.equal("eof", r["end"])
    end)

    for name, lines in pairs {
      ["a key that is not 16 bytes of base64"] = { UP, CONN, "Sec-WebSocket-Key: c2hvcnQ=", V13 },
      ["no key"] = { UP, CONN, V13 },
      ["no Connection: Upgrade"] = { UP, "Connection: keep-alive", KEY, V13 },
      ["a body"] = { UP, CONN, KEY, V13, "Content-Length: 5" },
    } do
      it("answers an upgrade with " .. name .. " with 400 JSON and closes", function()
        local r = raw(s.port, { head = head(lines) })
        assert.are.equal(400, r.status)
        assert.is_truthy(unhex(r.rest):find('"code":"BAD_WEBSOCKET_HANDSHAKE"', 1, true))
        assert.are.equal("eof", r["end"])
      end)
    end

    it("answers a POST upgrade with 400", function()
      local r = raw(s.port, { head = "POST /ws/echo HTTP/1.1\r\nHost: x\r\n" .. table.concat({ UP, CONN, KEY, V13 }, "\r\n")
        .. "\r\n\r\n" })
      assert.are.equal(400, r.status)
    end)

    it("reads no request pipelined behind a refused upgrade", function()
      local r = raw(s.port, { path = "/ws/refuse", steps = { { send = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n" } } })
      assert.are.equal(401, r.status)
      assert.is_falsy(unhex(r.rest):find("HTTP/1.1", 1, true))
      assert.are.equal("eof", r["end"])
    end)

    it("accepts after the handler yielded, with frames the client sent before the 101", function()
      local r = raw(s.port, { path = "/ws/echo?wait=0.3", steps = { { send = text("early") }, { send = text("bird") },
        { sleep_ms = 600 }, { send = close_frame(1000, "bye") } } })
      assert.are.equal(101, r.status)
      assert.are.equal("early", r.frames[1].data)
      assert.are.equal("bird", r.frames[2].data)
      assert_closed_with(r, 1000)
    end)

    it("gives a client that sends its upgrade head too slowly a 408", function()
      local h = head { UP, CONN, KEY, V13 }
      local r = raw(s.port, { no_head = true, steps = { { send_slow = h, interval_ms = 40 } }, timeout_ms = 4000 })
      assert.are.equal(408, r.status)
    end)
  end)

  describe("the worst shapes", function()
    local cases = {
      { "an unmasked frame", text("hi", { unmasked = true }), 1002, "unmasked frame" },
      { "a length of 2^63", "\x82\xff\x80\0\0\0\0\0\0\0\x37\xfa\x21\x3d", 1002, "frame length is 2^63 or more" },
      { "a declared terabyte", "\x82\xff\0\0\1\0\0\0\0\0\x37\xfa\x21\x3d", 1009,
        "message too big: 1099511627776 bytes > 65536" },
      { "a message over the bound", frame(0x82, string.rep("x", 70000)), 1009, "message too big: 70000 bytes > 65536" },
      { "a fragmented ping", frame(0x09, "p"), 1002, "fragmented control frame" },
      { "a ping of 126 bytes", frame(0x89, string.rep("p", 126)), 1002, "control frame too long: 126 bytes > 125" },
      { "invalid UTF-8", text("caf\xc3"), 1007, "invalid UTF-8 in text message (a character cut at its end)" },
      { "a surrogate", text("\xed\xa0\x80"), 1007, "invalid UTF-8 in text message" },
      { "a Close with one byte", frame(0x88, "\3"), 1002, "close frame with a 1-byte payload" },
      { "a Close with code 1005", close_frame(1005), 1002, "invalid close code 1005" },
      { "a reserved opcode", frame(0x83, "x"), 1002, "reserved opcode 3" },
      { "reserved bits", frame(0xC1, "x"), 1002, "reserved bits set (no extension was agreed)" },
      { "a continuation with no message", frame(0x80, "x"), 1002, "continuation frame without a message to continue" },
    }
    for i, c in ipairs(cases) do
      it("closes on " .. c[1] .. " with " .. c[3] .. " and a clear reason, and the server goes on", function()
        local r = raw(s.port, { path = "/ws/echo?tag=worst" .. i, steps = { { send = c[2] } } })
        assert_closed_with(r, c[3], c[4])
        log_has(("ws closed code=%d .*tag=worst%d\n"):format(c[3], i))
        assert.are.equal(200, (s:request("GET", "/health")))
      end)
    end

    it("takes a frame sent one byte at a time", function()
      local r = raw(s.port, { steps = { { send_slow = text("slow but fine"), interval_ms = 5 },
        { send = close_frame(1000) } } })
      assert.are.equal("slow but fine", r.frames[1].data)
      assert_closed_with(r, 1000)
    end)

    it("reports a drop without a Close as 1006", function()
      local r = raw(s.port, { path = "/ws/echo?tag=drop", steps = { { send = text("x") }, { sleep_ms = 100 }, { close = true } } })
      assert.are.equal("closed", r["end"])
      log_has("ws closed code=1006 .*tag=drop\n")
    end)

    it("answers an empty Close with an empty Close and reports 1005", function()
      local r = raw(s.port, { path = "/ws/echo?tag=empty", steps = { { send = frame(0x88, "") } } })
      local last = r.frames[#r.frames]
      assert.are.equal(8, last.op)
      assert.are.equal("", last.data)
      assert.are.equal("eof", r["end"])
      log_has("ws closed code=1005 .*tag=empty\n")
    end)

    it("closes an idle socket with 1001 after its idle timeout", function()
      local r = raw(s.port, { path = "/ws/echo?idle=300&tag=idle", timeout_ms = 4000 })
      assert_closed_with(r, 1001, "idle for 300 ms")
      log_has("ws closed code=1001 .*tag=idle\n")
    end)

    it("refuses sends past the queue bound to a client that never reads, and the server goes on", function()
      local out = client(s.port, { steps = { { send = "x" }, { wait_messages = 1 }, { wait_ms = 2500 }, { send = "y" },
        { wait_messages = 2 }, { close = { 1000, "" } } } }, true)
      local r = raw(s.port, { path = "/ws/echo?q=65536&tag=slow", read = false, rcvbuf = 4096,
        steps = { { send = text("flood") }, { sleep_ms = 1500 } }, timeout_ms = 500 })
      assert.are.equal("timeout", r["end"])
      local log = s:wait_log("flood stopped")
      local err, queued, sent = log:match("flood stopped err=(%S+) queued=(%d+) sent=(%d+)")
      assert.are.equal("QUEUE_FULL", err)
      assert.is_true(tonumber(queued) <= 65536, "queued " .. tostring(queued))
      assert.is_true(tonumber(sent) < 4096)
      -- Another socket opened before the flood was echoed meanwhile.
      local other = server.wait_for(function()
        local t = server.read_file(out)
        return t and t ~= "" and cjson.decode(t)
      end, 10, "the other client")
      assert.are.equal("x", other.messages[1].text)
      assert.are.equal("y", other.messages[2].text)
    end)
  end)

  it("closes every socket with 1001 server stopping when the server stops", function()
    local s2 = server.start { policies = server.fixture_policies(ROUTES) }
    local out = client(s2.port, { path = "/ws/echo?tag=stop", steps = { { wait_ms = 8000 } }, timeout_ms = 15000 }, true)
    s2:wait_log("status=101")
    assert.are.equal(0, s2:stop())
    local r = server.wait_for(function()
      local t = server.read_file(out)
      return t and t ~= "" and cjson.decode(t)
    end, 10, "the client to see the close")
    assert.are.equal(1001, r.close.code)
    assert.are.equal("server stopping", r.close.reason)
  end)
end)
