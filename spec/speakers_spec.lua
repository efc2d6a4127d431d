-- Speaker attribution: every token we issue carries its role where LiveKit hands it back (attributes and
-- metadata, checked with the official SDK's TokenVerifier), the role recorded when we issued the token is
-- authoritative for its room + identity, and policies/speakers.lua sees all of it.
local server = require "support.server"
local lk = require "support.fake_livekit"
local hooks = require "support.webhooks"
local cjson = require "cjson"
local csv = require "qc.csv"
local rooms = require "qc.rooms"

local query, event, post = hooks.query, hooks.event, hooks.post

local function joined(s, room, p)
  p.sid = p.sid or ("PA_" .. p.identity)
  p.state, p.joinedAt = "ACTIVE", tostring(os.time())
  local status, res = post(s, event("participant_joined", room, { participant = p }))
  assert.equal(200, status, s:log_text())
  return res
end

local function published(s, room, identity, sid)
  local status = post(s, event("track_published", room, {
    participant = { sid = "PA_" .. identity, identity = identity },
    track = { sid = sid, name = "microphone", source = "MICROPHONE", mimeType = "audio/opus" },
  }))
  assert.equal(200, status, s:log_text())
end

local function claims_of(tokens)
  local out = {}
  for i, r in ipairs(lk.verify(tokens)) do
    assert.is_true(r.ok, r.error)
    out[i] = r.claims
  end
  return out
end

-- What LiveKit hands back of a token: ParticipantInfo's metadata and attributes are the token's.
local function role_in(claims)
  return claims.attributes and claims.attributes.role, cjson.decode(claims.metadata).role
end

describe("roles in tokens", function()
  local fake, s
  setup(function() fake, s = lk.serve() end)
  teardown(function() lk.shutdown(fake, s) end)

  it("are carried in the attributes and metadata of /tokens/generate and /rooms/create tokens", function()
    local status, body = s:request("POST", "/tokens/generate", { room_name = "sp-1", participant_identity = "cand-42",
      participant_name = "Ada", participant_type = "candidate" })
    assert.equal(200, status)
    local c = claims_of({ body.token })[1]
    assert.same({ "candidate", "candidate" }, { role_in(c) })
    assert.equal("cand-42", c.sub)
    assert.equal("Ada", c.name)

    status, body = s:request("POST", "/rooms/create", { room_name = "sp-1b" })
    assert.equal(200, status)
    local cs = claims_of({ body.interviewer_token, body.candidate_token, body.agent_token })
    for i, role in ipairs { "interviewer", "candidate", "agent" } do
      assert.same({ role, role }, { role_in(cs[i]) })
    end
  end)

  it("are carried by quantcoach token and the batch script's tokens", function()
    local code, out = server.run(("env QC_ENV_FILE=/nonexistent %s token --room R --identity x7Gq --role interviewer")
      :format(server.quote(server.bin)))
    assert.equal(0, code, out)
    assert.same({ "interviewer", "interviewer" }, { role_in(claims_of({ out:match("%S+") })[1]) })

    local dir = server.tmpdir()
    server.write_file(dir .. "/in.csv", "room_name,candidate\nsp-batch-1,Ada\n")
    local vars = { "QC_ENV_FILE=/nonexistent", "QC_DATA=" .. server.quote(dir .. "/data") }
    for k, v in pairs(fake:env()) do vars[#vars + 1] = k .. "=" .. server.quote(v) end
    code, out = server.run(("env %s %s run %s %s --out %s"):format(table.concat(vars, " "), server.quote(server.bin),
      server.quote(server.source .. "/scripts/batch_rooms.lua"), server.quote(dir .. "/in.csv"),
      server.quote(dir .. "/out.csv")))
    assert.equal(0, code, out)
    local records = csv.parse(server.read_file(dir .. "/out.csv"))
    local row = {}
    for j, name in ipairs(records[1]) do row[name] = records[2][j] end
    local cs = claims_of({ row.interviewer_token, row.candidate_token, row.agent_token })
    for i, role in ipairs { "interviewer", "candidate", "agent" } do
      assert.same({ role, role }, { role_in(cs[i]) })
    end
  end)

  it("keep a caller's JSON metadata with the role set in it, and plain-text metadata as it is", function()
    assert.equal('{"role":"candidate"}', rooms.token_metadata("candidate", nil))
    assert.equal('{"role":"candidate"}', rooms.token_metadata("candidate", ""))
    assert.same({ team = "q", role = "candidate" }, cjson.decode(rooms.token_metadata("candidate", '{"team":"q"}')))
    -- The issued role wins over one the caller wrote.
    assert.same({ role = "candidate" }, cjson.decode(rooms.token_metadata("candidate", '{"role":"interviewer"}')))
    assert.equal("seat 4, quiet room", rooms.token_metadata("candidate", "seat 4, quiet room"))
    assert.equal("[1,2]", rooms.token_metadata("candidate", "[1,2]"))
    assert.equal("{broken", rooms.token_metadata("candidate", "{broken"))
    assert.same({ role = "agent" }, rooms.token_attributes("agent"))
  end)
end)

describe("speaker attribution", function()
  local fake, s
  setup(function() fake, s = lk.serve() end)
  teardown(function() lk.shutdown(fake, s) end)

  local function participant_row(room, identity)
    return query(s, "SELECT * FROM participants WHERE room = ? AND identity = ?", room, identity)[1]
  end
  local function track_row(sid)
    return query(s, "SELECT * FROM tracks WHERE sid = ?", sid)[1]
  end

  it("records the README's candidate cand-42 as a candidate whose microphone is transcribed, end to end", function()
    -- As the README does it: a room, then a token for cand-42 with participant_type candidate.
    assert.equal(200, (s:request("POST", "/rooms/create", { room_name = "interview-7", max_participants = 3 })))
    local status, body = s:request("POST", "/tokens/generate", { room_name = "interview-7",
      participant_identity = "cand-42", participant_name = "Ada", participant_type = "candidate" })
    assert.equal(200, status)
    local c = claims_of({ body.token })[1]
    -- LiveKit hands the token's metadata and attributes back in the webhooks' ParticipantInfo.
    joined(s, "interview-7", { identity = "cand-42", name = "Ada", metadata = c.metadata, attributes = c.attributes })
    assert.equal("candidate", participant_row("interview-7", "cand-42").role)
    published(s, "interview-7", "cand-42", "TR_readme")
    local t = track_row("TR_readme")
    assert.equal(1, t.transcribe)
    assert.equal("candidate", t.role)
    local call = server.wait_for(function()
      for _, x in ipairs(fake:calls("StartTrackEgress")) do
        if x.body.trackId == "TR_readme" then return x end
      end
    end, 10, "the candidate's egress")
    assert.equal("interview-7", call.body.roomName)

    fake:add_participant { room = "interview-7", identity = "cand-42", name = "Ada", metadata = c.metadata,
      attributes = c.attributes }
    local _, list = s:request("GET", "/rooms/interview-7/participants")
    assert.equal("candidate", list.participants[1].role)
  end)

  it("takes the issued role when LiveKit hands back neither attributes nor metadata", function()
    assert.equal(200, (s:request("POST", "/tokens/generate", { room_name = "sp-2", participant_identity = "ada@example.com",
      participant_type = "candidate" })))
    published(s, "sp-2", "ada@example.com", "TR_sp2a") -- before its participant_joined: webhooks are not ordered
    joined(s, "sp-2", { identity = "ada@example.com" })
    assert.equal("candidate", participant_row("sp-2", "ada@example.com").role)
    local t = track_row("TR_sp2a")
    assert.equal(1, t.transcribe)
    assert.equal("candidate", t.role)
  end)

  it("keeps the issued role over the metadata or attributes a participant shows, latest token first", function()
    assert.equal(200, (s:request("POST", "/tokens/generate", { room_name = "sp-3", participant_identity = "x7Gq",
      participant_type = "candidate" })))
    assert.equal(200, (s:request("POST", "/tokens/generate", { room_name = "sp-3", participant_identity = "x7Gq",
      participant_type = "interviewer" })))
    joined(s, "sp-3", { identity = "x7Gq", metadata = '{"role":"agent"}', attributes = { role = "candidate" } })
    assert.equal("interviewer", participant_row("sp-3", "x7Gq").role)
    -- A token for another room says nothing about this one: attributes decide there.
    joined(s, "sp-3b", { identity = "x7Gq", attributes = { role = "candidate" } })
    assert.equal("candidate", participant_row("sp-3b", "x7Gq").role)
  end)

  it("lists participants with the issued role first, then attributes, metadata and the identity", function()
    assert.equal(200, (s:request("POST", "/rooms/create", { room_name = "sp-4" })))
    assert.equal(200, (s:request("POST", "/tokens/generate", { room_name = "sp-4", participant_identity = "ada@example.com",
      participant_type = "candidate" })))
    fake:add_participant { room = "sp-4", identity = "ada@example.com", metadata = '{"role":"interviewer"}' }
    fake:add_participant { room = "sp-4", identity = "x7Gq", attributes = { role = "interviewer" } }
    fake:add_participant { room = "sp-4", identity = "q1", metadata = '{"role":"candidate"}' }
    fake:add_participant { room = "sp-4", identity = "agent-1", kind = "AGENT" }
    fake:add_participant { room = "sp-4", identity = "someone" }
    local status, body = s:request("GET", "/rooms/sp-4/participants")
    assert.equal(200, status, s:log_text())
    local roles = {}
    for _, p in ipairs(body.participants) do roles[p.identity] = p.role or false end
    assert.same({ ["ada@example.com"] = "candidate", x7Gq = "interviewer", q1 = "candidate", ["agent-1"] = "agent",
      someone = false }, roles)
  end)

  it("never transcribes a participant of kind AGENT or EGRESS, whatever its role", function()
    joined(s, "sp-5", { identity = "voice", kind = "AGENT", attributes = { role = "interviewer" } })
    joined(s, "sp-5", { identity = "EG_rec", kind = "EGRESS", attributes = { role = "candidate" } })
    published(s, "sp-5", "voice", "TR_sp5a")
    published(s, "sp-5", "EG_rec", "TR_sp5b")
    assert.equal("AGENT", participant_row("sp-5", "voice").kind)
    assert.equal(0, track_row("TR_sp5a").transcribe)
    assert.equal("interviewer", track_row("TR_sp5a").role)
    assert.equal(0, track_row("TR_sp5b").transcribe)
  end)

  it("refuses a participant whose attributes are not an object of strings, or whose kind is not a string", function()
    for _, p in ipairs {
      { identity = "a", attributes = { role = 5 } },
      { identity = "a", attributes = "role=candidate" },
      { identity = "a", kind = 3 },
    } do
      local body = event("participant_joined", "sp-6", { participant = p })
      local status, res = post(s, body)
      assert.equal(400, status, body)
      assert.equal("BAD_EVENT", res.error.code)
      assert.matches("participant%.%a+", res.error.message)
    end
    assert.equal(0, #query(s, "SELECT * FROM participants WHERE room = 'sp-6'"))
  end)

  it("takes a JSON null in a participant or track field as absent, not as a 500 (found by fuzz_dispatch)", function()
    local status = post(s, event("participant_joined", "sp-6b", { participant = { identity = "candidate-6", name = cjson.null,
      kind = cjson.null, attributes = cjson.null, metadata = cjson.null } }))
    assert.equal(200, status, s:log_text())
    local row = participant_row("sp-6b", "candidate-6")
    assert.same({ "candidate", "STANDARD" }, { row.role, row.kind })
    status = post(s, event("track_published", "sp-6b", { participant = { identity = "candidate-6" },
      track = { sid = "TR_sp6b", type = cjson.null, source = cjson.null } }))
    assert.equal(200, status, s:log_text())
    assert.equal(1, track_row("TR_sp6b").transcribe)
  end)
end)

describe("the speakers policy", function()
  it("is overruled by the issued role, and says so in the log", function()
    local dir = server.copy_policies()
    -- A policy that calls everyone a candidate, issued role or not.
    server.write_file(dir .. "/speakers.lua", [[
local M = {}
function M.role(participant, issued_role) return "candidate" end
function M.transcribe(participant, track, role) return role == "interviewer" end
M.examples = {}
return M
]])
    local s = server.start { policies = dir, env = { LIVEKIT_URL = "ws://127.0.0.1:1" } }
    finally(function() s:stop() end)
    assert.equal(200, (s:request("POST", "/tokens/generate", { room_name = "sp-7", participant_identity = "bob",
      participant_type = "interviewer" })))
    joined(s, "sp-7", { identity = "bob" })
    published(s, "sp-7", "bob", "TR_sp7")
    local row = query(s, "SELECT role, transcribe FROM tracks WHERE sid = 'TR_sp7'")[1]
    assert.same({ role = "interviewer", transcribe = 1 }, row)
    assert.matches("warn speakers policy role overruled[^\n]*identity=bob[^\n]*issued_role=interviewer",
      s:wait_log("policy role overruled"))
  end)

  it("is rejected when one of its examples gives another role than it says", function()
    local dir = server.copy_policies()
    local path = dir .. "/speakers.lua"
    local text = server.read_file(path)
    local changed = text:gsub('identity = "x7Gq", attributes = { role = "interviewer" } },\n    track = { sid = "TR_f", source = "MICROPHONE" }, role = "interviewer"',
      'identity = "x7Gq", attributes = { role = "interviewer" } },\n    track = { sid = "TR_f", source = "MICROPHONE" }, role = "candidate"')
    assert.are_not.equal(text, changed)
    server.write_file(path, changed)
    local code, out = server.run(("env QC_ENV_FILE=/nonexistent %s check --policies %s"):format(
      server.quote(server.bin), server.quote(dir)))
    assert.equal(1, code, out)
    assert.matches("speakers%.lua:%d+: example %d+: role returned interviewer, expected candidate", out)
  end)
end)
