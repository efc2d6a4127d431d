-- LLM evaluators over HTTP (shared/protocols/stt-llm.md §3): any OpenAI-compatible
-- chat-completions server (OpenAI, llama.cpp, Ollama, vLLM) and the Anthropic Messages API.
-- Each call goes through qc.fetch with a timeout, at most `concurrency` at once per server,
-- and is retried with backoff on 408/409/429/5xx and transport failures (honouring
-- retry-after-ms, retry-after and x-should-retry), never on another 4xx. The reply's JSON is
-- validated against the caller's schema; what fails is returned as received.
--
--   local llm = require "qc.llm"
--   local r = llm.call(llm.settings("openai"), { system = "...", user = "...", schema = {...}, name = "window" })
--   -- r.status: "ok" (r.result) | "invalid" (r.raw, r.error) | "error" (r.error, r.http_status)
--   -- r.attempts, r.usage = { input, output }, r.model
local cjson = require "cjson"
local fetch = require "qc.fetch"
local host = require "qc.host"
local log = require "qc.log"
local time = require "qc.time"

local M = {}

local type, pairs, ipairs, tostring, tonumber, pcall, next = type, pairs, ipairs, tostring, tonumber, pcall, next

-- Slots in use per server, for the process (a reload must not double the bound).
local slots = host.shared and host.shared("qc.llm.slots") or {}

---@class qc.LlmSettings
---@field provider string "openai" | "anthropic"
---@field url string the full endpoint URL
---@field key string
---@field model string
---@field version string|nil anthropic-version
---@field timeout number seconds per attempt
---@field retries integer
---@field concurrency integer per server
---@field max_tokens integer
---@field temperature number|nil (never sent to Anthropic)
---@field backoff number first back-off in seconds

---The evaluator's settings from the configuration (QC_LLM_*, ANTHROPIC_API_KEY, QC_ANTHROPIC_*).
---@param provider string "openai" | "anthropic"
---@return qc.LlmSettings
function M.settings(provider)
  local c = host.config()
  local s = { provider = provider, timeout = (c.llm_timeout_ms or 30000) / 1000, retries = c.llm_retries or 2,
              concurrency = c.llm_concurrency or 4, max_tokens = c.llm_max_tokens or 1000, backoff = 0.5 }
  if provider == "anthropic" then
    s.url = (c.anthropic_url ~= "" and c.anthropic_url or "https://api.anthropic.com/v1"):gsub("/+$", "") .. "/messages"
    s.key = c.anthropic_api_key or ""
    s.model = c.anthropic_model ~= "" and c.anthropic_model or "claude-sonnet-4-5"
    s.version = c.anthropic_version ~= "" and c.anthropic_version or "2023-06-01"
  else
    s.url = (c.llm_base_url ~= "" and c.llm_base_url or "https://api.openai.com/v1"):gsub("/+$", "") .. "/chat/completions"
    s.key = c.llm_api_key or ""
    s.model = c.llm_model ~= "" and c.llm_model or "gpt-4o-mini"
    s.temperature = tonumber(c.llm_temperature)
  end
  return s
end

-- ---- JSON schema (the subset providers accept for structured output) -------------------

