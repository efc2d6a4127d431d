-- Creates interview rooms in bulk from a CSV, through the same services as POST /rooms/create.
-- Run: quantcoach run scripts/batch_rooms.lua interviews.csv [--out results.csv] (see --help).
local argparse = require "argparse"
local csv = require "qc.csv"
local json = require "qc.json"
local rooms = require "qc.rooms"
local tasks = require "qc.tasks"
local errors = require "qc.errors"
local host = require "qc.host"
local log = require "qc.log"
local time = require "qc.time"
local cli = require "qc.cli"

local PROG = "batch_rooms"

-- Written as it should appear on an 80-column terminal (argparse leaves lines that fit as
-- they are).
local COLUMNS_HELP = [[
Input columns (a header row is required; column order is free, unknown columns
are ignored; every row has as many fields as the header):
  room_name         required; letters, digits and - _ . : (at most 128), not
                    . or ..
  interviewer       interviewer's display name (optional)
  candidate         candidate's display name (optional)
  scheduled_at      when the interview starts (optional), ISO 8601:
                    2026-12-01T14:00:00Z, 2026-12-01T15:00+01:00, or a day,
                    2026-12-01 (a time without a zone is UTC)
  max_participants  1..10000, default 10 (optional)
  empty_timeout     seconds an empty room stays open (optional)

Tokens are valid in the window policies/roles.lua gives for scheduled_at (as
shipped: from 30 min before the start until 3 h after it); rows without
scheduled_at get tokens valid for the policy's ttl_seconds from now.

Output (CSV, or JSON with --format json or an --out ending in .json), one row
per input row: line, room_name, status (created | exists | would_create |
error), url, one token per role of policies/roles.lua (interviewer_token,
candidate_token, agent_token), error. Failed rows are also named on stderr.

Re-running with the same file is safe: rooms that exist are reported as
"exists" (with fresh tokens), never created twice, and a room a killed run left
half-made is finished and reported as "created". Exit status: 0 when every row
succeeded, 1 otherwise, 2 for bad usage, an unreadable file or an --out that
cannot be written (checked before any room is created).]]

local parser = argparse("quantcoach run scripts/batch_rooms.lua", "Create interview rooms from a CSV file.")
  :epilog(COLUMNS_HELP)
  :help_max_width(80)
parser:argument("csv", "Input CSV file.")
-- The short forms are hidden names: argparse would put each alias on a line of its own.
parser:option("--out", "Write results here instead of stdout (also -o)."):argname("<file>"):hidden_name("-o")
parser:option("--format", "csv or json (default: from --out, else csv)."):choices({ "csv", "json" })
parser:option("--concurrency", "Rooms created at once, 1 to 64 (also -j).", "4"):argname("<n>")
  :hidden_name("-j")
parser:flag("--dry-run", "Check every row and report what would be created; create nothing.")
parser:flag("-q --quiet", "No progress output.")

local function usage_error(msg) return cli.usage_error(parser, msg) end
local function fail(msg) return cli.bad_value(PROG, msg) end

-- "-j -5" is reported as a bad --concurrency, not as an unknown option -5.
local argv = cli.join_negative_values(arg, { ["-j"] = "--concurrency", ["--concurrency"] = "--concurrency" })

local pok, args = parser:pparse(argv)
if not pok then return usage_error(args) end
local concurrency = math.tointeger(tonumber(args.concurrency))
if not concurrency or concurrency < 1 or concurrency > 64 then
  return usage_error(("-j/--concurrency: must be an integer from 1 to 64, got %q"):format(args.concurrency))
end

local lok, policies = pcall(require, "qc.policies")
if not lok then return fail(errors.message(policies)) end
local roles = policies.roles

local f, ferr = io.open(args.csv, "rb")
if not f then return fail(ferr) end
local text = f:read("a")
f:close()

local ok, records = pcall(csv.parse, text)
if not ok then return fail(args.csv .. ": " .. tostring(records)) end
if #records == 0 then return fail(args.csv .. ": no header row") end

