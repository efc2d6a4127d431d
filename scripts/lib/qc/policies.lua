-- The policies, for scripts (`quantcoach run`, CLI commands): loads and checks the policy
-- directory once, the same way the server builds a generation. Inside the server,
-- `require "qc.policies"` is answered by the generation itself and never reaches this file.
local generation = require "qc.generation"
local host = require "qc.host"

local c = host.config()
return generation.new_generation(c.policies_dir, c.scripts_dir, 0).policies
