-- LiveKit webhooks as the specs send them (shared/protocols/livekit.md §4), and a look at the
-- store they land in. One copy for the specs that drive rooms, tracks and egress by webhook.
--   local hooks = require "support.webhooks"
--   local status, res = hooks.post(s, hooks.event("room_started", "r-1"))
--   local rows = hooks.query(s, "SELECT * FROM tracks WHERE room = ?", "r-1")
local lk = require "support.fake_livekit"
local server = require "support.server"
local cjson = require "cjson"

local M = {}

---Rows of one query on a started server's database, opened and closed around it (the server keeps
---its own connection; WAL lets both read). `s` may also be { data = dir }: the store of that
---data directory, after its server stopped.
function M.query(s, sql, ...)
  local db = s.db and s:db() or server.open_store(s.data)
  local rows = assert(db:query(sql, ...))
  db:close()
  return rows
end

local n = 0
---A webhook id not seen before in this process or an earlier run: the server drops repeated ids.
function M.fresh_id(tag)
  n = n + 1
  return ("EV_%s%d%04d%d"):format(tag or "wh", os.time(), math.random(0, 9999), n)
end

---A webhook body as LiveKit sends it: protojson, camelCase, zero values left out.
function M.event(kind, room, fields)
  local ev = { event = kind, id = M.fresh_id(), createdAt = tostring(os.time()), room = { sid = "RM_" .. room, name = room } }
  for k, v in pairs(fields or {}) do ev[k] = v end
  return cjson.encode(ev)
end

---POST a body to /webhooks/livekit, signed with the fake's key pair; returns the status and body.
function M.post(s, body)
  return s:request("POST", "/webhooks/livekit", body,
    { ["Content-Type"] = "application/webhook+json", Authorization = lk.sign_webhook(body) })
end

return M
