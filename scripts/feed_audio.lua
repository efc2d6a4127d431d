-- Streams a WAV file into a running server's ingest WebSocket the way LiveKit's Track Egress
-- does (shared/protocols/livekit.md §3): `Content-Type: audio/x-raw`, a {"muted":false} text
-- message, s16le PCM in binary messages of 10 ms at real-time pace (divided by --speed), a
-- ping every 30 s, and an empty Close at the end. The demo feeder and the load feeder.
-- Run: quantcoach run scripts/feed_audio.lua --room R --identity I FILE.wav, or --url URL FILE.wav
-- with a URL from `quantcoach token --ingest` (see --help).
--
-- A 48 kHz file goes out as Egress sends it, 2 channels (a mono file is doubled); a file at
-- another rate goes out as it is, with its rate and channel count declared in the token (or
-- in the query, with --url), as the ingest endpoint allows for sources other than Egress.
local argparse = require "argparse"
local ws = require "qc.ws"
local time = require "qc.time"
local host = require "qc.host"
local ingest = require "qc.ingest"
local cli = require "qc.cli"

local PROG = "feed_audio"
local EGRESS_RATE, EGRESS_CHANNELS = 48000, 2
local PING_EVERY = 30 -- seconds
local MAX_BUFFERED = 256 * 1024 -- bytes queued before the feeder waits (a slow server)

local parser = argparse("quantcoach run scripts/feed_audio.lua",
  "Stream a WAV file into a quantcoach ingest WebSocket, as LiveKit's Track Egress would.")
  :epilog("Without --url, the ingest token is signed here with LIVEKIT_API_KEY / LIVEKIT_API_SECRET "
    .. "(.env or environment), which must be the server's. `quantcoach token --ingest` prints such a URL.")
  :help_max_width(80)
parser:argument("file", "A PCM WAV file, 16-bit.")
parser:option("--room", "Room name (needed unless --url, whose token names it).")
parser:option("--identity", "Participant identity (needed unless --url).")
parser:option("--track", "Track sid (default: TR_feed_<identity>).")
parser:option("--url", "The ingest URL to connect to, token included (ws:// or wss://).")
parser:option("--server", "The server to mint a URL for (default: the configured listen address).")
  :argname("<http://host:port>")
parser:option("--speed", "Pace: 1 is real time, 2 twice as fast (default 1).", "1"):argname("<n>")
parser:option("--ttl", "Lifetime of the signed token, seconds (default 600).", "600"):argname("<seconds>")
parser:flag("-q --quiet", "No progress output.")

local function usage_error(msg) return cli.usage_error(parser, msg) end
local function fail(msg) return cli.bad_value(PROG, msg) end

local ok, args = parser:pparse(cli.join_negative_values(arg, { ["--speed"] = "--speed", ["--ttl"] = "--ttl" }))
if not ok then return usage_error(args) end
-- A URL from `quantcoach token --ingest` carries room, identity and track in its token.
if not args.url and not (args.room and args.identity) then
  return usage_error("--room and --identity are needed to sign a token (or give --url)")
end
local speed = tonumber(args.speed)
if not speed or speed <= 0 or speed ~= speed or speed == math.huge then
  return fail("--speed: must be a positive number, got " .. args.speed)
end
local ttl = math.tointeger(tonumber(args.ttl))
if not ttl or ttl < 1 or ttl > 86400 then return fail("--ttl: must be a whole number of seconds from 1 to 86400") end

