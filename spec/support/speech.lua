-- Festival speech for the specs (spec/support/make_speech.sh): two speakers on one clock,
-- made once into the build directory, and the word error rate to score what an engine
-- heard against the words that were said.
--   local speech = require "support.speech"
--   local dir = speech.make()             -- dir/interviewer.wav, dir/candidate.wav, ...
--   local turns = speech.turns(dir)       -- { {role=, start=, ["end"]=, text=}, ... }
--   speech.wer(reference, hypothesis)     -- word edit distance / reference words
local server = require "support.server"

local M = {}

--- The directory the speech is made in: next to the binary under test.
function M.dir()
  return (server.bin:match("^(.*)/[^/]*$") or ".") .. "/speech"
end

--- Makes the speech when it is missing or stale; returns its directory.
---@return string
function M.make()
  local dir = M.dir()
  local status, out = server.run(("%s %s"):format(server.quote(server.source .. "/spec/support/make_speech.sh"),
    server.quote(dir)))
  assert(status == 0, "make_speech.sh failed: " .. tostring(out))
  return dir
end

--- The turns of the dialogue in time order, from turns.tsv.
function M.turns(dir)
  local t = {}
  for line in (server.read_file(dir .. "/turns.tsv") or ""):gmatch("[^\n]+") do
    local role, s, e, text = line:match("^(%S+)\t(%S+)\t(%S+)\t(.*)$")
    t[#t + 1] = { role = role, start = tonumber(s), ["end"] = tonumber(e), text = text }
  end
  return t
end

--- Lower-case words without punctuation (apostrophes kept: "i'd" is one word).
---@param text string
---@return string[]
function M.words(text)
  local w = {}
  for word in text:lower():gsub("[^%w'%s]", " "):gmatch("%S+") do w[#w + 1] = word end
  return w
end

--- Word error rate: (substitutions + deletions + insertions) / words in the reference.
---@param ref string
---@param hyp string
---@return number
function M.wer(ref, hyp)
  local r, h = M.words(ref), M.words(hyp)
  local prev = {}
  for j = 0, #h do prev[j] = j end
  for i = 1, #r do
    local cur = { [0] = i }
    for j = 1, #h do
      local sub = prev[j - 1] + (r[i] == h[j] and 0 or 1)
      cur[j] = math.min(sub, prev[j] + 1, cur[j - 1] + 1)
    end
    prev = cur
  end
  return prev[#h] / math.max(#r, 1)
end

--- What batch pocketsphinx_continuous hears in a 16 kHz mono WAV: its utterances joined.
function M.batch(wav16k)
  local status, out = server.run(("pocketsphinx_continuous -infile %s -logfn /dev/null"):format(server.quote(wav16k)))
  assert(status == 0, "pocketsphinx_continuous failed: " .. tostring(out))
  return (out:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

return M
