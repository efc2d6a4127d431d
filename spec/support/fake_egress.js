#!/usr/bin/env node
// A fake LiveKit Track Egress WebSocket sink client (shared/protocols/livekit.md §3, §5): it dials
// an ingest URL the way livekit/egress does and streams PCM the way it does.
//   - handshake: header Content-Type: audio/x-raw, no subprotocol, no permessage-deflate, no auth;
//   - text {"muted":false} first, then binary messages of 10 ms of s16le 48 kHz stereo (1920 bytes) at
//     real-time pace (or --speed times it), silence when there is nothing to play: a live egress never
//     stops sending while the track is published;
//   - ping("ping") every 30 s (--ping-ms);
//   - the end (EOS: track unpublished, StopEgress, room deleted): a Close frame with an EMPTY payload
//     (close() without a code; the peer sees 1005), then the TCP connection goes. drop() drops TCP with
//     no Close, as a crashed egress would.
//
// Module:  const { FakeEgress } = require('./fake_egress');
//          const e = new FakeEgress(url, { wav, seconds, speed, pingMs, onEvent });  e.start(); e.stop(); e.drop();
// CLI:     node fake_egress.js --url URL [--wav FILE] [--seconds S] [--speed N] [--drop-after S] [--ping-ms MS]
//          prints one JSON line per event ({"event":"open"}, {"event":"handshake_failed","status":401}, ...)
//          and a last {"event":"done", "sent_bytes":N, "messages":N, "close_code":C}; exit 0 when it streamed,
//          1 when the handshake failed or the connection broke. Exits when stdin closes (a spec that dies).
'use strict';

const fs = require('node:fs');
const WebSocket = require('ws');

const RATE = 48000;
const CHANNELS = 2;
const FRAME_MS = 10;
const MESSAGE_BYTES = (RATE / 1000) * FRAME_MS * CHANNELS * 2; // 1920

// Reads a PCM WAV (16-bit) and returns s16le 48 kHz stereo bytes: other rates are resampled by linear
// interpolation and mono is copied to both channels, as Egress upmixes mono Opus. Good enough for a fake.
function loadWav(path) {
  const buf = fs.readFileSync(path);
  if (buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') {
    throw new Error(`${path}: not a RIFF/WAVE file`);
  }
  let off = 12;
  let fmt = null;
  let data = null;
  while (off + 8 <= buf.length) {
    const id = buf.toString('ascii', off, off + 4);
    const size = buf.readUInt32LE(off + 4);
    const body = buf.subarray(off + 8, Math.min(buf.length, off + 8 + size));
    if (id === 'fmt ') fmt = { format: body.readUInt16LE(0), channels: body.readUInt16LE(2), rate: body.readUInt32LE(4), bits: body.readUInt16LE(14) };
    if (id === 'data') data = body;
    off += 8 + size + (size & 1);
  }
  if (!fmt || !data) throw new Error(`${path}: no fmt or data chunk`);
  if (fmt.format !== 1 || fmt.bits !== 16) throw new Error(`${path}: only 16-bit PCM WAV is supported`);
  const inFrames = Math.floor(data.length / (2 * fmt.channels));
  const sample = (i, c) => data.readInt16LE((i * fmt.channels + Math.min(c, fmt.channels - 1)) * 2);
  const outFrames = Math.floor(inFrames * RATE / fmt.rate);
  const out = Buffer.alloc(outFrames * CHANNELS * 2);
  for (let j = 0; j < outFrames; j++) {
    const pos = j * fmt.rate / RATE;
    const i = Math.floor(pos);
    const f = pos - i;
    for (let c = 0; c < CHANNELS; c++) {
      const a = sample(Math.min(i, inFrames - 1), c);
      const b = sample(Math.min(i + 1, inFrames - 1), c);
      out.writeInt16LE(Math.max(-32768, Math.min(32767, Math.round(a + (b - a) * f))), (j * CHANNELS + c) * 2);
    }
  }
  return out;
}

class FakeEgress {
  constructor(url, opts = {}) {
    this.url = url;
    this.pcm = opts.wav ? loadWav(opts.wav) : Buffer.alloc(0);
    this.seconds = opts.seconds; // stop by itself after this much audio; undefined: until stop()
    this.speed = opts.speed || 1;
    this.pingMs = opts.pingMs || 30000;
    this.onEvent = opts.onEvent || (() => {});
    this.sentBytes = 0;
    this.messages = 0;
    this.state = 'new'; // connecting | open | closed | failed
    this.closeCode = null;
    this.handshakeStatus = null;
  }

  emit(event, extra) { this.onEvent({ event, ...extra }); }

