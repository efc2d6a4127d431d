-- CSV as RFC 4180 writes it: comma-separated, fields optionally in double quotes, "" for a
-- quote inside quotes, CRLF or LF line ends, line breaks allowed inside quoted fields.
local M = {}

---Parses CSV text into records. Each record is an array of fields with `.line` set to the
---line number where it starts. Raises "line N: message" on malformed input.
---@param text string
---@return table[]
function M.parse(text)
  local records, record, field = {}, {}, {}
  local i, n, line, start_line = 1, #text, 1, 1
  local in_quotes, was_quoted = false, false
  local function end_field()
    record[#record + 1] = table.concat(field)
    field, was_quoted = {}, false
  end
  local function end_record()
    end_field()
    -- A blank line is no record.
    if not (#record == 1 and record[1] == "" ) then
      record.line = start_line
      records[#records + 1] = record
    end
    record = {}
  end
  if text:sub(1, 3) == "\239\187\191" then i = 4 end -- UTF-8 byte order mark
  while i <= n do
    local c = text:sub(i, i)
    if in_quotes then
      if c == '"' then
        if text:sub(i + 1, i + 1) == '"' then
          field[#field + 1] = '"'
          i = i + 1
        else
          in_quotes = false
        end
      else
        if c == "\n" then line = line + 1 end
        field[#field + 1] = c
      end
    elseif c == '"' then
      if #field > 0 or was_quoted then
        error(("line %d: a quote inside an unquoted field"):format(line), 0)
      end
      in_quotes, was_quoted = true, true
    elseif c == "," then
      end_field()
    elseif c == "\r" or c == "\n" then
      if c == "\r" and text:sub(i + 1, i + 1) == "\n" then i = i + 1 end
      end_record()
      line = line + 1
      start_line = line
    else
      if was_quoted then error(("line %d: text after a closing quote"):format(line), 0) end
      field[#field + 1] = c
    end
    i = i + 1
  end
  if in_quotes then error(("line %d: a quoted field is not closed"):format(start_line), 0) end
  if #field > 0 or #record > 0 or was_quoted then end_record() end
  return records
end

-- A field that starts with a byte order mark is quoted too: written first in a file, an
-- unquoted one would be read back as the file's mark and lost.
local function quote(v)
  v = v == nil and "" or tostring(v)
  if v:find('[,"\r\n]') or v:sub(1, 3) == "\239\187\191" then return '"' .. v:gsub('"', '""') .. '"' end
  return v
end

---Formats one record as a CSV line with CRLF: values[1..n], nil as an empty field.
---@param values table
---@param n integer|nil number of fields (default #values)
function M.format_row(values, n)
  local out = {}
  for i = 1, n or #values do out[i] = quote(values[i]) end
  return table.concat(out, ",") .. "\r\n"
end

return M
