-- LiveKit: access tokens, the RoomService client and the Egress client (Twirp JSON over qc.fetch).
-- Wire facts: shared/protocols/livekit.md. Errors are raised as qc.errors tables:
-- room not found -> 404, LiveKit unreachable -> 503 (with the URL tried), bad credentials -> 502.
local cjson = require "cjson"
local fetch = require "qc.fetch"
local host = require "qc.host"
local jwt = require "qc.jwt"
local time = require "qc.time"
local errors = require "qc.errors"

local M = {}

-- Configuration is fixed for the life of the process: read once per generation.
local settings
do
  local c = host.config()
  settings = { url = c.livekit_url, key = c.livekit_api_key, secret = c.livekit_api_secret,
               timeout = c.livekit_timeout or 10 }
end

---@return { url: string, key: string, secret: string, timeout: number }
function M.settings()
  return settings
end

---The HTTP origin of the server API for a LIVEKIT_URL: ws -> http, wss -> https, path dropped.
---@param url string
---@return string|nil origin
function M.api_origin(url)
  local scheme, rest = url:match("^(%a+)://([^/?#]+)")
  if not scheme then return nil end
  scheme = scheme:lower()
  local map = { ws = "http", wss = "https", http = "http", https = "https" }
  if not map[scheme] then return nil end
  return map[scheme] .. "://" .. rest
end

-- The claims JSON of an access token is put together as text: tokens are the hot path of
-- this service, and a claims table encoded by cjson cost more than the signature. Every
-- value that comes from a caller goes through cjson.encode, so it is escaped as JSON.
local grant_fragments = setmetatable({}, { __mode = "k" })

-- ',"canPublish":true,...' for a grants table (from the roles policy), keys sorted.
local function grant_fragment(grants)
  local f = grant_fragments[grants]
  if f then return f end
  local keys = {}
  for k in pairs(grants) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = "," .. cjson.encode(k) .. ":" .. cjson.encode(grants[k]) end
  f = table.concat(parts)
  grant_fragments[grants] = f
  return f
end

local ISS_JSON = cjson.encode(settings.key)

-- The times of the claims as text, made once a second per TTL: formatting an integer costs
-- more than the rest of the claims' concatenation.
local times_at, times_ttl, head_text, nbf_text, times_exp

-- '"attributes":{"role":"candidate"},' for an attributes table (string -> string), keys
-- sorted; cached per table, so a caller that passes the same table (one per role) pays once.
local attribute_fragments = setmetatable({}, { __mode = "k" })

