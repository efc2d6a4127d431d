-- The live WebSocket, GET /rooms/{room}/live: who may connect, what each connection sees, in
-- order, with sequence numbers; ?since=N resumes with no gap and no duplicate; a client that
-- does not read is closed with a reason while the others keep up; an event announced live is
-- in SQLite even after kill -9. Real server, real SQLite, real `ws` clients.
local server = require "support.server"
local peers = require "support.peers"
local jwt = require "qc.jwt"
local time = require "qc.time"
local cjson = require "cjson"

local API_KEY = "spec-live-key-0123456789"

-- A copy of the shipped scripts with one spec-only handler: it announces `n` transcript
-- finals for a room through the real qc.transcripts (stored, then sent live), as the STT
-- engine's events would, without audio. Policies cannot reach the store, so it is lib code.
local EMITTER = [[
local transcripts = require "qc.transcripts"
return {
  emit = function(req)
    local room, n = req.args.room, tonumber(req.args.n or "1")
    local pad = req.args.pad and ("x"):rep(tonumber(req.args.pad)) or ""
    local base = tonumber(req.args.base or "0")
    for i = 1, n do
      transcripts.on_event { room = room, identity = req.args.identity or "ivy", role = req.args.role or "interviewer",
        track = "TR_spec", final = req.args.partial == nil, text = "utterance " .. (base + i) .. pad,
        start = base + i, ["end"] = base + i + 0.5, words = { { text = "utterance", start = base + i, ["end"] = base + i + 0.3 } } }
    end
    return 200, nil, { emitted = n, last_seq = transcripts.last_seq(room) }
  end,
}
]]

local function start(env)
  local scripts = server.scripts_with { spec_emitter = EMITTER }
  local policies = server.policies_with_routes('  { "POST", "/spec/emit", require("qc.handlers.spec_emitter").emit },\n')
  -- Without windows.lua no window or evaluation events join the finals: this spec counts
  -- sequence numbers of finals (spec/evaluations_live_spec.lua covers the windows).
  assert(os.remove(policies .. "/windows.lua"))
  local e = { QC_SCRIPTS = scripts, QC_API_KEYS = API_KEY, QC_STT_ENGINE = "null" }
  for k, v in pairs(env or {}) do e[k] = v end
  return server.start { policies = policies, env = e }
end

local AUTH = { Authorization = "Bearer " .. API_KEY }

local function token_for(s, room, identity, role)
  return peers.role_token(s, room, identity, role, AUTH)
end

local function emit(s, room, n, extra)
  local q = ("/spec/emit?room=%s&n=%d"):format(room, n)
  for k, v in pairs(extra or {}) do q = q .. "&" .. k .. "=" .. tostring(v) end
  local status, doc = s:request("POST", q, nil, { Authorization = AUTH.Authorization })
  assert.equal(200, status, cjson.encode(doc))
  return doc
end

local function ws_url(s, path) return "ws://127.0.0.1:" .. s.port .. path end

