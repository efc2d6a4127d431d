-- HTTP/1.1 framing against the real server, byte for byte: pipelining, request smuggling
-- shapes, slow clients, oversized heads, HEAD and half-closed clients. A raw-socket helper
-- (spec/support/rawhttp.py) writes the exact bytes; every case also checks that /health
-- answers on a fresh connection afterwards, so a case that wedges the server fails.
local cjson = require "cjson"
local server = require "support.server"
local lk = require "support.fake_livekit"

local HELPER = server.source .. "/spec/support/rawhttp.py"
local PYTHON = "/usr/bin/python3"

--- Runs one plan through the helper; returns its report.
local function raw(port, plan)
  plan.port = port
  if plan.health == nil then plan.health = true end
  local dir = server.tmpdir()
  server.write_file(dir .. "/plan.json", cjson.encode(plan))
  local status, out = server.run(("%s %s < %s"):format(PYTHON, server.quote(HELPER), server.quote(dir .. "/plan.json")))
  os.execute("rm -rf " .. server.quote(dir))
  assert(status == 0, "raw helper failed: " .. out)
  return cjson.decode(out)
end

--- Splits what came back into responses. `head_only[i]` marks the i-th as the answer to a
--- HEAD (headers only, whatever Content-Length says). Returns the list and the unparsed rest.
local function responses(text, head_only)
  local list, pos = {}, 1
  head_only = head_only or {}
  while pos <= #text do
    local hend = text:find("\r\n\r\n", pos, true)
    if not hend then break end
    local head = text:sub(pos, hend - 1)
    local status = tonumber(head:match("^HTTP/1%.1 (%d%d%d) "))
    if not status then break end
    local headers = {}
    for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[name:lower()] = value end
    local len = tonumber(headers["content-length"] or "0")
    local r = { status = status, headers = headers, body = "" }
    pos = hend + 4
    if not head_only[#list + 1] then
      r.body = text:sub(pos, pos + len - 1)
      pos = pos + len
    end
    if (headers["content-type"] or ""):find("json", 1, true) and r.body ~= "" then
      local ok, v = pcall(cjson.decode, r.body)
      r.json = ok and v or nil
    end
    list[#list + 1] = r
  end
  return list, text:sub(pos)
end

local function statuses(list)
  local s = {}
  for i, r in ipairs(list) do s[i] = r.status end
  return s
end

--- The report's one answer: an error with this status and a JSON body, then the server closed.
local function assert_error_and_close(report, status, code)
  local list, rest = responses(report.recv)
  assert.same({ status }, statuses(list), "got: " .. report.recv:sub(1, 300))
  assert.equal("", rest)
  assert.is_table(list[1].json, "error body is JSON")
  if code then assert.equal(code, list[1].json.error.code) end
  assert.is_string(list[1].json.error.message)
  assert.equal("close", list[1].headers["connection"])
  assert.equal("eof", report["end"])
end

local function assert_healthy(report)
  assert.is_table(report.health)
  assert.equal(200, report.health.status, "GET /health afterwards: " .. cjson.encode(report.health))
end

--- Stops the server; it must exit on SIGTERM, and with status 0 (under ASan, a report
--- makes the status non-zero).
local function stop_or_kill(s)
  if not s then return end
  local ok, status = pcall(s.stop, s, 8)
  if not ok then
    os.execute("kill -KILL " .. s.pid .. " 2>/dev/null")
    error("the server did not stop on SIGTERM (killed)")
  end
  assert(status == 0, "the server exited with status " .. tostring(status) .. ":\n" .. s:log_text():sub(-3000))
end

local CRLF = "\r\n"
local function req(method, path, headers, body)
  local t = { method .. " " .. path .. " HTTP/1.1", "Host: x" }
  for _, h in ipairs(headers or {}) do t[#t + 1] = h end
  return table.concat(t, CRLF) .. CRLF .. CRLF .. (body or "")
end

describe("HTTP/1.1 framing", function()
  local s, fake
  setup(function()
    fake = lk.start { mode = "slow", delay_ms = 300 }
    s = server.start { env = {
      QC_REQUEST_TIMEOUT_MS = "1000", QC_MAX_BODY = "4096", LIVEKIT_URL = fake.url,
    } }
  end)
  teardown(function()
    stop_or_kill(s)
    if fake then fake:stop() end
  end)

  describe("pipelining", function()
    it("answers two POSTs with bodies sent in one write, in order", function()
      local r = raw(s.port, { steps = { { send =
        req("POST", "/tokens/generate", { "Content-Length: 2" }, "{}") ..
        req("POST", "/nope", { "Content-Length: 2", "Connection: close" }, "{}") } } })
      assert.same({ 422, 404 }, statuses(responses(r.recv)))
      assert.equal("eof", r["end"])
      assert_healthy(r)
    end)

    it("answers a GET, then a GET with a Content-Length body, in order", function()
      local r = raw(s.port, { steps = { { send =
        req("GET", "/health") ..
        req("GET", "/nope", { "Content-Length: 5" }, "hello") ..
        req("GET", "/", { "Connection: close" }) } } })
      local list = responses(r.recv)
      assert.same({ 200, 404, 200 }, statuses(list))
      assert.equal("quantcoach", list[3].json.service)
      assert.equal("eof", r["end"])
      assert_healthy(r)
    end)

    it("answers three requests without bodies sent in one write, in order", function()
      local r = raw(s.port, { steps = { { send =
        req("GET", "/nope") .. req("GET", "/health") .. req("GET", "/", { "Connection: close" }) } } })
      assert.same({ 404, 200, 200 }, statuses(responses(r.recv)))
      assert.equal("eof", r["end"])
      assert_healthy(r)
    end)

    it("answers three requests with bodies sent in one write, in order", function()
      local r = raw(s.port, { steps = { { send =
        req("POST", "/tokens/generate", { "Content-Length: 2" }, "{}") ..
        req("POST", "/nope", { "Content-Length: 3" }, "abc") ..
        req("POST", "/tokens/generate", { "Content-Length: 2", "Connection: close" }, "{}") } } })
      assert.same({ 422, 404, 422 }, statuses(responses(r.recv)))
      assert.equal("eof", r["end"])
      assert_healthy(r)
    end)

    it("answers a request pipelined behind a chunked body", function()
      local r = raw(s.port, { steps = { { send =
        req("POST", "/tokens/generate", { "Transfer-Encoding: chunked" }, "2\r\n{}\r\n0\r\n\r\n") ..
        req("GET", "/health", { "Connection: close" }) } } })
      assert.same({ 422, 200 }, statuses(responses(r.recv)))
      assert.equal("eof", r["end"])
      assert_healthy(r)
    end)

    it("keeps a keep-alive connection open after pipelined answers", function()
      local r = raw(s.port, { timeout_ms = 1000, steps = { { send = req("GET", "/health") .. req("GET", "/health") } } })
      assert.same({ 200, 200 }, statuses(responses(r.recv)))
      assert.equal("timeout", r["end"])
      assert_healthy(r)
    end)
  end)

  describe("request smuggling shapes", function()
    it("refuses Transfer-Encoding together with Content-Length (400, closed; the hidden request gets no answer)", function()
      local hidden = req("GET", "/nope")
      local body = "0\r\n\r\n" .. hidden
      local r = raw(s.port, { steps = { { send =
        req("POST", "/tokens/generate", { "Content-Length: " .. #body, "Transfer-Encoding: chunked" }, body) } } })
      assert_error_and_close(r, 400, "BAD_REQUEST")
      assert_healthy(r)
    end)

    it("refuses Content-Length before Transfer-Encoding the same way", function()
      local r = raw(s.port, { steps = { { send =
        "POST /tokens/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" } } })
      assert_error_and_close(r, 400)
      assert_healthy(r)
    end)

    it("refuses two differing Content-Length headers", function()
      local r = raw(s.port, { steps = { { send =
        req("POST", "/tokens/generate", { "Content-Length: 2", "Content-Length: 3" }, "{}x") } } })
      assert_error_and_close(r, 400)
      assert_healthy(r)
    end)

    it("refuses a Content-Length list '4, 5'", function()
      local r = raw(s.port, { steps = { { send =
        req("POST", "/tokens/generate", { "Content-Length: 4, 5" }, "abcde") } } })
      assert_error_and_close(r, 400)
      assert_healthy(r)
    end)

    it("refuses a negative or non-numeric Content-Length", function()
      for _, v in ipairs { "-1", "abc", "1x", "+2", "" } do
        local r = raw(s.port, { steps = { { send =
          req("POST", "/tokens/generate", { "Content-Length: " .. v }, "{}") } } })
        assert_error_and_close(r, 400)
      end
      assert_healthy(raw(s.port, { steps = {} , timeout_ms = 10 }))
    end)

    it("answers 501 to Transfer-Encoding: gzip, chunked and closes", function()
      local r = raw(s.port, { steps = { { send =
        req("POST", "/tokens/generate", { "Transfer-Encoding: gzip, chunked" }, "0\r\n\r\n") } } })
      assert_error_and_close(r, 501, "NOT_IMPLEMENTED")
      assert_healthy(r)
    end)

    it("answers 400 to a Transfer-Encoding whose last coding is not chunked", function()
      for _, te in ipairs { "gzip", "chunked, gzip", "identity", "xchunked" } do
        local r = raw(s.port, { steps = { { send =
          req("POST", "/tokens/generate", { "Transfer-Encoding: " .. te }, "0\r\n\r\n") } } })
        assert_error_and_close(r, 400)
      end
      assert_healthy(raw(s.port, { steps = {}, timeout_ms = 10 }))
    end)

    it("answers 400 to bad chunk sizes and closes", function()
      for _, body in ipairs { "zz\r\n{}\r\n0\r\n\r\n", "-2\r\n{}\r\n0\r\n\r\n", "fffffffffffffffff1\r\n{}\r\n0\r\n\r\n",
                              "2\r\n{}XX0\r\n\r\n" } do
        local r = raw(s.port, { steps = { { send =
          req("POST", "/tokens/generate", { "Transfer-Encoding: chunked" }, body) } } })
        assert_error_and_close(r, 400)
      end
      assert_healthy(raw(s.port, { steps = {}, timeout_ms = 10 }))
    end)
  end)

  describe("malformed heads", function()
    it("answers 400 to a bare CR in the head and closes", function()
      local r = raw(s.port, { steps = { { send = "GET /health HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n" } } })
      assert_error_and_close(r, 400)
      assert_healthy(r)
    end)

    it("answers 400 to a request line that does not end in HTTP/1.x", function()
      local r = raw(s.port, { steps = { { send = "GET /health HXYZ/1.1\r\nHost: x\r\n\r\n" } } })
      assert_error_and_close(r, 400)
      assert_healthy(r)
    end)

    it("answers 400 to an HTTP/1.1 request without Host, or with two", function()
      for _, head in ipairs { "GET /health HTTP/1.1\r\n\r\n", "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" } do
        local r = raw(s.port, { steps = { { send = head } } })
        assert_error_and_close(r, 400)
      end
      local r = raw(s.port, { steps = { { send = "GET /health HTTP/1.0\r\n\r\n" } } })
      assert.same({ 200 }, statuses(responses(r.recv)))
      assert.equal("eof", r["end"])
      assert_healthy(r)
    end)

    it("answers 505 to HTTP/2.0 in a request line", function()
      local r = raw(s.port, { steps = { { send = "GET /health HTTP/2.0\r\nHost: x\r\n\r\n" } } })
      assert_error_and_close(r, 505, "HTTP_VERSION_NOT_SUPPORTED")
      assert_healthy(r)
    end)

    it("answers 400 to a chunked body whose trailer has a bare LF", function()
      local r = raw(s.port, { steps = { { send = req("POST", "/tokens/generate", { "Transfer-Encoding: chunked" },
        "2\r\n{}\r\n0\r\nX: 1\nGET /nope HTTP/1.1\r\n\r\n") } } })
      assert_error_and_close(r, 400)
      assert_healthy(r)
    end)

    it("answers 400 when the client half-closes in the middle of a body", function()
      local r = raw(s.port, { steps = { { send = req("POST", "/tokens/generate", { "Content-Length: 10" }, "{}") },
        { shut_wr = true } } })
      assert_error_and_close(r, 400)
      assert_healthy(r)
    end)

    it("sends 100 Continue to a client that expects it, then the answer", function()
      local r = raw(s.port, { timeout_ms = 2000, steps = {
        { send = req("POST", "/tokens/generate", { "Content-Length: 2", "Expect: 100-continue", "Connection: close" }) },
        { sleep_ms = 600 }, { send = "{}" } } })
      assert.truthy(r.recv:find("^HTTP/1%.1 100 Continue\r\n\r\n"), r.recv:sub(1, 200))
      local list = responses((r.recv:gsub("^HTTP/1%.1 100 Continue\r\n\r\n", "")))
      assert.same({ 422 }, statuses(list))
      assert.truthy(r.first_ms < 600, "100 Continue came before the body was sent")
      assert_healthy(r)
    end)
  end)

  describe("slow clients", function()
    it("answers 408 and closes when the headers take longer than QC_REQUEST_TIMEOUT_MS", function()
      local r = raw(s.port, { timeout_ms = 4000, steps = { { send_slow = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " ..
        ("a"):rep(40) .. "\r\n\r\n", interval_ms = 100 } } })
      assert_error_and_close(r, 408, "REQUEST_TIMEOUT")
      assert_healthy(r)
    end)

    it("answers 408 and closes when the body takes longer than QC_REQUEST_TIMEOUT_MS", function()
      local r = raw(s.port, { timeout_ms = 4000, steps = {
        { send = "POST /tokens/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n" },
        { send_slow = ("a"):rep(40), interval_ms = 100 } } })
      assert_error_and_close(r, 408, "REQUEST_TIMEOUT")
      assert_healthy(r)
    end)

    it("closes a connection that never sends a byte after QC_REQUEST_TIMEOUT_MS, without an answer", function()
      local r = raw(s.port, { timeout_ms = 4000, steps = {} })
      assert.equal("", r.recv)
      assert.equal("eof", r["end"])
      assert_healthy(r)
    end)

    it("answers 408 to a slow chunked body", function()
      local r = raw(s.port, { timeout_ms = 4000, steps = {
        { send = "POST /tokens/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" },
        { send_slow = ("1\r\na\r\n"):rep(10), interval_ms = 100 } } })
      assert_error_and_close(r, 408, "REQUEST_TIMEOUT")
      assert_healthy(r)
    end)
  end)

  describe("oversized requests", function()
    it("answers 431 to request headers over the limit", function()
      local r = raw(s.port, { steps = { { send = req("GET", "/health", { "X-Big: " .. ("a"):rep(20000) }) } } })
      assert_error_and_close(r, 431, "HEADERS_TOO_LARGE")
      assert_healthy(r)
    end)

    it("answers 431 to too many header fields", function()
      local h = {}
      for i = 1, 200 do h[i] = "X-H" .. i .. ": v" end
      local r = raw(s.port, { steps = { { send = req("GET", "/health", h) } } })
      assert_error_and_close(r, 431, "HEADERS_TOO_LARGE")
      assert_healthy(r)
    end)

    it("answers 414 to a request line over the limit", function()
      local r = raw(s.port, { steps = { { send = req("GET", "/health?x=" .. ("a"):rep(10000)) } } })
      assert_error_and_close(r, 414, "URI_TOO_LONG")
      assert_healthy(r)
    end)

    it("answers 413 to a Content-Length over QC_MAX_BODY before the body is sent", function()
      local r = raw(s.port, { timeout_ms = 2000, steps = {
        { send = req("POST", "/tokens/generate", { "Content-Length: 100000" }) } } })
      assert_error_and_close(r, 413, "PAYLOAD_TOO_LARGE")
      assert_healthy(r)
    end)

    it("answers 413 to a chunked body as soon as it passes QC_MAX_BODY", function()
      -- The last chunk never comes: the answer must not wait for it.
      local r = raw(s.port, { timeout_ms = 2000, steps = {
        { send = req("POST", "/tokens/generate", { "Transfer-Encoding: chunked" }, ("1388\r\n" .. ("a"):rep(5000) .. "\r\n")) } } })
      assert_error_and_close(r, 413, "PAYLOAD_TOO_LARGE")
      assert_healthy(r)
    end)
  end)

  describe("HEAD and bodies on GET", function()
    it("answers HEAD with the headers of GET and no body", function()
      local r = raw(s.port, { steps = { { send = req("HEAD", "/health") .. req("GET", "/nope", { "Connection: close" }) } } })
      local list, rest = responses(r.recv, { true })
      assert.same({ 200, 404 }, statuses(list))
      assert.equal("", rest)
      assert.truthy(tonumber(list[1].headers["content-length"]) > 0)
      assert.equal("NOT_FOUND", list[2].json.error.code)
      assert_healthy(r)
    end)

    it("consumes a body sent on HEAD and answers the next request", function()
      local r = raw(s.port, { steps = { { send = req("HEAD", "/health", { "Content-Length: 5" }, "hello") ..
        req("GET", "/nope", { "Connection: close" }) } } })
      local list, rest = responses(r.recv, { true })
      assert.same({ 200, 404 }, statuses(list))
      assert.equal("", rest)
      assert_healthy(r)
    end)

    it("sends no body with a HEAD error answer", function()
      local r = raw(s.port, { steps = { { send = req("HEAD", "/nope", { "Connection: close" }) } } })
      local list, rest = responses(r.recv, { true })
      assert.same({ 404 }, statuses(list))
      assert.equal("", rest)
      assert.equal("eof", r["end"])
    end)
  end)

  describe("half-closed clients", function()
    it("still gets the answer of a request that waits on LiveKit after shutting down its write side", function()
      local r = raw(s.port, { timeout_ms = 5000, steps = { { send = req("GET", "/rooms") }, { shut_wr = true } } })
      local list = responses(r.recv)
      assert.same({ 200 }, statuses(list))
      assert.is_table(list[1].json.rooms)
      assert.equal("eof", r["end"])
      assert_healthy(r)
    end)

    it("gets every pipelined answer after shutting down its write side", function()
      local r = raw(s.port, { timeout_ms = 5000, steps = {
        { send = req("GET", "/rooms") .. req("POST", "/tokens/generate", { "Content-Length: 2" }, "{}") .. req("GET", "/health") },
        { shut_wr = true } } })
      assert.same({ 200, 422, 200 }, statuses(responses(r.recv)))
      assert.equal("eof", r["end"])
      assert_healthy(r)
    end)
  end)
end)

describe("a connection flood", function()
  local s
  setup(function()
    -- 128 descriptors in all: the lws server ran out of them and spun on accept (EMFILE). A long request
    -- deadline, so that it is the connection cap, not the deadline, that keeps room.
    s = server.start { ulimit_nofile = 128, env = { QC_REQUEST_TIMEOUT_MS = "30000" } }
  end)
  teardown(function() stop_or_kill(s) end)

  it("keeps /health answering while 300 slow clients hold connections", function()
    -- The crowd holds its connections for up to 8 s; the request and the /health check both
    -- run inside that window, and the crowd lets go once they are done.
    local r = raw(s.port, { hold = { count = 300, send = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ",
      interval_ms = 200, seconds = 8, settle_ms = 1000 }, timeout_ms = 2000,
      steps = { { send = req("GET", "/health", { "Connection: close" }) } } })
    assert.same({ 200 }, statuses(responses(r.recv)))
    assert.equal("eof", r["end"])
    assert_healthy(r)
    assert.truthy(r.held_open < 300, "the oldest slow clients were dropped")
    assert.matches("connection cap reached action=evicted_slow", s:wait_log("connection cap reached action=evicted_slow"))
  end)
end)

describe("the request deadline on a busy server", function()
  local s
  local tasks = require "qc.tasks"
  local fetch = require "qc.fetch"
  setup(function()
    -- A route that keeps the event loop busy for 200 ms of CPU, as a slow handler would: while
    -- it runs, nothing is read from any connection, and the deadlines of requests whose
    -- bytes wait in the kernel run out by our fault, not theirs.
    local dir = server.fixture_policies [[
  { "POST", "/burn", function(req)
      local stop = os.clock() + 0.2
      while os.clock() < stop do end
      return 200, nil, { len = #req.body }
    end },
]]
    s = server.start { policies = dir, env = {
      QC_REQUEST_TIMEOUT_MS = "300", QC_LUA_BUDGET_MS = "5000", QC_MAX_BODY = tostring(1 << 20) } }
  end)
  teardown(function() stop_or_kill(s) end)

  it("does not answer 408 to complete requests that wait on the server", function()
    -- Larger than a socket's receive buffer: each body is read over several loop turns.
    local body = cjson.encode { blob = ("b"):rep(512 * 1024) }
    local items = {}
    for i = 1, 24 do items[i] = i end
    local results = tasks.map(items, 24, function()
      local status, _, raw = fetch { method = "POST", url = s.url .. "/burn", body = body,
        headers = { ["Content-Type"] = "application/json" }, timeout = 60 }
      return status or raw
    end)
    local counts = {}
    for _, r in ipairs(results) do
      assert.is_true(r.ok, r.error)
      counts[tostring(r.value)] = (counts[tostring(r.value)] or 0) + 1
    end
    assert.same({ ["200"] = 24 }, counts)
    -- A client that really is slow still gets its 408 on the same server.
    local r = raw(s.port, { timeout_ms = 4000, steps = {
      { send = "POST /burn HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n" },
      { send_slow = ("a"):rep(40), interval_ms = 100 } } })
    assert_error_and_close(r, 408, "REQUEST_TIMEOUT")
    assert_healthy(r)
  end)
end)
