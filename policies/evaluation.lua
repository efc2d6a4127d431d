-- Evaluation: what an LLM evaluator is asked about which windows, and the shape of its answers.
--
-- Called by the evaluation runner (scripts/lib/qc/evaluation.lua) for every window the windows
-- policy closes, and once for the whole interview (the report). The built-in `analytics`
-- evaluator needs nothing from here; `openai` and `anthropic` (QC_EVALUATOR) send `system`
-- and prompt(window) and must answer JSON matching window_schema (report_prompt and
-- report_schema for the report). A reply that does not match is stored as received, marked
-- invalid. Loaded and checked on start, reload and `quantcoach check`.
--
-- rubric          the criteria, each { key, title, min, max, scale = { [score] = meaning } }
-- judge(window)   -> boolean: is this window sent to the LLM? (analytics runs on all)
-- prompt(window)  -> string: the user message for one window
--   window: { room, index, start, ["end"], text, finals = { { identity, role, start, ["end"], text } } }
-- report_prompt(windows, analytics) -> string: the user message for the whole interview
--   windows: the judged windows with their results { index, start, ["end"], text, result }
-- window_schema, report_schema: JSON schemas (the subset every provider takes: object,
--   properties, required, additionalProperties false, string, integer with minimum/maximum,
--   array with items, enum)
--
-- Example: judge({ text = "Interviewer: hi / Candidate: hello", finals = {...} }) --> false
--          (too little from the candidate to judge)
local M = {}

---@class qc.Criterion
---@field key string
---@field title string
---@field min integer
---@field max integer
---@field scale table<integer, string>

---@type qc.Criterion[]
M.rubric = {
  { key = "correctness", title = "Correctness", min = 1, max = 5,
    scale = { [1] = "wrong or no answer", [3] = "partly right, with errors", [5] = "right and complete" } },
  { key = "approach", title = "Problem-solving approach", min = 1, max = 5,
    scale = { [1] = "guesses", [3] = "a plan, unevenly followed", [5] = "structured, checks its own steps" } },
  { key = "communication", title = "Communication", min = 1, max = 5,
    scale = { [1] = "hard to follow", [3] = "understandable", [5] = "clear and concise, thinks aloud" } },
  { key = "hints_needed", title = "Hints needed", min = 0, max = 3,
    scale = { [0] = "none", [1] = "a nudge", [2] = "several hints", [3] = "the interviewer gave the answer" } },
}

-- A window is judged when the candidate said enough in it to judge.
M.min_candidate_words = 12

M.system = "You are an experienced quantitative finance interviewer grading a candidate from a "
  .. "transcript excerpt of a live interview. The transcript comes from speech recognition and may "
  .. "contain recognition errors. Judge only what is said. Answer with one JSON object and nothing else."

local function criteria_text()
  local lines = {}
  for _, c in ipairs(M.rubric) do
    local scale = {}
    for score = c.min, c.max do
      if c.scale[score] then scale[#scale + 1] = ("%d = %s"):format(score, c.scale[score]) end
    end
    lines[#lines + 1] = ("- %s (%s): integer %d..%d; %s"):format(c.key, c.title, c.min, c.max, table.concat(scale, ", "))
  end
  return table.concat(lines, "\n")
end

local function candidate_words(window)
  local n = 0
  for _, f in ipairs(window.finals or {}) do
    if f.role == "candidate" then
      for _ in (f.text or ""):gmatch("%S+") do n = n + 1 end
    end
  end
  return n
end

---@param window table
---@return boolean
function M.judge(window)
  return candidate_words(window) >= M.min_candidate_words
end

---@param window table
---@return string
function M.prompt(window)
  return ("Transcript from %.0f s to %.0f s of the interview:\n\n%s\n\nScore the candidate on:\n%s\n\n"
    .. "Also give `evidence`: a short quote or paraphrase that supports the scores, and `feedback`: "
    .. "one sentence for the interviewer."):format(window.start or 0, window["end"] or 0, window.text or "", criteria_text())
end

---@param windows table[]
---@param analytics table
---@return string
function M.report_prompt(windows, analytics)
  local parts = {}
  for _, w in ipairs(windows) do
    parts[#parts + 1] = ("[%.0f-%.0f s] %s"):format(w.start or 0, w["end"] or 0, w.text or "")
  end
  local talk = {}
  for role, r in pairs(analytics.roles or {}) do
    talk[#talk + 1] = ("%s talked %.0f%% of the time at %.0f words per minute"):format(role, (r.talk_ratio or 0) * 100, r.wpm or 0)
  end
  table.sort(talk)
  local function count(n, noun) return ("%d %s"):format(n, n == 1 and noun or noun .. "s") end
  return ("The whole interview, window by window:\n\n%s\n\nConversation: %s; %s, %s.\n\n"
    .. "Score the candidate over the whole interview on:\n%s\n\nThen give `summary` (three sentences), "
    .. "`strengths` and `concerns` (lists of short phrases) and `recommendation` (one of hire, lean_hire, "
    .. "lean_no_hire, no_hire)."):format(table.concat(parts, "\n"), table.concat(talk, "; "),
      count(math.tointeger(analytics.turns) or 0, "turn"), count(math.tointeger(analytics.questions) or 0, "question"),
      criteria_text())
end

local function scores_schema(extra, required)
  local props, req = {}, {}
  for _, c in ipairs(M.rubric) do
    props[c.key] = { type = "integer", minimum = c.min, maximum = c.max }
    req[#req + 1] = c.key
  end
  for k, v in pairs(extra) do props[k] = v end
  for _, k in ipairs(required) do req[#req + 1] = k end
  return { type = "object", properties = props, required = req, additionalProperties = false }
end

M.window_schema = scores_schema({
  evidence = { type = "string" },
  feedback = { type = "string" },
}, { "evidence", "feedback" })

M.report_schema = scores_schema({
  summary = { type = "string" },
  strengths = { type = "array", items = { type = "string" } },
  concerns = { type = "array", items = { type = "string" } },
  recommendation = { type = "string", enum = { "hire", "lean_hire", "lean_no_hire", "no_hire" } },
}, { "summary", "strengths", "concerns", "recommendation" })

M.examples = {
  { window = { index = 1, start = 0, ["end"] = 12, text = "Interviewer: hi there / Candidate: hello",
               finals = { { role = "interviewer", text = "hi there" }, { role = "candidate", text = "hello" } } },
    judge = false },
  { window = { index = 2, start = 10, ["end"] = 30,
               text = "Interviewer: what is the expected value of a die / Candidate: each face is equally likely so the expected value is the average of one to six which is three and a half",
               finals = { { role = "interviewer", text = "what is the expected value of a die" },
                          { role = "candidate", text = "each face is equally likely so the expected value is the average of one to six which is three and a half" } } },
    judge = true },
}

return M
