-- Windows and evaluation live, end to end: festival speech for two speakers through /ingest and
-- the local pocketsphinx engine; each committed final goes through the windows policy, every
-- window is stored with its analytics and announced, and at room_finished the last windows are
-- closed. An interviewer's live connection receives the window and evaluation events; a
-- candidate's never does. /evaluations and /report serve what was stored.
local server = require "support.server"
local peers = require "support.peers"
local ingest = require "qc.ingest"
local store = require "qc.store"
local cjson = require "cjson"

local API_KEY = "spec-eval-key-0123456789"
local AUTH = { Authorization = "Bearer " .. API_KEY }

local function speech_dir()
  local dir = server.source .. "/build/speech"
  local status, out = server.run(("sh %s/spec/support/make_speech.sh %s"):format(server.quote(server.source),
    server.quote(dir)))
  assert(status == 0, "make_speech.sh failed:\n" .. out)
  return dir
end

local function of_type(peer, t)
  local out = {}
  for _, m in ipairs(peer:messages()) do
    if m.type == t then out[#out + 1] = m end
  end
  return out
end

describe("windows and evaluation, live", function()
  it("stores and announces windows with analytics to the interviewer, never to the candidate", function()
    local dir = speech_dir()
    local s = server.start { env = { QC_API_KEYS = API_KEY } }
    local room = "eval-e2e"
    local ids = { interviewer = "iv-lead", candidate = "cand-9" }
    local tokens = {}
    for role, identity in pairs(ids) do
      local status, doc = s:request("POST", "/tokens/generate",
        { room_name = room, participant_identity = identity, participant_type = role }, AUTH)
      assert.equal(200, status)
      tokens[role] = doc.token
    end
    local listeners = {}
    for role, tok in pairs(tokens) do
      listeners[role] = peers.listen(("ws://127.0.0.1:%d/rooms/%s/live?token=%s"):format(s.port, room, tok),
        { "--timeout", "120" })
      listeners[role]:wait_event("open")
    end

    local feeders = {}
    for role, identity in pairs(ids) do
      local t = ingest.token { room = room, identity = identity, track = "TR_" .. role }
      feeders[role] = peers.feed(("ws://127.0.0.1:%d/ingest?t=%s"):format(s.port, t),
        { "--wav", dir .. "/" .. role .. ".wav", "--speed", "2" })
    end
    for _, f in pairs(feeders) do f:wait_event("close", 90) end
    server.wait_for(function()
      local _, h = s:request("GET", "/health")
      return h.tracks.live == 0
    end, 60, "both tracks to finish")

    -- The interview ends: LiveKit says so, and the open windows close.
    local status = peers.webhook(s, { event = "room_finished", room = { sid = "RM_x", name = room } })
    assert.equal(200, status)

    local iv = listeners.interviewer
    local finals
    server.wait_for(function()
      local _, doc = s:request("GET", "/rooms/" .. room .. "/transcript", nil, AUTH)
      finals = doc.transcript
      local _, ev = s:request("GET", "/rooms/" .. room .. "/evaluations", nil, AUTH)
      -- Every final in a window, every window with its analytics.
      local seen = {}
      for _, w in ipairs(ev.windows) do
        if not w.evaluations.analytics then return false end
        for _, f in ipairs(w.finals) do seen[f.seq] = true end
      end
      for _, f in ipairs(finals) do if not seen[f.seq] then return false end end
      return #finals > 0
    end, 30, "every final to be in a stored window")
    assert.is_true(#finals >= 4, "too few finals: " .. cjson.encode(finals))

    local _, ev = s:request("GET", "/rooms/" .. room .. "/evaluations", nil, AUTH)
    local ws = ev.windows
    assert.is_true(#ws >= 2)
    for i, w in ipairs(ws) do
      assert.equal(i, w.index)
      assert.is_true(w["end"] - w.start <= 20)
      assert.matches("^%u%l+: ", w.text)
    end
    assert.matches("Interviewer: ", ws[1].text)

    -- The interviewer's connection got each window and its analytics, once, in order, after
    -- the finals they hold; the candidate's got the finals and no window or evaluation.
    server.wait_for(function() return #of_type(iv, "window") == #ws and #of_type(iv, "evaluation") == #ws end,
      20, "the interviewer to have every window and evaluation")
    local wins = of_type(iv, "window")
    for i, m in ipairs(wins) do
      assert.equal(i, m.index)
      assert.equal(ws[i].text, m.text)
      for _, f in ipairs(m.finals) do assert.is_true(f.seq < m.seq, "a window announced before its final") end
    end
    local cand = listeners.candidate
    server.wait_for(function() return #of_type(cand, "transcript") >= #finals end, 20, "the candidate to have the finals")
    assert.equal(0, #of_type(cand, "window"))
    assert.equal(0, #of_type(cand, "evaluation"))
    -- Nor on a candidate's replay from the start.
    local late = peers.listen(("ws://127.0.0.1:%d/rooms/%s/live?since=0&token=%s"):format(s.port, room, tokens.candidate),
      { "--timeout", "10" })
    server.wait_for(function() return #of_type(late, "transcript") >= #finals end, 20, "the candidate's replay")
    assert.equal(0, #of_type(late, "window") + #of_type(late, "evaluation"))
    late:kill()

    -- Committed before announced: the stored events hold every announced window.
    local db = assert(store.open(s.data .. "/quantcoach.db"))
    local rows = assert(db:query("SELECT seq FROM events WHERE room = ? AND kind = 'window' ORDER BY seq", room))
    db:close()
    assert.equal(#wins, #rows)
    for i, r in ipairs(rows) do assert.equal(r.seq, wins[i].seq) end

    -- The report: analytics over the whole interview, both speakers with their share.
    local rstatus, report = s:request("GET", "/rooms/" .. room .. "/report", nil, AUTH)
    assert.equal(200, rstatus)
    assert.equal(#ws, report.windows)
    local r = report.analytics.roles
    assert.is_true(r.interviewer.talk_time > 0 and r.candidate.talk_time > 0)
    assert.is_true(math.abs(r.interviewer.talk_ratio + r.candidate.talk_ratio - 1) < 0.01)
    assert.is_true(report.analytics.turns >= 4, "turns: " .. report.analytics.turns)
    assert.is_true(report.analytics.questions >= 1)
    local _, md = s:request("GET", "/rooms/" .. room .. "/report?format=md", nil, AUTH)
    assert.matches("| candidate |", md, 1, true)

    for _, l in pairs(listeners) do l:kill() end
    s:stop()
  end)
end)
