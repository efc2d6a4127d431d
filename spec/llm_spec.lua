-- The LLM evaluators (scripts/lib/qc/llm.lua) against a fake chat server in both API shapes
-- (spec/support/fake_llm.js, shared/protocols/stt-llm.md §3): good JSON, malformed JSON, a
-- reply off the schema, 429 with retry-after, 500s, a hang; retries, time-outs, usage.
local fl = require "support.fake_llm"
local llm = require "qc.llm"
local time = require "qc.time"
local host = require "qc.host"
local cjson = require "cjson"

local SCHEMA = {
  type = "object",
  properties = {
    correctness = { type = "integer", minimum = 1, maximum = 5 },
    feedback = { type = "string" },
    tags = { type = "array", items = { type = "string" } },
  },
  required = { "correctness", "feedback" },
  additionalProperties = false,
}
local GOOD = '{"correctness":4,"feedback":"clear"}'
local REQ = { system = "You grade.", user = "Interviewer: hi / Candidate: hello", schema = SCHEMA, name = "window_evaluation" }

describe("the LLM evaluators", function()
  local fake

  local function settings(provider, extra)
    local s = { provider = provider, key = "sk-test", model = provider == "anthropic" and "claude-x" or "gpt-x",
                timeout = 2, retries = 2, concurrency = 4, max_tokens = 300, backoff = 0.05,
                version = provider == "anthropic" and "2023-06-01" or nil,
                url = fake.base .. (provider == "anthropic" and "/messages" or "/chat/completions") }
    for k, v in pairs(extra or {}) do s[k] = v end
    return s
  end

  setup(function() fake = fl.start() end)
  teardown(function() if fake then fake:stop() end end)
  before_each(function() fake:reset() end)

  it("asks an OpenAI-compatible server for JSON of the schema and returns its answer with the usage", function()
    fake:queue { { content = GOOD, usage = { input = 120, output = 15 } } }
    local r = llm.call(settings("openai", { temperature = 0.2 }), REQ)
    assert.equal("ok", r.status, r.error)
    assert.same({ correctness = 4, feedback = "clear" }, r.result)
    assert.same({ input = 120, output = 15 }, r.usage)
    assert.equal(1, r.attempts)
    local c = fake:calls()[1]
    assert.equal("/v1/chat/completions", c.path)
    assert.equal("Bearer sk-test", c.headers.authorization)
    assert.equal("gpt-x", c.body.model)
    assert.equal(0.2, c.body.temperature)
    assert.equal("system", c.body.messages[1].role)
    assert.equal("user", c.body.messages[2].role)
    assert.equal(REQ.user, c.body.messages[2].content)
    assert.equal("json_schema", c.body.response_format.type)
    assert.equal(true, c.body.response_format.json_schema.strict)
    assert.same(SCHEMA.required, c.body.response_format.json_schema.schema.required)
  end)

  it("speaks the Anthropic Messages API: key and version headers, no temperature, the first text block", function()
    fake:queue { { content = "```json\n" .. GOOD .. "\n```", usage = { input = 90, output = 12 } } }
    local r = llm.call(settings("anthropic", { temperature = 0.7 }), REQ)
    assert.equal("ok", r.status, r.error)
    assert.equal(4, r.result.correctness)
    assert.same({ input = 90, output = 12 }, r.usage)
    local c = fake:calls()[1]
    assert.equal("/v1/messages", c.path)
    assert.equal("sk-test", c.headers["x-api-key"])
    assert.equal("2023-06-01", c.headers["anthropic-version"])
    assert.is_nil(c.headers.authorization)
    assert.is_nil(c.body.temperature)
    assert.equal(300, c.body.max_tokens)
    assert.matches("You grade.", c.body.system, 1, true)
    assert.equal("user", c.body.messages[1].role)
  end)

  it("stores a malformed reply as received and does not retry it", function()
    fake:queue { { content = "Sure! The candidate did well {correctness: 4" } }
    local r = llm.call(settings("openai"), REQ)
    assert.equal("invalid", r.status)
    assert.equal("Sure! The candidate did well {correctness: 4", r.raw)
    assert.matches("not JSON", r.error)
    assert.equal(1, r.attempts)
    assert.equal(1, #fake:calls())
  end)

  it("marks a reply that breaks the schema invalid, naming the field", function()
    fake:queue { { content = '{"correctness":9,"feedback":"x"}' }, { content = '{"correctness":3}' },
                 { content = '{"correctness":3,"feedback":"x","extra":1}' } }
    local a = llm.call(settings("openai"), REQ)
    assert.equal("invalid", a.status)
    assert.matches("$.correctness: must be at most 5", a.error, 1, true)
    local b = llm.call(settings("openai"), REQ)
    assert.matches("$.feedback: is required", b.error, 1, true)
    local c = llm.call(settings("openai"), REQ)
    assert.matches("$.extra: is not in the schema", c.error, 1, true)
  end)

  it("rejects a truncated reply and a refusal", function()
    fake:queue { { content = '{"correctness":4,"feedb', finish_reason = "length" },
                 { status = 200, body = { choices = { { index = 0, message = { role = "assistant", content = cjson.null,
                   refusal = "I cannot help" }, finish_reason = "stop" } }, usage = { prompt_tokens = 5, completion_tokens = 1 } } },
                 { content = GOOD, stop_reason = "max_tokens" } }
    local a = llm.call(settings("openai"), REQ)
    assert.equal("invalid", a.status)
    assert.matches("cut off", a.error)
    local b = llm.call(settings("openai"), REQ)
    assert.equal("invalid", b.status)
    assert.matches("refused: I cannot help", b.error, 1, true)
    local c = llm.call(settings("anthropic"), REQ)
    assert.matches("cut off %(max_tokens%)", c.error)
  end)

  it("waits as long as retry-after says after a 429, then succeeds", function()
    fake:queue { { status = 429, headers = { ["retry-after"] = "1" },
                   body = { error = { message = "slow down", type = "rate_limit_error" } } },
                 { content = GOOD } }
    local r = llm.call(settings("openai"), REQ)
    assert.equal("ok", r.status)
    assert.equal(2, r.attempts)
    local calls = fake:calls()
    assert.equal(2, #calls)
    -- The back-off alone would have waited 0.05 s.
    assert.is_true(calls[2].at_ms - calls[1].at_ms >= 950, "retried after " .. (calls[2].at_ms - calls[1].at_ms) .. " ms")
  end)

  it("waits until the HTTP-date retry-after names", function()
    local at = os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(time.now()) + 2)
    fake:queue { { status = 503, headers = { ["retry-after"] = at }, body = { error = { message = "later" } } },
                 { content = GOOD } }
    local r = llm.call(settings("openai"), REQ)
    assert.equal("ok", r.status)
    local calls = fake:calls()
    assert.is_true(calls[2].at_ms - calls[1].at_ms >= 900, "retried after " .. (calls[2].at_ms - calls[1].at_ms) .. " ms")
  end)

  it("prefers retry-after-ms, and retries Anthropic's 529 overloaded", function()
    fake:queue { { status = 529, headers = { ["retry-after-ms"] = "300", ["retry-after"] = "30" },
                   body = { type = "error", error = { type = "overloaded_error", message = "Overloaded" } } },
                 { content = GOOD } }
    local r = llm.call(settings("anthropic"), REQ)
    assert.equal("ok", r.status)
    assert.equal(2, r.attempts)
    local calls = fake:calls()
    local gap = calls[2].at_ms - calls[1].at_ms
    assert.is_true(gap >= 280 and gap < 20000, "retried after " .. gap .. " ms")
  end)

  it("gives up on 500s after its retries and says why", function()
    local e = { status = 500, body = { error = { message = "internal", type = "server_error" } } }
    fake:queue { e, e, e, e }
    local r = llm.call(settings("openai"), REQ)
    assert.equal("error", r.status)
    assert.equal(500, r.http_status)
    assert.equal(3, r.attempts)
    assert.matches("HTTP 500: internal", r.error, 1, true)
    assert.equal(3, #fake:calls())
  end)

  it("does not retry other 4xx, nor a 5xx the server says not to", function()
    fake:queue { { status = 400, body = { error = { message = "bad model", type = "invalid_request_error" } } },
                 { status = 401, body = { type = "error", error = { type = "authentication_error", message = "bad key" } } },
                 { status = 503, headers = { ["x-should-retry"] = "false" }, body = { error = { message = "down" } } } }
    local a = llm.call(settings("openai"), REQ)
    assert.equal(1, a.attempts)
    assert.matches("HTTP 400: bad model", a.error, 1, true)
    local b = llm.call(settings("anthropic"), REQ)
    assert.equal(1, b.attempts)
    assert.matches("HTTP 401: bad key", b.error, 1, true)
    local c = llm.call(settings("openai"), REQ)
    assert.equal(1, c.attempts)
    assert.equal(3, #fake:calls())
  end)

  it("retries even a 400 when x-should-retry: true says so", function()
    fake:queue { { status = 400, headers = { ["x-should-retry"] = "true" }, body = { error = { message = "try again" } } },
                 { content = GOOD } }
    local r = llm.call(settings("openai"), REQ)
    assert.equal("ok", r.status)
    assert.equal(2, r.attempts)
  end)

  it("ends a hanging request at its timeout and retries it", function()
    fake:queue { { hang = true }, { hang = true } }
    local r = llm.call(settings("openai", { timeout = 0.4, retries = 1 }), REQ)
    assert.equal("error", r.status)
    assert.equal("TIMEOUT", r.code)
    assert.equal(2, r.attempts)
    assert.equal(2, #fake:calls())
  end)

  it("retries a connection dropped mid-body", function()
    fake:queue { { close_mid_body = true }, { content = GOOD } }
    local r = llm.call(settings("openai"), REQ)
    assert.equal("ok", r.status)
    assert.equal(2, r.attempts)
  end)

  it("stores any hostile reply as invalid and never raises", function()
    local deep = ("["):rep(5000) .. ("]"):rep(5000)
    local bodies = {
      "not json at all", "[]", '{"choices":"x"}', '{"choices":[{"message":{"content":{"a":1}}}]}',
      '{"choices":[{"message":"x"}]}', '{"choices":[]}', deep, '{"choices":[{"message":{"content":"' .. deep .. '"}}]}',
      '{"choices":[{"message":{"content":"{\"correctness\":1e999,\"feedback\":\"x\"}"}}]}',
      '{"choices":[{"message":{"content":"[1,2]"}}]}', '{"choices":[{"message":{"content":"null"}}]}',
    }
    local replies = {}
    for i, b in ipairs(bodies) do replies[i] = { status = 200, body = b } end
    fake:queue(replies)
    for i = 1, #bodies do
      local ok, r = pcall(llm.call, settings("openai"), REQ)
      assert.is_true(ok, tostring(r))
      assert.equal("invalid", r.status, ("reply %d: %s"):format(i, tostring(r.error)))
      assert.equal(1, r.attempts)
    end
    fake:queue { { status = 200, body = '{"content":[{"type":"text","text":5},{"type":"thinking"}],"stop_reason":"end_turn"}' },
                 { status = 200, body = '{"content":"x"}' } }
    for _ = 1, 2 do
      local ok, r = pcall(llm.call, settings("anthropic"), REQ)
      assert.is_true(ok, tostring(r))
      assert.equal("invalid", r.status)
    end
  end)

  it("sends at most `concurrency` requests at once to one server", function()
    local replies = {}
    for i = 1, 6 do replies[i] = { content = GOOD, delay_ms = 150 } end
    fake:queue(replies)
    local done = 0
    for _ = 1, 6 do
      host.spawn(function()
        local r = llm.call(settings("openai", { concurrency = 2 }), REQ)
        assert(r.status == "ok", r.error)
        done = done + 1
      end)
    end
    local deadline = time.monotonic() + 20
    while done < 6 and time.monotonic() < deadline do time.sleep(0.02) end
    assert.equal(6, done)
    assert.equal(2, fake:stats().max_inflight)
  end)
end)

describe("retry-after as an HTTP-date", function()
  it("reads IMF-fixdate as unix seconds, and nothing else", function()
    assert.equal(1445412480, llm.http_date("Wed, 21 Oct 2015 07:28:00 GMT"))
    assert.equal(0, llm.http_date("Thu, 01 Jan 1970 00:00:00 GMT"))
    assert.is_nil(llm.http_date("Wed, 21 Oct 2015 07:28:00 CET"))
    assert.is_nil(llm.http_date("soon"))
  end)
end)

describe("the JSON schema check", function()
  it("takes what the schema allows and names what it does not", function()
    assert.is_true((llm.validate(SCHEMA, { correctness = 1, feedback = "", tags = { "a" } })))
    assert.is_true((llm.validate(SCHEMA, { correctness = 5.0, feedback = "x" })))
    local ok, why = llm.validate(SCHEMA, { correctness = 2.5, feedback = "x" })
    assert.is_false(ok)
    assert.equal("$.correctness: must be an integer", why)
    ok, why = llm.validate(SCHEMA, { correctness = 2, feedback = "x", tags = { 1 } })
    assert.equal("$.tags[1]: must be a string", why)
    ok, why = llm.validate(SCHEMA, { 1, 2 })
    assert.equal("$: must be an object", why)
    ok, why = llm.validate({ type = "string", enum = { "hire", "no_hire" } }, "maybe")
    assert.equal("$: is not one of the allowed values", why)
  end)
end)
