-- The seed's REST API for rooms and tokens, same JSON: POST /rooms/create,
-- POST /tokens/generate, GET /rooms, GET /rooms/{room}/participants, DELETE /rooms/{room}.
local cjson = require "cjson"
local json = require "qc.json"
local rooms = require "qc.rooms"
local errors = require "qc.errors"
local livekit = require "qc.livekit"
local policies = require "qc.policies"

local M = {}

local type, pcall, encode = type, pcall, cjson.encode
local JSON_HEADERS = json.HEADERS
local URL_JSON = cjson.encode(livekit.settings().url)

local function present(v)
  return v ~= nil and v ~= cjson.null
end

-- The JSON object of the body ({} when there is none); anything else is a 422. Dispatch
-- decodes and checks bodies sent as JSON; a body sent with another content type (curl -d
-- says form-urlencoded) is decoded here, and a table from it is an object only when the
-- text is one: cjson gives a table for an array too.
local function body_object(req)
  if req.body == "" then return {} end
  local doc = req.json
  if doc == nil then
    local ok, v = pcall(cjson.decode, req.body)
    if not ok then errors.raise(400, "BAD_JSON", "request body is not valid JSON") end
    if type(v) == "table" and not req.body:find("^[ \t\r\n]*{") then
      errors.invalid("body", "must be a JSON object, got an array")
    end
    doc = v
  end
  if type(doc) ~= "table" then errors.invalid("body", "must be a JSON object") end
  return doc
end

local function optional_string(v, field, max)
  if not present(v) then return nil end
  if type(v) ~= "string" then errors.invalid(field, "must be a string") end
  if #v > max then errors.invalid(field, ("must be at most %d characters"):format(max)) end
  return v
end

---POST /rooms/create {room_name?, max_participants?, empty_timeout?, metadata?}
function M.create(req)
  local b = body_object(req)
  local metadata = b.metadata
  if type(metadata) == "table" then metadata = cjson.encode(metadata) end
  local out = rooms.create {
    room_name = present(b.room_name) and rooms.check_name(b.room_name, "room_name") or nil,
    max_participants = rooms.optional_int(b.max_participants, "max_participants", 1, 10000),
    empty_timeout = rooms.optional_int(b.empty_timeout, "empty_timeout", 0, 7 * 24 * 3600),
    metadata = optional_string(metadata, "metadata", 64 * 1024),
    caller = req.caller, roles = policies.roles,
  }
  return 200, nil, out
end

---POST /tokens/generate {room_name, participant_identity, participant_name?, participant_type}
function M.generate_token(req)
  local b = body_object(req)
  if not present(b.room_name) then errors.invalid("room_name", "is required") end
  if not present(b.participant_identity) then errors.invalid("participant_identity", "is required") end
  if not present(b.participant_type) then errors.invalid("participant_type", "is required") end
  local room = rooms.check_name(b.room_name, "room_name")
  local identity = rooms.check_identity(b.participant_identity, "participant_identity")
  local roles = policies.roles
  local role = rooms.check_role(b.participant_type, "participant_type", roles)
  local name = rooms.check_display_name(b.participant_name, "participant_name")
  local t = rooms.issue_token { room = room, identity = identity, name = name, role = role,
                                roles = roles, caller = req.caller }
  -- The busiest answer of the API, joined as text: same JSON as encoding the table, at half
  -- the cost. The identity is escaped by cjson; a valid room name needs no escaping.
  return 200, JSON_HEADERS, '{"token":"' .. t.token .. '","url":' .. URL_JSON .. ',"room_name":"'
    .. room .. '","participant_identity":' .. encode(identity)
    .. ',"participant_type":"' .. role .. '","expires_at":"' .. t.expires_at .. '"}'
end

---GET /rooms
function M.list(req)
  return 200, nil, { rooms = json.array(rooms.list()) }
end

---GET /rooms/{room}/participants
function M.participants(req)
  local room = rooms.check_name(req.params.room, "room")
  return 200, nil, { room = room, participants = json.array(rooms.participants(room)) }
end

---DELETE /rooms/{room}
function M.delete(req)
  local room = rooms.check_name(req.params.room, "room")
  rooms.delete(room)
  return 200, nil, { status = "deleted", room = room }
end

return M
