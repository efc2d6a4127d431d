-- scripts/feed_audio.lua, the Egress-like feeder, against a recording /ingest endpoint (in
-- spec/support/fake_elevenlabs.js) until the real one is wired: what goes on the wire.
local server = require "support.server"
local el = require "support.fake_elevenlabs"
local jwt = require "qc.jwt"

local quote = server.quote

local function wav(path, rate, channels, samples)
  local data = {}
  for i = 1, #samples do data[i] = string.pack("<i2", samples[i]) end
  local pcm = table.concat(data)
  local hdr = "RIFF" .. string.pack("<I4", 36 + #pcm) .. "WAVE" .. "fmt " ..
    string.pack("<I4I2I2I4I4I2I2", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16) ..
    "data" .. string.pack("<I4", #pcm)
  server.write_file(path, hdr .. pcm)
  return pcm
end

local function feed(args)
  local dir = server.tmpdir()
  local cmd = ("cd %s && %s run scripts/feed_audio.lua %s > %s/out 2> %s/err; echo $? > %s/rc"):format(
    quote(server.source), quote(server.bin), args, dir, dir, dir)
  os.execute(cmd)
  return tonumber(server.read_file(dir .. "/rc")), server.read_file(dir .. "/err")
end

describe("feed_audio.lua", function()
  local fake, dir
  setup(function()
    fake = el.start()
    dir = server.tmpdir()
  end)
  teardown(function() fake:stop() end)
  before_each(function() fake:reset() end)

  it("streams a 48 kHz mono file as Egress does: stereo 10 ms messages, muted:false first, an empty Close", function()
    local samples = {}
    for i = 1, 48000 do samples[i] = (i * 37) % 2000 - 1000 end
    wav(dir .. "/a.wav", 48000, 1, samples)
    local stereo = {}
    for i = 1, #samples do stereo[2 * i - 1], stereo[2 * i] = samples[i], samples[i] end
    local want = {}
    for i = 1, #stereo do want[i] = string.pack("<i2", stereo[i]) end
    local rc, err = feed(("--room r1 --identity cand-42 --url %s --speed 20 -q %s"):format(
      quote(fake.ws .. "/ingest?t=abc"), quote(dir .. "/a.wav")))
    assert.equal(0, rc, err)
    local got = fake:request("GET", "/_fake/ingest")[1]
    assert.equal("audio/x-raw", got.content_type)
    assert.equal("text", got.first_kind)
    assert.same({ '{"muted":false}' }, got.texts)
    assert.equal(100, got.binary)
    assert.same({ ["1920"] = 100 }, got.sizes)
    assert.equal(192000, got.bytes)
    assert.equal(jwt.sha256_base64(table.concat(want)), got.sha256)
    assert.equal(1005, got.close) -- a Close with no code
    assert.equal("abc", got.query.t)
  end)

  it("mints a signed ingest token for --server when no --url is given", function()
    wav(dir .. "/b.wav", 48000, 2, { 1, 2, 3, 4, 5, 6, 7, 8 })
    local rc, err = feed(("--room interview-7 --identity cand-42 --track TR_abc --server %s -q %s"):format(
      quote(fake.http), quote(dir .. "/b.wav")))
    assert.equal(0, rc, err)
    local got = fake:request("GET", "/_fake/ingest")[1]
    local claims = assert(jwt.verify(got.query.t, "secret"))
    assert.equal("quantcoach-ingest", claims.aud)
    assert.equal("devkey", claims.iss)
    assert.equal("interview-7", claims.room)
    assert.equal("cand-42", claims.sub)
    assert.equal("TR_abc", claims.track)
    assert.is_nil(claims.rate) -- Egress's format needs no declaration
    assert.equal(16, got.bytes)
  end)

  it("sends a file at another rate as it is, declaring rate and channels", function()
    local samples = {}
    for i = 1, 1600 do samples[i] = i end
    wav(dir .. "/c.wav", 16000, 1, samples)
    local rc, err = feed(("--room r --identity i --url %s --speed 50 -q %s"):format(
      quote(fake.ws .. "/ingest?t=x"), quote(dir .. "/c.wav")))
    assert.equal(0, rc, err)
    local got = fake:request("GET", "/_fake/ingest")[1]
    assert.equal("16000", got.query.rate)
    assert.equal("1", got.query.channels)
    assert.same({ ["320"] = 10 }, got.sizes)
  end)

  it("refuses a file that is not 16-bit PCM WAV, and a bad --speed, with exit 2", function()
    server.write_file(dir .. "/bad.wav", "not a wav at all")
    local rc, err = feed(("--room r --identity i --url ws://127.0.0.1:1/ingest %s"):format(quote(dir .. "/bad.wav")))
    assert.equal(2, rc)
    assert.matches("not a RIFF/WAVE file", err)
    wav(dir .. "/ok.wav", 48000, 2, { 0, 0 })
    rc, err = feed(("--room r --identity i --speed 0 %s"):format(quote(dir .. "/ok.wav")))
    assert.equal(2, rc)
    assert.matches("%-%-speed", err)
  end)

  it("takes a URL from `quantcoach token --ingest` alone, and asks for --room and --identity without one", function()
    wav(dir .. "/ok.wav", 48000, 2, { 0, 0 })
    local rc, err = feed(("--url ws://127.0.0.1:1/ingest?t=x -q %s"):format(quote(dir .. "/ok.wav")))
    assert.equal(1, rc, err) -- it got as far as connecting (nothing listens on port 1)
    rc, err = feed(("--room r -q %s"):format(quote(dir .. "/ok.wav")))
    assert.equal(2, rc)
    assert.matches("%-%-room and %-%-identity are needed", err)
  end)

  it("exits 1 with the reason when the server refuses the connection", function()
    wav(dir .. "/d.wav", 48000, 2, { 0, 0 })
    local rc, err = feed(("--room r --identity i --url %s %s"):format(quote(fake.ws .. "/refuse/401"),
      quote(dir .. "/d.wav")))
    assert.equal(1, rc)
    assert.matches("HTTP_401", err)
  end)
end)
