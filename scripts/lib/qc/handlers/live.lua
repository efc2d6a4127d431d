-- GET /rooms/{room}/live[?since=N]: a WebSocket of the room's events in order: transcript
-- partials and finals, participant joined/left (later windows and evaluations), each stored
-- event with its sequence number. Authenticated with the participant's own LiveKit token for
-- this room (Authorization: Bearer, or ?token= since browsers cannot set headers on a
-- WebSocket) or an API key. A candidate's connection never receives evaluations.
local auth = require "qc.auth"
local errors = require "qc.errors"
local host = require "qc.host"
local jwt = require "qc.jwt"
local live = require "qc.live"
local livekit = require "qc.livekit"
local log = require "qc.log"
local rooms = require "qc.rooms"
local tracks = require "qc.tracks"
local cjson = require "cjson"

local M = {}

local keys_set = host.config().api_keys_set
-- Roles that see every kind of event; any other role (candidate, or one we cannot tell)
-- gets the candidate's filter.
local FULL_VIEW = { interviewer = true, agent = true }

local function role_claim(c)
  if type(c.attributes) == "table" and type(c.attributes.role) == "string" then return c.attributes.role end
  if type(c.metadata) == "string" then
    local ok, m = pcall(cjson.decode, c.metadata)
    if ok and type(m) == "table" and type(m.role) == "string" then return m.role end
  end
  return nil
end

---Who is connecting: {who, role, candidate}. Raises 401 (no or bad credential) or 403 (a
---participant token for another room).
---@param req table
---@param room string
function M.authorize(req, room)
  local token = auth.bearer(req) or (req.args and req.args.token)
  if not token or token == "" then
    if not keys_set then return { who = "dev", role = nil, candidate = false } end
    errors.raise(401, "UNAUTHORIZED",
      "live: send the participant's LiveKit token (Authorization: Bearer or ?token=) or an API key")
  end
  if keys_set then
    local id = host.check_api_key(token)
    if id then return { who = id, candidate = false } end
  end
  local s = livekit.settings()
  local c, err = jwt.verify(token, s.secret, { iss = s.key })
  if not c then errors.raise(401, "UNAUTHORIZED", "live: invalid token: " .. tostring(err)) end
  local video = type(c.video) == "table" and c.video or nil
  if c.aud ~= nil or not video or video.roomJoin ~= true or type(c.sub) ~= "string" then
    errors.raise(401, "UNAUTHORIZED", "live: not a participant token")
  end
  if video.room ~= room then errors.raise(403, "FORBIDDEN", "live: the token is for another room") end
  -- The role we issued the token for is authoritative; the token's own claim otherwise.
  local role = tracks.issued_role(room, c.sub) or role_claim(c)
  return { who = c.sub, role = role, candidate = not FULL_VIEW[role] }
end

---GET /rooms/{room}/live[?since=N]
function M.live(req)
  local room = rooms.check_name(req.params.room, "room")
  local who = M.authorize(req, room)
  if not req.websocket then
    errors.raise(426, "UPGRADE_REQUIRED", "/rooms/{room}/live is a WebSocket endpoint: connect with Upgrade: websocket")
  end
  local since = 0
  if req.args and req.args.since ~= nil then
    since = math.tointeger(tonumber(req.args.since))
    if not since or since < 0 then errors.invalid("since", "must be a whole number, 0 or more") end
  end
  local conn = req:accept_websocket { max_message = live.MAX_MESSAGE, max_queued = live.QUEUE_BYTES }
  if not conn then return end -- the client has gone
  -- The replay and going live are one read of the store (qc.live's pump), so no event can
  -- slip between them, whichever instance commits it.
  local ok = live.subscribe(conn, { room = room, since = since, candidate = who.candidate, who = who.who })
  log.info("live", ok and "connected" or "replay overflowed", { room = room, who = who.who, role = who.role, since = since })
end

return M
