-- Interview rooms: create them on LiveKit and locally, issue role tokens, list and end them.
-- The REST handlers and scripts/batch_rooms.lua both go through here.
local cjson = require "cjson"
local livekit = require "qc.livekit"
local db = require "qc.db"
local errors = require "qc.errors"
local time = require "qc.time"
local log = require "qc.log"

local M = {}

local type, floor = type, math.floor

-- LiveKit accepts most strings, but room names end up in URLs, logs and file names:
-- letters, digits and - _ . : only, at most 128 characters. Every such name is a path
-- segment as it is, except "." and "..", which URL parsers resolve away (DELETE /rooms/..
-- would never reach the room), so they are refused too.
M.NAME_MAX = 128
local NAME_PATTERN = "^[%w%-_%.:]+$"

---Raises a 422 unless v is a valid room name.
---@param v any
---@param field string|nil
---@return string
function M.check_name(v, field)
  field = field or "room_name"
  if type(v) ~= "string" then errors.invalid(field, "must be a string") end
  if v == "" then errors.invalid(field, "must not be empty") end
  if #v > M.NAME_MAX then errors.invalid(field, ("must be at most %d characters"):format(M.NAME_MAX)) end
  if not v:match(NAME_PATTERN) then
    errors.invalid(field, "may contain only letters, digits and - _ . :")
  end
  if v == "." or v == ".." then errors.invalid(field, "must not be . or .. (they cannot be a URL path segment)") end
  return v
end

---Raises a 422 unless v is text a token may carry: valid UTF-8 (no overlong forms or
---surrogates; utf8.len is strict in 5.4) without C0, DEL or C1 control characters.
---@param v string
---@param field string
---@return string
function M.check_text(v, field)
  -- Printable ASCII, the usual case, is settled by one scan (it is on the token path).
  if not v:find("[^\32-\126]") then return v end
  if not utf8.len(v) then errors.invalid(field, "must be valid UTF-8") end
  if v:find("[\0-\31\127]") or v:find("\194[\128-\159]") then
    errors.invalid(field, "must not contain control characters")
  end
  return v
end

