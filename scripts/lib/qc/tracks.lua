-- Speakers and track capture: who a participant is (the role we issued their token for
-- first, then what LiveKit hands back, then policies/speakers.lua), and the lifecycle of the
-- LiveKit Track Egress that streams a transcribed track to our /ingest.
--
-- Egress states (tracks.egress_state): LiveKit's own status names as it reports them
-- (EGRESS_STARTING, EGRESS_ACTIVE, EGRESS_ENDING, EGRESS_COMPLETE, EGRESS_FAILED,
-- EGRESS_ABORTED, EGRESS_LIMIT_REACHED), and two of ours: 'requesting' while
-- StartTrackEgress is in flight, 'backoff' while a retry waits. A track gets an egress when
-- its egress_state is NULL (never started) or 'backoff' (its retry is due), claimed by one
-- conditional UPDATE, so a repeated track_published never starts a second one.
local cjson = require "cjson"
local db = require "qc.db"
local errors = require "qc.errors"
local host = require "qc.host"
local ingest = require "qc.ingest"
local livekit = require "qc.livekit"
local log = require "qc.log"
local policies = require "qc.policies"
local rooms = require "qc.rooms"
local time = require "qc.time"

local M = {}

local function is_role(v)
  return type(v) == "string" and rooms.is_role(v, policies.roles)
end

-- States in which LiveKit has (or may have) an egress running for the track.
local RUNNING = { EGRESS_STARTING = true, EGRESS_ACTIVE = true, requesting = true }
M.RUNNING = RUNNING
-- egress_ended statuses that are failures worth a retry while the track is published.
local FAILED = { EGRESS_FAILED = true, EGRESS_ABORTED = true, EGRESS_LIMIT_REACHED = true }

-- Seconds before retry n (1, 2, 4, ... at most a minute).
local function backoff(attempts)
  return math.min(60, 1 << math.min(6, math.max(0, attempts - 1)))
end
M.backoff = backoff

---The most StartTrackEgress calls one publication of a track gets: the first and
---QC_EGRESS_RETRIES retries.
function M.max_attempts()
  return 1 + (host.config().egress_retries or 3)
end

-- ---- speakers --------------------------------------------------------------------------

---The role of the latest token we issued for room + identity, or nil.
---@param room string
---@param identity string
---@return string|nil
function M.issued_role(room, identity)
  if type(room) ~= "string" or type(identity) ~= "string" then return nil end
  local row = db.first([[SELECT role FROM tokens WHERE room = ? AND identity = ?
                         ORDER BY issued_at DESC, id DESC LIMIT 1]], room, identity)
  local role = row and row.role
  -- A role since removed from roles.lua is no role now.
  if role and not is_role(role) then return nil end
  return role
end

local function string_map(v)
  if type(v) ~= "table" then return {} end
  local out = {}
  for k, s in pairs(v) do
    if type(k) == "string" and type(s) == "string" then out[k] = s end
  end
  return out
end

---What the speakers policy sees of a participant: identity, name, metadata, attributes,
---kind (LiveKit's enum name, "STANDARD" when absent) and issued_role.
---@param p table ParticipantInfo-like: camelCase or snake_case keys, as LiveKit sends them
---@param issued_role string|nil
---@return table
function M.participant_view(p, issued_role)
  return {
    identity = p.identity or "", name = type(p.name) == "string" and p.name or "",
    metadata = type(p.metadata) == "string" and p.metadata or "",
    attributes = string_map(p.attributes),
    kind = type(p.kind) == "string" and p.kind ~= "" and p.kind or "STANDARD",
    issued_role = issued_role,
  }
end

---A participant's role: speakers.role(participant, issued_role), where the issued role is
---authoritative: a policy that answers another role for a participant we issued a token
---for is overruled (and logged). An answer that is not one of roles.lua's roles is nil.
---@param room string
---@param p table ParticipantInfo-like
---@return string|nil role, table view the participant as the policy saw it
function M.speaker(room, p)
  local issued = M.issued_role(room, p.identity)
  local view = M.participant_view(p, issued)
  local role = policies.speakers.role(view, issued)
  if issued and role ~= issued then
    log.warn("speakers", "policy role overruled by the issued token's role",
      { room = room, identity = view.identity, policy_role = tostring(role), issued_role = issued })
    role = issued
  end
  if role ~= nil and not is_role(role) then
    log.warn("speakers", "policy gave a role that is not one of roles.lua's", { room = room, identity = view.identity,
      role = tostring(role) })
    role = nil
  end
  return role, view
end

---The participant as we recorded it at participant_joined (or just its identity), merged
---with what an event carries (track_* events carry only sid and identity).
---@param room string
---@param p table
---@return table
function M.known_participant(room, p)
  local row = db.first("SELECT name, metadata, attributes, kind FROM participants WHERE room = ? AND identity = ?",
    room, p.identity)
  if not row then return p end
  local attrs
  if type(row.attributes) == "string" and row.attributes ~= "" then
    local ok, doc = pcall(cjson.decode, row.attributes)
    if ok then attrs = doc end
  end
  return {
    identity = p.identity, sid = p.sid,
    name = p.name or row.name, metadata = p.metadata or row.metadata,
    attributes = p.attributes or attrs, kind = p.kind or row.kind,
  }
end

-- ---- egress lifecycle ------------------------------------------------------------------

-- Runs fn(...) as a task of its own, after the caller's transaction has committed (the
-- webhook answers at once; LiveKit calls never sit in its critical path). Errors are logged.
local function spawn(what, fn, ...)
  host.spawn(function(...)
    local ok, err = pcall(fn, ...)
    if not ok then log.error("egress", what .. " failed", { error = errors.message(err) }) end
  end, ...)
