-- Ingest tokens: the signed key in the URL of /ingest, the only credential an ingest
-- connection has (LiveKit's Track Egress sends no auth header, shared/protocols/livekit.md §3).
-- A JWT, HS256 with LIVEKIT_API_SECRET, iss = LIVEKIT_API_KEY; its audience
-- "quantcoach-ingest" keeps a LiveKit participant token (no aud) from passing as one, and
-- an ingest token is no use to LiveKit (no video grant).
local jwt = require "qc.jwt"
local host = require "qc.host"
local time = require "qc.time"
local livekit = require "qc.livekit"

local M = {}

M.AUDIENCE = "quantcoach-ingest"
M.DEFAULT_RATE = 48000 -- what Egress sends: s16le, 48 kHz, 2 channels interleaved
M.DEFAULT_CHANNELS = 2
-- Formats a source other than Egress may declare. Bounds, not a list: the pipeline
-- resamples any rate, but a rate or channel count past these is a mistake or an attack.
M.MIN_RATE, M.MAX_RATE = 8000, 192000
M.MAX_CHANNELS = 8
-- Seconds of clock difference forgiven when a token is checked (a feeder's token may be
-- minted by `quantcoach token --ingest` on another machine).
M.LEEWAY = 5

local math_type, tointeger, type = math.type, math.tointeger, type

local function config()
  return host.config()
end

local function check_rate(v)
  v = type(v) == "number" and tointeger(v)
  if not v or v < M.MIN_RATE or v > M.MAX_RATE then return nil end
  return v
end

local function check_channels(v)
  v = type(v) == "number" and tointeger(v)
  if not v or v < 1 or v > M.MAX_CHANNELS then return nil end
  return v
end

M.check_rate, M.check_channels = check_rate, check_channels

---A signed ingest token for one track. rate and channels are for sources other than Egress
---and are left out when they are Egress's (the verifier fills in the defaults).
---@param o { room: string, identity: string, track: string, rate: integer|nil, channels: integer|nil, ttl: integer|nil }
---@return string token, integer exp unix seconds
function M.token(o)
  assert(type(o.room) == "string" and o.room ~= "", "ingest.token: room must be a non-empty string")
  assert(type(o.identity) == "string" and o.identity ~= "", "ingest.token: identity must be a non-empty string")
  assert(type(o.track) == "string" and o.track ~= "", "ingest.token: track must be a non-empty string")
  local ttl = o.ttl or config().ingest_token_ttl
  assert(math_type(ttl) == "integer" and ttl > 0, "ingest.token: ttl must be a positive integer")
  local claims = { iss = livekit.settings().key, aud = M.AUDIENCE, sub = o.identity, room = o.room,
                   track = o.track }
  if o.rate ~= nil then
    claims.rate = assert(check_rate(o.rate), "ingest.token: rate must be an integer from 8000 to 192000")
  end
  if o.channels ~= nil then
    claims.channels = assert(check_channels(o.channels), "ingest.token: channels must be an integer from 1 to 8")
  end
  local now = math.floor(time.now())
  claims.nbf, claims.exp = now, now + ttl
  return jwt.sign(claims, livekit.settings().secret), claims.exp
end

---The ws(s)://HOST[:PORT] base LiveKit's egress dials: QC_PUBLIC_URL, with http -> ws and
---https -> wss and any path dropped; without it, the listen address with the port the
---server bound. A wildcard listen address (0.0.0.0, ::) names no host a peer can dial:
---127.0.0.1 is used, which reaches a LiveKit on this machine only (set QC_PUBLIC_URL).
---@return string
function M.public_base()
  local c = config()
  local public = c.public_url or ""
  if public ~= "" then
    local origin = M.ws_origin(public)
    -- config.c refuses any other QC_PUBLIC_URL at start; this only guards a direct call.
    assert(origin, "QC_PUBLIC_URL is not an http(s):// or ws(s):// URL")
    return (origin:gsub("^(%a+://).*@", "%1")) -- no userinfo in a URL handed to another service
  end
  local h, port = host.listen_address()
  if h == "" or h == "0.0.0.0" or h == "::" or h == "[::]" then h = "127.0.0.1" end
  if h:find(":", 1, true) and not h:find("^%[") then h = "[" .. h .. "]" end
  return ("ws://%s:%d"):format(h, port)
end

local WS_SCHEME = { http = "ws", ws = "ws", https = "wss", wss = "wss" }

---The WebSocket origin of a server's URL: "https://h:1/x" -> "wss://h:1", "http://..." ->
---"ws://...", ws(s) as it is; nil for any other scheme.
---@param url string
---@return string|nil
function M.ws_origin(url)
  local scheme, hostport = tostring(url):match("^(%a+)://([^/?#]+)")
  scheme = scheme and WS_SCHEME[scheme:lower()]
  return scheme and scheme .. "://" .. hostport
end

---The URL an ingest source connects to.
---@param token string from M.token
---@return string "ws(s)://PUBLIC/ingest?t=TOKEN"
function M.url(token)
  -- A compact JWS is base64url and dots: nothing in it needs escaping in a query.
  return M.public_base() .. "/ingest?t=" .. token
end

local function nonempty(v) return type(v) == "string" and v ~= "" end

---Checks an ingest token: signature, iss, nbf/exp (with M.LEEWAY), aud, and the claims the
---pipeline needs. rate and channels are filled in with Egress's when the token has none.
---@param token string|nil
---@return { room: string, identity: string, track: string, rate: integer, channels: integer, exp: integer, nbf: integer|nil }|nil claims
---@return string|nil message why not
---@return string|nil code a stable code: qc.jwt's (EXPIRED, BAD_SIGNATURE, ...), or BAD_AUDIENCE, BAD_CLAIMS
function M.verify(token)
  if type(token) ~= "string" or token == "" then return nil, "ingest: no token", "MISSING" end
  local s = livekit.settings()
  local c, err, code = jwt.verify(token, s.secret, { iss = s.key, leeway = M.LEEWAY })
  if not c then return nil, "ingest: " .. tostring(err), code or "INVALID" end
  if c.aud ~= M.AUDIENCE then return nil, "ingest: not an ingest token (aud)", "BAD_AUDIENCE" end
  if not nonempty(c.sub) or not nonempty(c.room) or not nonempty(c.track) then
    return nil, "ingest: the token must name room, identity (sub) and track", "BAD_CLAIMS"
  end
  local rate, channels = M.DEFAULT_RATE, M.DEFAULT_CHANNELS
  if c.rate ~= nil then
    rate = check_rate(c.rate) -- cjson decodes every number as a float: 16000.0 is whole, 16000.5 is not
    if not rate then return nil, "ingest: bad rate in the token", "BAD_CLAIMS" end
  end
  if c.channels ~= nil then
    channels = check_channels(c.channels)
    if not channels then return nil, "ingest: bad channels in the token", "BAD_CLAIMS" end
  end
  return { room = c.room, identity = c.sub, track = c.track, rate = rate, channels = channels,
           rate_in_token = c.rate ~= nil, channels_in_token = c.channels ~= nil,
           exp = c.exp, nbf = c.nbf }
end

return M
