-- Small pieces of our own where no library fits: CSV, the route matcher, JSON arrays.
local csv = require "qc.csv"
local router = require "qc.router"
local json = require "qc.json"

describe("qc.csv", function()
  it("parses quoted fields with commas, quotes and line breaks", function()
    local rows = csv.parse('a,b,c\r\n"x, y","say ""hi""","two\nlines"\r\nlast,,\n')
    assert.equal(3, #rows)
    assert.same({ "x, y", 'say "hi"', "two\nlines" }, { rows[2][1], rows[2][2], rows[2][3] })
    assert.same({ "last", "", "" }, { rows[3][1], rows[3][2], rows[3][3] })
  end)

  it("numbers each record by the line it starts on", function()
    local rows = csv.parse('h\n"multi\nline"\nnext\n')
    assert.equal(1, rows[1].line)
    assert.equal(2, rows[2].line)
    assert.equal(4, rows[3].line)
  end)

  it("skips blank lines, a byte order mark and a missing final newline", function()
    local rows = csv.parse("\239\187\191h1,h2\n\na,b")
    assert.equal(2, #rows)
    assert.equal("h1", rows[1][1])
    assert.same({ "a", "b" }, { rows[2][1], rows[2][2] })
  end)

  it("rejects an unclosed quote with its line number", function()
    assert.has_error(function() csv.parse('h\nok\n"open,\nmore') end, 'line 3: a quoted field is not closed')
  end)

  it("rejects a stray quote inside a field", function()
    assert.has_error(function() csv.parse('a b"c\n') end, "line 1: a quote inside an unquoted field")
  end)

  it("writes what it reads", function()
    local line = csv.format_row({ "plain", "with, comma", 'q"uote', nil, "nl\n" }, 5)
    assert.equal('plain,"with, comma","q""uote",,"nl\n"\r\n', line)
    local back = csv.parse(line)[1]
    assert.same({ "plain", "with, comma", 'q"uote', "", "nl\n" }, { back[1], back[2], back[3], back[4], back[5] })
  end)

  it("keeps a field that starts with a byte order mark when it is written first (found by fuzz_csv)", function()
    local recs = csv.parse("\r\239\187\191x,y\n") -- the mark after a blank line is data
    assert.equal("\239\187\191x", recs[1][1])
    local line = csv.format_row(recs[1])
    assert.equal('"\239\187\191x",y\r\n', line)
    assert.equal("\239\187\191x", csv.parse(line)[1][1])
  end)
end)

describe("qc.router", function()
  local function h() end
  local function h2() end

  it("prefers exact paths and binds parameters", function()
    local r = router.compile({ { "GET", "/rooms/{room}", h }, { "GET", "/rooms/new", h2 } }, "t")
    assert.equal(h2, (r:match("GET", "/rooms/new")))
    local f, params = r:match("GET", "/rooms/x-1")
    assert.equal(h, f)
    assert.same({ room = "x-1" }, params)
  end)

  it("ignores a trailing slash", function()
    local r = router.compile({ { "GET", "/health", h } }, "t")
    assert.equal(h, (r:match("GET", "/health/")))
  end)

  it("reports the allowed methods for a known path", function()
    local r = router.compile({ { "GET", "/rooms/{room}", h }, { "DELETE", "/rooms/{room}", h2 } }, "t")
    local f, _, allow = r:match("PUT", "/rooms/a")
    assert.is_nil(f)
    assert.equal("DELETE, GET, OPTIONS", allow)
    assert.is_nil(select(3, r:match("PUT", "/nothing")))
  end)

  it("sends a method an exact path does not take on to a pattern that takes it (found by fuzz_router)", function()
    local r = router.compile({ { "POST", "/rooms/create", h }, { "DELETE", "/rooms/{room}", h2 } }, "t")
    assert.equal(h, (r:match("POST", "/rooms/create")))
    local f, params = r:match("DELETE", "/rooms/create")
    assert.equal(h2, f)
    assert.same({ room = "create" }, params)
    local _, _, allow = r:match("GET", "/rooms/create")
    assert.equal("DELETE, OPTIONS, POST", allow)
  end)

  it("rejects duplicates, bad methods, bad parameters and missing handlers", function()
    assert.has_error(function() router.compile({ { "GET", "/a", h }, { "GET", "/a", h } }, "f") end,
      "f: route 2 (GET /a): declared twice (first as route 1)")
    assert.has_error(function() router.compile({ { "BREW", "/a", h } }, "f") end)
    assert.has_error(function() router.compile({ { "GET", "/a/{b", h } }, "f") end)
    assert.has_error(function() router.compile({ { "GET", "/a/{x}/{x}", h } }, "f") end)
    assert.has_error(function() router.compile({ { "GET", "/a", nil } }, "f") end)
    assert.has_error(function() router.compile({}, "f") end, "f: declares no routes")
  end)

  it("gives a last {name...} segment the rest of the path, one segment or more", function()
    local r = router.compile({ { "GET", "/docs", h2 }, { "GET", "/docs/{file...}", h } }, "t")
    local f, params, _, pattern = r:match("GET", "/docs/vendor/ui/app.js")
    assert.equal(h, f)
    assert.same({ file = "vendor/ui/app.js" }, params)
    assert.equal("/docs/{file...}", pattern)
    assert.same({ file = "a" }, select(2, r:match("GET", "/docs/a")))
    local g, p2, _, pat2 = r:match("GET", "/docs")
    assert.equal(h2, g)
    assert.same({}, p2)
    assert.equal("/docs", pat2)
    assert.is_nil((r:match("GET", "/doc/a")))
    assert.equal("GET, OPTIONS", select(3, r:match("POST", "/docs/a/b")))
  end)

  it("keeps {x} and {x...} apart, and refuses a tail that is not last", function()
    local r = router.compile({ { "GET", "/f/{x}", h2 }, { "GET", "/f/{rest...}", h } }, "t")
    assert.equal(h2, (r:match("GET", "/f/a")))
    assert.equal(h, (r:match("GET", "/f/a/b")))
    assert.has_error(function() router.compile({ { "GET", "/f/{a...}", h }, { "GET", "/f/{b...}", h2 } }, "t") end)
    assert.has_error(function() router.compile({ { "GET", "/f/{a...}/x", h } }, "t") end,
      "t: route 1 (GET /f/{a...}/x): {a...} must be the last segment")
    assert.has_error(function() router.compile({ { "GET", "/f/{a..}", h } }, "t") end)
  end)
end)

describe("qc.json", function()
  it("encodes a marked empty table as an array and others as objects", function()
    assert.equal('{"a":[]}', json.encode({ a = json.array() }))
    assert.equal('{"a":{}}', json.encode({ a = {} }))
  end)

  it("leaves a string that looks like the marker alone", function()
    local s = json.encode({ a = json.array(), b = "qc-empty-array" })
    assert.matches('"b":"qc%-empty%-array"', s)
    assert.matches('"a":%[%]', s)
  end)
end)

describe("qc.source", function()
  local source = require "qc.source"
  local TEXT = [=[
-- a comment with { braces } and "quotes"
local M = {}
--[[ a long
comment { ]]
M.grants = {
  interviewer = { canPublish = true },
  agent = { hidden = true, canPublsh = true },
}
M.ttl_seconds = 5
M.examples = {
  { identity = "a", metadata = '{"role":"x", "y": [1, {2}]}' },
  { identity = [[b
c]] },
  { identity = "d" },
}
return {
  { "GET", "/", h },
  { "POST", "/x", h },
  { "GET", "/", h },
}
]=]
  local toks = source.tokens(TEXT)

  it("finds the line of a key path, skipping comments and strings", function()
    assert.equal(5, source.line_of(toks, { "grants" }))
    assert.equal(7, source.line_of(toks, { "grants", "agent", "canPublsh" }))
    assert.equal(9, source.line_of(toks, { "ttl_seconds" }))
  end)

  it("finds the n-th item of a table constructor, across strings with braces and line breaks", function()
    assert.equal(11, source.line_of(toks, { "examples", 1 }))
    assert.equal(12, source.line_of(toks, { "examples", 2 }))
    assert.equal(14, source.line_of(toks, { "examples", 3 }))
  end)

  it("falls back to the deepest key found", function()
    assert.equal(5, source.line_of(toks, { "grants", "nobody" }))
    assert.is_nil(source.line_of(toks, { "nothing" }))
    assert.equal(16, source.return_line(toks))
  end)

  it("finds a route by method and path, the second time for a duplicate, else by position", function()
    assert.equal(17, source.route_line(toks, 1, "GET", "/"))
    assert.equal(19, source.route_line(toks, 3, "GET", "/", 2))
    assert.equal(18, source.route_line(toks, 2, nil, nil))
  end)
end)

describe("qc.router line numbers", function()
  it("names the line of a bad entry when it is told where entries are", function()
    local function lines(i) return 10 + i end
    -- pcall, not assert.has_error: busted strips a leading "name:LINE: " from the message.
    local ok, err = pcall(router.compile, { { "GET", "/a", function() end }, { "GET", "/b", nil } }, "f", lines)
    assert.is_false(ok)
    assert.equal("f:12: route 2 (GET /b): handler must be a function, got nil", err)
    ok, err = pcall(router.compile, { "oops" }, "f", lines)
    assert.is_false(ok)
    assert.equal("f:11: route 1 must be a table { METHOD, PATH, handler }, got string", err)
  end)
end)

describe("qc.router routes of the same shape", function()
  local function lines(i) return 10 + i end
  local h = function() end

  it("rejects a second pattern that differs only in a parameter's name, naming both lines", function()
    local ok, err = pcall(router.compile, { { "GET", "/rooms/{room}/participants", h }, { "GET", "/health", h },
      { "GET", "/rooms/{x}/participants", h } }, "f", lines)
    assert.is_false(ok)
    assert.equal("f:13: route 3 (GET /rooms/{x}/participants): same path as route 1 (GET /rooms/{room}/participants)"
      .. " at f:11, which would always match first", err)
  end)

  it("names the first line of a route declared twice too", function()
    local ok, err = pcall(router.compile, { { "GET", "/a", h }, { "GET", "/a", h } }, "f", lines)
    assert.is_false(ok)
    assert.equal("f:12: route 2 (GET /a): declared twice (first as route 1 at f:11)", err)
  end)

  it("takes the same shape for another method, and other shapes for the same method", function()
    local r = router.compile({ { "GET", "/rooms/{room}", h }, { "DELETE", "/rooms/{name}", h },
      { "GET", "/rooms/{room}/x", h }, { "GET", "/{a}/{b}", h } }, "f", lines)
    local got, params = r:match("DELETE", "/rooms/r1")
    assert.equal(h, got)
    assert.same({ name = "r1" }, params)
  end)
end)