end
M.spawn = spawn

local stop_egress

---Starts the egress of a track that should have one (in the calling task). Does nothing
---unless this call claims the track: transcribed, still published, and no egress yet or
---its retry due.
---@param sid string track sid
function M.start_egress(sid)
  -- The claim and what it claimed in one statement: on a shared store another instance's
  -- webhook may claim the same track; the row lock lets one UPDATE match.
  local t = db.first([[UPDATE tracks SET egress_state = 'requesting', egress_id = NULL,
                         egress_attempts = egress_attempts + 1
                       WHERE sid = ? AND transcribe = 1 AND unpublished_at IS NULL
                         AND (egress_state IS NULL OR egress_state = 'backoff')
                       RETURNING room, identity, role, egress_attempts]], sid)
  if not t then return end
  local token = ingest.token { room = t.room, identity = t.identity, track = sid }
  local ok, info = pcall(livekit.start_track_egress, t.room, sid, ingest.url(token))
  if not ok then
    local msg = errors.message(info)
    log.warn("egress", "start failed", { room = t.room, track = sid, attempt = t.egress_attempts, error = msg })
    M.failed(sid, nil, "StartTrackEgress: " .. msg)
    return
  end
  -- Conditional: an egress_ended webhook may already have answered for this egress.
  db.run("UPDATE tracks SET egress_id = ?, egress_state = ? WHERE sid = ? AND egress_state = 'requesting'",
    info.egress_id, info.status, sid)
  log.info("egress", "started", { room = t.room, identity = t.identity, role = t.role, track = sid,
    egress = info.egress_id, attempt = t.egress_attempts })
  -- The track may have ended while LiveKit was being asked; its stop found no egress id then.
  local now = db.first("SELECT unpublished_at FROM tracks WHERE sid = ?", sid)
  if now and now.unpublished_at then stop_egress(sid) end
end

