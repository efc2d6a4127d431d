-- quantcoach token: prints a LiveKit access token for one participant (for ops).
-- Grants, the role list and the lifetime come from the roles policy, as for tokens the
-- server issues. Usage errors exit 2 and name the option.
local argparse = require "argparse"
local livekit = require "qc.livekit"
local rooms = require "qc.rooms"
local errors = require "qc.errors"
local cli = require "qc.cli"

local PROG = "quantcoach token"

-- The policies are loaded after the command line is read, but --help names the roles: a
-- policy set that does not load still gets its help printed (and the error when it runs).
local pok, policies = pcall(require, "qc.policies")
local role_list = pok and table.concat(policies.roles.roles, ", ") or "a role from policies/roles.lua"

local parser = argparse(PROG, "Print a LiveKit access token.")
  :epilog("Signed with LIVEKIT_API_KEY / LIVEKIT_API_SECRET (.env or environment).")
  :help_max_width(80)
parser:option("--room", "Room name."):count(1)
parser:option("--identity", "Participant identity."):count(1)
parser:option("--role", "One of " .. role_list .. "."):count(1)
parser:option("--name", "Display name.")
parser:option("--ttl", "Lifetime in seconds, at most 604800 (default: the roles policy's).")
  :argname("<seconds>")
-- Caught here rather than by argparse, whose "too many arguments" does not say which.
parser:argument("stray"):args("*"):hidden(true)

-- A command line argparse cannot read gets its usage; a bad value, one line naming it.
local function usage_error(msg) return cli.usage_error(parser, msg) end
local function bad_value(msg) return cli.bad_value(PROG, msg) end

-- "--ttl -5" is reported as a bad --ttl, not as an unknown option -5.
local argv = cli.join_negative_values(arg, { ["--ttl"] = "--ttl" })

local ok, args = parser:pparse(argv)
if not ok then return usage_error(args) end
if args.stray[1] then return usage_error("unexpected argument " .. args.stray[1]) end
if not pok then
  io.stderr:write(PROG .. ": " .. errors.message(policies) .. "\n")
  return 1
end
local roles = policies.roles

-- The longest lifetime the policy contract lets roles.lua give (qc/contracts.lua): a token
-- by hand lives no longer than one the server issues could.
local MAX_TTL = 7 * 24 * 3600
local ttl = roles.ttl_seconds
if args.ttl then
  ttl = math.tointeger(tonumber(args.ttl))
  if not ttl or ttl < 1 or ttl > MAX_TTL then
    return bad_value(("--ttl: must be a whole number of seconds from 1 to %d (a week)"):format(MAX_TTL))
  end
end
local vok, verr = pcall(function()
  rooms.check_name(args.room, "--room")
  rooms.check_identity(args.identity, "--identity")
  rooms.check_role(args.role, "--role", roles)
  rooms.check_display_name(args.name, "--name")
end)
if not vok then return bad_value(errors.message(verr)) end

local token = livekit.access_token {
  identity = args.identity, name = args.name, room = args.room, grants = roles.grants[args.role], ttl = ttl,
}
print(token)
return 0
