-- Audio to words, end to end: festival speech for two speakers (spec/support/make_speech.sh),
-- fed through /ingest exactly as LiveKit's Track Egress sends it (48 kHz stereo s16le in
-- 10 ms binary messages, the `ws` client), through the local pocketsphinx engine, into
-- SQLite and out on a live WebSocket. Every final must be attributed to the speaker whose
-- turn it falls in, by the role we issued their token with (identities that follow no naming
-- pattern), and the stored transcript must agree with what was announced.
local server = require "support.server"
local peers = require "support.peers"
local speech = require "support.speech"
local lk = require "support.fake_livekit"
local ingest = require "qc.ingest"
local cjson = require "cjson"

local API_KEY = "spec-e2e-key-0123456789"
local AUTH = { Authorization = "Bearer " .. API_KEY }
-- Faster than real time to keep the spec short; the local engine's ring holds 15 s, far more
-- than it falls behind at this pace.
local SPEED = "2"

-- The turn a final's time span overlaps most (the files share one clock from 0).
local function turn_at(turns, f)
  local best, overlap = nil, 0
  for _, t in ipairs(turns) do
    local o = math.min(t["end"], f["end"]) - math.max(t.start, f.start)
    if o > overlap then best, overlap = t, o end
  end
  return best
end

describe("audio to words, end to end", function()
  it("attributes every final to the right speaker, in time order, stored before it is announced", function()
    local dir = speech.make()
    local turns = speech.turns(dir)
    local s = server.start { env = { QC_API_KEYS = API_KEY } }
    local room = "e2e-interview"
    -- Identities that follow no naming pattern: the issued role is what attributes them.
    local ids = { interviewer = "ada@example.com", candidate = "x7Gq" }
    local tokens = peers.role_tokens(s, room, ids, AUTH)
    local listener = peers.live(s, room, tokens.interviewer, { "--timeout", "120" })
    listener:wait_event("open")

    peers.wait_fed(s, peers.feed_roles(s, room, ids, dir, SPEED))

    local status, doc = s:request("GET", "/rooms/" .. room .. "/transcript", nil, AUTH)
    assert.equal(200, status)
    local stored = doc.transcript
    assert.is_true(#stored >= #turns // 2, "too few finals: " .. cjson.encode(stored))

    -- Announced live: every stored final, in sequence order, each one once.
    local live = {}
    server.wait_for(function()
      live = {}
      for _, m in ipairs(listener:messages()) do
        if m.type == "transcript" and m.final then live[#live + 1] = m end
      end
      return #live == #stored
    end, 20, "the live client to have every final")
    -- In sequence order, and (the turns alternate with a second of silence between them) in
    -- time order too: a speaker's final is announced before the next turn's.
    for i = 2, #live do
      assert.is_true(live[i].seq > live[i - 1].seq)
      assert.is_true(live[i].start >= live[i - 1].start, "announced out of time order: " .. cjson.encode(live))
    end

    -- Attribution: each final's role and identity are those of the speaker whose turn it is in.
    local by_role = { interviewer = {}, candidate = {} }
    for i, f in ipairs(stored) do
      local t = turn_at(turns, f)
      assert.is_table(t, "a final outside every turn: " .. cjson.encode(f))
      assert.equal(t.role, f.role, "final " .. i .. " attributed to the wrong speaker: " .. cjson.encode(f))
      assert.equal(ids[t.role], f.identity)
      if i > 1 then assert.is_true(f.start >= stored[i - 1].start, "not in time order") end
      assert.is_true(#f.words > 0)
      for j = 2, #f.words do assert.is_true(f.words[j].start >= f.words[j - 1].start) end
      by_role[f.role][#by_role[f.role] + 1] = f.text
    end
    -- The words themselves: what each speaker said, recognised (the local engine's accuracy
    -- against batch decoding is spec/stt_local_spec.lua's; this only catches a broken path,
    -- such as audio resampled at the wrong rate, which yields words but wrong ones).
    for role, said in pairs(by_role) do
      local ref = server.read_file(dir .. "/" .. role .. ".txt"):gsub("\n", " ")
      local e = speech.wer(ref, table.concat(said, " "))
      assert.is_true(e < 0.5, ("%s: word error rate %.2f\nref: %s\nhyp: %s"):format(role, e, ref, table.concat(said, " ")))
    end

    -- The text form: the same finals, as lines with the role's name.
    local tstatus, text = s:request("GET", "/rooms/" .. room .. "/transcript?format=text", nil, AUTH)
    assert.equal(200, tstatus)
    local n = 0
    for line in text:gmatch("[^\n]+") do
      n = n + 1
      local role = stored[n].role
      assert.equal(("[%02d:%02d] %s: %s"):format(math.floor(stored[n].start) // 60, math.floor(stored[n].start) % 60,
        role:sub(1, 1):upper() .. role:sub(2), stored[n].text), line)
    end
    assert.equal(#stored, n)
    listener:kill()
    assert.equal(0, s:stop())
  end)

  it("transcribes a track LiveKit's egress streams to us after the webhooks, and stops it with the track", function()
    local dir = speech.make()
    -- The interviewer's first turn alone, as the egress will stream it (then silence, as a
    -- live egress does while the track stays published).
    local clip = server.tmpdir() .. "/turn1.wav"
    local status, out = server.run(("sox %s %s trim 0 5.2"):format(server.quote(dir .. "/interviewer.wav"), server.quote(clip)))
    assert(status == 0, out)
    local fake = lk.start()
    local s = server.start { env = fake:env { QC_API_KEYS = API_KEY } }
    fake:egress_config { webhook_url = s.url .. "/webhooks/livekit", dial = true, wav = clip }
    local room, identity = "e2e-egress", "ivy.r"
    fake:add_participant { room = room, identity = identity }
    assert.equal(200, (s:request("POST", "/tokens/generate",
      { room_name = room, participant_identity = identity, participant_type = "interviewer" }, AUTH)))
    local listener = peers.listen(("ws://127.0.0.1:%d/rooms/%s/live"):format(s.port, room),
      { "--header", "Authorization: Bearer " .. API_KEY, "--finals", "1", "--timeout", "60" })
    listener:wait_event("open")
    assert.equal(200, (peers.participant(s, "joined", room, identity)))
    assert.equal(200, (peers.webhook(s, { event = "track_published", room = { sid = "RM_" .. room, name = room },
      participant = { sid = "PA_" .. identity, identity = identity },
      track = { sid = "TR_egress", name = "mic", source = "MICROPHONE", mimeType = "audio/opus" } })))
    -- The egress dials our /ingest with the URL we gave it; its audio becomes a final.
    s:wait_log("ingest connected[^\n]*track=TR_egress", 20)
    listener:wait_event("close", 60)
    local got
    for _, m in ipairs(listener:messages()) do
      if m.type == "transcript" and m.final then got = m end
    end
    assert.is_table(got, "no final announced")
    assert.equal("interviewer", got.role)
    assert.equal(identity, got.identity)
    assert.equal("TR_egress", got.track)
    assert.matches("portfolio", got.text)
    -- The participant's join came first, with its sequence number.
    assert.equal("participant", listener:messages()[1].type)
    assert.is_true(got.seq > listener:messages()[1].seq)
    -- The track's end stops the egress: its empty Close ends our ingest connection.
    assert.equal(200, (peers.webhook(s, { event = "track_unpublished", room = { sid = "RM_" .. room, name = room },
      participant = { sid = "PA_" .. identity, identity = identity }, track = { sid = "TR_egress", source = "MICROPHONE" } })))
    assert.matches("ingest closed[^\n]*track=TR_egress[^\n]*code=1005", s:wait_log("ingest closed[^\n]*track=TR_egress", 20))
    assert.equal(0, s:stop())
    fake:stop()
  end)

  it("stores the open utterance of every track when the server stops gracefully", function()
    local dir = speech.make()
    -- The interviewer's first turn cut before its last word ends: the utterance is still open
    -- when the audio stops, and the connection stays open after it.
    local clip = server.tmpdir() .. "/cut.wav"
    local status, out = server.run(("sox %s %s trim 0 4.3"):format(server.quote(dir .. "/interviewer.wav"), server.quote(clip)))
    assert(status == 0, out)
    local s = server.start {}
    local t = ingest.token { room = "e2e-stop", identity = "ivy", track = "TR_stop" }
    local feeder = peers.feed(("ws://127.0.0.1:%d/ingest?t=%s"):format(s.port, t),
      { "--wav", clip, "--speed", SPEED, "--hold", "30000" })
    feeder:wait_event("sent", 30)
    -- On PostgreSQL a commit takes loop turns: made slow here (half a second per stored
    -- event), the stop must still wait for the final the track's end flushes.
    local slow = s:db()
    if server.is_pg(slow) then
      assert(slow:exec([[CREATE FUNCTION spec_slow() RETURNS trigger LANGUAGE plpgsql AS
                         'BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END';
                         CREATE TRIGGER slow_events BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION spec_slow()]]))
    end
    slow:close()
    assert.equal(0, s:stop())
    local closed = feeder:wait_event("close")
    assert.equal(1001, closed.code)
    assert.equal("server stopping", closed.reason)
    local db = s:db()
    local rows = assert(db:query("SELECT text FROM events WHERE room = 'e2e-stop' AND kind = 'final'"))
    db:close()
    local text = {}
    for _, r in ipairs(rows) do text[#text + 1] = r.text end
    assert.matches("portfolio", table.concat(text, " "))
  end)
end)

-- The same path with the ElevenLabs engine against its fake (spec/support/fake_elevenlabs.js),
-- whose recognition is deterministic: 50 ms or more of one constant sample k is the word "w<k>".
-- The audio goes in through /ingest as 16 kHz mono (declared in the token), 10 ms messages.
describe("audio to words through the ElevenLabs engine", function()
  local el = require "support.fake_elevenlabs"

  -- SIGTERM must stop a server whose ElevenLabs engine has used its lws client context: the
  -- context's teardown once waited on a check handle that nothing woke, and the server hung
  -- with its signal handles gone. A few seconds is ample; the stop must also be logged.
  local function stop(s)
    assert.equal(0, s:stop(8))
    assert.matches("server stopped", s:log_text())
  end

  -- Utterances of words (300 ms of a constant sample each), 800 ms of silence after each.
  local UTTERANCES = { { 1000, 2000, 3000, 4000 }, { 5000, 6000, 7000, 8000 }, { 1100, 1200, 1300, 1400 } }
  local function wav(path)
    local samples = {}
    local function put(v, n) for _ = 1, n do samples[#samples + 1] = string.pack("<i2", v) end end
    put(0, 8000)
    for _, u in ipairs(UTTERANCES) do
      for _, k in ipairs(u) do put(k, 4800) end
      put(0, 12800)
    end
    local data = table.concat(samples)
    server.write_file(path, "RIFF" .. string.pack("<I4", 36 + #data) .. "WAVEfmt "
      .. string.pack("<I4I2I2I4I4I2I2", 16, 1, 1, 16000, 32000, 2, 16) .. "data" .. string.pack("<I4", #data) .. data)
  end

  local function run(fake, room, script)
    fake:script(script)
    local s = server.start { env = { QC_API_KEYS = API_KEY, QC_STT_ENGINE = "elevenlabs",
                                     ELEVENLABS_API_KEY = fake.key, QC_ELEVENLABS_URL = fake.url } }
    local listener = peers.listen(("ws://127.0.0.1:%d/rooms/%s/live"):format(s.port, room),
      { "--header", "Authorization: Bearer " .. API_KEY, "--timeout", "60" })
    listener:wait_event("open")
    local file = server.tmpdir() .. "/words.wav"
    wav(file)
    local t = ingest.token { room = room, identity = "ivy", track = "TR_el", rate = 16000, channels = 1 }
    local feeder = peers.feed(("ws://127.0.0.1:%d/ingest?t=%s"):format(s.port, t),
      { "--wav", file, "--chunk", "320", "--speed", "2", "--hold", "1500" })
    feeder:wait_event("close", 60)
    server.wait_for(function()
      local _, h = s:request("GET", "/health")
      return h.tracks.live == 0
    end, 30, "the track to finish")
    return s, listener
  end

  it("stores and announces every word once, though the connection to ElevenLabs drops and closes mid-stream", function()
    local fake = el.start {}
    local expected = {}
    for _, u in ipairs(UTTERANCES) do for _, k in ipairs(u) do expected[#expected + 1] = "w" .. k end end
    local s, listener = run(fake, "el-faults", { connections = {
      { drop_after_chunks = 3 }, { close_after_chunks = 4, code = 1011, reason = "spec" }, {} } })
    local _, doc = s:request("GET", "/rooms/el-faults/transcript", nil, AUTH)
    local said = {}
    for _, f in ipairs(doc.transcript) do
      assert.equal("ivy", f.identity)
      for w in f.text:gmatch("%S+") do said[#said + 1] = w end
    end
    assert.same(expected, said)
    local live = 0
    for _, m in ipairs(listener:messages()) do if m.type == "transcript" and m.final then live = live + 1 end end
    assert.equal(#doc.transcript, live)
    assert.is_true(#fake:connections() >= 3, "the faults were not reached")
    listener:kill()
    stop(s)
    fake:stop()
  end)

  it("tells the live socket and the log when ElevenLabs refuses the key", function()
    local fake = el.start {}
    local s, listener = run(fake, "el-auth", { connections = { { auth_error = true } } })
    local m = listener:wait_for(function(e) return e.event == "message" and e.data.type == "stt" end, 10, "the stt event").data
    assert.equal("failed", m.state)
    assert.equal("TR_el", m.track)
    assert.is_string(m.detail)
    assert.matches("stt failed", s:log_text())
    listener:kill()
    stop(s)
    fake:stop()
  end)
end)
