-- Creates interview rooms in bulk from a CSV, through the same services as POST /rooms/create.
-- Run: quantcoach run scripts/batch_rooms.lua interviews.csv [--out results.csv] (see --help).
local argparse = require "argparse"
local csv = require "qc.csv"
local json = require "qc.json"
local rooms = require "qc.rooms"
local tasks = require "qc.tasks"
local errors = require "qc.errors"
local host = require "qc.host"
local policies = require "qc.policies"

local COLUMNS_HELP = [[
Input columns (a header row is required; column order is free, unknown columns are ignored):
  room_name         required; letters, digits and - _ . : (at most 128)
  interviewer       interviewer's display name (optional)
  candidate         candidate's display name (optional)
  scheduled_at      when the interview starts, ISO 8601 (2026-12-01T14:00:00Z, optional)
  max_participants  1..10000, default 10 (optional)
  empty_timeout     seconds an empty room stays open (optional)

Output (CSV, or JSON with --format json or an --out ending in .json), one row per input row:
  line, room_name, status (created | exists | would_create | error), url,
  interviewer_token, candidate_token, agent_token, error

Re-running with the same file is safe: rooms that exist are reported as "exists" (with
fresh tokens), never created twice. Exit status: 0 when every row succeeded, 1 otherwise,
2 for bad usage or an unreadable file.]]

local parser = argparse("quantcoach run scripts/batch_rooms.lua", "Create interview rooms from a CSV file.")
  :epilog(COLUMNS_HELP)
parser:argument("csv", "Input CSV file.")
parser:option("-o --out", "Write results here instead of stdout.")
parser:option("--format", "csv or json (default: from --out, else csv)."):choices({ "csv", "json" })
parser:option("-j --concurrency", "Rooms created at once.", "4"):convert(function(v)
  local n = math.tointeger(tonumber(v))
  if not n or n < 1 or n > 64 then return nil, "must be an integer from 1 to 64" end
  return n
end)
parser:flag("--dry-run", "Check every row and report what would be created; create nothing.")
parser:flag("-q --quiet", "No progress output.")
local args = parser:parse(arg)

local function fail(msg)
  io.stderr:write("batch_rooms: " .. msg .. "\n")
  return 2
end

local f, ferr = io.open(args.csv, "rb")
if not f then return fail(ferr) end
local text = f:read("a")
f:close()

local ok, records = pcall(csv.parse, text)
if not ok then return fail(args.csv .. ": " .. tostring(records)) end
if #records == 0 then return fail(args.csv .. ": no header row") end

local header = {}
for i, name in ipairs(records[1]) do header[name:lower():gsub("^%s+", ""):gsub("%s+$", "")] = i end
if not header.room_name then return fail(args.csv .. ": the header has no room_name column") end

-- The database lives in the data directory, which a script may be the first to use.
os.execute("mkdir -p '" .. host.config().data_dir:gsub("'", "'\\''") .. "'")

local function cell(rec, name)
  local i = header[name]
  local v = i and rec[i] or nil
  if v then v = v:gsub("^%s+", ""):gsub("%s+$", "") end
  if v == "" then return nil end
  return v
end

local ISO = "^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):?(%d?%d?)(.*)$"

local function check_row(rec, seen)
  local row = { line = rec.line }
  local okrow, err = pcall(function()
    row.room_name = rooms.check_name(cell(rec, "room_name") or "", "room_name")
    if seen[row.room_name] then
      errors.invalid("room_name", ("duplicate of line %d"):format(seen[row.room_name]))
    end
    seen[row.room_name] = rec.line
    row.interviewer = cell(rec, "interviewer")
    row.candidate = cell(rec, "candidate")
    row.scheduled_at = cell(rec, "scheduled_at")
    if row.scheduled_at and not (row.scheduled_at:match(ISO) or row.scheduled_at:match("^%d%d%d%d%-%d%d%-%d%d$")) then
      errors.invalid("scheduled_at", "must be an ISO 8601 date or date-time")
    end
    local mp = cell(rec, "max_participants")
    row.max_participants = rooms.optional_int(mp and tonumber(mp) or mp, "max_participants", 1, 10000)
    local et = cell(rec, "empty_timeout")
    row.empty_timeout = rooms.optional_int(et and tonumber(et) or et, "empty_timeout", 0, 7 * 24 * 3600)
  end)
  if not okrow then
    row.room_name = row.room_name or cell(rec, "room_name")
    row.status, row.error = "error", errors.message(err)
  end
  return row