local header = {}
local width = #records[1]
for i, name in ipairs(records[1]) do header[name:lower():gsub("^%s+", ""):gsub("%s+$", "")] = i end
if not header.room_name then return fail(args.csv .. ": the header has no room_name column") end

-- The output is opened before any room is created: a path that cannot be written found
-- only after the work would leave rooms made with no record of their tokens.
local out_file
if args.out then
  local oerr
  out_file, oerr = io.open(args.out, "wb")
  if not out_file then return fail("--out " .. oerr) end
end

-- The database lives in the data directory, which a script may be the first to use.
os.execute("mkdir -p '" .. host.config().data_dir:gsub("'", "'\\''") .. "'")

local function cell(rec, name)
  local i = header[name]
  local v = i and rec[i] or nil
  if v then v = v:gsub("^%s+", ""):gsub("%s+$", "") end
  if v == "" then return nil end
  return v
end

-- Days from 1970-01-01 to a proleptic Gregorian date (the civil-from-days arithmetic of
-- Howard Hinnant's date algorithms); os.time would read the local time zone.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
  return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
end

local function days_in_month(y, m)
  if m == 2 then return (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) and 29 or 28 end
  return (m == 4 or m == 6 or m == 9 or m == 11) and 30 or 31
end

---Unix seconds of an ISO 8601 date or date-time, and whether it was a date alone; raises a
---422 on scheduled_at for anything else, impossible dates (2026-13-40, 2031-02-29) included.
local function parse_time(s)
  local bad = "must be an ISO 8601 date or date-time, such as 2026-12-01T14:00:00Z"
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then errors.invalid("scheduled_at", bad) end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo) then
    errors.invalid("scheduled_at", s .. " is not a date in the calendar")
  end
  local day = days_from_civil(y, mo, d) * 86400
  if rest == "" then return day, true end
  local h, mi, tail = rest:match("^[Tt ](%d%d):(%d%d)(.*)$")
  if not h then errors.invalid("scheduled_at", bad) end
  local sec, zone = tail:match("^:(%d%d)(.*)$")
  if sec then tail = zone:gsub("^%.%d+", "") else sec = "0" end
  h, mi, sec = tonumber(h), tonumber(mi), tonumber(sec)
  if h > 23 or mi > 59 or sec > 59 then errors.invalid("scheduled_at", s .. " is not a time of day") end
  local offset = 0
  if tail ~= "" and tail ~= "Z" and tail ~= "z" then
    local sign, oh, om = tail:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then
      sign, oh = tail:match("^([+-])(%d%d)$")
      om = "0"
    end
    if not sign or tonumber(oh) > 23 or tonumber(om) > 59 then errors.invalid("scheduled_at", bad) end
    offset = (tonumber(oh) * 60 + tonumber(om)) * 60
    if sign == "-" then offset = -offset end
  end
  return day + h * 3600 + mi * 60 + sec - offset, false
end

local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t) end

