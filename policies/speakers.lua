-- Speakers: which role a participant plays and which published tracks get transcribed.
--
-- Called for every accepted LiveKit webhook that names a participant (participant_joined,
-- track_published, ...) and for GET /rooms/{room}/participants. The answers are recorded
-- with the room's state; a track where transcribe() says yes gets a LiveKit Track Egress
-- that streams its audio to /ingest. Loaded and checked on start, reload and
-- `quantcoach check`.
--
-- role(participant, issued_role) -> one of roles.lua's roles, or nil
--   issued_role: the role of the token we issued for this room + identity (nil when we
--   issued none). It is authoritative: the server keeps it whatever role() answers.
-- transcribe(participant, track, role) -> boolean
--   participant: { identity, name, metadata, attributes, kind, issued_role }
--     attributes: the token's attributes claim as LiveKit hands it back (string -> string);
--     tokens we issue carry {role = ROLE} there and {"role":"ROLE"} in metadata.
--     kind: LiveKit's ParticipantInfo.Kind name, "STANDARD" when absent ("AGENT",
--     "EGRESS", "INGRESS", "SIP", ...).
--   track: { sid, type, source, name, muted }   (TrackInfo; type/source absent means AUDIO/UNKNOWN)
--   role: what role() answered (or the issued role)
--
-- Identities follow no naming rule: a role comes from the issued token, then the
-- attributes, then the metadata, and only then from the identity's form (roles.role_of).
--
-- Example: role({identity = "ada@example.com"}, "candidate") --> "candidate"
--          transcribe({identity = "cand-42", kind = "STANDARD"}, {sid = "TR_a", source = "MICROPHONE"}, "candidate") --> true
local policies = require "qc.policies"

local M = {}

local function is_role(v)
  if type(v) ~= "string" then return false end
  for _, r in ipairs(policies.roles.roles) do
    if r == v then return true end
  end
  return false
end

---The issued role comes as the second argument and as participant.issued_role alike.
---@param participant { identity: string, name: string|nil, metadata: string|nil, attributes: table<string,string>|nil, kind: string|nil, issued_role: string|nil }
---@return string|nil
function M.role(participant)
  if is_role(participant.issued_role) then return participant.issued_role end
  local attrs = participant.attributes
  if type(attrs) == "table" and is_role(attrs.role) then return attrs.role end
  return policies.roles.role_of(participant.identity or "", participant.metadata)
end

-- Participants that are machines: an AI agent's voice and an egress's are never interview speech.
local NEVER = { AGENT = true, EGRESS = true }

---Audio from the two humans is transcribed; agents', egresses' and everything else's is not.
---@param participant table
---@param track table
---@param role string|nil
---@return boolean
function M.transcribe(participant, track, role)
  if NEVER[participant.kind or "STANDARD"] then return false end
  local is_audio = (track.type == nil or track.type == "AUDIO")
  local source = track.source or "UNKNOWN"
  local from_mic = source == "MICROPHONE" or source == "UNKNOWN"
  return is_audio and from_mic and (role == "interviewer" or role == "candidate")
end

-- Contract examples, run by `quantcoach check` and on every reload: role(participant,
-- participant.issued_role) must give `role` (false: no role), then transcribe(participant,
-- track, that role) must give `transcribe`.
M.examples = {
  { participant = { identity = "cand-42", metadata = '{"role":"candidate"}' },
    track = { sid = "TR_a", source = "MICROPHONE" }, role = "candidate", transcribe = true },
  { participant = { identity = "interviewer" }, role = "interviewer", track = { sid = "TR_b" }, transcribe = true },
  { participant = { identity = "agent" }, track = { sid = "TR_c", source = "MICROPHONE" }, role = "agent",
    transcribe = false },
  { participant = { identity = "cand-42", metadata = '{"role":"candidate"}' },
    track = { sid = "TR_d", type = "VIDEO", source = "CAMERA" }, transcribe = false },
  -- Identities that follow no naming pattern: the issued role, then attributes.role.
  { participant = { identity = "ada@example.com", issued_role = "candidate" },
    track = { sid = "TR_e", source = "MICROPHONE" }, role = "candidate", transcribe = true },
  { participant = { identity = "x7Gq", attributes = { role = "interviewer" } },
    track = { sid = "TR_f", source = "MICROPHONE" }, role = "interviewer", transcribe = true },
  -- The issued role wins over what the participant's metadata says.
  { participant = { identity = "x7Gq", metadata = '{"role":"interviewer"}', issued_role = "candidate" },
    track = { sid = "TR_g", source = "MICROPHONE" }, role = "candidate", transcribe = true },
  { participant = { identity = "someone" }, track = { sid = "TR_h", source = "MICROPHONE" }, role = false,
    transcribe = false },
  -- Machines are never transcribed, whatever their role.
  { participant = { identity = "voice-bot", kind = "AGENT", issued_role = "interviewer" },
    track = { sid = "TR_i", source = "MICROPHONE" }, role = "interviewer", transcribe = false },
  { participant = { identity = "EG_rec", kind = "EGRESS", attributes = { role = "candidate" } },
    track = { sid = "TR_j", source = "MICROPHONE" }, transcribe = false },
}

return M
