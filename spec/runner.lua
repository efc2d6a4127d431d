-- Runs busted inside quantcoach (`quantcoach run spec/runner.lua SPEC...`), so specs can
-- use qc.fetch, qc.time.sleep and the rest of the runtime they test.
local source = os.getenv("QC_SOURCE_DIR") or "."
package.path = source .. "/spec/?.lua;" .. package.path
-- Loaded here, before busted snapshots package.loaded for each spec file, so the specs
-- share this instance and its list of started servers.
local server = require "support.server"
-- busted ends with os.exit: stop the servers a failed spec left running first. (A fake
-- LiveKit needs nothing: it exits when our end of its stdin closes.)
local exit = os.exit
os.exit = function(...) -- luacheck: ignore
  pcall(server.stop_all)
  return exit(...)
end
-- busted reads its command line from the global `arg`.
require "busted.runner" ({ standalone = false, output = "utfTerminal" })
-- All passed: busted returns instead of exiting.
server.stop_all()
