-- The windows clock: a server service (started by `quantcoach serve` next to qc.retention)
-- that ticks the windows runner of every room with an open window once a second, so that a
-- window is closed by time on the interview clock even when nobody speaks (a final alone
-- moves the clock otherwise). The work is qc.evaluation.tick; the state stays in the store.
local log = require "qc.log"
local time = require "qc.time"

local M = {}

M.INTERVAL = 1 -- seconds between ticks: a window closes at most this late after end + grace

local function pause() time.sleep(0) end

function M.start()
  while true do
    time.sleep(M.INTERVAL)
    -- Looked up on every tick: a reload's new module and policy apply from the next one.
    -- The clock is read once per tick: a pause does not move it for the rooms after.
    local ok, err = pcall(function() require("qc.evaluation").tick(time.now(), pause) end)
    if not ok then log.error("windows", "clock tick failed", { error = tostring(err) }) end
  end
end

return M
