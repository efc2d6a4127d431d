-- Outbound HTTP through libcurl's poll handles on the libuv loop (runtime/net/http_client.c):
-- many transfers at once, small and large, on reused connections, against our own server.
local server = require "support.server"
local host = require "qc.host"

describe("many concurrent qc.fetch calls against the server", function()
  local s
  setup(function() s = server.start {} end)
  teardown(function() if s then s:stop() end end)

  -- Kept-alive connections make curl switch a socket it reads to POLLOUT and back; bodies
  -- of 768 KB fill the socket buffer, so a write has to wait for the socket to drain.
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