local function seqs(msgs, filter)
  local out = {}
  for _, m in ipairs(msgs) do
    if m.seq and (not filter or filter(m)) then out[#out + 1] = m.seq end
  end
  return out
end

describe("the live socket", function()
  local s
  setup(function() s = start() end)
  -- A clean exit: under ASan, a leak or a sanitizer report makes it non-zero.
  teardown(function() if s then assert(s:stop() == 0, "the server exited with an error:\n" .. s:log_text():sub(-4000)) end end)

  it("refuses a connection without a credential, with a bad token, or with an ingest token", function()
    local p = peers.listen(ws_url(s, "/rooms/r1/live"))
    local r = p:wait_event("refused")
    assert.equal(401, r.status)
    assert.equal("UNAUTHORIZED", cjson.decode(r.body).error.code)
    p = peers.listen(ws_url(s, "/rooms/r1/live?token=not.a.jwt"))
    assert.equal(401, p:wait_event("refused").status)
    local ingest_token = jwt.sign({ iss = "devkey", aud = "quantcoach-ingest", sub = "ivy", room = "r1", track = "TR_1",
                                    nbf = math.floor(time.now()), exp = math.floor(time.now()) + 60 }, "secret")
    p = peers.listen(ws_url(s, "/rooms/r1/live?token=" .. ingest_token))
    assert.equal(401, p:wait_event("refused").status)
  end)

  it("refuses a candidate's token for another room with 403", function()
    local tok = token_for(s, "room-a", "cand-42", "candidate")
    local p = peers.listen(ws_url(s, "/rooms/room-b/live"), { "--header", "Authorization: Bearer " .. tok })
    local r = p:wait_event("refused")
    assert.equal(403, r.status)
    assert.equal("FORBIDDEN", cjson.decode(r.body).error.code)
  end)

  it("answers a plain GET (no upgrade) with 426 JSON", function()
    local status, doc = s:request("GET", "/rooms/r1/live", nil, AUTH)
    assert.equal(426, status)
    assert.equal("UPGRADE_REQUIRED", doc.error.code)
  end)

  it("sends a participant's own connection finals and participant events in order, with sequence numbers", function()
    local room = "live-order"
    local tok = token_for(s, room, "ada@example.com", "interviewer")
    local p = peers.listen(ws_url(s, "/rooms/" .. room .. "/live?token=" .. tok), { "--finals", "3" })
    p:wait_event("open")
    assert.equal(200, (peers.participant(s, "joined", room, "ada@example.com")))
    emit(s, room, 3)
    p:wait_event("close")
    local msgs = p:messages()
    assert.same({ 1, 2, 3, 4 }, seqs(msgs))
    assert.equal("participant", msgs[1].type)
    assert.equal("joined", msgs[1].event)
    assert.equal("interviewer", msgs[1].role)
    assert.equal("transcript", msgs[2].type)
    assert.is_true(msgs[2].final)
    assert.equal("utterance 1", msgs[2].text)
    assert.equal("utterance", msgs[2].words[1].text)
  end)

  it("resumes with ?since=N: the stored events after N, then live ones, no gap and no duplicate", function()
    local room = "live-since"
    emit(s, room, 5)
    local p = peers.listen(ws_url(s, "/rooms/" .. room .. "/live?since=2"), { "--header", "Authorization: Bearer " .. API_KEY, "--finals", "5" })
    p:wait_event("open")
    p:wait_for(function(e) return e.event == "message" and e.data.seq == 5 end, 10, "the replay up to seq 5")
    emit(s, room, 2, { base = 5 })
    p:wait_event("close")
    assert.same({ 3, 4, 5, 6, 7 }, seqs(p:messages()))
  end)

  it("never sends a candidate's connection an evaluation, which an interviewer's gets", function()
    local room = "live-filter"
    emit(s, room, 1)
    -- An evaluation event as the next issue will store it: written to the file directly.
    local db = s:db()
    assert(db:transaction(function(tx)
      tx:run("UPDATE rooms SET last_seq = 2 WHERE name = ?", room)
      tx:run([[INSERT INTO events (room, seq, kind, created_at, body) VALUES (?, 2, 'evaluation', 0, ?)]], room,
        cjson.encode { type = "evaluation", seq = 2, room = room, score = 3 })
    end))
    db:close()
    emit(s, room, 1, { base = 1 })
    local cand = peers.listen(ws_url(s, "/rooms/" .. room .. "/live?token=" .. token_for(s, room, "x7Gq", "candidate")),
      { "--finals", "2" })
    local ivy = peers.listen(ws_url(s, "/rooms/" .. room .. "/live?token=" .. token_for(s, room, "ivy", "interviewer")),
      { "--finals", "2" })
    cand:wait_event("close")
    ivy:wait_event("close")
    assert.same({ 1, 3 }, seqs(cand:messages()))
    assert.same({ 1, 2, 3 }, seqs(ivy:messages()))
  end)

  it("keeps its clients across a policy reload", function()
    local room = "live-reload"
    local p = peers.listen(ws_url(s, "/rooms/" .. room .. "/live"), { "--header", "Authorization: Bearer " .. API_KEY,
      "--finals", "2" })
    p:wait_event("open")
    emit(s, room, 1)
    p:wait_for(function(e) return e.event == "message" and e.data.seq == 1 end, 10, "the first final")
    local status = s:request("POST", "/admin/reload")
    assert.equal(200, status)
    emit(s, room, 1, { base = 1 })
    p:wait_event("close")
    assert.same({ 1, 2 }, seqs(p:messages()))
  end)

  it("sends partials with the room's last sequence number, marked partial, and does not store them", function()
    local room = "live-partial"
    emit(s, room, 1)
    local p = peers.listen(ws_url(s, "/rooms/" .. room .. "/live?token=" .. token_for(s, room, "ivy", "interviewer")),
      { "--timeout", "3" })
    p:wait_event("open")
    emit(s, room, 1, { partial = 1, base = 7 })
    local m = p:wait_for(function(e) return e.event == "message" and e.data.partial end, 10, "a partial").data
    assert.equal(1, m.seq)
    assert.is_false(m.final)
    assert.equal("utterance 8", m.text)
    local status, doc = s:request("GET", "/rooms/" .. room .. "/transcript", nil, AUTH)
    assert.equal(200, status)
    assert.equal(1, #doc.transcript)
    p:kill()
  end)
end)

describe("a live client that does not read", function()
  it("is closed with a reason that says where to resume, while another client keeps up", function()
    local s = start { QC_LIVE_QUEUE_KB = "16" }
    local room = "live-slow"
    local slow = peers.slow(s.port, "/rooms/" .. room .. "/live", { "--sleep", "4", "--header", "Authorization: Bearer " .. API_KEY })
    assert.equal(101, slow:wait_event("open").status)
    local fast = peers.listen(ws_url(s, "/rooms/" .. room .. "/live"), { "--header", "Authorization: Bearer " .. API_KEY,
      "--finals", "1600" })
    fast:wait_event("open")
    -- 1600 finals of ~4 KB, 6.5 MB: past 16 KB of queue plus what the kernel buffers hold
    -- (a loopback socket's send buffer grows to 4 MB).
    for i = 1, 8 do emit(s, room, 200, { pad = 4000, base = i * 200 }) end
    fast:wait_event("close", 60)
    local got = seqs(fast:messages())
    assert.equal(1600, #got)
    for i = 1, 1600 do assert.equal(i, got[i]) end
    -- The server's reason, logged as sent: where to resume.
    local line = s:wait_log("client dropped"):match("[^\n]*live client dropped[^\n]*")
    local resume = tonumber(line and line:match('reason="too slow: %d+ bytes queued; resume with %?since=(%d+)"'))
    assert.is_number(resume, line)
    assert.is_true(resume < 1600)
    -- The client got what reached its socket before the drop, nothing past the resume point;
    -- its Close carries the reason when it reads within the close grace, else the server has
    -- hung up (1006).
    local closed = slow:wait_event("close", 20)
    assert.is_true(closed.last_seq <= resume, cjson.encode(closed))
    if closed.code == 1008 then
      assert.equal(("too slow: %s"):format(line:match('too slow: ([^"]*)"')), closed.reason)
    else
      assert.equal(1006, closed.code)
    end
    assert.equal(0, s:stop())
  end)
end)

describe("durability of announced events", function()
  it("has every event a live client received in SQLite after kill -9", function()
    local s = start()
    local room = "live-kill"
    local p = peers.listen(ws_url(s, "/rooms/" .. room .. "/live"), { "--header", "Authorization: Bearer " .. API_KEY,
      "--timeout", "20" })
    p:wait_event("open")
    -- A burst of finals (curl in the background), and the server killed as soon as the
    -- client has seen some.
    assert(os.execute(("curl -s -o /dev/null -X POST -H 'Authorization: Bearer %s' '%s/spec/emit?room=%s&n=2000' &")
      :format(API_KEY, s.url, room)))
    p:wait_for(function(e) return e.event == "message" and e.data.seq and e.data.seq >= 5 end, 15, "the first finals")
    s:signal("KILL")
    s.stopped = true
    server.wait_for(function() return server.read_file(s.exitfile) end, 10, "the killed server to exit")
    local seen = seqs(p:messages())
    assert.is_true(#seen >= 5)
    local db = s:db()
    for _, seq in ipairs(seen) do
      local row = db:first("SELECT kind, text FROM events WHERE room = ? AND seq = ?", room, seq)
      assert.is_table(row, "announced event " .. seq .. " is not in SQLite")
      assert.equal("final", row.kind)
    end
    db:close()
    p:kill()
  end)
end)