end

local rows, seen = {}, {}
for i = 2, #records do rows[#rows + 1] = check_row(records[i], seen) end

-- Progress: a bar on a terminal, plain lines otherwise.
local tty = os.execute("test -t 2")
local done, total = 0, #rows
local function progress(row)
  done = done + 1
  if args.quiet then return end
  if tty then
    local width = 30
    local filled = math.floor(width * done / math.max(total, 1))
    io.stderr:write(("\r[%s%s] %d/%d"):format(("#"):rep(filled), ("."):rep(width - filled), done, total))
    if done == total then io.stderr:write("\n") end
  else
    io.stderr:write(("batch_rooms: %d/%d line %d %s %s%s\n"):format(done, total, row.line,
      tostring(row.room_name), row.status, row.error and (": " .. row.error) or ""))
  end
  io.stderr:flush()
end

local function process(row)
  if row.status == "error" then return progress(row) end
  local okc, err = pcall(function()
    local exists = rooms.exists(row.room_name)
    if args.dry_run then
      row.status = exists and "exists" or "would_create"
      return
    end
    local metadata = json.encode({ scheduled_at = row.scheduled_at, interviewer = row.interviewer,
                                   candidate = row.candidate })
    local names = { interviewer = row.interviewer, candidate = row.candidate, agent = "QuantCoach" }
    local out
    if exists then
      row.status = "exists"
      out = rooms.role_tokens(row.room_name, names, policies.roles, "batch",
                              { url = require("qc.livekit").settings().url })
    else
      out = rooms.create { room_name = row.room_name, max_participants = row.max_participants,
                           empty_timeout = row.empty_timeout, metadata = metadata, names = names,
                           caller = "batch", roles = policies.roles }
      row.status = "created"
    end
    row.url = out.url
    row.interviewer_token, row.candidate_token, row.agent_token =
      out.interviewer_token, out.candidate_token, out.agent_token
  end)
  if not okc then row.status, row.error = "error", errors.message(err) end
  progress(row)
end

tasks.map(rows, args.concurrency, process)

local FIELDS = { "line", "room_name", "status", "url", "interviewer_token", "candidate_token", "agent_token", "error" }
local format = args.format or ((args.out or ""):match("%.json$") and "json" or "csv")
local out_text
if format == "json" then
  local list = json.array()
  for i, row in ipairs(rows) do
    local r = {}
    for _, k in ipairs(FIELDS) do r[k] = row[k] end
    list[i] = r
  end
  out_text = json.encode({ rows = list }) .. "\n"
else
  local parts = { csv.format_row(FIELDS) }
  for _, row in ipairs(rows) do
    local values = {}
    for i, k in ipairs(FIELDS) do values[i] = row[k] end
    parts[#parts + 1] = csv.format_row(values, #FIELDS)
  end
  out_text = table.concat(parts)
end

if args.out then
  local of, oerr = io.open(args.out, "wb")
  if not of then return fail(oerr) end
  of:write(out_text)
  of:close()
else
  io.stdout:write(out_text)
end

local failed = 0
for _, row in ipairs(rows) do if row.status == "error" then failed = failed + 1 end end
if not args.quiet then
  io.stderr:write(("batch_rooms: %d rows, %d failed%s\n"):format(#rows, failed, args.dry_run and " (dry run)" or ""))
end
return failed > 0 and 1 or 0
