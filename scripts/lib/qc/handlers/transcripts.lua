-- GET /rooms/{room}/transcript[?format=text]: the stored transcript of a room, finals ordered
-- by their start on the interview clock across speakers. JSON by default; text gives lines
-- `[mm:ss] Interviewer: ...` with the role's name (Speaker when the role is unknown).
local db = require "qc.db"
local errors = require "qc.errors"
local json = require "qc.json"
local rooms = require "qc.rooms"
local transcripts = require "qc.transcripts"

local M = {}

local TEXT_HEADERS = { ["content-type"] = "text/plain; charset=utf-8" }

---`[mm:ss] Role: text`; minutes go past 59 for long interviews.
---@param f table a final
---@return string
function M.line(f)
  local s = math.max(0, math.floor(f.start or 0))
  local role = f.role and f.role ~= "" and (f.role:sub(1, 1):upper() .. f.role:sub(2)) or "Speaker"
  return ("[%02d:%02d] %s: %s"):format(s // 60, s % 60, role, f.text)
end

---GET /rooms/{room}/transcript
function M.transcript(req)
  local room = rooms.check_name(req.params.room, "room")
  local format = req.args and req.args.format or "json"
  if format ~= "json" and format ~= "text" then errors.invalid("format", "must be json or text") end
  if not db.first("SELECT name FROM rooms WHERE name = ?", room) then
    errors.raise(404, "NOT_FOUND", "no room named " .. room)
  end
  local finals = transcripts.finals(room)
  if format == "text" then
    local lines = {}
    for i, f in ipairs(finals) do lines[i] = M.line(f) end
    return 200, TEXT_HEADERS, #lines > 0 and table.concat(lines, "\n") .. "\n" or ""
  end
  return 200, nil, { room = room, last_seq = transcripts.last_seq(room), transcript = json.array(finals) }
end

return M
