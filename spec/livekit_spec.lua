-- The LiveKit side: rooms and role tokens over the REST API, the RoomService client against a fake
-- LiveKit, API keys, signed webhooks and `quantcoach token`. Tokens and webhook signatures are checked
-- with the official Node SDK (shared/protocols/livekit.md §1, §2, §4, §5).
local server = require "support.server"
local lk = require "support.fake_livekit"
local hooks = require "support.webhooks"
local cjson = require "cjson"
local time = require "qc.time"

local TTL = 2 * 60 * 60

local function find(list, pred)
  for _, v in ipairs(list) do
    if pred(v) then return v end
  end
end

local function by_name(list, name)
  return find(list, function(r) return r.name == name end)
end

local function last(list) return list[#list] end

local query, fresh_id = hooks.query, hooks.fresh_id

local function count(s, sql, ...)
  return query(s, "SELECT count(*) AS n FROM " .. sql, ...)[1].n
end

describe("the LiveKit room API", function()
  local fake, s

  setup(function() fake, s = lk.serve() end)
  teardown(function() lk.shutdown(fake, s) end)
  before_each(function() fake:reset() end)

  it("creates a room on LiveKit and hands out SDK-valid tokens for the interviewer, the candidate and the agent", function()
    local status, body = s:request("POST", "/rooms/create", { room_name = "interview-spec-1", max_participants = 4 })
    assert.equal(200, status, s:log_text())
    assert.matches("^RM_", body.sid)
    assert.equal("interview-spec-1", body.name)
    assert.equal(4, body.max_participants)
    assert.is_number(body.creation_time)
    assert.is_true(math.abs(body.creation_time - os.time()) < 60)
    assert.equal(fake.url, body.url)

    local results = lk.verify { body.interviewer_token, body.candidate_token, body.agent_token }
    for i, role in ipairs { "interviewer", "candidate", "agent" } do
      local r = results[i]
      assert.is_true(r.ok, role .. ": " .. tostring(r.error))
      local c = r.claims
      assert.equal("devkey", c.iss)
      assert.equal(role, c.sub)
      assert.equal(TTL, c.exp - c.nbf)
      assert.is_true(math.abs(c.nbf - os.time()) < 60)
      assert.equal("interview-spec-1", c.video.room)
      assert.is_true(c.video.roomJoin)
      if role == "agent" then
        assert.is_true(c.video.hidden)
        assert.is_false(c.video.canPublish)
        assert.is_true(c.video.canSubscribe)
        assert.is_true(c.video.canPublishData)
      else
        assert.is_true(c.video.canPublish)
        assert.is_true(c.video.canSubscribe)
        assert.is_nil(c.video.hidden)
      end
    end

    local calls = fake:calls("CreateRoom")
    assert.equal(1, #calls)
    local call = calls[1]
    assert.equal(200, call.status)
    assert.same({ roomCreate = true }, call.grants)
    assert.equal("devkey", call.claims.iss)
    assert.is_nil(call.claims.sub)
    assert.equal("interview-spec-1", call.body.name)
    assert.equal(4, call.body.maxParticipants or call.body.max_participants)
    assert.equal(body.sid, by_name(fake:rooms(), "interview-spec-1").sid)
  end)

  it("names a room interview-YYYYMMDD-HHMMSS (UTC) and allows 10 participants when the request leaves them out", function()
    local before = math.floor(time.now())
    local status, body = s:request("POST", "/rooms/create", {})
    local after = math.floor(time.now())
    assert.equal(200, status)
    assert.matches("^interview%-%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d$", body.name)
    local expected = {}
    for t = before, after do expected[os.date("!interview-%Y%m%d-%H%M%S", t)] = true end
    assert.is_true(expected[body.name] ~= nil, body.name .. " is not the current UTC time")
    assert.equal(10, body.max_participants)
    local call = last(fake:calls("CreateRoom"))
    assert.equal(body.name, call.body.name)
    assert.equal(10, call.body.maxParticipants or call.body.max_participants)
    assert.equal(10, by_name(fake:rooms(), body.name).max_participants)
  end)

  it("issues a single token whose claims carry the identity, display name and room, expiring when it says", function()
    local status, body = s:request("POST", "/tokens/generate", {
      room_name = "interview-spec-3", participant_identity = "cand-7", participant_name = "Ada Lovelace",
      participant_type = "candidate" })
    assert.equal(200, status)
    assert.is_string(body.token)
    assert.equal(fake.url, body.url)
    assert.equal("interview-spec-3", body.room_name)
    assert.equal("cand-7", body.participant_identity)
    assert.equal("candidate", body.participant_type)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", body.expires_at)

    local r = lk.verify({ body.token })[1]
    assert.is_true(r.ok, r.error)
    assert.equal("devkey", r.claims.iss)
    assert.equal("cand-7", r.claims.sub)
    assert.equal("Ada Lovelace", r.claims.name)
    assert.equal(TTL, r.claims.exp - r.claims.nbf)
    assert.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", r.claims.exp), body.expires_at)
    assert.equal("interview-spec-3", r.claims.video.room)
    assert.is_true(r.claims.video.roomJoin)
    assert.is_true(r.claims.video.canPublish)
    assert.is_true(r.claims.video.canSubscribe)

    -- A token signed with another secret is not one the SDK accepts: the check above means something.
    assert.is_false(lk.verify({ body.token }, { secret = "other" })[1].ok)
  end)

  it("refuses invalid input with 422 VALIDATION_ERROR naming the field, before calling LiveKit", function()
    local token_req = { room_name = "interview-spec-4", participant_identity = "cand-1", participant_type = "candidate" }
    local function with(t, k, v)
      local c = {}
      for kk, vv in pairs(t) do c[kk] = vv end
      c[k] = v
      return c
    end
    local cases = {
      { "missing participant_type", "/tokens/generate", with(token_req, "participant_type", nil), "participant_type" },
      { "unknown participant_type", "/tokens/generate", with(token_req, "participant_type", "boss"), "participant_type" },
      { "room name with a space", "/tokens/generate", with(token_req, "room_name", "my room"), "room_name" },
      { "room name with a space", "/rooms/create", { room_name = "my room" }, "room_name" },
      { "room name over 128 characters", "/rooms/create", { room_name = string.rep("a", 129) }, "room_name" },
      { "max_participants not a number", "/rooms/create", { max_participants = "ten" }, "max_participants" },
    }
    for _, case in ipairs(cases) do
      local what, path, req, field = table.unpack(case)
      local status, body = s:request("POST", path, req)
      assert.equal(422, status, what)
      assert.equal("VALIDATION_ERROR", body.error.code, what)
      assert.equal(field, body.error.field, what)
      assert.is_string(body.error.message, what)
    end
    -- curl -d sends form-urlencoded: the body is still read as JSON, and still must be an object.
    for _, path in ipairs { "/tokens/generate", "/rooms/create" } do
      local status, body = s:request("POST", path, '[{"room_name":"x"}]',
        { ["Content-Type"] = "application/x-www-form-urlencoded" })
      assert.equal(422, status, path)
      assert.equal("body", body.error.field, path)
      assert.equal("body: must be a JSON object, got an array", body.error.message, path)
    end
    -- 128 characters is still fine.
    local status = s:request("POST", "/rooms/create", { room_name = string.rep("a", 128) })
    assert.equal(200, status)
    assert.equal(1, #fake:calls(), "only the valid request reached LiveKit")
  end)

  it("refuses with 422 what a token or a URL cannot carry: bad UTF-8, control characters, . and ..", function()
    local token_req = { room_name = "interview-spec-u", participant_identity = "cand-1", participant_type = "candidate" }
    local function with(k, v)
      local c = {}
      for kk, vv in pairs(token_req) do c[kk] = vv end
      c[k] = v
      return c
    end
    local cases = {
      { "identity not UTF-8", "/tokens/generate", with("participant_identity", "cand-\255"), "participant_identity" },
      { "identity overlong UTF-8", "/tokens/generate", with("participant_identity", "a\192\175b"), "participant_identity" },
      { "identity with a C0 control", "/tokens/generate", with("participant_identity", "a\1b"), "participant_identity" },
      { "identity with a C1 control", "/tokens/generate", with("participant_identity", "a\194\133b"), "participant_identity" },
      { "name with a surrogate", "/tokens/generate", with("participant_name", "Ada \237\160\128"), "participant_name" },
      { "name with a newline", "/tokens/generate", with("participant_name", "Ada\nL"), "participant_name" },
      { "room .", "/tokens/generate", with("room_name", "."), "room_name" },
      { "room ..", "/tokens/generate", with("room_name", ".."), "room_name" },
      { "room .", "/rooms/create", { room_name = "." }, "room_name" },
      { "room ..", "/rooms/create", { room_name = ".." }, "room_name" },
    }
    for _, case in ipairs(cases) do
      local what, path, req, field = table.unpack(case)
      local status, body = s:request("POST", path, req)
      assert.equal(422, status, what)
      assert.equal("VALIDATION_ERROR", body.error.code, what)
      assert.equal(field, body.error.field, what)
    end
    -- The server resolves dot segments before routing (so such a room could never be
    -- deleted): the request is refused as a path, never as a room.
    for _, path in ipairs { "/rooms/%2E", "/rooms/%2e%2E", "/rooms/." } do
      local status, body = s:request("DELETE", path)
      assert.is_true(status >= 400 and status < 500, path .. " answered " .. tostring(status))
      assert.is_string(body.error.code, path)
    end
    assert.equal(0, #fake:calls(), "nothing reached LiveKit")
    -- Clean UTF-8 goes through as it is, and "..." is an ordinary name.
    local status, body = s:request("POST", "/tokens/generate", with("participant_identity", "Zoë-Łukasz"))
    assert.equal(200, status)
    assert.equal("Zoë-Łukasz", lk.verify({ body.token })[1].claims.sub)
    assert.equal(200, (s:request("POST", "/rooms/create", { room_name = "..." })))
    assert.equal(200, (s:request("DELETE", "/rooms/...")))
  end)

  it("records a room before asking LiveKit for it, so a crash in between loses nothing", function()
    local data = server.tmpdir() .. "/data"
    local s1 = server.start { env = fake:env(), data = data }
    local s2
    finally(function()
      fake:hold()
      pcall(s1.stop, s1)
      if s2 then s2:stop() end
    end)
    fake:hold("CreateRoom", "crash-1", 60000, "before")
    server.run(("curl -s -X POST -H 'Content-Type: application/json' -d '{\"room_name\":\"crash-1\"}' %s/rooms/create > /dev/null 2>&1 &")
      :format(s1.url))
    server.wait_for(function() return #fake:calls("CreateRoom") > 0 end, 10, "CreateRoom")
    local rows = query({ data = data }, "SELECT name FROM rooms WHERE name = 'crash-1'")
    assert.equal(1, #rows, "the intent is on disk before LiveKit answers")
    fake:hold() -- crash-1 goes on and is recorded
    server.wait_for(function()
      return #query({ data = data }, "SELECT name FROM rooms WHERE name = 'crash-1' AND state = 'created'") == 1
    end, 10, "crash-1 to be recorded as created")
    fake:hold("CreateRoom", "crash-2", 60000, "after")
    server.run(("curl -s -X POST -H 'Content-Type: application/json' -d '{\"room_name\":\"crash-2\"}' %s/rooms/create > /dev/null 2>&1 &")
      :format(s1.url))
    server.wait_for(function() return by_name(fake:rooms(), "crash-2") end, 10, "crash-2 on LiveKit")
    s1:signal("KILL")
    s1.term_sent = true -- nothing left to TERM: stop() only waits for the exit
    s1:stop()
    fake:hold()
    s2 = server.start { env = fake:env(), data = data }
    local status, body = s2:request("GET", "/rooms")
    assert.equal(200, status)
    local listed = by_name(body.rooms, "crash-2")
    assert.equal("active", listed.status)
    -- LiveKit has crash-1 and crash-2, which the killed server never recorded as created:
    -- we hold both, with LiveKit's sids.
    local theirs, ours = {}, {}
    for _, r in ipairs(fake:rooms()) do theirs[#theirs + 1] = r.name .. " " .. r.sid end
    for _, r in ipairs(query({ data = data },
        "SELECT name, sid FROM rooms WHERE ended_at IS NULL AND state = 'created' ORDER BY name")) do
      ours[#ours + 1] = r.name .. " " .. tostring(r.sid)
    end
    table.sort(theirs)
    assert.same({ "crash-1", "crash-2" }, { theirs[1]:match("%S+"), theirs[2]:match("%S+") })
    assert.same(theirs, ours)
  end)

  it("lists a room's participants with their role, from the identity prefix or the metadata", function()
    fake:add_participant { room = "panel-5", identity = "interviewer-ada", name = "Ada" }
    fake:add_participant { room = "panel-5", identity = "cand-42", metadata = '{"role":"candidate"}' }
    fake:add_participant { room = "panel-5", identity = "agent", kind = "AGENT" }
    fake:add_participant { room = "panel-5", identity = "someone" }
    fake:add_participant { room = "other-room", identity = "candidate-x" }

    local status, body = s:request("GET", "/rooms/panel-5/participants")
    assert.equal(200, status)
    assert.equal("panel-5", body.room)
    assert.equal(4, #body.participants)
    local role = {}
    for _, p in ipairs(body.participants) do
      assert.matches("^PA_", p.sid)
      role[p.identity] = p.role or "none"
    end
    assert.same({ ["interviewer-ada"] = "interviewer", ["cand-42"] = "candidate", agent = "agent", someone = "none" }, role)
    assert.equal("Ada", find(body.participants, function(p) return p.identity == "interviewer-ada" end).name)

    local call = last(fake:calls("ListParticipants"))
    assert.equal(200, call.status)
    assert.is_true(call.grants.roomAdmin)
    assert.equal("panel-5", call.grants.room)
    assert.equal("panel-5", call.body.room)
  end)

  it("answers 404 NOT_FOUND for the participants of a room LiveKit does not have", function()
    local status, body = s:request("GET", "/rooms/no-such-room/participants")
    assert.equal(404, status)
    assert.equal("NOT_FOUND", body.error.code)
  end)

  it("ends a room: deleted once, 404 the second time, then listed as ended, also after a restart", function()
    local data = server.tmpdir() .. "/data"
    local s1 = server.start { env = fake:env(), data = data }
    local s2
    finally(function()
      s1:stop()
      if s2 then s2:stop() end
    end)
    assert.equal(200, (s1:request("POST", "/rooms/create", { room_name = "ending-6" })))
    assert.equal(200, (s1:request("POST", "/rooms/create", { room_name = "staying-6" })))

    local status, body = s1:request("DELETE", "/rooms/ending-6")
    assert.equal(200, status)
    assert.equal("deleted", body.status)
    assert.is_nil(by_name(fake:rooms(), "ending-6"))
    local call = last(fake:calls("DeleteRoom"))
    assert.same({ roomCreate = true }, call.grants)
    assert.equal("ending-6", call.body.room)

    status, body = s1:request("DELETE", "/rooms/ending-6")
    assert.equal(404, status)
    assert.equal("NOT_FOUND", body.error.code)

    status, body = s1:request("GET", "/rooms")
    assert.equal(200, status)
    assert.equal("ended", by_name(body.rooms, "ending-6").status)
    assert.equal("active", by_name(body.rooms, "staying-6").status)
    assert.is_number(by_name(body.rooms, "ending-6").ended_at)

    assert.equal(0, s1:stop())
    s2 = server.start { env = fake:env(), data = data }
    status, body = s2:request("GET", "/rooms")
    assert.equal(200, status)
    local ended = by_name(body.rooms, "ending-6")
    assert.is_table(ended, "the ended room survives a restart")
    assert.equal("ended", ended.status)
    assert.equal("active", by_name(body.rooms, "staying-6").status)
  end)

  it("says in its start-up log that it is open when no QC_API_KEYS are set", function()
    assert.matches("open: no QC_API_KEYS", s:wait_log("open: no QC_API_KEYS"))
    assert.equal(200, (s:request("GET", "/rooms")))
  end)
end)

describe("when LiveKit misbehaves", function()
  local fake
  setup(function() fake = lk.start() end)
  teardown(function() if fake then fake:stop() end end)
  before_each(function() fake:reset() end)

  local function with_server(env, fn)
    local s = server.start { env = env }
    local ok, err = pcall(fn, s)
    s:stop()
    if not ok then error(err, 0) end
  end

  it("answers 503 LIVEKIT_UNAVAILABLE naming the URL it tried when nothing listens", function()
    with_server({ LIVEKIT_URL = "ws://127.0.0.1:1", LIVEKIT_API_KEY = "devkey", LIVEKIT_API_SECRET = "secret" }, function(s)
      local status, body = s:request("POST", "/rooms/create", { room_name = "down-7" })
      assert.equal(503, status)
      assert.equal("LIVEKIT_UNAVAILABLE", body.error.code)
      assert.is_truthy(body.error.message:find("http://127.0.0.1:1/twirp/livekit.RoomService/CreateRoom", 1, true),
        body.error.message)
    end)
  end)

  it("gives up on a slow LiveKit after QC_LIVEKIT_TIMEOUT_MS with 503", function()
    with_server(fake:env { QC_LIVEKIT_TIMEOUT_MS = "500" }, function(s)
      fake:mode("slow", 3000)
      local started = time.monotonic()
      local status, body = s:request("POST", "/rooms/create", { room_name = "slow-7" })
      local elapsed = time.monotonic() - started
      assert.equal(503, status)
      assert.equal("LIVEKIT_UNAVAILABLE", body.error.code)
      assert.is_true(elapsed < 2.5, ("took %.2f s, the fake answers after 3 s"):format(elapsed))
      assert.is_true(elapsed >= 0.4, ("took %.2f s, less than the timeout"):format(elapsed))
      assert.equal(1, #fake:calls("CreateRoom"), "the call did reach LiveKit")
    end)
  end)

  it("answers 502 LIVEKIT_ERROR when LiveKit fails, and 502 LIVEKIT_AUTH when it rejects our secret", function()
    with_server(fake:env(), function(s)
      fake:mode("error")
      local status, body = s:request("POST", "/rooms/create", { room_name = "error-7" })
      assert.equal(502, status)
      assert.equal("LIVEKIT_ERROR", body.error.code)
      fake:mode("ok")
      assert.equal(200, (s:request("POST", "/rooms/create", { room_name = "error-7" })))
    end)
    with_server(fake:env { LIVEKIT_API_SECRET = "not-the-secret" }, function(s)
      local status, body = s:request("POST", "/rooms/create", { room_name = "auth-7" })
      assert.equal(502, status)
      assert.equal("LIVEKIT_AUTH", body.error.code)
      assert.matches("credentials", body.error.message)
      local call = last(fake:calls("CreateRoom"))
      assert.equal(401, call.status)
      assert.matches("^invalid authorization token", call.error, "the fake rejected the signature, not the grant")
      assert.is_nil(by_name(fake:rooms(), "auth-7"))
    end)
  end)
end)

describe("API keys", function()
  local fake, s
  setup(function() fake, s = lk.serve { QC_API_KEYS = "k-one,k-two" } end)
  teardown(function() lk.shutdown(fake, s) end)

  it("turn away callers without a key or with a wrong one, let a listed key in, and never log it", function()
    local status, body = s:request("GET", "/rooms")
    assert.equal(401, status)
    assert.equal("UNAUTHORIZED", body.error.code)

    status, body = s:request("POST", "/rooms/create", { room_name = "keyed-8" }, { Authorization = "Bearer k-three" })
    assert.equal(401, status)
    assert.equal("UNAUTHORIZED", body.error.code)
    status = s:request("POST", "/tokens/generate", { room_name = "keyed-8", participant_identity = "cand-1",
      participant_type = "candidate" }, { Authorization = "k-two" })
    assert.equal(401, status, "the key must come as a Bearer token")
    assert.equal(0, #fake:calls(), "a refused caller never reaches LiveKit")

    status, body = s:request("POST", "/rooms/create", { room_name = "keyed-8" }, { Authorization = "Bearer k-two" })
    assert.equal(200, status)
    assert.equal("keyed-8", body.name)
    status = s:request("GET", "/rooms", nil, { Authorization = "Bearer k-one" })
    assert.equal(200, status)

    assert.equal(200, (s:request("GET", "/health")))

    local log = s:wait_log("path=/health status=200") -- every line before it is written too
    assert.is_nil(log:find("k-one", 1, true), "k-one in the log")
    assert.is_nil(log:find("k-two", 1, true), "k-two in the log")
    assert.is_nil(log:find("k-three", 1, true), "a wrong key in the log")
    assert.is_nil(log:find("open: no QC_API_KEYS", 1, true))
  end)

  it("are not asked of LiveKit webhooks, which carry their own signature", function()
    local body = ('{"event":"room_started","room":{"sid":"RM_k8","name":"keyed-8"},"id":"%s","createdAt":"%d"}')
      :format(fresh_id("k"), os.time())
    local status, res = s:request("POST", "/webhooks/livekit", body,
      { ["Content-Type"] = "application/webhook+json", Authorization = lk.sign_webhook(body) })
    assert.equal(200, status)
    assert.equal("accepted", res.status)
  end)
end)

describe("LiveKit webhooks", function()
  local s
  -- Webhooks never call LiveKit; the URL points nowhere so a stray call would show as an error.
  setup(function()
    s = server.start { env = { LIVEKIT_URL = "ws://127.0.0.1:1", LIVEKIT_API_KEY = "devkey", LIVEKIT_API_SECRET = "secret" } }
  end)
  teardown(function() if s then s:stop() end end)

  local function post(body, auth)
    return s:request("POST", "/webhooks/livekit", body,
      { ["Content-Type"] = "application/webhook+json", Authorization = auth })
  end
  local function events(id) return count(s, "webhook_events WHERE id = ?", id) end

  local function joined(id, room)
    return ('{"event":"participant_joined","room":{"sid":"RM_abc","name":"%s","emptyTimeout":300,'
      .. '"creationTime":"%d","numParticipants":1},"participant":{"sid":"PA_x","identity":"cand-42",'
      .. '"state":"ACTIVE","joinedAt":"%d","name":"Ada","metadata":"{\\"role\\":\\"candidate\\"}","kind":"STANDARD"},'
      .. '"id":"%s","createdAt":"%d"}'):format(room, os.time(), os.time(), id, os.time())
  end
  local function published(id, room, identity, track_sid)
    return ('{"event":"track_published","room":{"sid":"RM_abc","name":"%s"},'
      .. '"participant":{"sid":"PA_%s","identity":"%s"},'
      .. '"track":{"sid":"%s","name":"mic","source":"MICROPHONE","mimeType":"audio/opus"},'
      .. '"id":"%s","createdAt":"%d"}'):format(room, identity, identity, track_sid, id, os.time())
  end

  it("accepts a signed participant_joined once, records the participant's role, and reports a redelivery as duplicate", function()
    local id = fresh_id("j")
    local body = joined(id, "hooks-9")
    local auth = lk.sign_webhook(body)
    assert.is_nil(auth:find("^Bearer"))

    local sdk_ok, event = lk.receive_webhook(body, auth)
    assert.is_true(sdk_ok, tostring(event))
    local status, res = post(body, auth)
    assert.equal(200, status, s:log_text())
    assert.equal("accepted", res.status)
    assert.equal(id, res.id)

    local rows = query(s, "SELECT * FROM participants WHERE room = ? AND identity = ?", "hooks-9", "cand-42")
    assert.equal(1, #rows)
    assert.equal("candidate", rows[1].role)
    assert.equal("PA_x", rows[1].sid)
    assert.equal("Ada", rows[1].name)
    assert.equal(1, events(id))

    status, res = post(body, auth)
    assert.equal(200, status)
    assert.equal("duplicate", res.status)
    assert.equal(1, events(id))
  end)

  it("marks a candidate's microphone for transcription but not the agent's", function()
    local room = "hooks-9b"
    local join = joined(fresh_id("j"), room)
    assert.equal(200, (post(join, lk.sign_webhook(join))))

    -- track_* events name the participant by identity only: the role comes from the join recorded above.
    local cand = published(fresh_id("t"), room, "cand-42", "TR_cand9")
    local status, res = post(cand, lk.sign_webhook(cand))
    assert.equal(200, status)
    assert.equal("accepted", res.status)
    local agent = published(fresh_id("t"), room, "agent", "TR_agent9")
    status, res = post(agent, lk.sign_webhook(agent))
    assert.equal(200, status)
    assert.equal("accepted", res.status)

    local rows = query(s, "SELECT sid, identity, source, transcribe FROM tracks WHERE room = ? ORDER BY sid", room)
    assert.same({
      { sid = "TR_agent9", identity = "agent", source = "MICROPHONE", transcribe = 0 },
      { sid = "TR_cand9", identity = "cand-42", source = "MICROPHONE", transcribe = 1 },
    }, rows)
  end)

  it("refuses a signed event of the wrong shape with 400 BAD_EVENT naming the field, and records nothing (found by fuzz_dispatch)", function()
    local cases = {
      { '{"event":"participant_joined","id":"%s","room":{"name":"r1"},"participant":{}}', "participant.identity" },
      { '{"event":"room_finished","id":"%s","room":5}', "room: must be an object" },
      { '{"event":"room_started","id":"%s","room":{"name":{}}}', "room.name: must be a string" },
      { '{"event":"track_published","id":"%s","room":{"name":"r1"},"participant":{"identity":"c"},"track":{"sid":7}}',
        "track.sid" },
    }
    for _, case in ipairs(cases) do
      local id = fresh_id("shape")
      local body = case[1]:format(id)
      local status, res = post(body, lk.sign_webhook(body))
      assert.equal(400, status, body)
      assert.equal("BAD_EVENT", res.error.code, body)
      assert.truthy(res.error.message:find(case[2], 1, true), res.error.message)
      assert.equal(0, events(id), body)
    end
  end)

  it("rejects with 401 and records nothing: an altered body, a wrong secret, no header, an expired signature", function()
    local before = count(s, "webhook_events")

    local id = fresh_id("a")
    local body = joined(id, "hooks-rej")
    local auth = lk.sign_webhook(body)
    local altered = body:gsub('"name":"Ada"', '"name":"Adb"')
    assert.equal(#body, #altered)
    assert.is_false((lk.receive_webhook(altered, auth)), "the SDK oracle refuses the altered body")
    local status, res = post(altered, auth)
    assert.equal(401, status)
    assert.equal("UNAUTHORIZED", res.error.code)
    assert.equal(0, events(id))

    id = fresh_id("w")
    body = joined(id, "hooks-rej")
    status = post(body, lk.sign_webhook(body, { secret = "wrong-secret" }))
    assert.equal(401, status)
    assert.equal(0, events(id))

    id = fresh_id("n")
    body = joined(id, "hooks-rej")
    status = post(body, nil)
    assert.equal(401, status)
    assert.equal(0, events(id))

    -- The worked example from livekit.md §4: valid 1767225601-1767225901, long expired now.
    local example = '{"event":"participant_joined","room":{"sid":"RM_abc","name":"interview-7","emptyTimeout":300,'
      .. '"creationTime":"1767225600","numParticipants":1},"participant":{"sid":"PA_x","identity":"cand-42",'
      .. '"state":"ACTIVE","joinedAt":"1767225601","name":"Ada","kind":"STANDARD"},"id":"EV_8sdFq3Wk2mGh",'
      .. '"createdAt":"1767225601"}'
    local example_auth = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzaGEyNTYiOiJ0Z2IyakF3QWFQN3RlQjdDVzlQUndlN1dTWmtqaVp6VEZhcW9tRzZMTnlzPSIsImlzcyI6ImRldmtleSIsImlhdCI6MTc2NzIyNTYwMSwibmJmIjoxNzY3MjI1NjAxLCJleHAiOjE3NjcyMjU5MDF9.ek09OwpWp6lWOkuhkTsN9N1I8GaMAWCN3jAE99THjWI"
    assert.equal(312, #example)
    status = post(example, example_auth)
    assert.equal(401, status)
    assert.equal(0, events("EV_8sdFq3Wk2mGh"))

    assert.equal(before, count(s, "webhook_events"))
    assert.equal(0, count(s, "participants WHERE room = ? OR room = ?", "hooks-rej", "interview-7"))
  end)
end)

describe("quantcoach token", function()
  local function token_cmd(args)
    return ("env LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret QC_ENV_FILE=/nonexistent %s token %s")
      :format(server.quote(server.bin), args)
  end

  it("prints an agent token the SDK accepts, with the agent's grants", function()
    local code, out = server.run(token_cmd("--room R --identity I --role agent"))
    assert.equal(0, code, out)
    local token = out:match("^%s*(%S+)%s*$")
    assert.is_string(token, out)
    local r = lk.verify({ token })[1]
    assert.is_true(r.ok, r.error)
    assert.equal("devkey", r.claims.iss)
    assert.equal("I", r.claims.sub)
    assert.equal(TTL, r.claims.exp - r.claims.nbf)
    assert.equal("R", r.claims.video.room)
    assert.is_true(r.claims.video.roomJoin)
    assert.is_true(r.claims.video.hidden)
    assert.is_false(r.claims.video.canPublish)
    assert.is_true(r.claims.video.canSubscribe)
    assert.is_true(r.claims.video.canPublishData)
  end)

  it("exits 2 naming the option on a usage error, and its help fits 80 columns", function()
    local cases = {
      { "--room R --identity I --role agent --ttl -5", "%-%-ttl" },
      { "--room R --identity I --role agent --ttl 0", "%-%-ttl" },
      -- the policy contract's longest lifetime is a week: 604800 s
      { "--room R --identity I --role agent --ttl 604801", "%-%-ttl[^\n]*604800" },
      { "--room R --identity I --role agent --ttl 99999999999", "%-%-ttl[^\n]*604800" },
      { "--room R --identity I", "%-%-role" },
      { "--room R --identity I --role agent --bogus", "%-%-bogus" },
      { "--room .. --identity I --role agent", "%-%-room" },
      { "--room R --identity $(printf 'a\\377') --role agent", "%-%-identity" },
      { "--room R --identity I --name $(printf 'a\\001b') --role agent", "%-%-name" },
    }
    for _, c in ipairs(cases) do
      local code, out = server.run(token_cmd(c[1]))
      assert.equal(2, code, c[1] .. ": " .. out)
      assert.matches(c[2], out)
      assert.is_nil(out:find("eyJ", 1, true), "no token printed")
    end
    local code, out = server.run(token_cmd("--help"))
    assert.equal(0, code)
    for line in out:gmatch("[^\n]*") do
      assert.is_true(utf8.len(line) <= 80, "too wide: " .. line)
    end
    assert.matches("interviewer, candidate, agent", out, 1, true)
  end)

  it("takes a --ttl up to the policy contract's week", function()
    local code, out = server.run(token_cmd("--room R --identity I --role agent --ttl 604800"))
    assert.equal(0, code, out)
    local r = lk.verify({ out:match("^%s*(%S+)%s*$") })[1]
    assert.is_true(r.ok, r.error)
    assert.equal(604800, r.claims.exp - r.claims.nbf)
  end)

  it("refuses an unknown role with a non-zero exit and a one-line message", function()
    local code, out = server.run(token_cmd("--room R --identity I --role boss"))
    assert.is_true(code ~= 0)
    assert.matches("^[^\n]*%-%-role[^\n]*\n?$", out)
    assert.is_nil(out:find("eyJ", 1, true), "no token printed")
  end)
end)

describe("the role list", function()
  local fake
  setup(function() fake = lk.start() end)
  teardown(function() fake:stop() end)

  -- A copy of the shipped policies with one more role.
  local function with_observer()
    local dir = server.copy_policies()
    local path = dir .. "/roles.lua"
    local text = server.read_file(path)
    local n
    text, n = text:gsub('M%.roles = {', 'M.roles = { "observer",', 1)
    assert.equal(1, n, "roles.lua has M.roles")
    text, n = text:gsub("M%.grants = {", "M.grants = {\n  observer = { canSubscribe = true, canPublish = false },", 1)
    assert.equal(1, n)
    server.write_file(path, text)
    return dir
  end

  it("comes from roles.lua alone: a role added there is served, signed by quantcoach token, and checked", function()
    local dir = with_observer()
    local s = server.start { env = fake:env(), policies = dir }
    finally(function() s:stop() end)
    local status, body = s:request("POST", "/tokens/generate", { room_name = "r-obs", participant_identity = "obs-1",
      participant_type = "observer" })
    assert.equal(200, status, type(body) == "table" and cjson.encode(body) or body)
    local c = lk.verify({ body.token })[1].claims
    assert.is_false(c.video.canPublish)
    status, body = s:request("POST", "/rooms/create", { room_name = "r-obs" })
    assert.equal(200, status)
    assert.is_true(lk.verify({ body.observer_token })[1].ok)

    local code, out = server.run(("env LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret QC_ENV_FILE=/nonexistent " ..
      "QC_POLICIES=%s %s token --room R --identity obs --role observer"):format(server.quote(dir), server.quote(server.bin)))
    assert.equal(0, code, out)
    assert.is_true(lk.verify({ out:match("%S+") })[1].ok)

    -- A role listed without grants is a broken policy.
    local text = server.read_file(dir .. "/roles.lua"):gsub("\n  observer = {[^\n]*\n", "\n", 1)
    server.write_file(dir .. "/roles.lua", text)
    code, out = server.run(("%s check --policies %s"):format(server.quote(server.bin), server.quote(dir)))
    assert.equal(1, code, out)
    assert.matches("observer", out)
  end)
end)

describe("the RoomService client from a script", function()
  it("removes a participant, and reports one that is not there as 404", function()
    local fake = lk.start()
    fake:add_participant { room = "interview-9", identity = "cand-1" }
    local dir = server.tmpdir()
    local path = dir .. "/remove.lua"
    server.write_file(path, [[
      local livekit = require "qc.livekit"
      livekit.create_room { name = "interview-9" }
      livekit.remove_participant("interview-9", "cand-1")
      local ok, err = pcall(livekit.remove_participant, "interview-9", "cand-1")
      assert(not ok and err.status == 404, "second removal: " .. tostring(type(err) == "table" and err.message or err))
      return 0
    ]])
    local vars = { "QC_ENV_FILE=/nonexistent", "QC_DATA=" .. dir }
    for k, v in pairs(fake:env()) do vars[#vars + 1] = k .. "=" .. v end
    local code, out = server.run(("env %s %s run %s"):format(table.concat(vars, " "), server.bin, path))
    assert.equal(0, code, out)
    local calls = fake:calls("RemoveParticipant")
    assert.equal(2, #calls)
    assert.same({ roomAdmin = true, room = "interview-9" }, calls[1].grants)
    fake:stop()
  end)
end)