---Reads a RIFF/WAVE file of 16-bit PCM. Returns {rate, channels, data} or nil, message.
---@param path string
---@return table|nil, string|nil
local function read_wav(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local all = f:read("a")
  f:close()
  if #all < 12 or all:sub(1, 4) ~= "RIFF" or all:sub(9, 12) ~= "WAVE" then
    return nil, path .. ": not a RIFF/WAVE file"
  end
  local pos, fmt = 13, nil
  while pos + 8 <= #all + 1 do
    local id, size = all:sub(pos, pos + 3), string.unpack("<I4", all, pos + 4)
    local body = pos + 8
    if id == "fmt " then
      if size < 16 then return nil, path .. ": fmt chunk too short" end
      local tag, channels, rate, _, _, bits = string.unpack("<I2I2I4I4I2I2", all, body)
      if tag == 0xFFFE and size >= 40 then tag = string.unpack("<I2", all, body + 24) end
      fmt = { tag = tag, channels = channels, rate = rate, bits = bits }
    elseif id == "data" then
      if not fmt then return nil, path .. ": data before fmt" end
      if fmt.tag ~= 1 or fmt.bits ~= 16 then
        return nil, ("%s: only 16-bit PCM is supported (format %d, %d bits); convert with sox"):format(
          path, fmt.tag, fmt.bits)
      end
      if fmt.channels < 1 or fmt.channels > 8 or fmt.rate < 8000 or fmt.rate > 192000 then
        return nil, ("%s: %d channels at %d Hz is outside 1..8 channels, 8000..192000 Hz"):format(
          path, fmt.channels, fmt.rate)
      end
      local last = math.min(body + size - 1, #all) -- a streamed file may declare more than it has
      local frame = 2 * fmt.channels
      last = body - 1 + ((last - body + 1) // frame) * frame
      return { rate = fmt.rate, channels = fmt.channels, data = all:sub(body, last) }
    end
    pos = body + size + (size % 2)
  end
  return nil, path .. ": no data chunk"
end

local wav, werr = read_wav(args.file)
if not wav then return fail(werr) end

-- What goes on the wire.
local egress = wav.rate == EGRESS_RATE
local rate = wav.rate
local channels = egress and EGRESS_CHANNELS or wav.channels
local pcm = wav.data
if egress and wav.channels == 1 then
  pcm = pcm:gsub("(..)", "%1%1")
elseif egress and wav.channels ~= 2 then
  return fail(("%s: a 48 kHz file must have 1 or 2 channels to go out as Egress's stereo, not %d"):format(
    args.file, wav.channels))
end

local track = args.track or ("TR_feed_" .. (args.identity or ""))

local function mint()
  local extra = egress and {} or { rate = rate, channels = channels }
  return (ingest.token { room = args.room, identity = args.identity, track = track, ttl = ttl,
                         rate = extra.rate, channels = extra.channels })
end

local function url_encode(s)
  return (s:gsub("[^%w%-%._~]", function(ch) return ("%%%02X"):format(ch:byte()) end))
end

local url = args.url
if url then
  if not url:match("^wss?://") then return fail("--url: must start with ws:// or wss://") end
  if not egress and not url:find("[?&]rate=") then
    url = url .. (url:find("?", 1, true) and "&" or "?") .. ("rate=%d&channels=%d"):format(rate, channels)
  end
else
  local server = args.server
  if not server then
    local listen = host.config().listen
    local h, p = listen:match("^(.*):(%d+)$")
    if h == "0.0.0.0" or h == "::" or h == "" then h = "127.0.0.1" end
    server = "http://" .. h .. ":" .. p
  end
  local origin = ingest.ws_origin(server)
  if not origin then return fail("--server: must be an http(s):// or ws(s):// URL") end
  url = origin .. "/ingest?t=" .. url_encode(mint())
end

local function progress(msg)
  if not args.quiet then io.stderr:write(PROG .. ": " .. msg .. "\n") end
end

local c, cerr, ccode = ws.connect(url, { headers = { ["Content-Type"] = "audio/x-raw" } })
if not c then
  io.stderr:write(("%s: cannot connect: %s (%s)\n"):format(PROG, tostring(cerr), tostring(ccode)))
  return 1
end

---Reads what the server sent without waiting; nil, or the close it reported.
local function server_closed()
  while true do
    local kind, a, code, reason = c:receive(0)
    if kind == nil then
      if a == "closed" then return ("the server closed the connection: %s %s"):format(code, reason or "") end
      return nil
    end
  end
end

local bytes_per_msg = (rate // 100) * channels * 2
local interval = (rate // 100) / rate / speed
local total = #pcm
local seconds = total / (rate * channels * 2)
progress(("streaming %s: %.1f s at %d Hz, %d channel(s), speed %g"):format(args.file, seconds, rate, channels, speed))

local sent_ok, why = c:send('{"muted":false}')
if not sent_ok then
  io.stderr:write(PROG .. ": " .. (server_closed() or why) .. "\n")
  return 1
end
local start = time.monotonic()
local last_ping, last_progress = start, start
local n = 0
for off = 1, total, bytes_per_msg do
  local due = start + n * interval
  local now = time.monotonic()
  if due > now + 0.0005 then time.sleep(due - now) end
  while c:buffered() > MAX_BUFFERED do time.sleep(0.005) end
  local okb, err = c:send_binary(pcm:sub(off, off + bytes_per_msg - 1))
  if not okb then
    io.stderr:write(PROG .. ": " .. (server_closed() or ("send failed: " .. tostring(err))) .. "\n")
    return 1
  end
  n = n + 1
  if n % 50 == 0 then
    local closed = server_closed()
    if closed then
      io.stderr:write(PROG .. ": " .. closed .. "\n")
      return 1
    end
    now = time.monotonic()
    if now - last_ping >= PING_EVERY then
      c:ping("feed")
      last_ping = now
    end
    if seconds > 10 and now - last_progress >= 5 then
      progress(("%.1f s of %.1f s sent"):format(off / (rate * channels * 2), seconds))
      last_progress = now
    end
  end
end
local closed = server_closed()
if closed then
  io.stderr:write(PROG .. ": " .. closed .. "\n")
  return 1
end
c:close(0) -- an empty Close, as Egress ends a stream
progress(("done: %d %s, %.1f s of audio in %.1f s"):format(n, n == 1 and "message" or "messages", seconds,
  time.monotonic() - start))
return 0