---Raises a 422 unless v is a participant identity (it becomes the token's `sub`).
---@param v any
---@param field string
---@return string
function M.check_identity(v, field)
  if type(v) ~= "string" or v == "" then errors.invalid(field, "must be a non-empty string") end
  if #v > 256 then errors.invalid(field, "must be at most 256 characters") end
  return M.check_text(v, field)
end

---Raises a 422 unless v is an optional display name; returns it or nil.
---@param v any
---@param field string
---@return string|nil
function M.check_display_name(v, field)
  if v == nil or v == cjson.null then return nil end
  if type(v) ~= "string" then errors.invalid(field, "must be a string") end
  if #v > 256 then errors.invalid(field, "must be at most 256 characters") end
  return M.check_text(v, field)
end

---Raises a 422 unless v is one of the roles policy's roles.
---@param v any
---@param field string
---@param roles table the roles policy
---@return string
function M.check_role(v, field, roles)
  if type(v) ~= "string" or not M.is_role(v, roles) then
    errors.invalid(field, "must be one of " .. table.concat(roles.roles, ", "))
  end
  return v
end

-- Set views of each policy's role list, made once per roles table.
local role_sets = setmetatable({}, { __mode = "k" })

---@param v string
---@param roles table the roles policy
---@return boolean
function M.is_role(v, roles)
  local set = role_sets[roles]
  if not set then
    set = {}
    for _, r in ipairs(roles.roles) do set[r] = true end
    role_sets[roles] = set
  end
  return set[v] == true
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

-- Every token carries its role where LiveKit hands it back to us: the attributes claim
-- {"role": ROLE} and the metadata {"role":"ROLE"}; both arrive in webhooks' and
-- ListParticipants' ParticipantInfo. One table and one text per role, made once, so the
-- token service's fragment caches work.
local role_attributes, role_metadata = {}, {}

---The metadata a token for role carries, given what the caller asked for: none -> the role
---as JSON; a JSON object -> the same object with "role" set to role (the issued role wins
---over one the caller wrote); anything else (plain text) is kept as it is, and the role
---travels in the attributes claim alone.
---@param role string
---@param metadata string|nil
---@return string
function M.token_metadata(role, metadata)
  if metadata == nil or metadata == "" then
    local m = role_metadata[role]
    if not m then m = cjson.encode { role = role }; role_metadata[role] = m end
    return m
  end
  if metadata:find("^%s*{") then
    local ok, doc = pcall(cjson.decode, metadata)
    if ok and type(doc) == "table" then
      if doc.role == role then return metadata end
      doc.role = role
      local eok, text = pcall(cjson.encode, doc)
      if eok then return text end
    end
  end
  return metadata
end

---The attributes claim of a token for role: {role = role}, one table per role.
---@param role string
---@return table<string, string>
function M.token_attributes(role)
  local a = role_attributes[role]
  if not a then a = { role = role }; role_attributes[role] = a end
  return a
end

---Issues a token for a role and records it. Valid from now for the policy's ttl_seconds,
---or from o.nbf to o.exp when both are given (a scheduled interview's window). The role is
---in the token (attributes and metadata) and in the tokens table, where it is authoritative
---for room + identity (qc.tracks.issued_role).
---@param o { room: string, identity: string, name: string|nil, role: string, roles: table, caller: string|nil, metadata: string|nil, nbf: integer|nil, exp: integer|nil }
---@return { token: string, expires_at: string }
function M.issue_token(o)
  local token, exp = livekit.access_token {
    identity = o.identity, name = o.name, room = o.room, metadata = M.token_metadata(o.role, o.metadata),
    attributes = M.token_attributes(o.role),
    grants = o.roles.grants[o.role], ttl = o.roles.ttl_seconds, nbf = o.nbf, exp = o.exp,
  }
  db.defer("INSERT INTO tokens (room, identity, role, issued_at, expires_at, issued_by) VALUES (?, ?, ?, ?, ?, ?)",
    o.room, o.identity, o.role, floor(time.now()), exp, o.caller)
  return { token = token, expires_at = iso(exp) }
end

---Issues a token for each role of the roles policy into out.<role>_token.
---@param room string
---@param names table|nil display names by role
---@param roles table the roles policy
---@param caller string|nil
---@param out table
---@param window { nbf: integer, exp: integer }|nil validity (default: now + ttl_seconds)
---@return table out
function M.role_tokens(room, names, roles, caller, out, window)
  names = names or {}
  local nbf, exp = window and window.nbf, window and window.exp
  for _, role in ipairs(roles.roles) do
    out[role .. "_token"] = M.issue_token { room = room, identity = role, name = names[role], role = role,
                                            roles = roles, caller = caller, nbf = nbf, exp = exp }.token
  end
  return out
end

---Is there a live room of this name on LiveKit?
---@param name string
---@return boolean
function M.exists(name)
  return #livekit.list_rooms({ name }) > 0
end

-- Our record of a room has a state: 'creating' is written (and committed) before LiveKit
-- is asked, 'created' once LiveKit has answered. A crash in between leaves 'creating',
-- which M.ensure and M.list turn into 'created' when LiveKit turns out to have the room.

---Records that LiveKit has this room (as it answered), ended_at cleared.
---@param room table as livekit.room_of makes it
---@param caller string|nil who asked (kept from the first record)
local function record_created(room, caller)
  db.run([[INSERT INTO rooms (name, sid, created_at, created_by, max_participants, empty_timeout, metadata, state)
           VALUES (?, ?, ?, ?, ?, ?, ?, 'created')
           ON CONFLICT(name) DO UPDATE SET sid = excluded.sid, created_at = excluded.created_at,
             ended_at = NULL, max_participants = excluded.max_participants,
             empty_timeout = excluded.empty_timeout, metadata = excluded.metadata, state = 'created']],
    room.name, room.sid, room.creation_time > 0 and room.creation_time or floor(time.now()), caller,
    room.max_participants, room.empty_timeout, room.metadata)
end

-- What create and ensure answer for a room LiveKit has: the room, and a token per role.
local function with_tokens(room, o)
  local out = {
    sid = room.sid, name = room.name, max_participants = room.max_participants,
    creation_time = room.creation_time, url = livekit.settings().url,
  }
  return M.role_tokens(room.name, o.names, o.roles, o.caller, out, o.window)
end

---Creates the room (LiveKit answers an existing room as is) and tokens for every role.
---The intent is on disk before LiveKit is called, so a crash at any point is repaired by
---M.ensure or M.list later.
---@param o { room_name: string|nil, max_participants: integer|nil, empty_timeout: integer|nil, metadata: string|nil, caller: string|nil, roles: table, names: table|nil, window: table|nil }
---@return table out {sid, name, max_participants, creation_time, url, <role>_token...}
function M.create(o)
  local name = o.room_name or M.generated_name()
  local max_participants = o.max_participants or 10
  db.run([[INSERT INTO rooms (name, created_at, created_by, max_participants, empty_timeout, metadata, state)
           VALUES (?, ?, ?, ?, ?, ?, 'creating')
           ON CONFLICT(name) DO UPDATE SET state = 'creating']],
    name, floor(time.now()), o.caller, max_participants, o.empty_timeout, o.metadata)
  local room = livekit.create_room {
    name = name, max_participants = max_participants, empty_timeout = o.empty_timeout, metadata = o.metadata,
  }
  record_created(room, o.caller)
  return with_tokens(room, o)
end

---Makes sure LiveKit has the room and we have a record of it, as a re-runnable batch
---needs: creates it when LiveKit lacks it; when LiveKit has it, records it. Status is
---"created" when this call created it or found it half-made by a crashed run ('creating':
---nobody has seen its tokens), "exists" otherwise. A room LiveKit has and we never asked for
---(made by hand, by another instance, or by a participant's join) is adopted: the operator
---asked for this name, and leaving it unrecorded would leave LiveKit and us apart.
---@param o table as for M.create, room_name required
---@return table out, string status
function M.ensure(o)
  local live = livekit.list_rooms({ o.room_name })[1]
  if not live then return M.create(o), "created" end
  local rec = db.first("SELECT state, sid, ended_at FROM rooms WHERE name = ?", o.room_name)
  local status = (rec and rec.state == "creating") and "created" or "exists"
  if not rec then
    log.warn("rooms", "adopted a LiveKit room we have no record of", { room = live.name, sid = live.sid })
  end
  if not rec or rec.state ~= "created" or rec.sid ~= live.sid or rec.ended_at then record_created(live, o.caller) end
  return with_tokens(live, o), status
end

---Rooms LiveKit knows (active) and rooms we created that it has forgotten (ended). A room
---LiveKit has that we left 'creating' (a crash before our record) is recorded as created;
---one it does not have was never made, and is not listed.
function M.list()
  local live = livekit.list_rooms()
  local ours = {}
  local rows = db.query("SELECT name, sid, created_at, max_participants, ended_at, state FROM rooms ORDER BY created_at, name")
  for _, r in ipairs(rows) do ours[r.name] = r end
  local seen, out = {}, {}
  for _, r in ipairs(live) do
    seen[r.name] = true
    local rec = ours[r.name]
    if rec and rec.state == "creating" then record_created(r, nil) end
    out[#out + 1] = { sid = r.sid, name = r.name, status = "active", num_participants = r.num_participants,
                      max_participants = r.max_participants, creation_time = r.creation_time }
  end
  local now = floor(time.now())
  for _, r in ipairs(rows) do
    if not seen[r.name] and r.state == "created" then
      if not r.ended_at then db.run("UPDATE rooms SET ended_at = ? WHERE name = ?", now, r.name) end
      out[#out + 1] = { sid = r.sid, name = r.name, status = "ended", num_participants = 0,
                        max_participants = r.max_participants, creation_time = r.created_at,
                        ended_at = r.ended_at or now }
    end
  end
  return out
end

---Participants with their roles: the role of the token we issued for the room and
---identity, else what the speakers policy makes of the participant (attributes.role,
---metadata, identity), as for webhooks (qc.tracks.speaker).
function M.participants(room)
  local tracks = require "qc.tracks" -- when needed: it loads the policies, which scripts may not
  local list = livekit.list_participants(room)
  for _, p in ipairs(list) do p.role = tracks.speaker(room, p) end
  return list
end

---Ends the room on LiveKit and here: its tracks' egresses are stopped first (LiveKit would
---end them with the room, but as failures). A room LiveKit no longer has is marked ended
---here too, and the caller still gets the 404.
function M.delete(room)
  local tracks = require "qc.tracks"
  local now = math.floor(time.now())
  for _, sid in ipairs(tracks.end_tracks(room, nil, now)) do tracks.stop_egress(sid) end
  local ok, err = pcall(livekit.delete_room, room)
  if ok or (type(err) == "table" and err.status == 404) then
    db.run("UPDATE rooms SET ended_at = ? WHERE name = ? AND ended_at IS NULL", now, room)
  end
  if not ok then error(err, 0) end
end

return M
