-- Track capture: signed webhooks in, LiveKit Track Egress calls out (shared/protocols/livekit.md §3, §4).
-- The fake LiveKit answers StartTrackEgress / StopEgress like the real server and, as LiveKit does,
-- sends the egress_started / egress_updated / egress_ended webhooks back to us, signed.
local server = require "support.server"
local lk = require "support.fake_livekit"
local hooks = require "support.webhooks"
local cjson = require "cjson"
local time = require "qc.time"
local ingest = require "qc.ingest"
local jwt = require "qc.jwt"

local query, event = hooks.query, hooks.event

local function post(s, body)
  local status, res = hooks.post(s, body)
  assert.equal(200, status, s:log_text())
  return res
end

local function joined(s, room, identity, extra)
  local p = { sid = "PA_" .. identity, identity = identity, state = "ACTIVE", joinedAt = tostring(os.time()) }
  for k, v in pairs(extra or {}) do p[k] = v end
  return post(s, event("participant_joined", room, { participant = p }))
end

local function published(s, room, identity, sid, track)
  local t = { sid = sid, name = "mic", source = "MICROPHONE", mimeType = "audio/opus" }
  for k, v in pairs(track or {}) do t[k] = v end
  return post(s, event("track_published", room, { participant = { sid = "PA_" .. identity, identity = identity }, track = t }))
end

local function unpublished(s, room, identity, sid)
  return post(s, event("track_unpublished", room,
    { participant = { sid = "PA_" .. identity, identity = identity }, track = { sid = sid, source = "MICROPHONE" } }))
end

