-- Contract checks run on every policy file when a generation is built (reload, start,
-- `quantcoach check`). A check raises "file: problem" and the whole generation is rejected.
local M = {}

-- Policies a server cannot run without.
M.required = { routes = true }

-- name -> function(policy, path, generation). routes.lua is checked by compiling it
-- (qc.router), which every generation does anyway.
M.check = {}

return M