  start() {
    this.state = 'connecting';
    const ws = new WebSocket(this.url, { headers: { 'Content-Type': 'audio/x-raw' }, perMessageDeflate: false });
    this.ws = ws;
    ws.on('unexpected-response', (req, res) => {
      this.handshakeStatus = res.statusCode;
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        this.state = 'failed';
        this.error = `websocket: bad handshake (HTTP ${res.statusCode})`;
        this.emit('handshake_failed', { status: res.statusCode, body });
      });
      req.destroy();
    });
    ws.on('open', () => {
      this.handshakeStatus = 101;
      this.state = 'open';
      this.emit('open');
      ws.send('{"muted":false}');
      this.t0 = Date.now();
      this.timer = setInterval(() => this.pump(), FRAME_MS);
      this.pinger = setInterval(() => { if (ws.readyState === WebSocket.OPEN) ws.ping('ping'); }, this.pingMs);
    });
    ws.on('close', (code, reason) => {
      this.clearTimers();
      this.closeCode = code;
      if (this.state !== 'failed') this.state = 'closed';
      this.emit('closed', { code, reason: reason.toString() });
    });
    ws.on('error', (e) => {
      this.clearTimers();
      if (this.state === 'connecting') {
        this.state = 'failed';
        this.error = `websocket: ${e.message}`;
      }
      this.emit('error', { message: e.message });
    });
  }

  clearTimers() {
    clearInterval(this.timer);
    clearInterval(this.pinger);
    this.timer = this.pinger = null;
  }

  // Sends every message due by now at the pace asked for: a late timer catches up.
  pump() {
    const ws = this.ws;
    if (ws.readyState !== WebSocket.OPEN) return;
    const due = Math.floor(((Date.now() - this.t0) * this.speed) / FRAME_MS);
    const limit = this.seconds !== undefined ? Math.floor((this.seconds * 1000) / FRAME_MS) : Infinity;
    while (this.messages < Math.min(due, limit)) {
      const at = this.messages * MESSAGE_BYTES;
      let msg;
      if (at + MESSAGE_BYTES <= this.pcm.length) msg = this.pcm.subarray(at, at + MESSAGE_BYTES);
      else {
        msg = Buffer.alloc(MESSAGE_BYTES); // silence after the file, as a live egress keeps sending
        if (at < this.pcm.length) this.pcm.copy(msg, 0, at);
      }
      ws.send(msg, { binary: true });
      this.messages++;
      this.sentBytes += msg.length;
    }
    if (this.messages >= limit) this.stop();
  }

  // EOS as the egress ends it: a Close frame with an empty payload, then the TCP connection goes.
  stop() {
    this.clearTimers();
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    if (ws.readyState === WebSocket.OPEN) {
      ws.close();
      setTimeout(() => ws.terminate(), 200).unref();
    } else {
      ws.terminate();
    }
  }

  // A TCP drop with no Close frame.
  drop() {
    this.clearTimers();
    if (this.ws && this.ws._socket) this.ws._socket.destroy();
    else if (this.ws) this.ws.terminate();
  }

  status() {
    return { url: this.url, state: this.state, handshake_status: this.handshakeStatus, sent_bytes: this.sentBytes,
             messages: this.messages, close_code: this.closeCode, error: this.error || null };
  }
}

module.exports = { FakeEgress, loadWav, MESSAGE_BYTES };

if (require.main === module) {
  const { parseArgs } = require('node:util');
  let opts;
  try {
    opts = parseArgs({ options: {
      url: { type: 'string' }, wav: { type: 'string' }, seconds: { type: 'string' }, speed: { type: 'string' },
      'drop-after': { type: 'string' }, 'ping-ms': { type: 'string' },
    } }).values;
    if (!opts.url) throw new Error('--url is required');
  } catch (e) {
    process.stderr.write(`fake_egress: ${e.message}\nusage: node fake_egress.js --url URL [--wav FILE] [--seconds S] ` +
      '[--speed N] [--drop-after S] [--ping-ms MS]\n');
    process.exit(2);
  }
  const print = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const egress = new FakeEgress(opts.url, {
    wav: opts.wav, seconds: opts.seconds !== undefined ? Number(opts.seconds) : undefined,
    speed: opts.speed ? Number(opts.speed) : 1, pingMs: opts['ping-ms'] ? Number(opts['ping-ms']) : undefined,
    onEvent: (ev) => {
      print(ev);
      if (ev.event === 'open' && opts['drop-after'] !== undefined) {
        setTimeout(() => { egress.drop(); }, Number(opts['drop-after']) * 1000);
      }
      if (ev.event === 'closed' || (ev.event === 'handshake_failed') || (ev.event === 'error' && egress.state === 'failed')) {
        setTimeout(() => {
          print({ event: 'done', ...egress.status() });
          process.exit(egress.handshakeStatus === 101 ? 0 : 1);
        }, 50);
      }
    },
  });
  egress.start();
  process.stdin.on('end', () => process.exit(1));
  process.stdin.resume();
}
