-- quantcoach token: prints a LiveKit access token for one participant (for ops), or with
-- --ingest the signed /ingest URL a feeder connects to (what StartTrackEgress is given).
-- Grants, the role list and the lifetime come from the roles policy, as for tokens the
-- server issues; the token carries its role (attributes and metadata), as theirs do. Usage
-- errors exit 2 and name the option.
local argparse = require "argparse"
local livekit = require "qc.livekit"
local rooms = require "qc.rooms"
local errors = require "qc.errors"
local cli = require "qc.cli"
local ingest = require "qc.ingest"
local host = require "qc.host"

local PROG = "quantcoach token"

-- The policies are loaded after the command line is read, but --help names the roles: a
-- policy set that does not load still gets its help printed (and the error when it runs).
local pok, policies = pcall(require, "qc.policies")
local role_list = pok and table.concat(policies.roles.roles, ", ") or "a role from policies/roles.lua"

local parser = argparse(PROG, "Print a LiveKit access token, or with --ingest a signed ingest URL.")
  :epilog("Signed with LIVEKIT_API_KEY / LIVEKIT_API_SECRET (.env or environment).\n\n"
    .. "--ingest prints ws(s)://PUBLIC/ingest?t=TOKEN, PUBLIC from QC_PUBLIC_URL (default the "
    .. "listen address). The token names room, identity and track and is valid for "
    .. "QC_INGEST_TOKEN_TTL seconds (--ttl). --rate and --channels declare the PCM format of a "
    .. "source other than LiveKit's egress (s16le, 48000 Hz, 2 channels).")
  :help_max_width(80)
parser:option("--room", "Room name."):count(1)
parser:option("--identity", "Participant identity."):count(1)
parser:option("--role", "One of " .. role_list .. " (not with --ingest).")
parser:option("--name", "Display name.")
parser:option("--ttl", "Lifetime in seconds, at most 604800 (default: the roles policy's, or "
  .. "QC_INGEST_TOKEN_TTL with --ingest).")
  :argname("<seconds>")
parser:flag("--ingest", "Print a signed ingest URL for one track instead.")
parser:option("--track", "Track sid (with --ingest).")
parser:option("--rate", "Sample rate of the PCM, 8000 to 192000 (with --ingest).")
parser:option("--channels", "Interleaved channels of the PCM, 1 to 8 (with --ingest).")
-- Caught here rather than by argparse, whose "too many arguments" does not say which.
parser:argument("stray"):args("*"):hidden(true)

-- A command line argparse cannot read gets its usage; a bad value, one line naming it.
local function usage_error(msg) return cli.usage_error(parser, msg) end
local function bad_value(msg) return cli.bad_value(PROG, msg) end

-- "--ttl -5" is reported as a bad --ttl, not as an unknown option -5.
local argv = cli.join_negative_values(arg, { ["--ttl"] = "--ttl", ["--rate"] = "--rate",
                                             ["--channels"] = "--channels" })

local ok, args = parser:pparse(argv)
if not ok then return usage_error(args) end
if args.stray[1] then return usage_error("unexpected argument " .. args.stray[1]) end

-- The longest lifetime the policy contract lets roles.lua give (qc/contracts.lua): a token
-- by hand lives no longer than one the server issues could.
local MAX_TTL = 7 * 24 * 3600
local function parse_ttl(default)
  if not args.ttl then return default end
  local ttl = math.tointeger(tonumber(args.ttl))
  if not ttl or ttl < 1 or ttl > MAX_TTL then
    return nil, ("--ttl: must be a whole number of seconds from 1 to %d (a week)"):format(MAX_TTL)
  end
  return ttl
end

if args.ingest then
  if args.role then return usage_error("--role does not go with --ingest") end
  if args.name then return usage_error("--name does not go with --ingest") end
  if not args.track then return usage_error("--ingest needs --track") end
  local ttl, terr = parse_ttl(host.config().ingest_token_ttl)
  if not ttl then return bad_value(terr) end
  local rate, channels
  if args.rate then
    rate = ingest.check_rate(math.tointeger(tonumber(args.rate)))
    if not rate then return bad_value("--rate: must be a whole number of Hz from 8000 to 192000") end
  end
  if args.channels then
    channels = ingest.check_channels(math.tointeger(tonumber(args.channels)))
    if not channels then return bad_value("--channels: must be a whole number from 1 to 8") end
  end
  local vok, verr = pcall(function()
    rooms.check_name(args.room, "--room")
    rooms.check_identity(args.identity, "--identity")
    rooms.check_identity(args.track, "--track")
  end)
  if not vok then return bad_value(errors.message(verr)) end
  local token = ingest.token { room = args.room, identity = args.identity, track = args.track, ttl = ttl,
                               rate = rate, channels = channels }
  print(ingest.url(token))
  return 0
end

for _, o in ipairs { "track", "rate", "channels" } do
  if args[o] then return usage_error("--" .. o .. " goes with --ingest only") end
end
if not args.role then return usage_error("option '--role' must be used 1 time (or give --ingest)") end
if not pok then
  io.stderr:write(PROG .. ": " .. errors.message(policies) .. "\n")
  return 1
end
local roles = policies.roles

local ttl, terr = parse_ttl(roles.ttl_seconds)
if not ttl then return bad_value(terr) end
local vok, verr = pcall(function()
  rooms.check_name(args.room, "--room")
  rooms.check_identity(args.identity, "--identity")
  rooms.check_role(args.role, "--role", roles)
  rooms.check_display_name(args.name, "--name")
end)
if not vok then return bad_value(errors.message(verr)) end

local token = livekit.access_token {
  identity = args.identity, name = args.name, room = args.room, grants = roles.grants[args.role], ttl = ttl,
  metadata = rooms.token_metadata(args.role), attributes = rooms.token_attributes(args.role),
}
print(token)
return 0
