-- PostgreSQL stopped and restarted under load: a server on a PostgreSQL cluster of this spec's
-- own (spec/support/pg.sh, not the suite's shared one, which other specs use meanwhile) keeps
-- taking token requests and transcript finals while the cluster goes away and comes back.
-- While it is away every write answers 503 STORE_UNAVAILABLE saying so and /health says
-- degraded; after it is back writes succeed again without a restart of the server, and every
-- record that was acknowledged (a token whose 200 came back, a final announced on the live
-- socket) is in the store. Only with SPEC_PG_URL (ctest's pg_ run: the cluster tools are there).
local server = require "support.server"
local feeder = require "support.feeder"
local peers = require "support.peers"
local time = require "qc.time"
local cjson = require "cjson"

local API_KEY = "spec-pgrestart-key-0123456789"
local AUTH = { Authorization = "Bearer " .. API_KEY }
local ROOM = "pg-restart"

if not server.pg_url then
  describe("PostgreSQL stopped and restarted under load", function()
    pending("needs SPEC_PG_URL (a throwaway PostgreSQL cluster: ctest's pg_ entries)")
  end)
  return
end

local PG = server.source .. "/spec/support/pg.sh"

local function pg(args)
  local status, out = server.run(server.quote(PG) .. " " .. args)
  assert(status == 0, "pg.sh " .. args .. ": " .. tostring(out))
  return (out:gsub("%s+$", ""))
end

describe("PostgreSQL stopped and restarted under load", function()
  local dir, url
  setup(function()
    -- Right under /tmp: the cluster runs as the postgres user, who must reach its directory.
    local p = io.popen("mktemp -d /tmp/qc_pgrestart.XXXXXX")
    dir = p:read("l")
    p:close()
    assert(os.execute("chmod 755 " .. server.quote(dir)))
    url = pg("start " .. server.quote(dir .. "/pg")):match("postgres://%S+")
    assert(url, "no URL from pg.sh start")
  end)
  teardown(function()
    if dir then
      server.run(server.quote(PG) .. " stop " .. server.quote(dir .. "/pg") .. " --rm")
      os.execute("rm -rf " .. server.quote(dir))
    end
  end)

  it("answers clear errors while it is away, recovers after, and keeps every acknowledged record", function()
    local port = assert(url:match(":(%d+)/"))
    local s = feeder.start { env = { QC_API_KEYS = API_KEY, QC_STORE_URL = url } }
    local tokens = peers.role_tokens(s, ROOM, { interviewer = "iv-r" }, AUTH)
    local live = peers.live(s, ROOM, tokens.interviewer, { "--timeout", "120" })
    live:wait_event("open")

    local acked_tokens, acked_finals = {}, {}
    local refused = { tokens = 0, finals = 0 }
    local n = 0
    -- One token and one final per round; what happened to each is recorded.
    local function round()
      n = n + 1
      local identity = ("p-%d"):format(n)
      local status, body = s:request("POST", "/tokens/generate",
        { room_name = ROOM, participant_identity = identity, participant_type = "candidate" }, AUTH, 10)
      if status == 200 then
        acked_tokens[#acked_tokens + 1] = identity
      else
        assert.equal(503, status, cjson.encode(body))
        assert.equal("STORE_UNAVAILABLE", body.error.code)
        assert.is_true(#body.error.message > 0)
        refused.tokens = refused.tokens + 1
      end
      local text = ("final number %d"):format(n)
      status, body = s:request("POST", "/spec/finals", { room = ROOM, events = {
        { identity = "iv-r", role = "interviewer", track = "TR_iv", text = text, start = n, ["end"] = n + 0.5 } } }, AUTH, 10)
      if status == 200 then
        acked_finals[#acked_finals + 1] = text
      else
        assert.equal(503, status, cjson.encode(body))
        assert.equal("STORE_UNAVAILABLE", body.error.code)
        assert.matches("unavailable", body.error.message)
        refused.finals = refused.finals + 1
      end
      return status
    end

    for _ = 1, 20 do assert.equal(200, round()) end
    local before = #acked_finals

    -- PostgreSQL goes away; the load goes on (each refused write first waits the store's 5 s
    -- for a reconnect, so a few are enough).
    pg("stop " .. server.quote(dir .. "/pg"))
    local saw_degraded = false
    local away = time.monotonic()
    while refused.finals < 2 or refused.tokens < 2 do
      round()
      local _, h = s:request("GET", "/health")
      if h.status == "degraded" and h.store.state ~= "ok" then saw_degraded = true end
      assert.is_true(time.monotonic() - away < 60, "writes kept succeeding with PostgreSQL stopped")
    end
    assert.is_true(saw_degraded, "/health never said degraded while PostgreSQL was away")
    s:wait_log("warn store postgres down")

    -- Back on its port: the pool reconnects by itself, and writes succeed again.
    pg("start " .. server.quote(dir .. "/pg") .. " " .. port)
    local back
    server.wait_for(function()
      back = round() == 200
      return back
    end, 60, "writes to succeed after PostgreSQL came back")
    server.wait_for(function()
      local _, h = s:request("GET", "/health")
      return h.status == "ok" and h.store.state == "ok"
    end, 30, "/health to say ok again")
    for _ = 1, 10 do assert.equal(200, round()) end
    s:wait_log("info store postgres back")

    -- Every acknowledged record is stored: tokens whose 200 came back, finals answered 200.
    local db = s:db()
    local stored = {}
    for _, r in ipairs(assert(db:query("SELECT identity FROM tokens WHERE room = ?", ROOM))) do stored[r.identity] = true end
    for _, identity in ipairs(acked_tokens) do
      assert.is_true(stored[identity] == true, "an acknowledged token is not stored: " .. identity)
    end
    local texts = {}
    local rows = assert(db:query("SELECT seq, text FROM events WHERE room = ? AND kind = 'final' ORDER BY seq", ROOM))
    for _, r in ipairs(rows) do texts[r.text] = r.seq end
    db:close()
    for _, text in ipairs(acked_finals) do
      assert.is_not_nil(texts[text], "an acknowledged final is not stored: " .. text)
    end
    assert.is_true(#acked_finals > before)

    -- The live socket stayed open through it: every final it announced is stored, in order,
    -- and the finals after the restart reached it too.
    server.wait_for(function()
      local k = 0
      for _, m in ipairs(live:messages()) do if m.type == "transcript" and m.final then k = k + 1 end end
      return k >= #rows
    end, 20, "the live client to have every stored final")
    local last = 0
    for _, m in ipairs(live:messages()) do
      if m.type == "transcript" and m.final then
        assert.equal(texts[m.text], m.seq, "announced and not stored as such: " .. m.text)
        assert.is_true(m.seq > last)
        last = m.seq
      end
    end
    assert.equal(rows[#rows].seq, last)

    live:kill()
    assert.equal(0, s:stop())
  end)
end)
