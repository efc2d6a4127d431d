-- The ingest WebSocket, GET /ingest?t=TOKEN: refused before any audio without a valid ingest
-- token; PCM taken exactly as LiveKit's Track Egress sends it (the `ws` client as the
-- protocol notes describe the egress); bad input closes that one connection with a clear
-- reason while another track goes on. Real server, null STT engine (the sink that counts).
local server = require "support.server"
local peers = require "support.peers"
local ingest = require "qc.ingest"
local jwt = require "qc.jwt"
local time = require "qc.time"
local cjson = require "cjson"

local function url(s, token) return ("ws://127.0.0.1:%d/ingest?t=%s"):format(s.port, token) end

local function token(room, identity, track, extra)
  local o = { room = room, identity = identity, track = track }
  for k, v in pairs(extra or {}) do o[k] = v end
  return (ingest.token(o))
end

-- The server's log line for the end of one track's connection.
local function closed_line(s, track)
  local log = s:wait_log("ingest closed[^\n]*track=" .. track, 10)
  return log:match("[^\n]*ingest closed[^\n]*track=" .. track .. "[^\n]*")
end

describe("the ingest socket", function()
  local s
  setup(function() s = server.start { env = { QC_STT_ENGINE = "null" } } end)
  -- A clean exit: under ASan, a leak or a sanitizer report makes it non-zero.
  teardown(function() if s then assert(s:stop() == 0, "the server exited with an error:\n" .. s:log_text():sub(-4000)) end end)

  it("refuses a connection with no token, a bad one, an expired one or a participant's token, before any audio", function()
    local now = math.floor(time.now())
    local expired = jwt.sign({ iss = "devkey", aud = "quantcoach-ingest", sub = "ivy", room = "r", track = "TR_x",
                               nbf = now - 120, exp = now - 60 }, "secret")
    local wrong_secret = jwt.sign({ iss = "devkey", aud = "quantcoach-ingest", sub = "ivy", room = "r", track = "TR_x",
                                    nbf = now, exp = now + 60 }, "not-the-secret")
    local status, doc = s:request("POST", "/tokens/generate",
      { room_name = "r", participant_identity = "ivy", participant_type = "interviewer" })
    assert.equal(200, status)
    for _, t in ipairs { "", "garbage", expired, wrong_secret, doc.token } do
      local p = peers.feed(url(s, t), { "--silence", "0.1" })
      local r = p:wait_event("refused")
      assert.equal(401, r.status, t)
      assert.equal("UNAUTHORIZED", cjson.decode(r.body).error.code)
    end
    assert.not_matches("ingest connected", s:log_text())
  end)

  it("answers a plain GET with 426 JSON, and one without a token with 401", function()
    local status, doc = s:request("GET", "/ingest?t=" .. token("r", "ivy", "TR_plain"))
    assert.equal(426, status)
    assert.equal("UPGRADE_REQUIRED", doc.error.code)
    status, doc = s:request("GET", "/ingest")
    assert.equal(401, status)
    assert.equal("UNAUTHORIZED", doc.error.code)
  end)

  it("takes Egress's PCM to its empty Close, with the issued role, and starts the room's clock", function()
    local status = s:request("POST", "/tokens/generate",
      { room_name = "ing-1", participant_identity = "ada@example.com", participant_type = "candidate" })
    assert.equal(200, status)
    local p = peers.feed(url(s, token("ing-1", "ada@example.com", "TR_ok")),
      { "--silence", "1", "--interval", "2", "--text", ' { "muted" :  true }\n', "--text", '{"muted":false}' })
    p:wait_event("close")
    local line = closed_line(s, "TR_ok")
    assert.matches("code=1005", line)
    assert.matches("bytes=192000", line)
    assert.matches("ingest connected[^\n]*role=candidate[^\n]*track=TR_ok", s:log_text())
    local db = s:db()
    local room = db:first("SELECT started_at FROM rooms WHERE name = 'ing-1'")
    db:close()
    assert.is_number(room.started_at)
    assert.is_true(math.abs(room.started_at - time.now()) < 60)
  end)

  it("finishes a track whose connection drops without a Close", function()
    local p = peers.feed(url(s, token("ing-2", "ivy", "TR_drop")), { "--silence", "0.5", "--interval", "1", "--drop" })
    p:wait_event("dropped")
    assert.matches("code=1006", closed_line(s, "TR_drop"))
  end)

  it("closes only the connection that sent bad input, with the reason, while another track goes on", function()
    local good = peers.feed(url(s, token("ing-3", "ivy", "TR_good")), { "--silence", "3", "--interval", "5" })
    good:wait_event("open")
    local text = peers.feed(url(s, token("ing-3", "ivy", "TR_text")), { "--silence", "1", "--text", "hello there" })
    local big = peers.feed(url(s, token("ing-3", "ivy", "TR_big")), { "--silence", "1", "--binary-len", "70000" })
    local odd = peers.feed(url(s, token("ing-3", "ivy", "TR_odd")), { "--silence", "3", "--interval", "2", "--binary-len", "1" })
    local c = text:wait_event("close")
    assert.equal(1003, c.code)
    assert.equal("unexpected text message: hello there", c.reason)
    c = big:wait_event("close")
    assert.equal(1009, c.code)
    c = odd:wait_event("close")
    assert.equal(1007, c.code)
    assert.matches("^unaligned audio", c.reason)
    -- The good track was never disturbed: all its bytes in, ended by its own Close.
    good:wait_event("close", 20)
    local line = closed_line(s, "TR_good")
    assert.matches("code=1005", line)
    assert.matches("bytes=576000", line)
  end)

  it("lets a second connection for the same track replace the first, so no audio is transcribed twice", function()
    local t = token("ing-6", "ivy", "TR_twice")
    local first = peers.feed(url(s, t), { "--silence", "5", "--interval", "10" })
    first:wait_event("open")
    local second = peers.feed(url(s, t), { "--silence", "0.5", "--interval", "2" })
    local c = first:wait_event("close")
    assert.equal(1008, c.code)
    assert.equal("replaced by a newer connection for this track", c.reason)
    second:wait_event("close")
    assert.matches("code=1005", s:wait_log("ingest closed[^\n]*track=TR_twice[^\n]*code=1005"):match("[^\n]*ingest closed[^\n]*track=TR_twice[^\n]*code=1005[^\n]*"))
  end)

  it("counts live tracks and names the engine in /health", function()
    local p = peers.feed(url(s, token("ing-4", "ivy", "TR_health")), { "--silence", "2", "--interval", "10" })
    p:wait_event("open")
    server.wait_for(function()
      local _, doc = s:request("GET", "/health")
      return doc.tracks.live == 1
    end, 10, "/health to count the track")
    local _, doc = s:request("GET", "/health")
    assert.equal("null", doc.stt.engine)
    assert.equal("ready", doc.stt.state)
    p:wait_event("close")
    server.wait_for(function()
      local _, d = s:request("GET", "/health")
      return d.tracks.live == 0
    end, 10, "/health to drop the track")
    -- The null engine only counts: /health says how much audio it was given (2 s of silence
    -- from this track, more from the others of this file).
    _, doc = s:request("GET", "/health")
    assert.is_true(doc.stt.seconds_in >= 2, tostring(doc.stt.seconds_in))
  end)

  it("takes a declared rate and channel count from the token", function()
    local p = peers.feed(url(s, token("ing-5", "ivy", "TR_mono", { rate = 16000, channels = 1 })),
      { "--silence", "0.5", "--interval", "1" })
    p:wait_event("close")
    assert.matches("ingest connected[^\n]*rate=16000 channels=1", s:log_text())
  end)
end)

describe("a server whose STT engine cannot start", function()
  it("still serves, says why in /health, and refuses ingest with 503", function()
    local s = server.start { env = { QC_STT_ENGINE = "local", QC_STT_MODEL = "/nonexistent/model" } }
    local status, doc = s:request("GET", "/health")
    assert.equal(200, status)
    assert.equal("degraded", doc.status)
    assert.equal("local", doc.stt.engine)
    assert.matches("^failed: ", doc.stt.state)
    local p = peers.feed(url(s, token("ing-x", "ivy", "TR_nostt")), { "--silence", "0.1" })
    local r = p:wait_event("refused")
    assert.equal(503, r.status)
    assert.equal("STT_UNAVAILABLE", cjson.decode(r.body).error.code)
    assert.matches("engine unavailable", s:log_text())
    assert.equal(0, s:stop())
  end)
end)
