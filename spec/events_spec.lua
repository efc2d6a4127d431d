-- qc.events: the one writer of the events table, and the parser of qc_events notification
-- payloads (any session of the database may NOTIFY that channel: a payload is not trusted).
local events = require "qc.events"
local server = require "support.server"

describe("qc.events payloads", function()
  it("carry seq, kind and the room last, spaces and all", function()
    local p = events.payload(42, "final", "room with spaces")
    assert.equal("42 final room with spaces", p)
    assert.same({ 42, "final", "room with spaces" }, { events.parse(p) })
  end)

  it("parse to nothing from any other shape", function()
    local bad = { "", " ", "42", "42 final", "42 final ", "x final r", "-1 final r", "4.5 final r", "42 FINAL r",
                  "42  final r", "99999999999999999999999 final r", ("1 final " .. ("r"):rep(2000)), "\n final r" }
    for _, s in ipairs(bad) do
      assert.is_nil((events.parse(s)), ("parsed %q"):format(s))
    end
    assert.is_nil((events.parse(nil)))
    assert.is_nil((events.parse(42)))
    assert.is_nil((events.parse({})))
  end)
end)

describe("qc.events.append", function()
  it("numbers a room's events from rooms.last_seq in the caller's transaction, and stores none for a room with no row", function()
    local dir = server.tmpdir()
    local db = server.open_db(dir)
    assert(db:run("INSERT INTO rooms (name, created_at) VALUES ('r', 0)"))
    local seqs = {}
    for i = 1, 3 do
      local ok, seq, body = db:transaction(function(tx)
        return events.append(tx, "r", "final", { identity = "a", text = "t" .. i, start_s = i, end_s = i + 1 },
          function(n) return { type = "transcript", seq = n, text = "t" .. i } end, 1000 + i)
      end)
      assert.is_true(ok)
      assert.matches('"seq":' .. seq, body)
      seqs[i] = seq
    end
    assert.same({ 1, 2, 3 }, seqs)
    -- Rolled back with the transaction: the number is taken again by the next event.
    local ok = pcall(function()
      db:transaction(function(tx)
        events.append(tx, "r", "final", {}, function(n) return { seq = n } end, 2000)
        error("spec: abort")
      end)
    end)
    assert.is_false(ok)
    local _, seq = db:transaction(function(tx)
      return events.append(tx, "r", "window", { text = "w" }, function(n) return { seq = n } end, 2001)
    end)
    assert.equal(4, seq)
    local rows = assert(db:query("SELECT seq, kind FROM events WHERE room = 'r' ORDER BY seq"))
    assert.equal(4, #rows)
    assert.equal("window", rows[4].kind)
    -- No room row: no number, no event, and the body still comes back.
    local _, none, body = db:transaction(function(tx)
      return events.append(tx, "nowhere", "window", {}, function(n) return { seq = n, x = 1 } end, 3000)
    end)
    assert.is_nil(none)
    assert.equal('{"x":1}', body)
    assert.equal(0, db:first("SELECT count(*) AS n FROM events WHERE room = 'nowhere'").n)
    db:close()
    os.execute("rm -rf " .. server.quote(dir))
  end)
end)
