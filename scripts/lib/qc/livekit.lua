-- LiveKit: access tokens and the RoomService client (Twirp JSON over qc.fetch).
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

---An access token for a participant: valid from now for ttl seconds, or from nbf to exp
---when both are given (LiveKit refuses it before nbf, with 60 s of leeway).
---@param o { identity: string, name: string|nil, metadata: string|nil, room: string, grants: table, ttl: integer, nbf: integer|nil, exp: integer|nil }
---@return string token, integer expires_at
function M.access_token(o)
  local head, nbf, exp
  if o.exp then
    exp = math.tointeger(o.exp)
    head, nbf = '{"exp":' .. exp .. ',"iss":' .. ISS_JSON, ',"nbf":' .. math.tointeger(o.nbf)
  else
    local now = math.floor(time.now())
    if now ~= times_at or o.ttl ~= times_ttl then
      times_at, times_ttl, times_exp = now, o.ttl, now + o.ttl
      head_text = '{"exp":' .. times_exp .. ',"iss":' .. ISS_JSON
      nbf_text = ',"nbf":' .. now
    end
    head, nbf, exp = head_text, nbf_text, times_exp
  end
  local name = (o.name and o.name ~= "") and (',"name":' .. cjson.encode(o.name)) or ""
  local metadata = (o.metadata and o.metadata ~= "") and (',"metadata":' .. cjson.encode(o.metadata)) or ""
  local claims = head .. name .. metadata .. nbf
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
                is_publisher = p.is_publisher or p.isPublisher or false }
  end
  return list
end

function M.remove_participant(room, identity)
  M.call("RoomService", "RemoveParticipant", { room = room, identity = identity }, { roomAdmin = true, room = room })
end

return M
