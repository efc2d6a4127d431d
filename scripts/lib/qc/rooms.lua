-- Interview rooms: create them on LiveKit and locally, issue role tokens, list and end them.
-- The REST handlers and scripts/batch_rooms.lua both go through here.
local cjson = require "cjson"
local livekit = require "qc.livekit"
local db = require "qc.db"
local errors = require "qc.errors"
local time = require "qc.time"

local M = {}

local type, floor = type, math.floor

-- LiveKit accepts most strings, but room names end up in URLs, logs and file names:
-- letters, digits and - _ . : only, at most 128 characters.
M.NAME_MAX = 128
local NAME_PATTERN = "^[%w%-_%.:]+$"

M.ROLES = { "interviewer", "candidate", "agent" }
local IS_ROLE = { interviewer = true, candidate = true, agent = true }

---Raises a 422 unless v is a valid room name.
function M.check_name(v, field)
  field = field or "room_name"
  if type(v) ~= "string" then errors.invalid(field, "must be a string") end
  if v == "" then errors.invalid(field, "must not be empty") end
  if #v > M.NAME_MAX then errors.invalid(field, ("must be at most %d characters"):format(M.NAME_MAX)) end
  if not v:match(NAME_PATTERN) then
    errors.invalid(field, "may contain only letters, digits and - _ . :")
  end
  return v
end

function M.check_identity(v, field)
  if type(v) ~= "string" or v == "" then errors.invalid(field, "must be a non-empty string") end
  if #v > 256 then errors.invalid(field, "must be at most 256 characters") end
  if v:find("[%c]") then errors.invalid(field, "must not contain control characters") end
  return v
end

function M.check_role(v, field)
  if not IS_ROLE[v] then errors.invalid(field, "must be one of interviewer, candidate, agent") end
  return v
end

local function optional_int(v, field, min, max)
  if v == nil or v == cjson.null then return nil end
  if math.type(v) == "float" and v == math.floor(v) then v = math.tointeger(v) end
  if math.type(v) ~= "integer" or v < min or v > max then
    errors.invalid(field, ("must be an integer from %d to %d"):format(min, max))
  end
  return v
end
M.optional_int = optional_int

---"interview-YYYYMMDD-HHMMSS" in UTC, as the seed named rooms.
function M.generated_name(now)
  return os.date("!interview-%Y%m%d-%H%M%S", math.floor(now or time.now()))
end

-- Tokens issued in the same second share an expiry: format it once.
local iso_t, iso_s
local function iso(t)
  if t ~= iso_t then iso_t, iso_s = t, os.date("!%Y-%m-%dT%H:%M:%SZ", t) end
  return iso_s
end

---Issues a token for a role and records it.
---@param o { room: string, identity: string, name: string|nil, role: string, roles: table, caller: string|nil, metadata: string|nil }
---@return { token: string, expires_at: string }
function M.issue_token(o)
  local token, exp = livekit.access_token {
    identity = o.identity, name = o.name, room = o.room, metadata = o.metadata,
    grants = o.roles.grants[o.role], ttl = o.roles.ttl_seconds,
  }
  db.defer("INSERT INTO tokens (room, identity, role, issued_at, expires_at, issued_by) VALUES (?, ?, ?, ?, ?, ?)",
    o.room, o.identity, o.role, floor(time.now()), exp, o.caller)
  return { token = token, expires_at = iso(exp) }
end

---Issues a token for each role of a room into out.<role>_token.
---@param room string
---@param names table|nil display names by role
---@param roles table the roles policy
---@param caller string|nil
---@param out table
---@return table out
function M.role_tokens(room, names, roles, caller, out)
  names = names or {}
  for _, role in ipairs(M.ROLES) do
    out[role .. "_token"] = M.issue_token { room = room, identity = role, name = names[role], role = role,
                                            roles = roles, caller = caller }.token
  end
  return out
end

---Is there a live room of this name on LiveKit?
function M.exists(name)
  return #livekit.list_rooms({ name }) > 0
end

---Creates the room (LiveKit answers an existing room as is) and tokens for all three roles.
---@param o { room_name: string|nil, max_participants: integer|nil, empty_timeout: integer|nil, metadata: string|nil, caller: string|nil, roles: table, names: table|nil }
function M.create(o)
  local name = o.room_name or M.generated_name()
  local room = livekit.create_room {
    name = name, max_participants = o.max_participants or 10, empty_timeout = o.empty_timeout,
    metadata = o.metadata,
  }
  local now = math.floor(time.now())
  db.run([[INSERT INTO rooms (name, sid, created_at, created_by, max_participants, empty_timeout, metadata)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(name) DO UPDATE SET sid = excluded.sid, ended_at = NULL,
             max_participants = excluded.max_participants]],
    room.name, room.sid, room.creation_time > 0 and room.creation_time or now, o.caller,
    room.max_participants, room.empty_timeout, room.metadata)
  local out = {
    sid = room.sid, name = room.name, max_participants = room.max_participants,
    creation_time = room.creation_time, url = livekit.settings().url,
  }
  return M.role_tokens(room.name, o.names, o.roles, o.caller, out)
end

---Rooms LiveKit knows (active) and rooms we created that it has forgotten (ended).
function M.list()
  local live = livekit.list_rooms()
  local seen, out = {}, {}
  for _, r in ipairs(live) do
    seen[r.name] = true
    out[#out + 1] = { sid = r.sid, name = r.name, status = "active", num_participants = r.num_participants,
                      max_participants = r.max_participants, creation_time = r.creation_time }
  end
  local now = math.floor(time.now())
  for _, r in ipairs(db.query("SELECT name, sid, created_at, max_participants, ended_at FROM rooms ORDER BY created_at")) do
    if not seen[r.name] then
      if not r.ended_at then db.run("UPDATE rooms SET ended_at = ? WHERE name = ?", now, r.name) end
      out[#out + 1] = { sid = r.sid, name = r.name, status = "ended", num_participants = 0,
                        max_participants = r.max_participants, creation_time = r.created_at,
                        ended_at = r.ended_at or now }
    end
  end
  return out
end

---Participants with their roles (from the roles policy).
function M.participants(room, roles)
  local list = livekit.list_participants(room)
  for _, p in ipairs(list) do p.role = roles.role_of(p.identity, p.metadata) end
  return list
end

---Ends the room on LiveKit and here. A room LiveKit no longer has is marked ended here
---too, and the caller still gets the 404.
function M.delete(room)
  local ok, err = pcall(livekit.delete_room, room)
  if ok or (type(err) == "table" and err.status == 404) then
    db.run("UPDATE rooms SET ended_at = ? WHERE name = ? AND ended_at IS NULL", math.floor(time.now()), room)
  end
  if not ok then error(err, 0) end
end

return M
