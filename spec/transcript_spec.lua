-- GET /rooms/{room}/transcript: the stored finals of a room, ordered by their start on the
-- interview clock across speakers, as JSON or as `[mm:ss] Role: text` lines; 404 for a room
-- we never had; API keys as the other room endpoints. The finals are stored through the real
-- qc.transcripts (a spec-only handler hands it events as the STT binding would, out of time
-- order, as two tracks decoding in parallel deliver them).
local server = require "support.server"
local peers = require "support.peers"
local feeder = require "support.feeder"
local cjson = require "cjson"

local API_KEY = "spec-transcript-key-0123456789"
local AUTH = { Authorization = "Bearer " .. API_KEY }

-- Without windows.lua no window or evaluation events join the finals: this spec counts
-- sequence numbers of finals (spec/evaluations_live_spec.lua covers the windows).
local function start()
  return feeder.start { env = { QC_API_KEYS = API_KEY }, without = { "windows.lua" } }
end

local function final(identity, role, start, stop, text)
  local ws = {}
  local i = 0
  for w in text:gmatch("%S+") do
    ws[#ws + 1] = { text = w, start = start + i * 0.3, ["end"] = start + i * 0.3 + 0.25 }
    i = i + 1
  end
  return { identity = identity, role = role, track = "TR_" .. identity, text = text, start = start, ["end"] = stop, words = ws }
end

describe("GET /rooms/{room}/transcript", function()
  local s
  setup(function()
    s = start()
    local status = s:request("POST", "/spec/finals", { room = "tr-1", events = {
      -- The candidate's track delivered its final before the interviewer's earlier one.
      final("x7Gq", "candidate", 5.5, 10.5, "i would start with the daily returns"),
      final("ada@example.com", "interviewer", 0.5, 4.5, "tell me how you would estimate the risk"),
      { identity = "x7Gq", role = "candidate", track = "TR_x7Gq", final = false, text = "not stored", start = 61, ["end"] = 62 },
      final("ada@example.com", "interviewer", 75.25, 79, "how would you test the model"),
      final("x7Gq", "candidate", 11, 12, "   "), -- nothing said: not stored
    } }, AUTH)
    assert.equal(200, status)
  end)
  -- A clean exit: under ASan, a leak or a sanitizer report makes it non-zero.
  teardown(function() if s then assert(s:stop() == 0, "the server exited with an error:\n" .. s:log_text():sub(-4000)) end end)

  it("returns the finals ordered by start across speakers, with seq, identity, role, times and words", function()
    local status, doc = s:request("GET", "/rooms/tr-1/transcript", nil, AUTH)
    assert.equal(200, status)
    assert.equal("tr-1", doc.room)
    local t = doc.transcript
    assert.equal(3, #t)
    assert.same({ "interviewer", "candidate", "interviewer" }, { t[1].role, t[2].role, t[3].role })
    assert.same({ 2, 1, 3 }, { t[1].seq, t[2].seq, t[3].seq })
    assert.equal("ada@example.com", t[1].identity)
    assert.equal("tell me how you would estimate the risk", t[1].text)
    assert.equal(0.5, t[1].start)
    assert.equal(4.5, t[1]["end"])
    assert.equal(8, #t[1].words)
    assert.equal("tell", t[1].words[1].text)
    assert.equal(3, doc.last_seq)
  end)

  it("gives lines `[mm:ss] Role: text` with ?format=text, minutes past the first hour's", function()
    local status, text, hdrs = s:request("GET", "/rooms/tr-1/transcript?format=text", nil, AUTH)
    assert.equal(200, status)
    assert.matches("^text/plain", hdrs["content-type"])
    assert.equal("[00:00] Interviewer: tell me how you would estimate the risk\n"
      .. "[00:05] Candidate: i would start with the daily returns\n"
      .. "[01:15] Interviewer: how would you test the model\n", text)
  end)

  it("answers 404 JSON for a room it never had, 422 for an unknown format, 401 without a key", function()
    local status, doc = s:request("GET", "/rooms/never-was/transcript", nil, AUTH)
    assert.equal(404, status)
    assert.equal("NOT_FOUND", doc.error.code)
    status, doc = s:request("GET", "/rooms/tr-1/transcript?format=xml", nil, AUTH)
    assert.equal(422, status)
    assert.equal("format", doc.error.field)
    status, doc = s:request("GET", "/rooms/tr-1/transcript")
    assert.equal(401, status)
    assert.equal("UNAUTHORIZED", doc.error.code)
  end)

  it("answers an empty transcript for a room with no finals yet", function()
    local status = s:request("POST", "/spec/finals", { room = "tr-empty", events = {
      { identity = "x", role = "candidate", track = "TR_x", final = false, text = "partial only", start = 1, ["end"] = 2 },
    } }, AUTH)
    assert.equal(200, status)
    -- A partial stores nothing, not even the room: 404 until something is stored.
    status = s:request("GET", "/rooms/tr-empty/transcript", nil, AUTH)
    assert.equal(404, status)
    -- A participant event stores the room: its transcript is there, and empty.
    assert.equal(200, (peers.participant(s, "joined", "tr-empty", "x")))
    local st, doc, _, raw = s:request("GET", "/rooms/tr-empty/transcript", nil, AUTH)
    assert.equal(200, st)
    assert.equal("[]", raw:match('"transcript":(%b[])'))
    assert.same({}, doc.transcript)
  end)
end)
