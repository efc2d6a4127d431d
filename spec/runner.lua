-- Runs busted inside quantcoach (`quantcoach run spec/runner.lua SPEC...`), so specs can
-- use qc.fetch, qc.time.sleep and the rest of the runtime they test.
local source = os.getenv("QC_SOURCE_DIR") or "."
package.path = source .. "/spec/?.lua;" .. package.path
-- busted reads its command line from the global `arg`.
require "busted.runner" ({ standalone = false, output = "utfTerminal" })
