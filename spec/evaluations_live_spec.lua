-- Windows and evaluation live, end to end: festival speech for two speakers through /ingest and
-- the local pocketsphinx engine; each committed final goes through the windows policy, every
-- window is stored with its analytics and announced, and at room_finished the last windows are
-- closed. An interviewer's live connection receives the window and evaluation events; a
-- candidate's never does. /evaluations and /report serve what was stored.
local server = require "support.server"
local peers = require "support.peers"
local speech = require "support.speech"
local feeder = require "support.feeder"
local cjson = require "cjson"

local API_KEY = "spec-eval-key-0123456789"
local AUTH = { Authorization = "Bearer " .. API_KEY }

local function of_type(peer, t)
  local out = {}
  for _, m in ipairs(peer:messages()) do
    if m.type == t then out[#out + 1] = m end
  end
  return out
end

describe("windows and evaluation, live", function()
  it("stores and announces windows with analytics to the interviewer, never to the candidate", function()
    local dir = speech.make()
    local s = server.start { env = { QC_API_KEYS = API_KEY } }
    local room = "eval-e2e"
    local ids = { interviewer = "iv-lead", candidate = "cand-9" }
    local tokens = peers.role_tokens(s, room, ids, AUTH)
    local listeners = {}
    for role, tok in pairs(tokens) do
      listeners[role] = peers.live(s, room, tok, { "--timeout", "120" })
      listeners[role]:wait_event("open")
    end

    peers.wait_fed(s, peers.feed_roles(s, room, ids, dir, 2))

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
    local db = s:db()
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

local function start_fed()
  return feeder.start { env = { QC_API_KEYS = API_KEY } }
end

-- An interview of alternating turns, 3-6 s finals, 120 s long.
local function interview()
  local out, t, i = {}, 0.5, 0
  while t < 120 do
    i = i + 1
    local role = (i % 3 == 0) and "interviewer" or "candidate"
    local d = 3 + (i * 7 % 4)
    out[#out + 1] = { identity = role == "interviewer" and "iv-1" or "cand-1", role = role, track = "TR_" .. role,
                      text = ("%s says sentence %d with a few words in it"):format(role, i), start = t, ["end"] = t + d }
    t = t + d + 0.5
  end
  return out
end

describe("a reload of the windows policy mid-interview", function()
  it("loses and repeats no window, and the new rules apply from the next final", function()
    local s = start_fed()
    local room = "eval-reload"
    local finals = interview()
    local half = #finals // 2
    local function feed(from, to)
      local list = {}
      for i = from, to do list[#list + 1] = finals[i] end
      local status = s:request("POST", "/spec/finals", { room = room, events = list }, AUTH)
      assert.equal(200, status, s:log_text())
    end
    feed(1, half)
    local _, before = s:request("GET", "/rooms/" .. room .. "/evaluations", nil, AUTH)
    assert.is_true(#before.windows >= 2)

    -- 12 s windows from now on; reloaded while the room has windows open.
    local path = s.policies .. "/windows.lua"
    local text = server.read_file(path):gsub("M%.length = 20", "M.length = 12"):gsub("M%.hop = 10", "M.hop = 6")
    text = text:gsub("\nM%.examples = {.-\n}\n", "\n")
    server.write_file(path, text)
    local rstatus, rdoc = s:request("POST", "/admin/reload")
    assert.equal(200, rstatus, cjson.encode(rdoc))

    feed(half + 1, #finals)
    assert.equal(200, (peers.webhook(s, { event = "room_finished", room = { sid = "RM_r", name = room } })))
    local ws
    server.wait_for(function()
      local _, doc = s:request("GET", "/rooms/" .. room .. "/evaluations", nil, AUTH)
      ws = doc.windows
      local last = ws[#ws]
      return last and last["end"] >= finals[#finals]["end"] - 1e-6
    end, 20, "the last window")

    -- Every final in a window; windows numbered 1..n once each; the first ones unchanged.
    local seen = {}
    for i, w in ipairs(ws) do
      assert.equal(i, w.index)
      for _, f in ipairs(w.finals) do seen[f.seq] = true end
    end
    local _, tr = s:request("GET", "/rooms/" .. room .. "/transcript", nil, AUTH)
    assert.equal(#finals, #tr.transcript)
    for _, f in ipairs(tr.transcript) do assert.truthy(seen[f.seq], "final " .. f.seq .. " is in no window") end
    for i, w in ipairs(before.windows) do
      assert.same({ w.start, w["end"], w.text }, { ws[i].start, ws[i]["end"], ws[i].text })
    end
    -- The windows opened after the reload are at most 12 s long.
    local reload_t = finals[half]["end"]
    local after = 0
    for _, w in ipairs(ws) do
      if w.start > reload_t + 0.01 then
        after = after + 1
        assert.is_true(w["end"] - w.start <= 12 + 1e-9, ("window %d is %.2f s long"):format(w.index, w["end"] - w.start))
      end
    end
    assert.is_true(after >= 3)
    -- One window event each, in order.
    local db = s:db()
    local rows = assert(db:query("SELECT body FROM events WHERE room = ? AND kind = 'window' ORDER BY seq", room))
    db:close()
    assert.equal(#ws, #rows)
    for i, r in ipairs(rows) do assert.equal(i, cjson.decode(r.body).index) end
    s:stop()
  end)
end)

describe("a silence", function()
  it("closes a window by time on the interview clock, with no later final", function()
    local s = start_fed()
    local room = "eval-silence"
    -- The interview clock started 12 s ago (as ingest's first audio would set it). The
    -- server makes its schema on the first use of the store: a 404 for a room is one.
    assert.equal(404, (s:request("GET", "/rooms/" .. room .. "/transcript", nil, AUTH)))
    local db = s:db()
    assert(db:run("INSERT INTO rooms (name, created_at, state, started_at) VALUES (?, ?, 'created', ?)",
      room, os.time(), os.time() - 12))
    db:close()
    local iv = peers.listen(("ws://127.0.0.1:%d/rooms/%s/live?token=%s"):format(s.port, room, API_KEY),
      { "--timeout", "60" })
    iv:wait_event("open")
    local finals = {
      { identity = "cand-1", role = "candidate", track = "TR_c", text = "i would sort the list first", start = 1, ["end"] = 4.5 },
      { identity = "cand-1", role = "candidate", track = "TR_c", text = "then walk it once", start = 5, ["end"] = 7 },
    }
    assert.equal(200, (s:request("POST", "/spec/finals", { room = room, events = finals }, AUTH)))
    -- Then nobody speaks: window [0, 20] is due at 20 s + grace on the interview clock, ~10 s
    -- from now, and only the clock can close it.
    server.wait_for(function() return #of_type(iv, "window") >= 1 end, 30, "the window closed by time")
    local w = of_type(iv, "window")[1]
    assert.equal(1, w.index)
    assert.same({ 0, 20 }, { w.start, w["end"] })
    assert.equal(2, #w.finals)
    assert.equal("Candidate: i would sort the list first then walk it once", w.text)
    server.wait_for(function() return #of_type(iv, "evaluation") >= 1 end, 10, "its analytics")
    assert.equal(1, of_type(iv, "evaluation")[1].window)
    -- No final came after, and the room did not end: the transcript holds the two alone.
    local _, tr = s:request("GET", "/rooms/" .. room .. "/transcript", nil, AUTH)
    assert.equal(2, #tr.transcript)
    iv:kill()
    s:stop()
  end)
end)