local function is_array(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 then return false end
    n = n + 1
  end
  return n == #v
end

local function check(schema, v, path)
  local t = schema.type
  if t == "object" then
    if type(v) ~= "table" or (next(v) ~= nil and is_array(v)) then return path .. ": must be an object" end
    local props = schema.properties or {}
    for _, k in ipairs(schema.required or {}) do
      if v[k] == nil then return ("%s.%s: is required"):format(path, k) end
    end
    for k, x in pairs(v) do
      local sub = props[k]
      if sub then
        local err = check(sub, x, path .. "." .. tostring(k))
        if err then return err end
      elseif schema.additionalProperties == false then
        return ("%s.%s: is not in the schema"):format(path, tostring(k))
      end
    end
  elseif t == "array" then
    if type(v) ~= "table" or not is_array(v) then return path .. ": must be an array" end
    if schema.items then
      for i, x in ipairs(v) do
        local err = check(schema.items, x, ("%s[%d]"):format(path, i))
        if err then return err end
      end
    end
  elseif t == "string" then
    if type(v) ~= "string" then return path .. ": must be a string" end
  elseif t == "integer" then
    if math.type(v) == "float" and v == math.floor(v) then v = math.tointeger(v) end
    if math.type(v) ~= "integer" then return path .. ": must be an integer" end
  elseif t == "number" then
    if type(v) ~= "number" then return path .. ": must be a number" end
  elseif t == "boolean" then
    if type(v) ~= "boolean" then return path .. ": must be true or false" end
  end
  if type(v) == "number" then
    if schema.minimum and v < schema.minimum then return ("%s: must be at least %s"):format(path, tostring(schema.minimum)) end
    if schema.maximum and v > schema.maximum then return ("%s: must be at most %s"):format(path, tostring(schema.maximum)) end
  end
  if schema.enum then
    local found = false
    for _, e in ipairs(schema.enum) do if e == v then found = true end end
    if not found then return path .. ": is not one of the allowed values" end
  end
  return nil
end

---Checks a decoded JSON value against a schema.
---@param schema table
---@param value any
---@return boolean ok, string|nil why
function M.validate(schema, value)
  local err = check(schema, value, "$")
  return err == nil, err
end

-- ---- requests and replies ----------------------------------------------------------------

local function request_of(s, req)
  local headers = { ["content-type"] = "application/json" }
  local body
  if s.provider == "anthropic" then
    headers["x-api-key"] = s.key
    headers["anthropic-version"] = s.version
    -- No temperature: newer API versions refuse it. Structured output is asked for in the
    -- prompt, which every version takes; the reply is validated either way.
    body = { model = s.model, max_tokens = s.max_tokens,
             system = req.system .. "\n\nReply with only a JSON object matching this JSON schema:\n" .. cjson.encode(req.schema),
             messages = { { role = "user", content = req.user } } }
  else
    if s.key ~= "" then headers.authorization = "Bearer " .. s.key end
    body = { model = s.model, max_tokens = s.max_tokens > 0 and s.max_tokens or nil, temperature = s.temperature,
             messages = { { role = "system", content = req.system }, { role = "user", content = req.user } },
             response_format = { type = "json_schema",
                                 json_schema = { name = req.name or "evaluation", strict = true, schema = req.schema } } }
  end
  return headers, cjson.encode(body)
end

-- Models like to wrap JSON in a Markdown fence even when asked not to.
local function unfence(text)
  local inner = text:match("^%s*```%w*%s*\n(.-)\n?```%s*$")
  return inner or text
end

local function error_message(doc, raw)
  if type(doc) == "table" and type(doc.error) == "table" then
    return tostring(doc.error.message or doc.error.type or doc.error.code)
  end
  return (raw or ""):sub(1, 200)
end

-- The reply of a 200: { status, result | raw + error, usage, model }.
local function parse(s, req, raw)
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= "table" then
    return { status = "invalid", raw = raw, error = "the reply is not JSON" }
  end
  local text, usage, stop
  if s.provider == "anthropic" then
    for _, block in ipairs(type(doc.content) == "table" and doc.content or {}) do
      if type(block) == "table" and block.type == "text" and type(block.text) == "string" then text = block.text break end
    end
    local u = type(doc.usage) == "table" and doc.usage or {}
    usage = { input = math.tointeger(u.input_tokens), output = math.tointeger(u.output_tokens) }
    stop = doc.stop_reason
    if stop == "max_tokens" or stop == "model_context_window_exceeded" then
      return { status = "invalid", raw = text or raw, usage = usage, model = doc.model, error = "the reply was cut off (" .. stop .. ")" }
    end
    if stop == "refusal" then
      return { status = "invalid", raw = text or raw, usage = usage, model = doc.model, error = "the model refused" }
    end
  else
    local choice = type(doc.choices) == "table" and doc.choices[1] or nil
    local msg = type(choice) == "table" and type(choice.message) == "table" and choice.message or {}
    text = type(msg.content) == "string" and msg.content or nil
    local u = type(doc.usage) == "table" and doc.usage or {}
    usage = { input = math.tointeger(u.prompt_tokens), output = math.tointeger(u.completion_tokens) }
    stop = type(choice) == "table" and choice.finish_reason or nil
    if stop == "length" then
      return { status = "invalid", raw = text or raw, usage = usage, model = doc.model, error = "the reply was cut off (length)" }
    end
    if not text then
      local why = type(msg.refusal) == "string" and ("the model refused: " .. msg.refusal) or "the reply has no content"
      return { status = "invalid", raw = raw, usage = usage, model = doc.model, error = why }
    end
  end
  if not text then return { status = "invalid", raw = raw, usage = usage, model = doc.model, error = "the reply has no text" } end
  local jok, value = pcall(cjson.decode, unfence(text))
  if not jok then
    return { status = "invalid", raw = text, usage = usage, model = doc.model, error = "the reply's content is not JSON" }
  end
  local valid, why = M.validate(req.schema, value)
  if not valid then
    return { status = "invalid", raw = text, usage = usage, model = doc.model, error = "the reply does not match the schema: " .. why }
  end
  return { status = "ok", result = value, usage = usage, model = doc.model }
end

local RETRY_STATUS = { [408] = true, [409] = true, [429] = true }

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

-- An HTTP-date (IMF-fixdate, "Wed, 21 Oct 2015 07:28:00 GMT") as unix seconds, or nil.
local function http_date(v)
  local d, mon, y, h, mi, sec = tostring(v):match("^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d or not MONTHS[mon] then return nil end
  -- os.time reads a table as local time: the difference between local and UTC at that moment.
  local t = { year = tonumber(y), month = MONTHS[mon], day = tonumber(d), hour = tonumber(h), min = tonumber(mi),
              sec = tonumber(sec), isdst = false }
  local here = os.time(t)
  local utc = os.time(os.date("!*t", here))
  return here + (here - utc)
end
M.http_date = http_date

-- Seconds to wait before attempt n+1 (n >= 1 attempts made), from the server's headers or
-- the back-off (0.5 s doubling, at most 8 s, minus up to a quarter of jitter).
local function wait_of(s, headers, n)
  local ms = tonumber(headers and headers["retry-after-ms"])
  if ms and ms >= 0 and ms <= 60000 then return ms / 1000 end
  local ra = headers and headers["retry-after"]
  local secs = tonumber(ra)
  if not secs and ra then
    local at = http_date(ra)
    if at then secs = math.max(at - time.now(), 0) end
  end
  if secs and secs >= 0 and secs <= 60 then return secs end
  local base = math.min(s.backoff * 2 ^ (n - 1), 8)
  return base * (1 - 0.25 * math.random())
end

local function host_of(url)
  return url:match("^%a+://([^/]+)") or url
end

local function acquire(key, limit)
  while (slots[key] or 0) >= limit do time.sleep(0.01) end
  slots[key] = (slots[key] or 0) + 1
end

local function release(key)
  slots[key] = math.max((slots[key] or 1) - 1, 0)
end

---One evaluation request with retries. Never raises for what the server or network does.
---@param s qc.LlmSettings
---@param req { system: string, user: string, schema: table, name: string|nil }
---@return table
function M.call(s, req)
  local headers, body = request_of(s, req)
  local key = host_of(s.url)
  local attempts, last = 0, nil
  local usage = { input = 0, output = 0 }
  while true do
    attempts = attempts + 1
    acquire(key, math.max(1, s.concurrency))
    local ok, status, rh, raw = pcall(fetch, { method = "POST", url = s.url, headers = headers, body = body,
                                               timeout = s.timeout, max_body = 4 * 1024 * 1024 })
    release(key)
    if not ok then
      last = { status = "error", error = "fetch: " .. tostring(status) }
      break
    end
    local retry
    if status == nil then
      -- Transport: rh is the message, raw the code (TIMEOUT, CONNECT, ...).
      last = { status = "error", error = ("%s: %s"):format(tostring(raw), tostring(rh)), code = raw }
      retry = true
    elseif status == 200 then
      last = parse(s, req, raw)
      if last.usage then
        usage.input = usage.input + (last.usage.input or 0)
        usage.output = usage.output + (last.usage.output or 0)
      end
      break
    else
      local dok, doc = pcall(cjson.decode, raw)
      last = { status = "error", http_status = status, raw = raw,
               error = ("HTTP %d: %s"):format(status, error_message(dok and doc, raw)) }
      local should = rh["x-should-retry"]
      if should == "true" then retry = true
      elseif should == "false" then retry = false
      else retry = RETRY_STATUS[status] or status >= 500 end
      log.warn("llm", "request failed", { provider = s.provider, status = status, attempt = attempts,
                                         request_id = rh["request-id"] or rh["x-request-id"], retry = retry and true or false })
    end
    if not retry or attempts > s.retries then break end
    time.sleep(wait_of(s, type(rh) == "table" and rh or nil, attempts))
  end
  last.attempts = attempts
  last.usage = usage
  last.model = last.model or s.model
  return last
end

return M