local function calls_for(fake, method, pred)
  local out = {}
  for _, c in ipairs(fake:calls(method)) do
    if not pred or pred(c) then out[#out + 1] = c end
  end
  return out
end

local function starts_of(fake, track)
  return calls_for(fake, "StartTrackEgress", function(c) return c.body.trackId == track end)
end

local function track_row(s, sid)
  return query(s, "SELECT * FROM tracks WHERE sid = ?", sid)[1]
end

-- The room on the fake (StartTrackEgress loads it, as the server does) and a candidate's token for it.
local function room_with_candidate(s, fake, room, identity)
  fake:add_participant { room = room, identity = identity }
  local status = s:request("POST", "/tokens/generate", { room_name = room, participant_identity = identity,
    participant_type = "candidate" })
  assert.equal(200, status)
end

describe("track egress", function()
  local fake, s

  setup(function() fake, s = lk.serve { QC_EGRESS_RETRIES = "2" } end)
  teardown(function() lk.shutdown(fake, s) end)
  before_each(function()
    fake:reset()
    fake:egress_config { webhook_url = s.url .. "/webhooks/livekit" }
  end)

  it("starts a Track Egress to our /ingest for a transcribed track, with a signed token naming room, identity and track", function()
    room_with_candidate(s, fake, "eg-1", "ada@example.com")
    joined(s, "eg-1", "ada@example.com")
    published(s, "eg-1", "ada@example.com", "TR_eg1")

    local call = server.wait_for(function() return starts_of(fake, "TR_eg1")[1] end, 10, "StartTrackEgress")
    assert.equal(200, call.status, tostring(call.error))
    assert.same({ roomRecord = true }, call.grants)
    assert.equal("eg-1", call.body.roomName)
    -- The default public URL is the listen address with the port the server bound (it was 0).
    local token = call.body.websocketUrl:match("^ws://127%.0%.0%.1:" .. s.port .. "/ingest%?t=([%w%-_%.]+)$")
    assert.is_string(token, call.body.websocketUrl)
    local claims, err = ingest.verify(token)
    assert.is_table(claims, err)
    assert.equal("eg-1", claims.room)
    assert.equal("ada@example.com", claims.identity)
    assert.equal("TR_eg1", claims.track)
    assert.equal(48000, claims.rate)
    assert.equal(2, claims.channels)
    assert.is_true(claims.exp - claims.nbf == 600, "QC_INGEST_TOKEN_TTL's default")

    -- The egress is recorded with the track, and the fake's egress_started / egress_updated webhooks move it on.
    local eg = fake:egresses()[1]
    local row = server.wait_for(function()
      local r = track_row(s, "TR_eg1")
      return r.egress_state == "EGRESS_ACTIVE" and r
    end, 10, "the egress to be recorded active")
    assert.equal(eg.egress_id, row.egress_id)
    assert.equal(1, row.egress_attempts)
    assert.equal("candidate", row.role)
    assert.equal(1, row.transcribe)

    -- A participant token does not pass as an ingest token, and an ingest token is refused once expired.
    local status, res = s:request("POST", "/tokens/generate", { room_name = "eg-1", participant_identity = "ada@example.com",
      participant_type = "candidate" })
    assert.equal(200, status)
    local lk_token = res.token
    local c2, _, code = ingest.verify(lk_token)
    assert.is_nil(c2)
    local now = os.time()
    local expired = jwt.sign({ iss = "devkey", aud = ingest.AUDIENCE, sub = "i", room = "eg-1", track = "TR_x",
      nbf = now - 100, exp = now - 1 - ingest.LEEWAY }, "secret")
    c2, _, code = ingest.verify(expired)
    assert.is_nil(c2)
    assert.equal("EXPIRED", code)
    local other_secret = jwt.sign({ iss = "devkey", aud = ingest.AUDIENCE, sub = "i", room = "eg-1", track = "TR_x",
      nbf = now, exp = now + 60 }, "not-the-secret")
    assert.is_nil((ingest.verify(other_secret)))
  end)

  it("starts no second egress for a track_published delivered again under a new event id", function()
    room_with_candidate(s, fake, "eg-2", "cand-2")
    joined(s, "eg-2", "cand-2")
    published(s, "eg-2", "cand-2", "TR_eg2")
    server.wait_for(function() return #starts_of(fake, "TR_eg2") == 1 end, 10, "the first StartTrackEgress")
    published(s, "eg-2", "cand-2", "TR_eg2")
    published(s, "eg-2", "cand-2", "TR_eg2")
    time.sleep(0.5)
    assert.equal(1, #starts_of(fake, "TR_eg2"))
    assert.equal(1, track_row(s, "TR_eg2").egress_attempts)
  end)

  it("starts none for the agent, a video track or a participant of kind AGENT", function()
    fake:add_participant { room = "eg-3", identity = "cand-3" }
    joined(s, "eg-3", "agent")
    joined(s, "eg-3", "voice-bot", { kind = "AGENT", attributes = { role = "interviewer" } })
    joined(s, "eg-3", "cand-3", { attributes = { role = "candidate" } })
    published(s, "eg-3", "agent", "TR_eg3a")
    published(s, "eg-3", "voice-bot", "TR_eg3b")
    published(s, "eg-3", "cand-3", "TR_eg3c", { type = "VIDEO", source = "CAMERA" })
    published(s, "eg-3", "cand-3", "TR_eg3d")
    server.wait_for(function() return #starts_of(fake, "TR_eg3d") == 1 end, 10, "the candidate's mic egress")
    time.sleep(0.3)
    assert.equal(1, #fake:calls("StartTrackEgress"))
    for _, sid in ipairs { "TR_eg3a", "TR_eg3b", "TR_eg3c" } do
      local r = track_row(s, sid)
      assert.equal(0, r.transcribe, sid)
      assert.is_nil(r.egress_id, sid)
    end
  end)

  it("stops the egress with its recorded id when the track is unpublished", function()
    room_with_candidate(s, fake, "eg-4", "cand-4")
    joined(s, "eg-4", "cand-4")
    published(s, "eg-4", "cand-4", "TR_eg4")
    local row = server.wait_for(function()
      local r = track_row(s, "TR_eg4")
      return r.egress_id and r
    end, 10, "the egress id")
    unpublished(s, "eg-4", "cand-4", "TR_eg4")
    local stop = server.wait_for(function() return fake:calls("StopEgress")[1] end, 10, "StopEgress")
    assert.equal(row.egress_id, stop.body.egressId)
    assert.same({ roomRecord = true }, stop.grants)
    -- The fake's egress_ended (COMPLETE) comes back as a webhook; a finished egress is not retried.
    server.wait_for(function() return track_row(s, "TR_eg4").egress_state == "EGRESS_COMPLETE" end, 10, "COMPLETE")
    time.sleep(0.3)
    assert.equal(1, #starts_of(fake, "TR_eg4"))
  end)

  it("stops every egress of a participant who leaves, and of a room that finishes", function()
    room_with_candidate(s, fake, "eg-5", "cand-5")
    fake:add_participant { room = "eg-5", identity = "int-5" }
    assert.equal(200, (s:request("POST", "/tokens/generate", { room_name = "eg-5", participant_identity = "int-5",
      participant_type = "interviewer" })))
    published(s, "eg-5", "cand-5", "TR_eg5a")
    published(s, "eg-5", "cand-5", "TR_eg5b", { source = "UNKNOWN", name = "second mic" })
    published(s, "eg-5", "int-5", "TR_eg5c")
    server.wait_for(function() return #fake:calls("StartTrackEgress") == 3 end, 10, "three egresses")
    server.wait_for(function()
      return #query(s, "SELECT sid FROM tracks WHERE room = 'eg-5' AND egress_state = 'EGRESS_ACTIVE'") == 3
    end, 10, "three active egresses")
    local ids = {}
    for _, r in ipairs(query(s, "SELECT sid, egress_id FROM tracks WHERE room = 'eg-5'")) do ids[r.sid] = r.egress_id end

    post(s, event("participant_left", "eg-5", { participant = { sid = "PA_cand-5", identity = "cand-5" } }))
    server.wait_for(function() return #fake:calls("StopEgress") == 2 end, 10, "the leaver's two egresses stopped")
    local stopped = {}
    for _, c in ipairs(fake:calls("StopEgress")) do stopped[c.body.egressId] = true end
    assert.is_true(stopped[ids.TR_eg5a] and stopped[ids.TR_eg5b])
    assert.is_nil(stopped[ids.TR_eg5c])

    post(s, event("room_finished", "eg-5"))
    server.wait_for(function() return #fake:calls("StopEgress") == 3 end, 10, "the room's last egress stopped")
    assert.equal(ids.TR_eg5c, fake:calls("StopEgress")[3].body.egressId)
    local open = query(s, "SELECT count(*) AS n FROM tracks WHERE room = 'eg-5' AND unpublished_at IS NULL")[1].n
    assert.equal(0, open)
  end)

  it("stops a room's egresses on DELETE /rooms/{room}, before LiveKit deletes the room", function()
    assert.equal(200, (s:request("POST", "/rooms/create", { room_name = "eg-6" })))
    joined(s, "eg-6", "candidate")
    published(s, "eg-6", "candidate", "TR_eg6")
    server.wait_for(function() return track_row(s, "TR_eg6").egress_id end, 10, "the egress id")
    local egress_id = track_row(s, "TR_eg6").egress_id
    local status = s:request("DELETE", "/rooms/eg-6")
    assert.equal(200, status, s:log_text())
    local stop = fake:calls("StopEgress")[1]
    assert.is_table(stop, "StopEgress was called before the answer")
    assert.equal(egress_id, stop.body.egressId)
    assert.is_true(stop.seq < fake:calls("DeleteRoom")[1].seq)
  end)

  it("stops an egress whose track was unpublished while StartTrackEgress was still being answered", function()
    room_with_candidate(s, fake, "eg-10", "cand-10")
    fake:egress_config {} -- no egress webhooks: only the late answer tells us the egress id
    fake:hold("StartTrackEgress", "eg-10", 1500, "after") -- LiveKit starts it, then its answer is slow
    published(s, "eg-10", "cand-10", "TR_eg10")
    server.wait_for(function() return #fake:egresses() == 1 end, 10, "the egress to exist on LiveKit")
    assert.equal("requesting", track_row(s, "TR_eg10").egress_state)
    unpublished(s, "eg-10", "cand-10", "TR_eg10")
    local stop = server.wait_for(function() return fake:calls("StopEgress")[1] end, 10, "StopEgress after the answer")
    assert.equal(fake:egresses()[1].egress_id, stop.body.egressId)
    assert.equal(track_row(s, "TR_eg10").egress_id, stop.body.egressId)
  end)

  it("takes the egress id from LiveKit's egress webhooks when they come before its answer to StartTrackEgress", function()
    room_with_candidate(s, fake, "eg-11", "cand-11")
    fake:hold("StartTrackEgress", "eg-11", 1500, "after")
    published(s, "eg-11", "cand-11", "TR_eg11")
    local id = server.wait_for(function() return (fake:egresses()[1] or {}).egress_id end, 10, "the egress on LiveKit")
    server.wait_for(function() return track_row(s, "TR_eg11").egress_state == "EGRESS_ACTIVE" end, 10, "the webhooks")
    assert.equal(id, track_row(s, "TR_eg11").egress_id)
    server.wait_for(function() return fake:calls("StartTrackEgress")[1].status == 200 end, 10, "the late answer")
    time.sleep(0.2)
    local row = track_row(s, "TR_eg11")
    assert.same({ id, "EGRESS_ACTIVE", 1 }, { row.egress_id, row.egress_state, row.egress_attempts })
  end)

  it("retries an egress that ended in failure while its track is published, with backoff, at most QC_EGRESS_RETRIES times", function()
    room_with_candidate(s, fake, "eg-7", "cand-7")
    fake:egress_config { webhook_url = s.url .. "/webhooks/livekit", fail = 10 }
    local t0 = time.monotonic()
    published(s, "eg-7", "cand-7", "TR_eg7")
    -- 1 start + 2 retries (1 s, then 2 s later), then it gives up.
    server.wait_for(function() return #starts_of(fake, "TR_eg7") == 3 end, 20, "three StartTrackEgress calls")
    local row = server.wait_for(function()
      local r = track_row(s, "TR_eg7")
      return r.egress_state == "EGRESS_FAILED" and r
    end, 10, "the egress to be given up")
    assert.is_true(time.monotonic() - t0 >= 3, "backoff of 1 s then 2 s")
    assert.equal(3, row.egress_attempts)
    assert.matches("EGRESS_FAILED: fake: egress failed %(injected%)", row.egress_error)
    assert.matches("error egress gave up[^\n]*track=TR_eg7", s:wait_log("egress gave up"))
    time.sleep(4.5) -- past the next backoff step: nothing more
    assert.equal(3, #starts_of(fake, "TR_eg7"))
  end)

  it("retries a StartTrackEgress call that failed, and records the egress once LiveKit answers", function()
    room_with_candidate(s, fake, "eg-8", "cand-8")
    fake:mode("error")
    published(s, "eg-8", "cand-8", "TR_eg8")
    server.wait_for(function() return #starts_of(fake, "TR_eg8") == 1 end, 10, "the failing call")
    server.wait_for(function() return track_row(s, "TR_eg8").egress_state == "backoff" end, 10, "backoff")
    assert.matches("StartTrackEgress: ", track_row(s, "TR_eg8").egress_error)
    fake:mode("ok")
    local row = server.wait_for(function()
      local r = track_row(s, "TR_eg8")
      return r.egress_id and r
    end, 10, "the retried egress")
    assert.equal(2, row.egress_attempts)
    assert.equal(200, starts_of(fake, "TR_eg8")[2].status)
  end)
end)

describe("the ingest URL handed to LiveKit", function()
  it("is the wss:// form of an https:// QC_PUBLIC_URL, its path dropped", function()
    local fake, s = lk.serve { QC_PUBLIC_URL = "https://coach.example:8443/base/" }
    finally(function() lk.shutdown(fake, s) end)
    fake:add_participant { room = "eg-9", identity = "candidate" }
    joined(s, "eg-9", "candidate")
    published(s, "eg-9", "candidate", "TR_eg9")
    local call = server.wait_for(function() return starts_of(fake, "TR_eg9")[1] end, 10, "StartTrackEgress")
    local token = call.body.websocketUrl:match("^wss://coach%.example:8443/ingest%?t=([%w%-_%.]+)$")
    assert.is_string(token, call.body.websocketUrl)
    assert.equal("TR_eg9", ingest.verify(token).track)
  end)

  it("is printed by quantcoach token --ingest, with a token ingest.verify accepts", function()
    local cmd = ("env LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret QC_ENV_FILE=/nonexistent QC_PUBLIC_URL=http://feeder.test:9000 "
      .. "%s token --ingest --room R1 --identity ada@example.com --track TR_f --ttl 60 --rate 16000 --channels 1")
      :format(server.quote(server.bin))
    local code, out = server.run(cmd)
    assert.equal(0, code, out)
    local token = out:match("^ws://feeder%.test:9000/ingest%?t=(%S+)\n$")
    assert.is_string(token, out)
    local c = assert(ingest.verify(token))
    assert.same({ "R1", "ada@example.com", "TR_f", 16000, 1, 60 },
      { c.room, c.identity, c.track, c.rate, c.channels, c.exp - c.nbf })
    assert.is_true(c.rate_in_token and c.channels_in_token)

    for _, bad in ipairs {
      { "--ingest --room R1 --identity I", "%-%-track" },
      { "--ingest --room R1 --identity I --track T --role candidate", "%-%-role" },
      { "--ingest --room R1 --identity I --track T --rate 7", "%-%-rate" },
      { "--ingest --room R1 --identity I --track T --channels 0", "%-%-channels" },
      { "--ingest --room R1 --identity I --track T --ttl -1", "%-%-ttl" },
      { "--room R1 --identity I --role candidate --track T", "%-%-track" },
    } do
      code, out = server.run(("env QC_ENV_FILE=/nonexistent %s token %s"):format(server.quote(server.bin), bad[1]))
      assert.equal(2, code, bad[1] .. ": " .. out)
      assert.matches(bad[2], out)
      assert.is_nil(out:find("eyJ", 1, true), "nothing printed")
    end
  end)
end)

describe("ingest.verify", function()
  local now = os.time()
  local function signed(claims, secret)
    local c = { iss = "devkey", aud = ingest.AUDIENCE, sub = "ada", room = "r1", track = "TR_1", nbf = now, exp = now + 60 }
    for k, v in pairs(claims) do c[k] = v end
    for k, v in pairs(c) do if v == false then c[k] = nil end end
    return jwt.sign(c, secret or "secret")
  end

  it("accepts its own tokens and fills in Egress's format, or the one the token declares", function()
    local c = assert(ingest.verify(signed {}))
    assert.same({ "r1", "ada", "TR_1", 48000, 2 }, { c.room, c.identity, c.track, c.rate, c.channels })
    c = assert(ingest.verify(signed { rate = 16000, channels = 1 }))
    assert.same({ 16000, 1, true, true }, { c.rate, c.channels, c.rate_in_token, c.channels_in_token })
  end)

  it("refuses what is not a valid ingest token, with a stable code", function()
    for _, case in ipairs {
      { nil, "MISSING" }, { "", "MISSING" }, { "a.b", "MALFORMED" },
      { signed({}, "other-secret"), "BAD_SIGNATURE" },
      { signed { iss = "otherkey" }, "BAD_ISSUER" },
      { signed { exp = now - 60 }, "EXPIRED" },
      { signed { nbf = now + 600 }, "NOT_YET_VALID" },
      { signed { aud = false }, "BAD_AUDIENCE" },
      { signed { aud = { ingest.AUDIENCE } }, "BAD_AUDIENCE" },
      { signed { track = false }, "BAD_CLAIMS" },
      { signed { sub = "" }, "BAD_CLAIMS" },
      { signed { room = 7 }, "BAD_CLAIMS" },
      { signed { rate = 16000.5 }, "BAD_CLAIMS" },
      { signed { rate = "48000" }, "BAD_CLAIMS" },
      { signed { rate = 1000000 }, "BAD_CLAIMS" },
      { signed { channels = 0 }, "BAD_CLAIMS" },
      { signed { channels = 9 }, "BAD_CLAIMS" },
    } do
      local c, err, code = ingest.verify(case[1])
      assert.is_nil(c, tostring(case[2]))
      assert.is_string(err)
      assert.equal(case[2], code, err)
    end
  end)
end)
