-- Where in a policy file a value was written, for rejection messages ("roles.lua:23: ...").
-- A loaded table keeps no line numbers, so the policy's source is tokenised (strings and
-- comments skipped, so a '{' inside metadata JSON is not taken for a table) and searched for
-- the key path of the value at fault. Used by trusted code only (qc.generation, qc.contracts).
local M = {}

local function count_newlines(s)
  local _, n = s:gsub("\n", "")
  return n
end

---Tokens of Lua source: { kind = "name"|"string"|"number"|"op", value = string, line = integer }.
---@param text string
---@return table[]
function M.tokens(text)
  local toks, i, line, n = {}, 1, 1, #text
  local function push(kind, value, at) toks[#toks + 1] = { kind = kind, value = value, line = at } end
  while i <= n do
    local c = text:sub(i, i)
    if c == "\n" then
      line, i = line + 1, i + 1
    elseif c:match("%s") then
      i = i + 1
    elseif text:sub(i, i + 1) == "--" then
      local eq = text:match("^%[(=*)%[", i + 2)
      local e
      if eq then
        local _, close = text:find("]" .. eq .. "]", i + 2, true)
        e = close or n
      else
        e = (text:find("\n", i, true) or n + 1) - 1
      end
      line = line + count_newlines(text:sub(i, e))
      i = e + 1
    elseif c == '"' or c == "'" then
      local j, parts, start = i + 1, {}, line
      while j <= n do
        local d = text:sub(j, j)
        if d == "\\" then
          local nx = text:sub(j + 1, j + 1)
          if nx == "\n" then line = line + 1 end
          parts[#parts + 1] = nx
          j = j + 2
        elseif d == c or d == "\n" then
          break
        else
          parts[#parts + 1] = d
          j = j + 1
        end
      end
      push("string", table.concat(parts), start)
      i = j + 1
    elseif c == "[" and text:match("^%[=*%[", i) then
      local eq = text:match("^%[(=*)%[", i)
      local body_start = i + #eq + 2
      local close_start, close_end = text:find("]" .. eq .. "]", body_start, true)
      close_start, close_end = close_start or n + 1, close_end or n
      push("string", text:sub(body_start, close_start - 1), line)
      line = line + count_newlines(text:sub(i, close_end))
      i = close_end + 1
    elseif c:match("[%a_]") then
      local w = text:match("^[%w_]+", i)
      push("name", w, line)
      i = i + #w
    elseif c:match("%d") or (c == "." and text:match("^%.%d", i)) then
      local num = text:match("^0[xX][%x%.]*[pP]?[%+%-]?%d*", i) or text:match("^[%d%.]*[eE][%+%-]?%d*", i)
        or text:match("^[%d%.]+", i)
      push("number", num, line)
      i = i + #num
    else
      local op = text:match("^%.%.%.", i) or text:match("^[=~<>/:%.]%g", i)
      if not (op and (op == "..." or op == "==" or op == "~=" or op == "<=" or op == ">="
                      or op == "//" or op == "::" or op == ".." or op == "<<" or op == ">>")) then
        op = c
      end
      push("op", op, line)
      i = i + #op
    end
  end
  return toks
end

local OPEN = { ["{"] = true, ["("] = true, ["["] = true }
local CLOSE = { ["}"] = true, [")"] = true, ["]"] = true }

-- Index of the first token at or after `from` that assigns to `key` (`key =` or `["key"] =`),
-- or nil.
local function find_key(toks, key, from)
  for j = from, #toks do
    local t = toks[j]
    if t.kind == "name" and t.value == key and toks[j + 1] and toks[j + 1].value == "=" then
      return j
    end
    if t.value == "[" and toks[j + 1] and toks[j + 1].kind == "string" and toks[j + 1].value == key
        and toks[j + 2] and toks[j + 2].value == "]" and toks[j + 3] and toks[j + 3].value == "=" then
      return j + 1
    end
  end
end

-- Index of the first token of the n-th item of the table constructor that starts at or after
-- `from`, or nil.
local function find_item(toks, n, from)
  local j = from
  while toks[j] and toks[j].value ~= "{" do j = j + 1 end
  if not toks[j] then return nil end
  local function item_at(k)
    local t = toks[k]
    if t and not (t.kind == "op" and t.value == "}") then return k end
  end
  if n == 1 then return item_at(j + 1) end
  local depth, item = 1, 1
  for k = j + 1, #toks do
    local t = toks[k]
    if t.kind == "op" and OPEN[t.value] then
      depth = depth + 1
    elseif t.kind == "op" and CLOSE[t.value] then
      depth = depth - 1
      if depth == 0 then return nil end
    elseif depth == 1 and t.kind == "op" and (t.value == "," or t.value == ";") then
      item = item + 1
      if item == n then return item_at(k + 1) end
    end
  end
end

---The line of the value at a key path: strings are keys (`grants`, `agent`, `canPublish`),
---integers are items of a table constructor (`examples`, 2). Each step searches after the
---previous one. When a step is not found, the line of the last step found; nil if none was.
---@param toks table[] from M.tokens
---@param keys any[]
---@return integer|nil line
function M.line_of(toks, keys)
  local pos, line = 1, nil
  for _, key in ipairs(keys) do
    local j
    if math.type(key) == "integer" then j = find_item(toks, key, pos) else j = find_key(toks, key, pos) end
    if not j then break end
    pos, line = j + 1, toks[j].line
  end
  return line
end

-- Index of the file's last `return` token, or nil.
local function last_return(toks)
  for j = #toks, 1, -1 do
    if toks[j].kind == "name" and toks[j].value == "return" then return j end
  end
end

---The line of the n-th route of a routes policy: the entry whose first two items are the
---strings `method` and `path`, the n-th such entry for a route declared twice; else the n-th
---item of the table after the file's last `return`.
---@param toks table[]
---@param n integer
---@param method any
---@param path any
---@return integer|nil line
function M.route_line(toks, n, method, path, occurrence)
  local seen = 0
  for j = 1, #toks - 2 do
    local a, comma, b = toks[j], toks[j + 1], toks[j + 2]
    if a.kind == "string" and a.value == method and comma.value == "," and b.kind == "string" and b.value == path then
      seen = seen + 1
      if seen == (occurrence or 1) then return a.line end
    end
  end
  local ret = last_return(toks)
  if not ret then return nil end
  local k = find_item(toks, n, ret)
  return k and toks[k].line or toks[ret].line
end

---The line of the last `return` of the file (where a policy hands over its table).
---@param toks table[]
---@return integer|nil
function M.return_line(toks)
  local ret = last_return(toks)
  return ret and toks[ret].line
end

return M
