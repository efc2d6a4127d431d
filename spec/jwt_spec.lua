-- qc.jwt from Lua: the binding over runtime/jwt_hs256.c (the C side has its own tests).
local jwt = require "qc.jwt"

-- shared/protocols/livekit.md §4: the worked webhook example.
local BODY = '{"event":"participant_joined","room":{"sid":"RM_abc","name":"interview-7","emptyTimeout":300,"creationTime":"1767225600","numParticipants":1},"participant":{"sid":"PA_x","identity":"cand-42","state":"ACTIVE","joinedAt":"1767225601","name":"Ada","kind":"STANDARD"},"id":"EV_8sdFq3Wk2mGh","createdAt":"1767225601"}'
local AUTH = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzaGEyNTYiOiJ0Z2IyakF3QWFQN3RlQjdDVzlQUndlN1dTWmtqaVp6VEZhcW9tRzZMTnlzPSIsImlzcyI6ImRldmtleSIsImlhdCI6MTc2NzIyNTYwMSwibmJmIjoxNzY3MjI1NjAxLCJleHAiOjE3NjcyMjU5MDF9.ek09OwpWp6lWOkuhkTsN9N1I8GaMAWCN3jAE99THjWI"

describe("qc.jwt", function()
  it("signs a claims table and verifies it back", function()
    local now = os.time()
    local token = jwt.sign({ iss = "devkey", sub = "cand-42", nbf = now, exp = now + 60, video = { room = "r", roomJoin = true } }, "secret")
    local claims = assert(jwt.verify(token, "secret", { iss = "devkey" }))
    assert.equal("cand-42", claims.sub)
    assert.is_true(claims.video.roomJoin)
  end)

  it("signs claims JSON text built by the caller (sign_json) the same way", function()
    local now = os.time()
    local token = jwt.sign_json(('{"exp":%d,"iss":"devkey","sub":"a\\"b"}'):format(now + 60), "secret")
    local claims = assert(jwt.verify(token, "secret"))
    assert.equal('a"b', claims.sub)
    assert.has_error(function() jwt.sign_json("[1]", "secret") end)
    assert.has_error(function() jwt.sign_json("{}", "secret") end)
  end)

  it("returns nil, message, code for a wrong secret, an expired token and a wrong issuer", function()
    local now = os.time()
    local token = jwt.sign({ iss = "devkey", exp = now - 120 }, "secret")
    local ok, msg, code = jwt.verify(token, "secret")
    assert.is_nil(ok)
    assert.is_string(msg)
    assert.equal("EXPIRED", code)
    token = jwt.sign({ iss = "devkey", exp = now + 60 }, "secret")
    assert.equal("BAD_SIGNATURE", select(3, jwt.verify(token, "other")))
    assert.equal("BAD_ISSUER", select(3, jwt.verify(token, "secret", { iss = "prodkey" })))
  end)

  it("accepts LiveKit's worked webhook example at its time and rejects it later", function()
    assert.is_true(jwt.verify_webhook(AUTH, BODY, "devkey", "secret", { now = 1767225700 }))
    assert.equal("EXPIRED", select(3, jwt.verify_webhook(AUTH, BODY, "devkey", "secret")))
    assert.equal("BODY_MISMATCH", select(3, jwt.verify_webhook(AUTH, BODY .. " ", "devkey", "secret", { now = 1767225700 })))
    assert.equal("MISSING", select(3, jwt.verify_webhook(nil, BODY, "devkey", "secret")))
    assert.equal("tgb2jAwAaP7teB7CW9PRwe7WSZkjiZzTFaqomG6LNys=", jwt.sha256_base64(BODY))
  end)
end)
