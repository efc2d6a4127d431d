-- WebSocket peers for specs, run in the background (spec/support/ws_peer.js, the `ws` client;
-- spec/support/ws_slow.py, a client that does not read), and signed LiveKit webhooks made in
-- Lua with qc.jwt, as LiveKit makes them (shared/protocols/livekit.md §4).
--   local p = peers.feed(url, { "--silence", "2" })
--   local closed = p:wait_event("close")
local server = require "support.server"
local cjson = require "cjson"
local jwt = require "qc.jwt"
local time = require "qc.time"
local ingest = require "qc.ingest"

local M = {}

local Peer = {}
Peer.__index = Peer

local function spawn(cmd)
  local dir = server.tmpdir()
  local self = setmetatable({ out = dir .. "/out", pidfile = dir .. "/pid" }, Peer)
  assert(os.execute(("( %s > %s 2>&1 & echo $! > %s )"):format(cmd, server.quote(self.out), server.quote(self.pidfile))))
  return self
end

local function args_text(args)
  local q = {}
  for i, a in ipairs(args or {}) do q[i] = server.quote(a) end
  return table.concat(q, " ")
end

---An ingest source (ws_peer.js feed).
function M.feed(url, args)
  return spawn(("node %s/spec/support/ws_peer.js feed %s %s"):format(server.quote(server.source), server.quote(url),
    args_text(args)))
end

---A live client (ws_peer.js listen).
function M.listen(url, args)
  return spawn(("node %s/spec/support/ws_peer.js listen %s %s"):format(server.quote(server.source), server.quote(url),
    args_text(args)))
end

---A live client that stops reading after the handshake (ws_slow.py).
function M.slow(port, path, args)
  return spawn(("python3 %s/spec/support/ws_slow.py %d %s %s"):format(server.quote(server.source), port,
    server.quote(path), args_text(args)))
end

---Every JSON line the peer printed so far (other lines as {event="text", text=...}).
function Peer:events()
  local text = server.read_file(self.out) or ""
  local out = {}
  for line in text:gmatch("[^\n]+") do
    local ok, v = pcall(cjson.decode, line)
    out[#out + 1] = ok and type(v) == "table" and v or { event = "text", text = line }
  end
  return out
end

---The first event of that kind (waiting up to timeout seconds); raises with what the peer
---printed when none comes.
function Peer:wait_event(kind, timeout)
  local deadline = time.monotonic() + (timeout or 15)
  while true do
    for _, e in ipairs(self:events()) do
      if e.event == kind then return e end
    end
    if time.monotonic() >= deadline then
      error(("peer printed no %q event in time; it printed:\n%s"):format(kind, server.read_file(self.out) or ""), 2)
    end
    time.sleep(0.05)
  end
end

---The first event for which pred(e) holds, waiting up to timeout seconds.
function Peer:wait_for(pred, timeout, what)
  local deadline = time.monotonic() + (timeout or 15)
  while true do
    for _, e in ipairs(self:events()) do
      if pred(e) then return e end
    end
    if time.monotonic() >= deadline then
      error(("peer: timed out waiting for %s; it printed:\n%s"):format(what or "an event", server.read_file(self.out) or ""), 2)
    end
    time.sleep(0.05)
  end
end

---The messages a live client received, decoded.
function Peer:messages()
  local out = {}
  for _, e in ipairs(self:events()) do
    if e.event == "message" then out[#out + 1] = e.data end
  end
  return out
end

function Peer:kill()
  local pid = tonumber(server.read_file(self.pidfile) or "")
  if pid then os.execute(("kill %d 2>/dev/null"):format(pid)) end
end

---A role's token for identity in room, from POST /tokens/generate (headers: the API key, if any).
function M.role_token(s, room, identity, role, headers)
  local status, doc = s:request("POST", "/tokens/generate",
    { room_name = room, participant_identity = identity, participant_type = role }, headers)
  assert(status == 200, ("POST /tokens/generate: %s %s"):format(status, cjson.encode(doc)))
  return doc.token
end

---Tokens for every role of ids (role -> identity) in room: role -> token.
function M.role_tokens(s, room, ids, headers)
  local out = {}
  for role, identity in pairs(ids) do out[role] = M.role_token(s, room, identity, role, headers) end
  return out
end

---A live client of room on s with token (ws_peer.js listen); the caller waits for "open".
function M.live(s, room, token, args)
  return M.listen(("ws://127.0.0.1:%d/rooms/%s/live?token=%s"):format(s.port, room, token), args)
end

---One ingest source per role of ids (role -> identity), as Track Egress sends it: dir/ROLE.wav as
---track TR_ROLE under a signed ingest token, at speed times real time. Returns role -> peer.
function M.feed_roles(s, room, ids, dir, speed)
  local feeders = {}
  for role, identity in pairs(ids) do
    local t = ingest.token { room = room, identity = identity, track = "TR_" .. role }
    feeders[role] = M.feed(("ws://127.0.0.1:%d/ingest?t=%s"):format(s.port, t),
      { "--wav", dir .. "/" .. role .. ".wav", "--speed", tostring(speed or 2) })
  end
  return feeders
end

---Waits for every feeder to close and then for s to have no live track: the last utterance of
---a track is flushed when its connection closes.
function M.wait_fed(s, feeders)
  for _, f in pairs(feeders) do f:wait_event("close", 90) end
  server.wait_for(function()
    local _, h = s:request("GET", "/health")
    return h.tracks.live == 0
  end, 60, "every track to finish")
end

---A webhook delivery as LiveKit signs it: the Authorization value for body.
function M.sign_webhook(body, key, secret)
  local now = math.floor(time.now())
  return jwt.sign({ iss = key or "devkey", nbf = now, iat = now, exp = now + 300,
                    sha256 = jwt.sha256_base64(body) }, secret or "secret")
end

local next_id = 0

---POSTs a signed webhook event (a table; id and createdAt are filled in). Returns the status.
function M.webhook(s, ev)
  next_id = next_id + 1
  ev.id = ev.id or ("EV_spec_%d_%d"):format(math.floor(time.now() * 1000), next_id)
  ev.createdAt = ev.createdAt or tostring(math.floor(time.now()))
  local body = cjson.encode(ev)
  local status, doc = s:request("POST", "/webhooks/livekit", body,
    { ["Content-Type"] = "application/webhook+json", Authorization = M.sign_webhook(body) })
  return status, doc
end

---participant_joined / participant_left for identity in room.
function M.participant(s, event, room, identity, extra)
  local p = { sid = "PA_" .. identity, identity = identity, state = "ACTIVE" }
  for k, v in pairs(extra or {}) do p[k] = v end
  return M.webhook(s, { event = "participant_" .. event, room = { sid = "RM_" .. room, name = room }, participant = p })
end

return M
