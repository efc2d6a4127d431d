-- `quantcoach transcribe` (runtime/audio/transcribe.c): WAV files through the track
-- pipeline and an engine on one clock, printed as one transcript ordered by time with each
-- line's speaker; its usage errors and the files it refuses.
local server = require "support.server"
local speech = require "support.speech"
local cjson = require "cjson"

local quote = server.quote

-- Returns exit status, stdout, stderr.
local function transcribe(args, env)
  local dir = server.tmpdir()
  local status = server.run(("(QC_ENV_FILE=/nonexistent %s timeout -s KILL 300 %s transcribe %s > %s 2> %s)"):format(
    env or "", quote(server.bin), args, quote(dir .. "/out"), quote(dir .. "/err")))
  return status, server.read_file(dir .. "/out") or "", server.read_file(dir .. "/err") or ""
end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("quantcoach transcribe on two speakers", function()
  local dir, turns

  setup(function()
    dir = speech.make()
    turns = speech.turns(dir)
  end)

  it("prints one line per turn, each with the right speaker, in time order", function()
    local status, out, err = transcribe(("--track interviewer=%s --track candidate=%s"):format(
      quote(dir .. "/interviewer.wav"), quote(dir .. "/candidate.wav")))
    assert.equal(0, status, err)
    local got = lines(out)
    assert.equal(#turns, #got, out)
    local last = -1
    for i, l in ipairs(got) do
      local mm, ss, who, text = l:match("^%[(%d%d):(%d%d)%] (%u%l+): (.+)$")
      assert.truthy(mm, ("line %d not [mm:ss] Speaker: words: %q"):format(i, l))
      local at = tonumber(mm) * 60 + tonumber(ss)
      assert.is_true(at >= last, "lines out of time order:\n" .. out)
      last = at
      -- the turn this line falls in says who spoke it
      local want = turns[i].role:gsub("^%l", string.upper)
      assert.equal(want, who, out)
      assert.is_true(at >= math.floor(turns[i].start) and at <= turns[i]["end"], l)
      -- some of its words were heard (the festival voices are not all easy to recognise)
      assert.is_true(speech.wer(turns[i].text, text) < 1, ("%q heard as %q"):format(turns[i].text, text))
    end
  end)

  it("gives the same transcript as JSON, with roles, times and words", function()
    local status, out, err = transcribe(("--format json --track interviewer=%s --track candidate=%s"):format(
      quote(dir .. "/interviewer.wav"), quote(dir .. "/candidate.wav")))
    assert.equal(0, status, err)
    local doc = cjson.decode(out)
    assert.equal(2, #doc.tracks)
    assert.equal("interviewer", doc.tracks[1].role)
    assert.equal("Candidate", doc.tracks[2].speaker)
    assert.equal(#turns, #doc.segments)
    for i, seg in ipairs(doc.segments) do
      assert.equal(turns[i].role, seg.role)
      assert.is_true(seg.start >= turns[i].start - 0.3 and seg["end"] <= turns[i]["end"] + 0.3)
      assert.is_true(#seg.words > 0)
    end
  end)

  it("with --evaluate, runs windows and evaluation over the transcript (JSON, and the Markdown report)", function()
    local tracks = ("--track interviewer=%s --track candidate=%s"):format(
      quote(dir .. "/interviewer.wav"), quote(dir .. "/candidate.wav"))
    local status, out, err = transcribe("--evaluate --evaluator analytics --format json " .. tracks)
    assert.equal(0, status, err)
    local doc = cjson.decode(out)
    assert.equal("analytics", doc.evaluator)
    assert.is_true(#doc.windows >= 2, out)
    local words = 0
    for i, w in ipairs(doc.windows) do
      assert.equal(i, w.index)
      assert.is_true(w["end"] - w.start <= 20)
      assert.equal("ok", w.evaluations.analytics.status)
      assert.matches("^%u%l+: ", w.text)
    end
    local roles = doc.report.analytics.roles
    assert.is_true(roles.interviewer.talk_time > 0 and roles.candidate.talk_time > 0, out)
    words = roles.interviewer.words + roles.candidate.words
    assert.is_true(words >= 20, out)
    -- Every turn of the speech is a turn of the analytics (a turn may be heard in pieces).
    assert.is_true(doc.report.analytics.turns >= 2)

    local mstatus, md, merr = transcribe("--evaluate " .. tracks)
    assert.equal(0, mstatus, merr)
    assert.matches("^# Interview report: ", md)
    assert.matches("| candidate |", md, 1, true)
    -- The evaluator is checked before any audio is decoded.
    local bstatus, _, berr = transcribe("--evaluate --evaluator nope " .. tracks)
    assert.equal(2, bstatus)
    assert.matches("--evaluator", berr, 1, true)
    local ustatus, _, uerr = transcribe("--evaluator analytics " .. tracks)
    assert.equal(2, ustatus)
    assert.matches("--evaluator needs --evaluate", uerr, 1, true)
  end)

  it("takes one bare file, at any rate, as \"Speaker\"", function()
    local status, out, err = transcribe(quote(dir .. "/candidate-16k.wav"))
    assert.equal(0, status, err)
    local got = lines(out)
    assert.equal(3, #got, out)
    for _, l in ipairs(got) do assert.truthy(l:match("^%[%d%d:%d%d%] Speaker: "), l) end
  end)

  it("runs the null engine, which counts the audio and prints no words", function()
    local status, out, err = transcribe(("--engine null --format json %s"):format(quote(dir .. "/interviewer.wav")))
    assert.equal(0, status, err)
    local doc = cjson.decode(out)
    assert.equal("null", doc.engine)
    assert.equal(0, #doc.segments)
    assert.near(31.4, doc.tracks[1].seconds, 0.5)
  end)
end)

describe("quantcoach transcribe refuses", function()
  local tmp

  setup(function() tmp = server.tmpdir() end)

  local usage = {
    { "", "no audio" },
    { "--format xml a.wav", "--format: expected text or json" },
    { "--engine whisper a.wav", "--engine: expected local, elevenlabs or null" },
    { "--track a.wav", "--track: expected ROLE=FILE" },
    { "--track =a.wav", "--track: expected ROLE=FILE" },
    { "--track 'in terviewer=a.wav'", "--track: expected ROLE=FILE" },
    { "--track", "--track needs a value" },
    { "a.wav b.wav", "more than one bare file" },
    { "--speed 2 a.wav", "unknown option --speed" },
  }
  for _, c in ipairs(usage) do
    it(("with exit 2 and the mistake named: transcribe %s"):format(c[1]), function()
      local status, out, err = transcribe(c[1])
      assert.equal(2, status, out .. err)
      assert.truthy(err:find(c[2], 1, true), err)
      assert.equal("", out)
    end)
  end

  it("shows its help, with the null engine named as a benchmark sink", function()
    local status, out = transcribe("--help")
    assert.equal(0, status)
    assert.truthy(out:find("usage: quantcoach transcribe", 1, true))
    assert.truthy(out:find("null: a sink that only counts the audio", 1, true), out)
  end)

  local function wav(name, bytes)
    local p = tmp .. "/" .. name
    server.write_file(p, bytes)
    return p
  end
  local function header(format, channels, rate, bits)
    local fmt = string.pack("<I2I2I4I4I2I2", format, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    return "RIFF" .. string.pack("<I4", 36 + 8) .. "WAVE" .. "fmt " .. string.pack("<I4", 16) .. fmt .. "data" ..
      string.pack("<I4", 8) .. string.rep("\0", 8)
  end

  local bad = {
    { "text.wav", "hello, this is not audio", "not a WAV file" },
    { "float.wav", header(3, 1, 16000, 32), "not 16-bit PCM" },
    { "8bit.wav", header(1, 1, 16000, 8), "not 16-bit PCM" },
    { "slow.wav", header(1, 1, 4000, 16), "sample rate 4000 out of range" },
    { "many.wav", header(1, 12, 48000, 16), "12 channels" },
    { "nodata.wav", "RIFF" .. string.pack("<I4", 28) .. "WAVEfmt " .. string.pack("<I4", 16) ..
      string.pack("<I2I2I4I4I2I2", 1, 1, 16000, 32000, 2, 16), "data chunk not found" },
  }
  for _, c in ipairs(bad) do
    it(("a file it cannot read, with exit 1 and the reason: %s"):format(c[1]), function()
      local p = wav(c[1], c[2])
      local status, out, err = transcribe(("--track interviewer=%s"):format(quote(p)))
      assert.equal(1, status, out .. err)
      assert.truthy(err:find(c[3], 1, true), err)
      assert.truthy(err:find(p, 1, true), err)
    end)
  end

  it("a file that does not exist, naming it", function()
    local status, _, err = transcribe(quote(tmp .. "/missing.wav"))
    assert.equal(1, status)
    assert.truthy(err:find("missing.wav: No such file", 1, true), err)
  end)

  it("warns when a file is shorter than its header says, and transcribes what is there", function()
    -- A header promising 2 s of 16 kHz mono, then 0.5 s of samples: a copy cut off mid-way.
    local fmt = string.pack("<I2I2I4I4I2I2", 1, 1, 16000, 32000, 2, 16)
    local p = wav("cut.wav", "RIFF" .. string.pack("<I4", 36 + 64000) .. "WAVEfmt " .. string.pack("<I4", 16) ..
      fmt .. "data" .. string.pack("<I4", 64000) .. string.rep("\0", 16000))
    local status, _, err = transcribe("--engine null " .. quote(p))
    assert.equal(0, status, err)
    assert.truthy(err:find(p .. " is 1.50 s shorter than its header says", 1, true), err)
    -- A streaming writer's placeholder size (0xFFFFFFFF) is not a cut-off file.
    local streamed = wav("streamed.wav", "RIFF" .. string.pack("<I4", 0xFFFFFFFF) .. "WAVEfmt " ..
      string.pack("<I4", 16) .. fmt .. "data" .. string.pack("<I4", 0xFFFFFFFF) .. string.rep("\0", 16000))
    status, _, err = transcribe("--engine null " .. quote(streamed))
    assert.equal(0, status, err)
    assert.falsy(err:find("shorter", 1, true), err)
  end)

  it("nothing for an empty data chunk, which is not an error", function()
    local p = wav("empty.wav", "RIFF" .. string.pack("<I4", 36) .. "WAVEfmt " .. string.pack("<I4", 16) ..
      string.pack("<I2I2I4I4I2I2", 1, 1, 16000, 32000, 2, 16) .. "data" .. string.pack("<I4", 0))
    local status, out, err = transcribe(quote(p))
    assert.equal(0, status, err)
    assert.equal("", out)
  end)
end)

-- The ElevenLabs engine keeps an lws client context on the loop; transcribe once printed its
-- transcript and then never exited (nor flushed a redirected stdout), waiting on that context.
describe("quantcoach transcribe with the ElevenLabs engine", function()
  it("prints the words of a file and exits", function()
    local el = require "support.fake_elevenlabs"
    local fake = el.start {}
    -- Two words for the fake's deterministic recognition (300 ms of one constant sample each),
    -- with silence around them.
    local parts = {}
    local function put(v, n) parts[#parts + 1] = string.pack("<i2", v):rep(n) end
    put(0, 8000); put(1000, 4800); put(2000, 4800); put(0, 16000)
    local data = table.concat(parts)
    local file = server.tmpdir() .. "/words.wav"
    server.write_file(file, "RIFF" .. string.pack("<I4", 36 + #data) .. "WAVEfmt "
      .. string.pack("<I4I2I2I4I4I2I2", 16, 1, 1, 16000, 32000, 2, 16) .. "data" .. string.pack("<I4", #data) .. data)
    local status, out, err = transcribe("--engine elevenlabs " .. quote(file),
      ("ELEVENLABS_API_KEY=%s QC_ELEVENLABS_URL=%s"):format(quote(fake.key), quote(fake.url)))
    fake:stop()
    assert.equal(0, status, err)
    assert.matches("^%[00:0%d%] Speaker: w1000 w2000\n$", out)
  end)
end)