local function attribute_fragment(attrs)
  if attrs == nil then return "" end
  local f = attribute_fragments[attrs]
  if f then return f end
  local keys = {}
  for k, v in pairs(attrs) do
    assert(type(k) == "string" and type(v) == "string", "livekit.access_token: attributes must map strings to strings")
    keys[#keys + 1] = k
  end
  if #keys == 0 then f = "" else
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = cjson.encode(k) .. ":" .. cjson.encode(attrs[k]) end
    f = '"attributes":{' .. table.concat(parts, ",") .. "},"
  end
  attribute_fragments[attrs] = f
  return f
end

---An access token for a participant: valid from now for ttl seconds, or from nbf to exp
---when both are given (LiveKit refuses it before nbf, with 60 s of leeway). metadata and
---attributes come back to us in webhooks' and ListParticipants' ParticipantInfo, which is
---how a participant's role reaches the speakers policy.
---@param o { identity: string, name: string|nil, metadata: string|nil, attributes: table<string,string>|nil, room: string, grants: table, ttl: integer, nbf: integer|nil, exp: integer|nil }
---@return string token, integer expires_at
function M.access_token(o)
  local head, nbf, exp
  if o.exp then
    exp = math.tointeger(o.exp)
    head, nbf = '"exp":' .. exp .. ',"iss":' .. ISS_JSON, ',"nbf":' .. math.tointeger(o.nbf)
  else
    local now = math.floor(time.now())
    if now ~= times_at or o.ttl ~= times_ttl then
      times_at, times_ttl, times_exp = now, o.ttl, now + o.ttl
      head_text = '"exp":' .. times_exp .. ',"iss":' .. ISS_JSON
      nbf_text = ',"nbf":' .. now
    end
    head, nbf, exp = head_text, nbf_text, times_exp
  end
  local name = (o.name and o.name ~= "") and (',"name":' .. cjson.encode(o.name)) or ""
  local metadata = (o.metadata and o.metadata ~= "") and (',"metadata":' .. cjson.encode(o.metadata)) or ""
  local claims = "{" .. attribute_fragment(o.attributes) .. head .. metadata .. name .. nbf
    .. ',"sub":' .. cjson.encode(o.identity) .. ',"video":{"room":' .. cjson.encode(o.room)
    .. ',"roomJoin":true' .. grant_fragment(o.grants) .. "}}"
  return jwt.sign_json(claims, settings.secret), exp
end

---A short-lived token for our own server API calls (no identity).
---@param grant table video grant
---@return string
function M.admin_token(grant)
  local s = M.settings()
  local now = math.floor(time.now())
  return jwt.sign({ iss = s.key, nbf = now, exp = now + 600, video = grant }, s.secret)
end

-- Twirp error codes LiveKit sends, as our answers.
local function raise_twirp(status, body, url, method)
  local ok, doc = pcall(cjson.decode, body)
  local code = ok and type(doc) == "table" and doc.code or nil
  local msg = ok and type(doc) == "table" and doc.msg or body
  if status == 401 or code == "unauthenticated" or code == "permission_denied" then
    errors.raise(502, "LIVEKIT_AUTH",
      ("LiveKit at %s rejected our credentials (check LIVEKIT_API_KEY and LIVEKIT_API_SECRET): %s"):format(url, tostring(msg)))
  end
  if status == 404 and code ~= "bad_route" then
    errors.raise(404, "NOT_FOUND", ("livekit: %s"):format(tostring(msg)))
  end
  errors.raise(502, "LIVEKIT_ERROR",
    ("LiveKit %s failed with HTTP %d%s: %s"):format(method, status, code and (" (" .. code .. ")") or "", tostring(msg)))
end

---Calls a Twirp method; returns the decoded answer or raises.
---@param service string "RoomService" | "Egress"
---@param method string
---@param body table
---@param grant table
---@return table
function M.call(service, method, body, grant)
  local s = M.settings()
  local origin = M.api_origin(s.url)
  if not origin then
    errors.raise(500, "CONFIG", ("LIVEKIT_URL %q is not a ws://, wss://, http:// or https:// URL"):format(s.url))
  end
  local url = ("%s/twirp/livekit.%s/%s"):format(origin, service, method)
  local status, headers, raw = fetch {
    method = "POST", url = url, timeout = s.timeout, body = cjson.encode(body),
    headers = { ["Content-Type"] = "application/json", Authorization = "Bearer " .. M.admin_token(grant) },
  }
  if not status then
    errors.raise(503, "LIVEKIT_UNAVAILABLE", ("LiveKit unreachable at %s: %s"):format(url, tostring(headers)))
  end
  if status ~= 200 then raise_twirp(status, raw, origin, method) end
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= "table" then
    errors.raise(502, "LIVEKIT_ERROR", ("LiveKit %s answered with something that is not JSON"):format(method))
  end
  return doc
end

-- LiveKit answers int64 as strings; this makes them numbers.
local function int(v)
  return math.tointeger(tonumber(v)) or 0
end

local function room_of(r)
  return {
    sid = r.sid, name = r.name, max_participants = int(r.max_participants or r.maxParticipants),
    empty_timeout = int(r.empty_timeout or r.emptyTimeout),
    creation_time = int(r.creation_time or r.creationTime),
    num_participants = int(r.num_participants or r.numParticipants),
    metadata = r.metadata or "",
  }
end

---@param o { name: string, max_participants: integer|nil, empty_timeout: integer|nil, metadata: string|nil }
function M.create_room(o)
  local body = { name = o.name, maxParticipants = o.max_participants, emptyTimeout = o.empty_timeout,
                 metadata = o.metadata }
  return room_of(M.call("RoomService", "CreateRoom", body, { roomCreate = true }))
end

---@param names string[]|nil
function M.list_rooms(names)
  local doc = M.call("RoomService", "ListRooms", names and { names = names } or {}, { roomList = true })
  local rooms = {}
  for i, r in ipairs(doc.rooms or {}) do rooms[i] = room_of(r) end
  return rooms
end

function M.delete_room(name)
  M.call("RoomService", "DeleteRoom", { room = name }, { roomCreate = true })
end

function M.list_participants(room)
  local doc = M.call("RoomService", "ListParticipants", { room = room }, { roomAdmin = true, room = room })
  local list = {}
  for i, p in ipairs(doc.participants or {}) do
    list[i] = { sid = p.sid, identity = p.identity, name = p.name or "", state = p.state or "JOINING",
                metadata = p.metadata or "", joined_at = int(p.joined_at or p.joinedAt),
                is_publisher = p.is_publisher or p.isPublisher or false,
                attributes = type(p.attributes) == "table" and p.attributes or {},
                kind = type(p.kind) == "string" and p.kind or "STANDARD" }
  end
  return list
end

function M.remove_participant(room, identity)
  M.call("RoomService", "RemoveParticipant", { room = room, identity = identity }, { roomAdmin = true, room = room })
end

-- Egress (shared/protocols/livekit.md §3): every method takes the grant roomRecord.
local EGRESS_GRANT = { roomRecord = true }

-- An EgressInfo as we use it, from either key style (a webhook's camelCase, the API's
-- snake_case); anything but a string (JSON null included) is the field's default. Times
-- are unix nanoseconds (strings on the wire).
local function str(v, default)
  return type(v) == "string" and v or default
end

local function egress_of(e)
  local t = type(e.track) == "table" and e.track or {}
  return {
    egress_id = str(e.egress_id, nil) or str(e.egressId, nil), room_name = str(e.room_name or e.roomName, ""),
    status = str(e.status, "EGRESS_STARTING"), error = str(e.error, ""),
    track_id = str(t.track_id, nil) or str(t.trackId, ""), websocket_url = str(t.websocket_url or t.websocketUrl, ""),
    started_at = int(e.started_at or e.startedAt), ended_at = int(e.ended_at or e.endedAt),
  }
end
M.egress_of = egress_of

---Starts a Track Egress that streams one audio track, as raw PCM, to a WebSocket URL (ours:
---/ingest with a signed token). LiveKit answers at once; it dials the URL later, so a dial
---failure comes back as an egress_ended webhook with EGRESS_FAILED, not as an error here.
---@param room string
---@param track string track sid
---@param websocket_url string ws:// or wss://
---@return { egress_id: string, status: string, room_name: string, track_id: string, error: string }
function M.start_track_egress(room, track, websocket_url)
  local info = egress_of(M.call("Egress", "StartTrackEgress",
    { roomName = room, trackId = track, websocketUrl = websocket_url }, EGRESS_GRANT))
  if type(info.egress_id) ~= "string" or info.egress_id == "" then
    errors.raise(502, "LIVEKIT_ERROR", "LiveKit StartTrackEgress answered without an egress_id")
  end
  return info
end

---Stops an egress; raises 404 NOT_FOUND when LiveKit does not know it.
---@param egress_id string
function M.stop_egress(egress_id)
  return egress_of(M.call("Egress", "StopEgress", { egressId = egress_id }, EGRESS_GRANT))
end

---@param o { room: string|nil, egress_id: string|nil, active: boolean|nil }|nil
function M.list_egress(o)
  o = o or {}
  local doc = M.call("Egress", "ListEgress", { roomName = o.room, egressId = o.egress_id, active = o.active },
    EGRESS_GRANT)
  local out = {}
  for i, e in ipairs(doc.items or {}) do out[i] = egress_of(e) end
  return out
end

return M
