-- The shipped windows policy (policies/windows.lua) through the windows runner
-- (scripts/lib/qc/windows.lua): every final in a window, starts 10 s apart without turns,
-- no window over 20 s, a turn after the minimum closes early, and a reload mid-interview
-- (a fresh policy and runner over the state kept in a real SQLite file) loses and repeats
-- no window.
local server = require "support.server"
local windows = require "qc.windows"
local cjson = require "cjson"

local POLICY_FILE = server.source .. "/policies/windows.lua"

local function load_policy(edit)
  local text = server.read_file(POLICY_FILE)
  if edit then text = edit(text) end
  return assert(load(text, "@windows.lua", "t", _ENV))()
end

-- Runs finals (in arrival order) through a policy in memory and finishes the interview.
local function run(policy, finals)
  local st, out = windows.new_state(), {}
  for _, f in ipairs(finals) do
    for _, w in ipairs(windows.step(policy, st, "r1", f)) do out[#out + 1] = w end
  end
  for _, w in ipairs(windows.finish(policy, st, "r1")) do out[#out + 1] = w end
  return out
end

local function final(seq, role, start, stop, text)
  return { seq = seq, identity = role .. "-1", role = role, start = start, ["end"] = stop,
           text = text or ("words of final " .. seq) }
end

-- One speaker, back to back 2.5 s finals from 0 to `length` s.
local function monologue(length)
  local out, t, seq = {}, 0, 0
  while t < length do
    seq = seq + 1
    out[#out + 1] = final(seq, "candidate", t, t + 2.5)
    t = t + 2.5
  end
  return out
end

-- A seeded random interview: turns of 1-4 finals of 1-6 s, gaps of 0-4 s (sometimes a
-- negative gap: an overlap), and each final arriving up to 2 finals late.
local function random_interview(seed, n)
  math.randomseed(seed)
  local list, t, role, seq = {}, math.random() * 3, "interviewer", 0
  while #list < n do
    for _ = 1, math.random(1, 4) do
      seq = seq + 1
      local d = 1 + math.random() * 5
      list[#list + 1] = final(seq, role, t, t + d)
      t = t + d + (math.random() < 0.2 and -0.5 or math.random() * 4)
      if t < 0 then t = 0 end
    end
    role = role == "interviewer" and "candidate" or "interviewer"
  end
  for i = #list, 2, -1 do
    if math.random() < 0.3 then
      local j = math.max(1, i - math.random(1, 2))
      list[i], list[j] = list[j], list[i]
    end
  end
  return list
end

local function assert_every_final_placed(finals, out)
  local seen = {}
  for _, w in ipairs(out) do
    for _, f in ipairs(w.finals) do seen[f.seq] = (seen[f.seq] or 0) + 1 end
  end
  for _, f in ipairs(finals) do
    assert(seen[f.seq], ("final %d (%.2f-%.2f) is in no window"):format(f.seq, f.start, f["end"]))
  end
end

local function assert_well_formed(out, length)
  for i, w in ipairs(out) do
    assert.equal(i, w.index)
    assert.is_true(w["end"] > w.start, "window " .. i .. " is empty in time")
    assert.is_true(w["end"] - w.start <= length + 1e-9, ("window %d is %.2f s long"):format(i, w["end"] - w.start))
  end
end

describe("the shipped windows policy", function()
  local policy = load_policy()

  it("has the backend's parameters: 20 s windows, a new one every 10 s", function()
    assert.equal(20, policy.length)
    assert.equal(10, policy.hop)
    assert.is_true(policy.min_length > 0 and policy.min_length < policy.length)
  end)

  it("starts windows 10 s apart and closes each at 20 s when nobody changes turn", function()
    local finals = monologue(95)
    local out = run(policy, finals)
    assert.is_true(#out >= 9)
    for i, w in ipairs(out) do
      assert.equal((i - 1) * 10, w.start)
      if i < #out - 1 then assert.equal(w.start + 20, w["end"]) end
    end
    assert_every_final_placed(finals, out)
    assert_well_formed(out, 20)
  end)

  it("closes a window early at a speaker turn once it is at least min_length long", function()
    local finals = {
      final(1, "interviewer", 0.5, 4), final(2, "interviewer", 4.2, 9), final(3, "interviewer", 9.2, 11.5),
      final(4, "candidate", 12, 15), final(5, "candidate", 15.5, 19),
    }
    local out = run(policy, finals)
    -- Window 1 [0, 12): the turn at 12 s came 12 s in. The window opened at 10 s was 2 s
    -- old at the turn, under the minimum: it stays open and runs its course.
    assert.same({ 0, 12 }, { out[1].start, out[1]["end"] })
    assert.same({ 1, 2, 3 }, { out[1].finals[1].seq, out[1].finals[2].seq, out[1].finals[3].seq })
    assert.equal("Interviewer: words of final 1 words of final 2 words of final 3", out[1].text)
    local starts = {}
    for _, w in ipairs(out) do starts[#starts + 1] = w.start end
    -- The window opened at the turn (12 s) ends with the interview at 19 s, as window 2 does:
    -- it holds only finals window 2 judged in full, and is not emitted again.
    assert.same({ 0, 10 }, starts)
    assert.matches("^Interviewer: words of final 3 / Candidate: words of final 4", out[2].text)
    assert_every_final_placed(finals, out)
  end)

  it("keeps a window open at a turn before min_length", function()
    local finals = { final(1, "interviewer", 0, 3), final(2, "candidate", 3.5, 6), final(3, "interviewer", 6.5, 7.5) }
    local out = run(policy, finals)
    assert.equal(1, #out)
    assert.same({ 1, 2, 3 }, { out[1].finals[1].seq, out[1].finals[2].seq, out[1].finals[3].seq })
  end)

  it("puts every final of random interviews in a window, none longer than 20 s, numbered in order", function()
    for seed = 1, 40 do
      local finals = random_interview(seed, 60)
      local out = run(policy, finals)
      assert_every_final_placed(finals, out)
      assert_well_formed(out, 20)
    end
  end)

  it("takes a final that arrives after its windows closed into the next window", function()
    local policy_, st = policy, windows.new_state()
    local out = {}
    local function add(list) for _, w in ipairs(list) do out[#out + 1] = w end end
    for _, f in ipairs(monologue(40)) do add(windows.step(policy_, st, "r1", f)) end
    -- An interviewer's final from 3 s to 5 s, reported when windows 1 and 2 are gone.
    add(windows.step(policy_, st, "r1", final(99, "interviewer", 3, 5)))
    add(windows.finish(policy_, st, "r1"))
    local found
    for _, w in ipairs(out) do
      for _, f in ipairs(w.finals) do if f.seq == 99 then found = w end end
    end
    assert.truthy(found, "the late final is in no window")
    assert.is_true(found.start > 5)
  end)

  it("skips the empty windows of a long silence", function()
    local finals = { final(1, "interviewer", 0, 4), final(2, "candidate", 300, 304) }
    local out = run(policy, finals)
    assert.equal(2, #out)
    assert.equal(1, out[1].finals[1].seq)
    assert.equal(2, out[2].finals[1].seq)
    assert.is_true(out[2].start <= 300 and out[2].start >= 290)
  end)
end)

describe("the windows runner", function()
  it("keeps working when the policy raises: the windows stay open and the final is kept", function()
    local bad = { length = 20, hop = 10, min_length = 8, decide = function() error("boom") end }
    local st = windows.new_state()
    assert.same({}, windows.step(bad, st, "r1", final(1, "candidate", 0, 3)))
    -- The interview ends with the broken policy still live: the runner's own last window.
    local out = windows.finish(bad, st, "r1")
    assert.equal(1, #out)
    assert.equal(1, out[1].finals[1].seq)
  end)

  it("refuses a decision that would make a window longer than the policy's length", function()
    local greedy = load_policy()
    local decide = greedy.decide
    greedy.decide = function(s)
      local d = decide(s)
      for _, c in ipairs(d.close) do c["end"] = c["end"] + 30 end
      return d
    end
    local st = windows.new_state()
    for _, f in ipairs(monologue(60)) do
      for _, w in ipairs(windows.step(greedy, st, "r1", f)) do
        assert.is_true(w["end"] - w.start <= 20)
      end
    end
  end)

  it("loses and repeats no window when the policy is reloaded mid-interview", function()
    local dir = server.tmpdir()
    local db = server.open_db(dir)
    assert(db:run("INSERT INTO rooms (name, created_at) VALUES ('r1', 0)"))
    local finals = random_interview(7, 80)
    local out = {}
    local function add(list) for _, w in ipairs(list) do out[#out + 1] = w end end

    -- The first half with the shipped policy and this runner.
    local policy = load_policy()
    for i = 1, 40 do add(windows.commit(db, policy, "r1", finals[i], 1000 + i)) end
    -- A reload: a fresh runner module and a policy with other rules (12 s windows, 6 s hop).
    package.loaded["qc.windows"] = nil
    local windows2 = require "qc.windows"
    assert.are_not.equal(windows, windows2)
    local edited = load_policy(function(t)
      return (t:gsub("M%.length = 20", "M.length = 12"):gsub("M%.hop = 10", "M.hop = 6"))
    end)
    assert.equal(12, edited.length)
    for i = 41, #finals do add(windows2.commit(db, edited, "r1", finals[i], 1000 + i)) end
    add(windows2.commit(db, edited, "r1", nil, 2000))

    assert_every_final_placed(finals, out)
    for i, w in ipairs(out) do
      assert.equal(i, w.index)
      assert.is_true(w["end"] - w.start <= 20 + 1e-9)
    end
    -- Stored once each, in order, each with its own event.
    local rows = assert(db:query("SELECT idx, seq, body FROM windows WHERE room = 'r1' ORDER BY idx"))
    assert.equal(#out, #rows)
    local events = assert(db:query("SELECT seq, body FROM events WHERE room = 'r1' AND kind = 'window' ORDER BY seq"))
    assert.equal(#out, #events)
    for i, r in ipairs(rows) do
      assert.equal(i, r.idx)
      assert.equal(events[i].seq, r.seq)
      local msg = cjson.decode(r.body)
      assert.equal("window", msg.type)
      assert.equal(i, msg.index)
      assert.equal(out[i].text, msg.text)
    end
    -- The windows after the reload follow the new rules.
    local short = 0
    for i = 1, #out do if out[i]["end"] - out[i].start <= 12 + 1e-9 then short = short + 1 end end
    assert.is_true(short > 0)
    db:close()
    os.execute("rm -rf " .. server.quote(dir))
  end)

  it("closes windows by the clock alone in a silence, opens none, and writes nothing before one is due", function()
    local dir = server.tmpdir()
    local db = server.open_db(dir)
    local policy = load_policy()
    local out = {}
    for i, f in ipairs({ final(1, "candidate", 1, 4), final(2, "candidate", 5, 9), final(3, "candidate", 11, 13) }) do
      for _, w in ipairs(windows.commit(db, policy, "r3", f, i)) do out[#out + 1] = w end
    end
    assert.equal(0, #out) -- [0, 20] and [10, 30] are open; the clock is 13
    local function updated() return db:first("SELECT updated_at FROM window_state WHERE room = 'r3'").updated_at end
    local before = updated()
    -- 21.9 s: nothing due (20 s + 2 s grace), and nothing written.
    assert.equal(0, #windows.commit(db, policy, "r3", 21.9, 50))
    assert.equal(before, updated())
    -- 22 s: [0, 20] closes with its three finals; [10, 30] stays open, nothing opens at 20 or 30.
    local w = windows.commit(db, policy, "r3", 22, 51)
    assert.equal(1, #w)
    assert.same({ 1, 0, 20, 3 }, { w[1].index, w[1].start, w[1]["end"], #w[1].finals })
    local st = cjson.decode(db:first("SELECT state FROM window_state WHERE room = 'r3'").state)
    assert.equal(1, #st.open)
    assert.equal(10, st.open[1].start)
    -- 40 s: [10, 30] would hold only final 3, already judged in full: it closes unannounced.
    assert.equal(0, #windows.commit(db, policy, "r3", 40, 52))
    st = cjson.decode(db:first("SELECT state FROM window_state WHERE room = 'r3'").state)
    assert.equal(0, #st.open)
    -- A later final starts at its own hop, and numbering goes on from 2.
    assert.equal(0, #windows.commit(db, policy, "r3", final(4, "candidate", 61, 64), 53))
    local last = windows.commit(db, policy, "r3", nil, 54)
    assert.same({ 2, 60, 64 }, { last[1].index, last[1].start, last[1]["end"] })
    db:close()
    os.execute("rm -rf " .. server.quote(dir))
  end)

  it("matches a run in memory when the state goes through the store", function()
    local dir = server.tmpdir()
    local db = server.open_db(dir)
    local policy = load_policy()
    local finals = random_interview(11, 50)
    local stored = {}
    for i, f in ipairs(finals) do
      for _, w in ipairs(windows.commit(db, policy, "r2", f, i)) do stored[#stored + 1] = w end
    end
    for _, w in ipairs(windows.commit(db, policy, "r2", nil, 99)) do stored[#stored + 1] = w end
    local mem = run(policy, finals)
    assert.equal(#mem, #stored)
    for i = 1, #mem do
      assert.same({ mem[i].start, mem[i]["end"], mem[i].text }, { stored[i].start, stored[i]["end"], stored[i].text })
    end
    -- No room row: nothing was numbered for the live socket.
    assert.equal(0, db:first("SELECT count(*) AS n FROM events").n)
    db:close()
    os.execute("rm -rf " .. server.quote(dir))
  end)
end)

describe("windows.lua's contract", function()
  it("is checked on load: a wrong example is named with its line", function()
    local dir = server.copy_policies()
    local path = dir .. "/windows.lua"
    local text = server.read_file(path)
    server.write_file(path, (text:gsub("expect = { open = { 0 }, close = {} }", "expect = { open = { 5 }, close = {} }", 1)))
    local p = io.popen(("%s check --policies %s 2>&1"):format(server.quote(server.bin), server.quote(dir)))
    local outp = p:read("a")
    local ok = p:close()
    assert.is_falsy(ok)
    assert.matches("windows.lua:" .. server.line_of(path, "{ state = { clock = 3, open = {}") .. ": example 1: decide returned open {0}", outp, 1, true)
  end)
end)
