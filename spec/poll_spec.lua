-- The two poll paths (runtime/uv_poll_dedup.c): the server reports the one it runs, the
-- sanitizer build runs without the dedup, and outbound HTTP through libcurl's poll handles
-- works on whichever path this build has. `make test` runs this spec on both builds.
local server = require "support.server"
local host = require "qc.host"

-- The build's own configuration, from the CMake cache next to the binary under test.
local function cache_value(name)
  local dir = server.bin:match("^(.*)/[^/]+$") or "."
  local text = server.read_file(dir .. "/CMakeCache.txt")
  if not text then return nil end
  return text:match("\n" .. name .. ":[%u]+=([^\n]*)")
end

describe("the poll path", function()
  it("is reported at start and is the one the build was configured with", function()
    local built = cache_value("QC_POLL_DEDUP_IN_BUILD")
    assert.truthy(built, "CMakeCache.txt next to " .. server.bin .. " says whether the dedup is built in")
    local s = server.start {}
    local state = s:log_text():match("listening address=%S+ port=%d+ .-poll_dedup=(%S+)")
    s:stop()
    assert.equal(built == "ON" and "on" or "off", state)
  end)

  it("in the sanitizer build is the plain one, without the dedup", function()
    if cache_value("QC_SANITIZE") ~= "ON" then
      -- the release build: nothing to check here, the test above covers it
      return
    end
    assert.equal("OFF", cache_value("QC_POLL_DEDUP_IN_BUILD"))
    local s = server.start {}
    local log = s:log_text()
    s:stop()
    assert.truthy(log:find("poll_dedup=off\n", 1, true), log)
  end)
end)

describe("many concurrent qc.fetch calls against the server", function()
  local s
  setup(function() s = server.start {} end)
  teardown(function() if s then s:stop() end end)

  -- Kept-alive connections make curl ask for POLLOUT on a socket it reads (the dedup's
  -- promised-writable path); bodies of 768 KB fill the socket buffer, so poll() says "not
  -- writable" and epoll has to be told after all.
  it("all complete with the right answers, small and large, on reused connections", function()
    local TASKS, EACH = 24, 12
    local big = ("x"):rep(768 * 1024)
    local results, finished = {}, 0
    for t = 1, TASKS do
      host.spawn(function()
        -- pcall: a task that raised would otherwise just never finish
        local ok, err = pcall(function()
          for i = 1, EACH do
            if (t + i) % 3 == 0 then
              local status, body = s:request("POST", "/webhooks/livekit", big,
                { ["Content-Type"] = "application/webhook+json" })
              results[#results + 1] = status == 400 and type(body) == "table" and body.error.code == "BAD_JSON"
            else
              local status, body = s:request("GET", "/health")
              results[#results + 1] = status == 200 and type(body) == "table" and body.status ~= nil
            end
          end
        end)
        if not ok then results[#results + 1] = tostring(err) end
        finished = finished + 1
      end)
    end
    server.wait_for(function() return finished == TASKS end, 120, "every task to finish")
    assert.equal(TASKS * EACH, #results)
    for i, ok in ipairs(results) do assert.equal(true, ok, "request " .. i) end
  end)
end)
