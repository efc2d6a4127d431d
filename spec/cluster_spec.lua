-- Three instances, one PostgreSQL: every instance answers for every room, the live socket on
-- one instance carries what the others committed, and one instance owns each room's windows.
-- The interview is two tracks of a nine-turn dialogue through /ingest, fed at real time
-- (speed 1: the interview clock is the wall clock at the track's connect, so a feeder that
-- reconnects elsewhere keeps its times), recognized by the fake ElevenLabs engine. Not by
-- pocketsphinx on festival speech: its words depend on the stream's history (cepstral mean,
-- noise floor), and the first utterance after a reconnect came out different from the same
-- audio in one stream ("would you tip" for "how would you test the model and pass data"),
-- which is the local engine, not the cluster. The fake's words are a function of the audio
-- alone (a run of one constant sample k is the word "w<k>").
--
-- Run twice: without a kill, and with kill -9 of the room's owner mid-interview. The kill
-- comes right after the final of the utterance the owner's own track last carried, in the
-- silence before that speaker's next turn, so what the dead instance held of its track was
-- silence; its feeder reconnects through the third instance and continues on the wall clock
-- (ws_peer.js --epoch). The stored transcript and windows of both runs must be the same.
-- Only with SPEC_PG_URL (ctest's pg_cluster run): SQLite is one process's store.
local server = require "support.server"
local peers = require "support.peers"
local feeder = require "support.feeder"
local el = require "support.fake_elevenlabs"
local lk = require "support.fake_livekit"
local ingest = require "qc.ingest"
local cjson = require "cjson"

local API_KEY = "spec-cluster-key-0123456789"
local AUTH = { Authorization = "Bearer " .. API_KEY }
local IDS = { interviewer = "iv-lead", candidate = "cand-7" }

if not server.pg_url then
  describe("three instances on one PostgreSQL", function()
    pending("needs SPEC_PG_URL (a throwaway PostgreSQL cluster: ctest's pg_ entries)")
  end)
  return
end

local function finals_of(peer)
  local out = {}
  for _, m in ipairs(peer:messages()) do
    if m.type == "transcript" and m.final then out[#out + 1] = m end
  end
  return out
end

local function of_role(list, role)
  local n = 0
  for _, m in ipairs(list) do if m.role == role then n = n + 1 end end
  return n
end

local function owner_of(instances, room)
  local found
  for name, s in pairs(instances) do
    if not s.killed and s:log_text():find("owner room taken room=" .. room, 1, true) then found = found or name end
  end
  return found
end

-- The dialogue: turn i (from 0) starts at 1 + 4.5 i s, six words of 300 ms each, the speakers
-- alternating (the interviewer first); each speaker's track is silent in the other's turns.
-- Turns 4.5 s apart keep every decision of the shipped windows policy clear of its
-- thresholds (a turn change closes windows of 8 s or more: two turns are 9 s), so the few
-- milliseconds a reconnect moves a track's clock decide nothing.
local TURNS, WORDS, RATE = 9, 6, 16000

local function word_of(role, turn, m)
  return (role == "interviewer" and 1000 or 5000) + turn * 100 + m
end

local function make_wavs(dir)
  for _, role in ipairs { "interviewer", "candidate" } do
    local parts, at = {}, 0
    local function put(v, n)
      parts[#parts + 1] = string.pack("<i2", v):rep(n)
      at = at + n
    end
    for turn = 0, TURNS - 1 do
      if (turn % 2 == 0) == (role == "interviewer") then
        put(0, math.floor((1 + 4.5 * turn) * RATE) - at)
        for m = 1, WORDS do put(word_of(role, turn, m), RATE * 3 // 10) end
      end
    end
    put(0, math.floor((2 + 4.5 * TURNS) * RATE) - at)
    local data = table.concat(parts)
    server.write_file(dir .. "/" .. role .. ".wav", "RIFF" .. string.pack("<I4", 36 + #data) .. "WAVEfmt "
      .. string.pack("<I4I2I2I4I4I2I2", 16, 1, 1, RATE, RATE * 2, 2, 16) .. "data" .. string.pack("<I4", #data) .. data)
  end
end

local function feed(s, room, role, dir, epoch)
  local t = ingest.token { room = room, identity = IDS[role], track = "TR_" .. role, rate = RATE, channels = 1 }
  local args = { "--wav", dir .. "/" .. role .. ".wav", "--chunk", "320", "--speed", "1", "--steady" }
  if epoch then args[#args + 1] = "--epoch"; args[#args + 1] = tostring(epoch) end
  return peers.feed(("ws://127.0.0.1:%d/ingest?t=%s"):format(s.port, t), args)
end

-- One interview over three instances; with kill = true, the room's owner dies mid-interview.
-- Returns what was stored and seen.
local function interview(fake, stt, dir, room, kill)
  local url = server.create_database()
  local env = fake:env { QC_API_KEYS = API_KEY, QC_STT_ENGINE = "elevenlabs", ELEVENLABS_API_KEY = stt.key,
                         QC_ELEVENLABS_URL = stt.url }
  local inst = {}
  for _, name in ipairs { "A", "B", "C" } do inst[name] = server.start { store_url = url, env = env } end
  local A, B, C = inst.A, inst.B, inst.C

  -- The room on A, tokens from B, webhooks over all three (one delivered twice, to two).
  local status, body = A:request("POST", "/rooms/create", { room_name = room }, AUTH)
  assert.equal(200, status, cjson.encode(body))
  local tokens = peers.role_tokens(B, room, IDS, AUTH)
  assert.equal(200, (peers.webhook(C, { event = "room_started", room = { sid = "RM_" .. room, name = room } })))
  local joined = { event = "participant_joined", id = "EV_cl_join_" .. room,
                   room = { sid = "RM_" .. room, name = room },
                   participant = { sid = "PA_iv", identity = IDS.interviewer, state = "ACTIVE" } }
  assert.equal(200, (peers.webhook(A, joined)))
  assert.equal(200, (peers.webhook(B, joined))) -- the same id through another instance
  assert.equal(200, (peers.participant(C, "joined", room, IDS.candidate)))

  -- A live client on C, from the start; the two tracks on A and B.
  local live = peers.live(C, room, tokens.interviewer, { "--timeout", "120" })
  live:wait_event("open")
  local feeders = { interviewer = feed(A, room, "interviewer", dir), candidate = feed(B, room, "candidate", dir) }
  local at_of = { interviewer = A, candidate = B }
  local opened = {}
  for role, f in pairs(feeders) do opened[role] = f:wait_event("open", 20).at end

  local killed
  if kill then
    -- The owner is whoever committed the room's first final; its own track's speaker has
    -- just finished an utterance when the live client on C has two of that speaker's finals.
    local owner
    server.wait_for(function()
      owner = owner_of(inst, room)
      return owner ~= nil
    end, 30, "an instance to own the room")
    assert.is_true(owner == "A" or owner == "B", "the owner is an instance with a track: " .. tostring(owner))
    local role = owner == "A" and "interviewer" or "candidate"
    server.wait_for(function() return of_role(finals_of(live), role) >= 2 end, 40, "the owner's track's second final")
    inst[owner]:signal("KILL")
    inst[owner].term_sent = true
    assert.are_not.equal(0, inst[owner]:stop(10))
    inst[owner].killed = true
    killed = owner
    feeders[role]:wait_event("close", 10)
    -- Another instance owns the room within seconds (its clock tick takes the free lock).
    local next_owner
    server.wait_for(function()
      next_owner = owner_of(inst, room)
      return next_owner ~= nil
    end, 10, "another instance to own the room")
    assert.are_not.equal(owner, next_owner)
    -- The feeder reconnects through C, where it was on the wall clock.
    feeders[role] = feed(C, room, role, dir, opened[role])
    local reopened = feeders[role]:wait_event("open", 20)
    assert.is_true(reopened.from > 0)
    at_of[role] = C
  end

  for _, f in pairs(feeders) do f:wait_event("close", 90) end
  for _, s in pairs(at_of) do
    server.wait_for(function()
      local _, h = s:request("GET", "/health")
      return h.tracks.live == 0
    end, 60, "every track to finish")
  end
  -- The interview ends: the webhook reaches B, which closes the open windows.
  assert.equal(200, (peers.webhook(B, { event = "room_finished", room = { sid = "RM_" .. room, name = room } })))

  -- Any instance answers for the room: the transcript from one, the windows from another.
  local alive = {}
  for _, name in ipairs { "A", "B", "C" } do if not inst[name].killed then alive[#alive + 1] = inst[name] end end
  local transcript, wins
  server.wait_for(function()
    local _, doc = alive[1]:request("GET", "/rooms/" .. room .. "/transcript", nil, AUTH)
    transcript = doc.transcript
    local _, ev = alive[#alive]:request("GET", "/rooms/" .. room .. "/evaluations", nil, AUTH)
    wins = ev.windows
    local seen = {}
    for _, w in ipairs(wins) do for _, f in ipairs(w.finals) do seen[f.seq] = true end end
    for _, f in ipairs(transcript) do if not seen[f.seq] then return false end end
    return #transcript > 0
  end, 40, "every final in a stored window")

  -- The interview ended: its owner gave the room's lock up (the lock is a session advisory
  -- lock; nothing else takes one on this database).
  server.wait_for(function()
    local ldb = C:db()
    local r = assert(ldb:first([[SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())]]))
    ldb:close()
    return r.n == 0
  end, 10, "the room's owner to give its lock up")

  -- The live client on C saw every stored final, both speakers, in seq order, each once.
  local db = C:db()
  local stored = assert(db:query("SELECT seq, identity FROM events WHERE room = ? AND kind = 'final' ORDER BY seq", room))
  local parts = assert(db:query("SELECT seq FROM events WHERE room = ? AND kind = 'participant'", room))
  local win_events = assert(db:query("SELECT seq FROM events WHERE room = ? AND kind = 'window' ORDER BY seq", room))
  db:close()
  server.wait_for(function() return #finals_of(live) >= #stored end, 20, "the live client to have every final")
  local got = finals_of(live)
  assert.equal(#stored, #got)
  for i, r in ipairs(stored) do
    assert.equal(r.seq, got[i].seq)
    assert.equal(r.identity, got[i].identity)
  end
  local last = 0
  for _, m in ipairs(live:messages()) do
    if m.seq and not m.partial and m.type ~= "stt" then
      assert.is_true(m.seq > last, "the live client got seq " .. m.seq .. " after " .. last)
      last = m.seq
    end
  end
  assert.equal(5, of_role(got, "interviewer"), cjson.encode(got))
  assert.equal(4, of_role(got, "candidate"), cjson.encode(got))
  -- The webhook delivered twice was applied once: two participants joined, two events.
  assert.equal(2, #parts)
  -- One window event per stored window.
  assert.equal(#wins, #win_events)

  live:kill()
  for _, s in pairs(inst) do
    if not s.killed then s:stop() end
  end
  return { transcript = transcript, windows = wins, killed = killed }
end

local function summary_of(r)
  local t = {}
  for i, f in ipairs(r.transcript) do t[i] = { f.identity, f.text } end
  return t
end

describe("three instances on one PostgreSQL", function()
  local fake, stt, dir
  setup(function()
    dir = server.tmpdir()
    make_wavs(dir)
    fake = lk.start()
    stt = el.start {}
  end)
  teardown(function()
    if fake then fake:stop() end
    if stt then stt:stop() end
  end)

  it("carry one interview, and a kill -9 of the room's owner loses and doubles no final or window", function()
    local base = interview(fake, stt, dir, "cl-base", false)
    local cut = interview(fake, stt, dir, "cl-kill", true)
    assert.is_not_nil(cut.killed)
    -- Every word said is in the transcript, in its turn's final.
    for turn = 0, TURNS - 1 do
      local role = turn % 2 == 0 and "interviewer" or "candidate"
      local words = {}
      for m = 1, WORDS do words[m] = "w" .. word_of(role, turn, m) end
      assert.same({ IDS[role], table.concat(words, " ") }, summary_of(cut)[turn + 1])
    end

    -- The same transcript: texts, order and speakers.
    assert.same(summary_of(base), summary_of(cut))
    -- The same windows: numbered 1..n once each, the same count and bounds (the last one ends
    -- with the last final, which may move by the reconnect's few milliseconds).
    local function bounds(ws)
      local out = {}
      for i, w in ipairs(ws) do out[i] = ("%d:[%.3f,%.3f]"):format(w.index, w.start, w["end"]) end
      return table.concat(out, " ")
    end
    assert.equal(#base.windows, #cut.windows, bounds(base.windows) .. " without the kill, " .. bounds(cut.windows) .. " with it")
    for i, w in ipairs(cut.windows) do
      assert.equal(i, w.index)
      local b = base.windows[i]
      assert.is_true(math.abs(w.start - b.start) < 0.5, ("window %d starts at %s, %s without the kill"):format(i, w.start, b.start))
      assert.is_true(math.abs(w["end"] - b["end"]) < 0.5, ("window %d ends at %s, %s without the kill"):format(i, w["end"], b["end"]))
      local texts, btexts = {}, {}
      for _, f in ipairs(w.finals) do texts[#texts + 1] = f.text end
      for _, f in ipairs(b.finals) do btexts[#btexts + 1] = f.text end
      assert.same(btexts, texts)
    end
  end)
end)

describe("live fan-out across instances", function()
  it("makes good from the store what a notification lost while the session was away would have carried", function()
    local url = server.create_database()
    local a = feeder.start { env = { QC_API_KEYS = API_KEY, QC_STORE_URL = url } }
    local b = feeder.start { env = { QC_API_KEYS = API_KEY, QC_STORE_URL = url } }
    local room = "cl-relisten"
    local live = peers.listen(("ws://127.0.0.1:%d/rooms/%s/live"):format(b.port, room),
      { "--header", "Authorization: Bearer " .. API_KEY, "--timeout", "60" })
    live:wait_event("open")
    local n = 0
    local function post(k)
      local list = {}
      for _ = 1, k do
        n = n + 1
        list[#list + 1] = { identity = "iv", role = "interviewer", track = "TR_iv", text = "line " .. n, start = n, ["end"] = n + 0.5 }
      end
      assert.equal(200, (a:request("POST", "/spec/finals", { room = room, events = list }, AUTH)))
    end
    post(3)
    server.wait_for(function() return #finals_of(live) == 3 end, 10, "B's client to have A's first finals")
    -- Every session connection that LISTENs is cut (B's among them), and A commits at once:
    -- its notifications go out while B has no session to receive them.
    local db = a:db()
    local cut = assert(db:query([[SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid()
        AND (query ILIKE 'LISTEN%' OR query ILIKE '%pg_try_advisory_lock%' OR query ILIKE '%pg_advisory_unlock%')]]))
    assert.is_true(#cut >= 2, "the two sessions were not found")
    db:close()
    post(4)
    server.wait_for(function() return #finals_of(live) == 7 end, 15, "B's client to have every final")
    for i, m in ipairs(finals_of(live)) do
      assert.equal("line " .. i, m.text)
      assert.equal(i, m.seq)
    end
    live:kill()
    a:stop()
    b:stop()
  end)
end)

describe("a room taken over", function()
  local GOOD = '{"correctness":4,"approach":4,"communication":3,"hints_needed":0,"evidence":"spec","feedback":"solid"}'

  it("has the LLM evaluations its dead owner left pending run again by the new owner", function()
    local fl = require "support.fake_llm"
    local llm = fl.start()
    local url = server.create_database()
    local env = { QC_API_KEYS = API_KEY, QC_STORE_URL = url, QC_EVALUATOR = "openai", QC_LLM_BASE_URL = llm.base,
                  QC_LLM_API_KEY = "sk-spec", QC_LLM_MODEL = "gpt-spec", QC_LLM_TIMEOUT_MS = "60000", QC_LLM_RETRIES = "1" }
    local a = feeder.start { env = env }
    local b = feeder.start { env = env }
    local room = "cl-pending"
    -- The owner's LLM answers nothing in time: its evaluations stay pending when it dies.
    local slow = {}
    for i = 1, 20 do slow[i] = { delay_ms = 120000, content = GOOD } end
    llm:queue(slow)
    -- Alternating turns, the candidate's long enough to be judged; the first final makes A
    -- the room's owner.
    local list, t = {}, 0.5
    for i = 1, 12 do
      local role = i % 2 == 1 and "interviewer" or "candidate"
      local text = role == "candidate" and ("i would answer question %d with a careful estimate of every risk in the whole book"):format(i)
        or ("question %d please"):format(i)
      list[#list + 1] = { identity = role == "interviewer" and "iv" or "cand", role = role, track = "TR_" .. role,
                          text = text, start = t, ["end"] = t + 4 }
      t = t + 4.5
    end
    assert.equal(200, (a:request("POST", "/spec/finals", { room = room, events = list }, AUTH)))
    a:wait_log("owner room taken room=" .. room)
    local db = a:db()
    server.wait_for(function()
      return db:first("SELECT count(*) AS n FROM evaluations WHERE room = ? AND status = 'pending'", room).n > 0
        and #llm:calls() > 0
    end, 20, "A's evaluations to be pending at the LLM")
    local pending = assert(db:query("SELECT window_idx FROM evaluations WHERE room = ? AND status = 'pending' ORDER BY window_idx", room))
    -- A live interview (its clock started, not ended): the other instances' clock ticks try it.
    assert(db:run("UPDATE rooms SET started_at = ? WHERE name = ?", os.time() - 60, room))

    -- The LLM answers from now on (before the kill: the new owner may call it at once; the
    -- calls already waiting keep waiting).
    llm:reset()
    local good = {}
    for i = 1, 20 do good[i] = { content = GOOD } end
    llm:queue(good)
    a:signal("KILL")
    a.term_sent = true
    assert.are_not.equal(0, a:stop(10))

    b:wait_log("owner room taken room=" .. room, 10)
    b:wait_log("pending evaluation run again[^\n]*room=" .. room, 10)
    -- Each of them is stored as judged now (the new owner's clock may close and judge more).
    server.wait_for(function()
      for _, r in ipairs(pending) do
        local e = db:first("SELECT status FROM evaluations WHERE room = ? AND window_idx = ? AND evaluator = 'openai'",
          room, r.window_idx)
        if e.status ~= "ok" then return false end
      end
      return true
    end, 20, "the pending evaluations to be run again and stored")
    assert.is_true(#llm:calls() >= #pending)
    db:close()
    b:stop()
    llm:stop()
  end)
end)
