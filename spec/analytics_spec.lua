-- The built-in analytics evaluator (scripts/lib/qc/analytics.lua) on a hand-built transcript
-- whose answers were worked out by hand.
local analytics = require "qc.analytics"

local function f(seq, role, start, stop, text)
  return { seq = seq, identity = role .. "-1", role = role, start = start, ["end"] = stop, text = text }
end

-- 0-60 s of an interview:
--   I  0-6    "so what is the expected value of a fair die?"      10 words, question
--   C  7-19   "um i think it is three and a half because you know the faces are equally likely"
--                                                                   17 words, fillers: um, you know
--   I  18-20  "right"                                               overlap 1 s with C; C stops at 19 and I goes on: an interruption
--   I  20-26  "and how would you price a call option"               8 words, a question after its "and"
--   C  30-50  "uh i would use black scholes with the implied volatility and discount at the risk free rate"
--                                                                   17 words, filler: uh; silence 26-30 (4 s)
--   C  50.5-55 "that is it"                                         3 words; gap 0.5 s, no silence
--   I  54-54.2 "mm"                                                 overlap 0.2 s: below the minimum; filler mm
local TRANSCRIPT = {
  f(1, "interviewer", 0, 6, "So what is the expected value of a fair die?"),
  f(2, "candidate", 7, 19, "um i think it is three and a half because you know the faces are equally likely"),
  f(3, "interviewer", 18, 20, "right"),
  f(4, "interviewer", 20, 26, "and how would you price a call option"),
  f(5, "candidate", 30, 50, "uh i would use black scholes with the implied volatility and discount at the risk free rate"),
  f(6, "candidate", 50.5, 55, "that is it"),
  f(7, "interviewer", 54, 54.2, "mm"),
}

describe("conversation analytics", function()
  local a = analytics.compute(TRANSCRIPT)

  it("measures talk time, share and words per minute per role", function()
    local i, c = a.roles.interviewer, a.roles.candidate
    -- interviewer 6 + 2 + 6 + 0.2 = 14.2 s; candidate 12 + 20 + 4.5 = 36.5 s
    assert.equal(14.2, i.talk_time)
    assert.equal(36.5, c.talk_time)
    assert.equal(50.7, a.speech)
    assert.equal(0.28, i.talk_ratio)   -- 14.2 / 50.7 = 0.2800...
    assert.equal(0.72, c.talk_ratio)
    -- interviewer 10 + 1 + 8 + 1 = 20 words in 14.2 s; candidate 17 + 17 + 3 = 37 in 36.5 s
    assert.equal(20, i.words)
    assert.equal(37, c.words)
    assert.equal(84.507, i.wpm)        -- 20 / (14.2 / 60)
    assert.equal(60.822, c.wpm)        -- 37 / (36.5 / 60)
    assert.equal(55, a.duration)
  end)

  it("counts turns and finds the longest monologue", function()
    -- I | C | I I | C C | I  (in start order: 0, 7, 18, 20, 30, 50.5, 54)
    assert.equal(5, a.turns)
    assert.equal(3, a.roles.interviewer.turns)
    assert.equal(2, a.roles.candidate.turns)
    assert.same({ role = "candidate", identity = "candidate-1", start = 30, ["end"] = 55, duration = 25, words = 20 },
      a.longest_monologue)
  end)

  it("tells overlaps from interruptions", function()
    -- C 7-19 and I 18-20 overlap 1 s, and the interviewer goes on after the candidate stops: an
    -- interruption. I 54-54.2 inside C 50.5-55 is 0.2 s: under the minimum, not counted.
    assert.same({ count = 1, seconds = 1 }, a.overlaps)
    assert.equal(1, a.interruptions)
    assert.equal(1, a.roles.interviewer.interruptions)
    assert.equal(0, a.roles.candidate.interruptions)
  end)

  it("counts questions, with or without a question mark", function()
    assert.equal(2, a.questions)
    assert.equal(2, a.roles.interviewer.questions)
    assert.equal(0, a.roles.candidate.questions)
  end)

  it("finds silences of two seconds or more between speech", function()
    -- 6-7 is 1 s (not one), 26-30 is 4 s, 55 is the end
    assert.same({ count = 1, seconds = 4, longest = 4 }, a.silences)
  end)

  it("counts filler words, two-word ones included", function()
    assert.equal(4, a.fillers)
    assert.same({ um = 1, ["you know"] = 1, uh = 1 }, a.roles.candidate.fillers)
    assert.same({ mm = 1 }, a.roles.interviewer.fillers)
  end)

  it("counts only what is inside a window's range, for time and for words alike", function()
    local w = analytics.compute({ TRANSCRIPT[2], TRANSCRIPT[3], TRANSCRIPT[4] }, { start = 10, ["end"] = 22 })
    -- candidate 10-19 = 9 s, interviewer 18-20 + 20-22 = 4 s
    assert.equal(9, w.roles.candidate.talk_time)
    assert.equal(4, w.roles.interviewer.talk_time)
    assert.equal(12, w.duration)
    -- 9 s of the candidate's 12 s final: 3/4 of its 17 words, at the final's own rate (85 wpm).
    assert.equal(13, w.roles.candidate.words)
    assert.equal(85, w.roles.candidate.wpm)
    -- right (1 word, 2 s, whole) and 2 of "and how would you price a call option"'s 6 s: 1 + 8/3 words
    assert.equal(4, w.roles.interviewer.words)
    assert.equal(55, w.roles.interviewer.wpm)
  end)

  it("gives a sliver of a final its share of the words, not all of them (no 3000 wpm)", function()
    -- The probe's window [30, 30.3] of a 15-word final 26.43-30.3 (232.6 wpm).
    local fin = f(1, "candidate", 26.43, 30.3, "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen")
    local w = analytics.compute({ fin }, { start = 30, ["end"] = 30.3 })
    assert.equal(0.3, w.roles.candidate.talk_time)
    assert.equal(1, w.roles.candidate.words)
    assert.is_true(math.abs(w.roles.candidate.wpm - 15 / 3.87 * 60) < 1, "wpm " .. w.roles.candidate.wpm)
  end)

  it("counts the words whose times fall in the range when a final carries them", function()
    local fin = f(1, "candidate", 8, 14, "a b c d")
    fin.words = { { text = "a", start = 8, ["end"] = 8.5 }, { text = "b", start = 9, ["end"] = 9.4 },
                  { text = "c", start = 9.8, ["end"] = 10.4 }, { text = "d", start = 13, ["end"] = 14 } }
    local w = analytics.compute({ fin }, { start = 10, ["end"] = 20 })
    -- c's middle (10.1) and d are inside: 2 words in 4 s
    assert.equal(2, w.roles.candidate.words)
    assert.equal(30, w.roles.candidate.wpm)
  end)

  it("answers an empty window with zeros", function()
    local e = analytics.compute({})
    assert.equal(0, e.turns)
    assert.equal(0, e.speech)
    assert.is_nil(e.longest_monologue)
  end)
end)
