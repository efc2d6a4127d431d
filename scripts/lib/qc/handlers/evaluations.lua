-- GET /rooms/{room}/evaluations (stored windows with their evaluations) and
-- GET /rooms/{room}/report (the whole interview: analytics over every window, mean rubric
-- scores and the LLM summary where one ran; ?format=md for a readable page).
local db = require "qc.db"
local errors = require "qc.errors"
local evaluation = require "qc.evaluation"
local rooms = require "qc.rooms"

local M = {}

local MD_HEADERS = { ["content-type"] = "text/markdown; charset=utf-8" }

local function known_room(room)
  local d = db.get()
  local r = d:first("SELECT name FROM rooms WHERE name = ?", room)
  local w = r or d:first("SELECT room FROM windows WHERE room = ? LIMIT 1", room)
  if not w then errors.raise(404, "NOT_FOUND", "no room " .. room) end
  return d
end

---GET /rooms/{room}/evaluations
function M.list(req)
  local room = rooms.check_name(req.params.room, "room")
  return 200, nil, evaluation.list(known_room(room), room)
end

---GET /rooms/{room}/report[?format=md]
function M.report(req)
  local room = rooms.check_name(req.params.room, "room")
  local format = req.args.format or "json"
  if format ~= "json" and format ~= "md" then errors.invalid("format", "must be json or md") end
  local report = evaluation.report(known_room(room), room)
  if format == "md" then return 200, MD_HEADERS, evaluation.markdown(report) end
  return 200, nil, report
end

return M
