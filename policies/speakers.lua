-- Speakers: which role a participant plays and which published tracks get transcribed.
--
-- Called for every accepted LiveKit webhook that names a participant (participant_joined,
-- track_published, ...). The answers are recorded with the room's state; the audio pipeline
-- starts transcription for tracks where transcribe() said yes. Loaded and checked on start,
-- reload and `quantcoach check`.
--
-- role(participant) -> "interviewer" | "candidate" | "agent" | nil
-- transcribe(participant, track, role) -> boolean
--   participant: { identity, name, metadata, kind }   (LiveKit ParticipantInfo, camelCase keys)
--   track:       { sid, type, source, name, muted }    (TrackInfo; type/source absent means AUDIO/UNKNOWN)
--
-- Example: transcribe({identity="cand-42"}, {sid="TR_a", source="MICROPHONE"}, "candidate") --> true
local policies = require "qc.policies"

local M = {}

---@param participant table
---@return string|nil
function M.role(participant)
  return policies.roles.role_of(participant.identity or "", participant.metadata)
end

---Audio from the two humans is transcribed; the agent's and everything else's is not.
---@param participant table
---@param track table
---@param role string|nil
---@return boolean
function M.transcribe(participant, track, role)
  local is_audio = (track.type == nil or track.type == "AUDIO")
  local source = track.source or "UNKNOWN"
  local from_mic = source == "MICROPHONE" or source == "UNKNOWN"
  return is_audio and from_mic and (role == "interviewer" or role == "candidate")
end

M.examples = {
  { participant = { identity = "cand-42", metadata = '{"role":"candidate"}' },
    track = { sid = "TR_a", source = "MICROPHONE" }, transcribe = true },
  { participant = { identity = "interviewer" }, track = { sid = "TR_b" }, transcribe = true },
  { participant = { identity = "agent" }, track = { sid = "TR_c", source = "MICROPHONE" }, transcribe = false },
  { participant = { identity = "cand-42", metadata = '{"role":"candidate"}' },
    track = { sid = "TR_d", type = "VIDEO", source = "CAMERA" }, transcribe = false },
}

return M
