-- The local speech-to-text engine (runtime/stt/local.c: pocketsphinx on worker threads)
-- through the live track pipeline (48 kHz stereo -> downmix -> speexdsp -> 16 kHz), on
-- festival speech of two speakers: partials while an utterance is open, then its final with
-- word times in order, and a word error rate within 0.05 of pocketsphinx_continuous run in
-- batch on the same audio. Driven through `quantcoach transcribe --format json`, which runs
-- that pipeline over files.
local server = require "support.server"
local speech = require "support.speech"
local cjson = require "cjson"

local quote = server.quote

local function transcribe(args)
  local dir = server.tmpdir()
  local status = server.run(("(QC_ENV_FILE=/nonexistent timeout -s KILL 300 %s transcribe %s > %s 2> %s)"):format(
    quote(server.bin), args, quote(dir .. "/out"), quote(dir .. "/err")))
  return status, server.read_file(dir .. "/out") or "", server.read_file(dir .. "/err") or ""
end

describe("the local STT engine on festival speech", function()
  local dir, turns
  local results = {}

  setup(function()
    dir = speech.make()
    turns = speech.turns(dir)
    for _, role in ipairs { "interviewer", "candidate" } do
      local status, out, err = transcribe(("--engine local --format json --track %s=%s"):format(role,
        quote(dir .. "/" .. role .. ".wav")))
      assert(status == 0, err)
      results[role] = cjson.decode(out)
    end
  end)

  it("reads the Egress-shaped files as 48 kHz stereo", function()
    local t = results.interviewer.tracks[1]
    assert.equal(48000, t.rate)
    assert.equal(2, t.channels)
    assert.equal("local", results.interviewer.engine)
  end)

  it("sends partials while an utterance is open, before its final", function()
    for role, r in pairs(results) do
      assert.is_true(#r.segments >= 3, role)
      for _, seg in ipairs(r.segments) do
        -- every turn is 2.7 s or longer: several partials' worth at one per 500 ms
        assert.is_true(seg.partials >= 1, ("%s: no partial before %q"):format(role, seg.text))
      end
    end
  end)

  it("gives each final its words with times that increase, inside the final's span", function()
    for role, r in pairs(results) do
      local last_end = 0
      for _, seg in ipairs(r.segments) do
        assert.is_true(#seg.words > 0, role)
        assert.is_true(seg.start >= last_end - 1e-6, role .. ": finals out of order")
        local prev = seg.start
        for _, w in ipairs(seg.words) do
          assert.is_true(w.start >= prev - 1e-6 and w["end"] > w.start, ("%s: %s at %s"):format(role, w.text, w.start))
          prev = w["end"]
        end
        assert.near(seg.words[1].start, seg.start, 1e-6)
        assert.near(seg.words[#seg.words]["end"], seg["end"], 1e-6)
        local joined = {}
        for _, w in ipairs(seg.words) do joined[#joined + 1] = w.text end
        assert.equal(seg.text, table.concat(joined, " "))
        last_end = seg["end"]
      end
    end
  end)

  it("places each final inside one of its speaker's turns (times are the file's clock)", function()
    for role, r in pairs(results) do
      for _, seg in ipairs(r.segments) do
        local inside = false
        for _, t in ipairs(turns) do
          if t.role == role and seg.start >= t.start - 0.3 and seg["end"] <= t["end"] + 0.3 then inside = true end
        end
        assert.is_true(inside, ("%s: %q at %.2f-%.2f is in none of its turns"):format(role, seg.text, seg.start, seg["end"]))
      end
    end
  end)

  it("has a word error rate within 0.05 of batch pocketsphinx_continuous on the same audio", function()
    for role, r in pairs(results) do
      local ref = server.read_file(dir .. "/" .. role .. ".txt")
      local ours = {}
      for _, seg in ipairs(r.segments) do ours[#ours + 1] = seg.text end
      local wer_ours = speech.wer(ref, table.concat(ours, " "))
      local wer_batch = speech.wer(ref, speech.batch(dir .. "/" .. role .. "-16k.wav"))
      print(("# %s: WER streaming %.3f, batch %.3f"):format(role, wer_ours, wer_batch))
      assert.is_true(wer_ours <= wer_batch + 0.05, ("%s: WER %.3f against batch %.3f"):format(role, wer_ours, wer_batch))
      -- and it heard speech at all: a broken pipeline (silence, noise) scores near 1
      assert.is_true(wer_ours < 0.6, ("%s: WER %.3f"):format(role, wer_ours))
    end
  end)

  it("gives the same words for the same audio, whatever the timing of the workers", function()
    local status, out = transcribe(("--engine local --format json --track interviewer=%s"):format(
      quote(dir .. "/interviewer.wav")))
    assert.equal(0, status)
    local again = cjson.decode(out)
    assert.equal(#results.interviewer.segments, #again.segments)
    for i, seg in ipairs(again.segments) do assert.equal(results.interviewer.segments[i].text, seg.text) end
  end)

  it("fails with the model directory named when the model is missing", function()
    local status, err = server.run(("QC_ENV_FILE=/nonexistent QC_STT_MODEL=/nonexistent %s transcribe %s 2>&1"):format(
      quote(server.bin), quote(dir .. "/interviewer-16k.wav")))
    assert.equal(1, status)
    assert.truthy(err:find("/nonexistent/en-us", 1, true), err)
  end)
end)
