-- quantcoach token: prints a LiveKit access token for one participant (for ops).
-- Grants and lifetime come from the roles policy, as for tokens the server issues.
local argparse = require "argparse"
local livekit = require "qc.livekit"
local rooms = require "qc.rooms"
local policies = require "qc.policies"

local parser = argparse("quantcoach token", "Print a LiveKit access token.")
  :epilog("Signed with LIVEKIT_API_KEY / LIVEKIT_API_SECRET (.env or environment).")
  :help_max_width(80)
parser:option("--room", "Room name."):count(1)
parser:option("--identity", "Participant identity."):count(1)
parser:option("--role", "interviewer, candidate or agent."):count(1)
parser:option("--name", "Display name.")
parser:option("--ttl", "Lifetime in seconds (default: the roles policy's).")
-- A usage error exits 2, like every other command of quantcoach (argparse's own is 1).
function parser:error(msg) -- luacheck: ignore
  io.stderr:write(("%s\n\nError: %s\n"):format(self:get_usage(), msg))
  os.exit(2)
end
local args = parser:parse(arg)

local ok, err = pcall(function()
  rooms.check_name(args.room, "--room")
  rooms.check_identity(args.identity, "--identity")
  rooms.check_role(args.role, "--role")
end)
if not ok then
  io.stderr:write("quantcoach token: " .. (type(err) == "table" and err.message or tostring(err)) .. "\n")
  return 2
end
local ttl = policies.roles.ttl_seconds
if args.ttl then
  ttl = math.tointeger(tonumber(args.ttl))
  if not ttl or ttl < 1 then
    io.stderr:write("quantcoach token: --ttl must be a positive number of seconds\n")
    return 2
  end
end
local token = livekit.access_token {
  identity = args.identity, name = args.name, room = args.room,
  grants = policies.roles.grants[args.role], ttl = ttl,
}
print(token)
return 0