local function check_row(rec, seen, now)
  local row = { line = rec.line }
  local okrow, err = pcall(function()
    if #rec ~= width then
      -- A short row would shift or drop what the operator meant; say so rather than guess.
      row.room_name = cell(rec, "room_name")
      errors.invalid("row", ("has %d fields, the header has %d"):format(#rec, width))
    end
    row.room_name = rooms.check_name(cell(rec, "room_name") or "", "room_name")
    if seen[row.room_name] then
      errors.invalid("room_name", ("duplicate of line %d"):format(seen[row.room_name]))
    end
    seen[row.room_name] = rec.line
    -- A column named after a role gives that role's display name.
    row.names = { agent = "QuantCoach" }
    for _, role in ipairs(roles.roles) do
      row.names[role] = rooms.check_display_name(cell(rec, role), role) or row.names[role]
    end
    row.scheduled_at = cell(rec, "scheduled_at")
    if row.scheduled_at then
      local at, date_only = parse_time(row.scheduled_at)
      local nbf, exp = roles.token_window(at, date_only, now)
      if exp <= now then
        errors.invalid("scheduled_at", ("%s is past: its tokens would have expired at %s"):format(row.scheduled_at, iso(exp)))
      end
      row.window = { nbf = nbf, exp = exp }
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
local started = math.floor(time.now())
for i = 2, #records do rows[#rows + 1] = check_row(records[i], seen, started) end

-- Progress: a bar on a terminal, plain lines otherwise. On a terminal the failed rows are
-- named above the bar too, since with --out the results are not on screen.
local tty = os.execute("test -t 2")
local done, total = 0, #rows
-- Whether the bar is on the terminal's last line, with the cursor after it: anything else
-- written to stderr must clear it first, or it lands on the bar's line.
local bar_shown = false
local function bar()
  local cols = 30
  local filled = math.floor(cols * done / math.max(total, 1))
  io.stderr:write(("\r[%s%s] %d/%d"):format(("#"):rep(filled), ("."):rep(cols - filled), done, total))
  bar_shown = done < total
  if not bar_shown then io.stderr:write("\n") end
end
local function clear_bar()
  if not bar_shown then return false end
  io.stderr:write("\r\27[K")
  bar_shown = false
  return true
end
-- The services log (a room adopted, LiveKit retried) on stderr too: on a terminal, each log
-- line goes where the bar was, and the bar is drawn again under it.
if tty and not args.quiet then
  for _, level in ipairs { "debug", "info", "warn", "error" } do
    local write = log[level]
    log[level] = function(...)
      local had_bar = clear_bar()
      io.stderr:flush()
      write(...)
      if had_bar then bar() end
    end
  end
end
local function shown_name(row) return row.room_name or "(no room_name)" end
local function progress(row)
  done = done + 1
  if args.quiet then return end
  if tty then
    if row.status == "error" then
      clear_bar()
      io.stderr:write(("%s: line %d %s: %s\n"):format(PROG, row.line, shown_name(row), row.error))
    end
    bar()
  else
    io.stderr:write(("%s: %d/%d line %d %s %s%s\n"):format(PROG, done, total, row.line,
      shown_name(row), row.status, row.error and (": " .. row.error) or ""))
  end
  io.stderr:flush()
end

local function process(row)
  if row.status == "error" then return progress(row) end
  local okc, err = pcall(function()
    if args.dry_run then
      row.status = rooms.exists(row.room_name) and "exists" or "would_create"
      return
    end
    local metadata = json.encode({ scheduled_at = row.scheduled_at, interviewer = row.names.interviewer,
                                   candidate = row.names.candidate })
    local out
    out, row.status = rooms.ensure { room_name = row.room_name, max_participants = row.max_participants,
                                     empty_timeout = row.empty_timeout, metadata = metadata, names = row.names,
                                     caller = "batch", roles = roles, window = row.window }
    row.url = out.url
    for _, role in ipairs(roles.roles) do row[role .. "_token"] = out[role .. "_token"] end
  end)
  if not okc then row.status, row.error = "error", errors.message(err) end
  progress(row)
end

tasks.map(rows, concurrency, process)

local FIELDS = { "line", "room_name", "status", "url" }
for _, role in ipairs(roles.roles) do FIELDS[#FIELDS + 1] = role .. "_token" end
FIELDS[#FIELDS + 1] = "error"
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

if out_file then
  local wok, werr = out_file:write(out_text)
  if wok then wok, werr = out_file:close() else out_file:close() end
  if not wok then return fail("--out " .. args.out .. ": " .. tostring(werr)) end
else
  io.stdout:write(out_text)
end

local failed = 0
for _, row in ipairs(rows) do if row.status == "error" then failed = failed + 1 end end
if not args.quiet then
  io.stderr:write(("%s: %d %s, %d failed%s\n"):format(PROG, #rows, #rows == 1 and "row" or "rows", failed, args.dry_run and " (dry run)" or ""))
end
return failed > 0 and 1 or 0
