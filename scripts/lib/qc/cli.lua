-- What quantcoach's Lua commands (scripts/cli/*.lua, scripts/batch_rooms.lua) share about
-- their command lines: how a usage error and a bad value are reported (both exit 2, as every
-- command of quantcoach does), and a mend for argparse's reading of negative values.
local M = {}

---A command line argparse cannot read: the usage, then the error. Returns the exit status.
---@param parser table an argparse parser
---@param msg string
---@return integer status 2
function M.usage_error(parser, msg)
  io.stderr:write(("%s\n\nError: %s\n"):format(parser:get_usage(), msg))
  return 2
end

---A value the command cannot use (or a file it cannot read): one line naming it. Returns
---the exit status.
---@param prog string the command's name, as its messages start
---@param msg string
---@return integer status 2
function M.bad_value(prog, msg)
  io.stderr:write(prog .. ": " .. msg .. "\n")
  return 2
end

---argparse reads "--ttl -5" as an unknown option -5: a copy of argv with each negative
---number after one of `options` joined to it ("--ttl=-5"), so the mistake is reported as a
---bad value of that option.
---@param argv string[]
---@param options table<string, string> an option's name as typed ("-j") -> its long name
---@return string[]
function M.join_negative_values(argv, options)
  local out = {}
  for i = 1, #argv do
    local a, long = argv[i], options[out[#out]]
    if long and a:match("^%-%d") then out[#out] = long .. "=" .. a else out[#out + 1] = a end
  end
  return out
end

return M
