-- quantcoach reload: asks a running server to reload its policies (POST /admin/reload).
local argparse = require "argparse"
local cjson = require "cjson"
local fetch = require "qc.fetch"
local cli = require "qc.cli"

local parser = argparse("quantcoach reload", "Make a running server reload its policies.")
  :epilog("Exit status: 0 reloaded, 1 rejected or no server. Set QC_ADMIN_KEY to reach a server off loopback.")
  :help_max_width(80)
parser:option("--listen", "Address of the running server (QC_LISTEN).", os.getenv("QC_LISTEN") or "127.0.0.1:8000")
-- A usage error exits 2, like every other command of quantcoach (argparse's own is 1).
function parser:error(msg) -- luacheck: ignore
  os.exit(cli.usage_error(self, msg))
end
-- Caught here rather than by argparse, whose "too many arguments" does not say which.
parser:argument("stray"):args("*"):hidden(true)
local args = parser:parse(arg)
if args.stray[1] then parser:error("unexpected argument " .. args.stray[1]) end

local host, port = args.listen:match("^(.*):(%d+)$")
if not port then
  io.stderr:write("quantcoach reload: --listen must be HOST:PORT\n")
  return 2
end
if host == "" or host == "0.0.0.0" then host = "127.0.0.1" end
local url = ("http://%s:%s/admin/reload"):format(host, port)
local headers = {}
local key = os.getenv("QC_ADMIN_KEY")
if key and key ~= "" then headers.Authorization = "Bearer " .. key end

local status, _, body = fetch { method = "POST", url = url, headers = headers, timeout = 30 }
if not status then
  io.stderr:write(("quantcoach reload: no server at %s (%s)\n"):format(url, _))
  return 1
end
local ok, doc = pcall(cjson.decode, body)
if status == 200 and ok then
  print(("reloaded: generation %s"):format(tostring(doc.generation)))
  return 0
end
local message = ok and type(doc) == "table" and doc.error and doc.error.message or body
io.stderr:write(("quantcoach reload: rejected (HTTP %d): %s\n"):format(status, message))
return 1
