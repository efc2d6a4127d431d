-- The Lua-side events GET /metrics counts (windows, evaluations, LLM tokens), named and
-- described in one place. They live in the C registry (qc.metrics), so they outlive the
-- policy generation that counted them.
local metrics = require "qc.metrics"

local M = {}

local WINDOWS = "Windows of conversation closed and stored"
local EVALUATIONS = "Evaluations stored, by evaluator and outcome (ok, invalid, error, ...)"
local TOKENS = "LLM tokens used by evaluations, by evaluator and kind (input, output)"

---Declares the families, so a scrape shows them before their first event.
function M.declare()
  metrics.add("qc_windows_total", nil, 0, WINDOWS)
  metrics.add("qc_evaluations_total", { evaluator = "analytics", outcome = "ok" }, 0, EVALUATIONS)
end

---@param n integer windows just committed
function M.windows(n)
  metrics.add("qc_windows_total", nil, n, WINDOWS)
end

---@param evaluator string
---@param r table { status, usage? = { input?, output? } }
function M.evaluation(evaluator, r)
  metrics.add("qc_evaluations_total", { evaluator = evaluator, outcome = tostring(r.status) }, 1, EVALUATIONS)
  local usage = type(r.usage) == "table" and r.usage or {}
  for _, kind in ipairs { "input", "output" } do
    local n = usage[kind]
    if math.type(n) == "integer" and n > 0 then
      metrics.add("qc_llm_tokens_total", { evaluator = evaluator, kind = kind }, n, TOKENS)
    end
  end
end

return M