---Records a failure of a track's egress (egress_id nil: the start call failed) and, while
---the track is published and attempts are left, schedules a retry after the backoff.
---Runs inside or outside a transaction; `after` (a list) receives the retry to spawn once
---it has committed, else the retry is spawned at once.
---@param sid string
---@param status string|nil LiveKit's status, nil when our call failed
---@param reason string
---@param after function[]|nil
function M.failed(sid, status, reason, after)
  local t = db.first("SELECT room, egress_attempts, unpublished_at FROM tracks WHERE sid = ?", sid)
  if not t then return end
  local max = M.max_attempts()
  if not t.unpublished_at and t.egress_attempts < max then
    db.run("UPDATE tracks SET egress_state = 'backoff', egress_error = ? WHERE sid = ?", reason, sid)
    local delay = backoff(t.egress_attempts)
    log.warn("egress", "will retry", { room = t.room, track = sid, attempt = t.egress_attempts, max = max,
      delay_s = delay, error = reason })
    local function retry()
      spawn("egress retry", function()
        time.sleep(delay)
        M.start_egress(sid)
      end)
    end
    if after then after[#after + 1] = retry else retry() end
  else
    db.run("UPDATE tracks SET egress_state = ?, egress_error = ? WHERE sid = ?", status or "EGRESS_FAILED", reason, sid)
    if not t.unpublished_at then
      log.error("egress", "gave up", { room = t.room, track = sid, attempts = t.egress_attempts, error = reason })
    end
  end
end

---Stops the egress of a track if LiveKit may be running one (in the calling task). A
---LiveKit that no longer knows the egress (it ended, or its room is gone) is not an error.
---@param sid string
function stop_egress(sid)
  local t = db.first("SELECT room, egress_id, egress_state FROM tracks WHERE sid = ?", sid)
  if not t or not t.egress_id or not RUNNING[t.egress_state] then return end
  local ok, info = pcall(livekit.stop_egress, t.egress_id)
  if ok then
    db.run("UPDATE tracks SET egress_state = ? WHERE sid = ? AND egress_id = ?", info.status, sid, t.egress_id)
    log.info("egress", "stopped", { room = t.room, track = sid, egress = t.egress_id, status = info.status })
  elseif type(info) == "table" and info.status == 404 then
    db.run("UPDATE tracks SET egress_state = 'EGRESS_COMPLETE' WHERE sid = ? AND egress_id = ?", sid, t.egress_id)
    log.info("egress", "already gone", { room = t.room, track = sid, egress = t.egress_id })
  else
    log.warn("egress", "stop failed", { room = t.room, track = sid, egress = t.egress_id, error = errors.message(info) })
  end
end
M.stop_egress = stop_egress

---Tracks of a room (of one identity, when given) that may have an egress running.
---@param room string
---@param identity string|nil
---@return string[] sids
function M.running(room, identity)
  local rows
  if identity then
    rows = db.query("SELECT sid, egress_state FROM tracks WHERE room = ? AND identity = ? AND egress_id IS NOT NULL",
      room, identity)
  else
    rows = db.query("SELECT sid, egress_state FROM tracks WHERE room = ? AND egress_id IS NOT NULL", room)
  end
  local out = {}
  for _, r in ipairs(rows) do
    if RUNNING[r.egress_state] then out[#out + 1] = r.sid end
  end
  return out
end

---Marks a room's tracks (one identity's, when given) unpublished and returns the ones whose
---egress should be stopped.
---@param room string
---@param identity string|nil
---@param now integer
---@return string[] sids
function M.end_tracks(room, identity, now)
  if identity then
    db.run("UPDATE tracks SET unpublished_at = ? WHERE room = ? AND identity = ? AND unpublished_at IS NULL",
      now, room, identity)
  else
    db.run("UPDATE tracks SET unpublished_at = ? WHERE room = ? AND unpublished_at IS NULL", now, room)
  end
  return M.running(room, identity)
end

---Spawns one task that stops each of sids' egresses.
---@param sids string[]
function M.stop_later(sids)
  if #sids == 0 then return end
  spawn("egress stop", function()
    for _, sid in ipairs(sids) do stop_egress(sid) end
  end)
end

---Applies an egress_started / egress_updated / egress_ended webhook to the track it is for.
---@param event string
---@param info table the event's egressInfo
---@param after function[] work to spawn once the webhook's transaction has committed
function M.egress_event(event, info, after)
  local e = livekit.egress_of(info)
  if not e.egress_id or e.egress_id == "" then return end
  local row = db.first("SELECT sid, egress_id FROM tracks WHERE egress_id = ?", e.egress_id)
  if not row and e.track_id ~= "" then
    -- The webhook can beat the answer to StartTrackEgress: adopt the id of the call in flight.
    local claimed = db.run([[UPDATE tracks SET egress_id = ? WHERE sid = ? AND egress_state = 'requesting'
                             AND egress_id IS NULL]], e.egress_id, e.track_id)
    if claimed > 0 then row = { sid = e.track_id, egress_id = e.egress_id } end
  end
  if not row then
    log.info("egress", "webhook for an egress we do not track", { event = event, egress = e.egress_id })
    return
  end
  if event == "egress_ended" and FAILED[e.status] then
    M.failed(row.sid, e.status, e.status .. (e.error ~= "" and (": " .. e.error) or ""), after)
  else
    db.run("UPDATE tracks SET egress_state = ? WHERE sid = ? AND egress_id = ?", e.status, row.sid, e.egress_id)
    log.info("egress", (event:gsub("^egress_", "")), { track = row.sid, egress = e.egress_id, status = e.status })
  end
end

return M
