-- The console (GET /console, web/console/): its files as the server serves them, and the page
-- itself in Debian's headless Chromium (spec/support/console_browser.js, over the DevTools
-- protocol with playwright-core) against the fake LiveKit, with the demo feed
-- (spec/support/demo.sh --server) playing real festival speech through /ingest into the
-- real pocketsphinx engine. The screenshot is left in the build directory (console.png).
local server = require "support.server"
local lk = require "support.fake_livekit"
local cjson = require "cjson"

local API_KEY = "spec-console-key-0123456789"
local quote = server.quote

local function curl(s, path, extra)
  local status, out = server.run(("curl -s --path-as-is -o /dev/null -w '%%{http_code} %%{content_type}' %s %s")
    :format(extra or "", quote(s.url .. path)))
  assert.equal(0, status, out)
  return out
end

describe("console files", function()
  local s
  setup(function() s = server.start {} end)
  teardown(function() if s then s:stop() end end)

  it("serves the page revalidated, its assets cached with ETags, and a strict CSP", function()
    local status, body, headers = s:request("GET", "/console")
    assert.equal(200, status)
    assert.equal("text/html; charset=utf-8", headers["content-type"])
    assert.equal("no-cache", headers["cache-control"])
    assert.equal("nosniff", headers["x-content-type-options"])
    assert.equal("DENY", headers["x-frame-options"])
    assert.truthy(headers["content-security-policy"]:find("default-src 'none'", 1, true))
    assert.truthy(headers["content-security-policy"]:find("script-src 'self'", 1, true))
    local js = body:match('src="(/console/app%.js)"')
    local css = body:match('href="(/console/style%.css)"')
    assert.is_string(js)
    assert.is_string(css)
    -- Nothing on the page comes from another host.
    assert.falsy(body:find('src="http', 1, true))
    assert.falsy(body:find('href="http', 1, true))

    local st, _, h = s:request("GET", js)
    assert.equal(200, st)
    assert.equal("text/javascript; charset=utf-8", h["content-type"])
    assert.equal("public, max-age=3600", h["cache-control"])
    assert.is_string(h["etag"])
    -- A copy the browser holds is revalidated, not sent again.
    st = s:request("GET", js, nil, { ["If-None-Match"] = h["etag"] })
    assert.equal(304, st)
    st, _, h = s:request("GET", css)
    assert.equal(200, st)
    assert.equal("text/css; charset=utf-8", h["content-type"])
    assert.equal("200 text/html; charset=utf-8", curl(s, "/console", "-I"))
  end)

  it("serves nothing outside web/console: every other name is a JSON answer, never a file", function()
    for _, path in ipairs {
      "/console/../policies/routes.lua", "/console/..%2Fpolicies%2Froutes.lua", "/console/%2e%2e",
      "/console/..", "/console/.hidden.js", "/console/app.js%00.html", "/console/app.lua",
      "/console/index", "/console/nope.js", "/console/app.js/x", "/console//etc/passwd",
      "/console/%2Fetc%2Fpasswd", "/console/index.html.bak", "/console/a.b.js",
    } do
      -- The router resolves dot segments first (`/console/..` is `/`, a JSON answer of its
      -- own); whatever reaches the console's handler is refused.
      local out = curl(s, path)
      assert.truthy(out:match("^%d+ application/json$"), path .. ": " .. out)
    end
    local status, body = s:request("GET", "/console/nope.js")
    assert.equal(404, status)
    assert.equal("NOT_FOUND", body.error.code)
  end)
end)

describe("console in Chromium", function()
  it("asks for the key, creates a room, shows both speakers live, a window, people and the report", function()
    local _, source = server.run("cd " .. quote(server.source) .. " && pwd")
    source = source:gsub("%s+$", "")
    local bin_dir = server.bin:match("^(.*)/[^/]*$") or "."
    local shot = bin_dir .. "/console.png"
    os.remove(shot)
    local fake = lk.start()
    local s = server.start { env = fake:env { QC_API_KEYS = API_KEY } }
    local room = "console-spec-1"
    -- Twice real time keeps the spec short; the local engine keeps up (e2e_audio_spec.lua).
    local feed = ("QC_BIN=%s sh %s --server %s --room %s --speed 2"):format(quote(server.bin),
      quote(source .. "/spec/support/demo.sh"), quote(s.url), quote(room))
    local status, out = server.run(("cd %s && node console_browser.js --timeout-ms 180000 --url %s --key %s --room %s --feed %s --screenshot %s")
      :format(quote(source .. "/spec/support"), quote(s.url), quote(API_KEY), quote(room), quote(feed), quote(shot)))
    local log = server.read_file(s.log)
    assert.equal(0, s:stop())
    fake:stop()
    assert(status == 0, "console_browser.js failed:\n" .. out .. "\nserver log:\n" .. log)
    local seen = cjson.decode(out:match("(%b{})%s*$"))

    assert.same({}, seen.page_errors)
    assert.same({}, seen.offsite)
    assert.truthy(seen.health:find("policies generation 1", 1, true))
    -- The three join tokens and links, and the LiveKit URL they are for.
    local created = {}
    for _, kv in ipairs(seen.created) do created[kv[1]] = kv[2] end
    assert.equal(room, created["Room"])
    assert.equal(fake.url, created["LiveKit URL"])
    for _, role in ipairs { "Interviewer", "Candidate", "Agent" } do
      assert.truthy(created[role .. " token"]:match("^ey[%w_-]+%.[%w_-]+%.[%w_-]+$"), role)
      assert.truthy(created[role .. " link"]:find(created[role .. " token"], 1, true), role)
    end
    assert.is_true(seen.clipboard_matches)
    assert.equal(room, seen.rooms_row[1])
    assert.equal("active", seen.rooms_row[2])
    assert.equal(0, seen.feed_exit)

    -- Both speakers, told apart by the role their track was recorded with.
    local roles = {}
    for _, l in ipairs(seen.lines) do roles[l.role] = (roles[l.role] or 0) + 1 end
    assert.truthy((roles.interviewer or 0) >= 2, out)
    assert.truthy((roles.candidate or 0) >= 2, out)
    assert.truthy(#seen.windows >= 1)
    assert.truthy(seen.windows[1]:find("^Window 1"))
    assert.same({ "Interviewer interviewer-demo", "Candidate candidate-demo" }, seen.heard)
    assert.same({ "Interviewer interviewer-demo", "Candidate candidate-demo" }, seen.people_joined)
    assert.same({ "Interviewer interviewer-demo" }, seen.people_after_leave)
    -- The dropped socket came back from where it was, and no line was shown twice (the page
    -- shows as many finals as the store has: console_browser.js waits for that).
    assert.truthy(tonumber(seen.resumed_url:match("since=(%d+)")) >= seen.dropped_at_seq)
    assert.truthy(seen.dropped_at_seq >= 1)
    local texts = {}
    for _, l in ipairs(seen.lines) do
      assert.is_nil(texts[l.text], "shown twice: " .. l.text)
      texts[l.text] = true
    end
    assert.truthy(seen.report:find(room, 1, true), seen.report)
    local png = server.read_file(shot)
    assert.truthy(png and png:sub(1, 8) == "\137PNG\r\n\26\n", "no screenshot at " .. shot)
  end)
end)
