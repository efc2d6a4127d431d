#!/usr/bin/env node
// WebSocket peers for the ingest and live specs, on the official `ws` client. Each prints one
// JSON line per event on stdout ({"event":"open"|"message"|"close"|"refused"|"error", ...}) and
// exits by itself.
//
//   node ws_peer.js feed URL [--wav F | --silence S] [--chunk 1920] [--interval 10] [--speed N]
//        [--text MSG]... [--binary-len N] [--drop] [--hold MS] [--steady] [--epoch MS]
//     An ingest source as LiveKit's Track Egress is one (shared/protocols/livekit.md §3, §5):
//     Content-Type audio/x-raw, no permessage-deflate, {"muted":false}, the PCM of F (the WAV's
//     data as is) or S seconds of 48 kHz stereo silence in --chunk-byte binary messages every
//     --interval ms (divided by --speed), ping("ping"), then close() with no code (1005 at the
//     server) or, with --drop, a TCP drop with no Close. --text sends text messages after the
//     first chunk; --binary-len sends one binary message of that many bytes after the first
//     chunk. --hold waits that long before the end. --steady paces chunk n at open + n intervals
//     (no timer drift: the audio keeps to the wall clock); --epoch MS (implies --steady) plays
//     the audio as if it had started at that Date.now(): what falls before the open is skipped
//     (a feeder reconnecting through another instance continues where the first one was). The
//     open event carries `at` (Date.now()) and, with --epoch, `from` (the bytes skipped).
//   node ws_peer.js listen URL [--header "Name: value"]... [--finals N] [--timeout S]
//     A live client: prints every message; closes (1000) after N finals, or at the timeout.
'use strict';

const fs = require('node:fs');
const WebSocket = require('ws');

const argv = process.argv.slice(2);
const mode = argv.shift();
const url = argv.shift();
const opts = { text: [], header: [] };
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
  const k = a.slice(2);
  if (k === 'drop') { opts.drop = true; continue; }
  if (k === 'steady') { opts.steady = true; continue; }
  const v = argv[++i];
  if (k === 'text' || k === 'header') opts[k].push(v);
  else opts[k] = v;
}

function out(o) { process.stdout.write(JSON.stringify(o) + '\n'); }

function wavData(path) {
  const b = fs.readFileSync(path);
  if (b.toString('ascii', 0, 4) !== 'RIFF' || b.toString('ascii', 8, 12) !== 'WAVE') throw new Error(`${path}: not a WAV file`);
  let p = 12;
  let fmt = null;
  while (p + 8 <= b.length) {
    const id = b.toString('ascii', p, p + 4);
    const size = b.readUInt32LE(p + 4);
    if (id === 'fmt ') fmt = { channels: b.readUInt16LE(p + 10), rate: b.readUInt32LE(p + 12), bits: b.readUInt16LE(p + 22) };
    if (id === 'data') return { fmt, data: b.subarray(p + 8, Math.min(b.length, p + 8 + size)) };
    p += 8 + size + (size & 1);
  }
  throw new Error(`${path}: no data chunk`);
}

function headers() {
  const h = {};
  for (const line of opts.header) {
    const at = line.indexOf(':');
    h[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return h;
}

function connect(extra) {
  const ws = new WebSocket(url, { perMessageDeflate: false, headers: { ...headers(), ...extra } });
  ws.on('unexpected-response', (req, res) => {
    let body = '';
    res.on('data', (d) => { body += d; });
    res.on('end', () => { out({ event: 'refused', status: res.statusCode, body }); process.exit(0); });
  });
  ws.on('error', (e) => { out({ event: 'error', message: String(e.message || e) }); process.exit(0); });
  ws.on('close', (code, reason) => { out({ event: 'close', code, reason: reason.toString() }); process.exit(0); });
  return ws;
}

function feed() {
  let pcm;
  if (opts.wav) {
    const w = wavData(opts.wav);
    out({ event: 'wav', rate: w.fmt && w.fmt.rate, channels: w.fmt && w.fmt.channels, bytes: w.data.length });
    pcm = w.data;
  } else {
    pcm = Buffer.alloc(Math.round(Number(opts.silence || 1) * 48000) * 4);
  }
  const chunk = Number(opts.chunk || 1920);
  const interval = Number(opts.interval || 10) / Number(opts.speed || 1);
  const ws = connect({ 'Content-Type': 'audio/x-raw' });
  ws.on('open', () => {
    const now = Date.now();
    const steady = opts.steady !== undefined || opts.epoch !== undefined;
    const t0 = opts.epoch !== undefined ? Number(opts.epoch) : now;
    let off = 0;
    if (opts.epoch !== undefined && interval > 0) off = Math.max(0, Math.floor((now - t0) / interval)) * chunk;
    out({ event: 'open', at: now, from: off });
    ws.send(JSON.stringify({ muted: false }));
    let first = true;
    const next = () => {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (off < pcm.length) {
        ws.send(pcm.subarray(off, Math.min(off + chunk, pcm.length)), { binary: true });
        off += chunk;
        if (first) {
          first = false;
          for (const t of opts.text) ws.send(t);
          if (opts['binary-len']) ws.send(Buffer.alloc(Number(opts['binary-len'])), { binary: true });
          ws.ping('ping');
        }
        if (interval > 0 && steady) setTimeout(next, Math.max(0, t0 + (off / chunk) * interval - Date.now()));
        else if (interval > 0) setTimeout(next, interval);
        else setImmediate(next);
        return;
      }
      out({ event: 'sent', bytes: pcm.length });
      setTimeout(() => {
        if (ws.readyState !== WebSocket.OPEN) return;
        if (opts.drop) {
          ws._socket.destroy();
          out({ event: 'dropped' });
          setTimeout(() => process.exit(0), 100);
        } else {
          ws.close();
        }
      }, Number(opts.hold || 0));
    };
    next();
  });
}

function listen() {
  const ws = connect({});
  let finals = 0;
  const want = opts.finals ? Number(opts.finals) : 0;
  setTimeout(() => { out({ event: 'timeout' }); ws.close(1000); setTimeout(() => process.exit(0), 500); },
    Number(opts.timeout || 30) * 1000);
  ws.on('open', () => out({ event: 'open' }));
  ws.on('message', (data, isBinary) => {
    let parsed;
    try { parsed = JSON.parse(data.toString()); } catch (e) { parsed = { raw: data.toString(), binary: isBinary }; }
    out({ event: 'message', data: parsed });
    if (parsed.type === 'transcript' && parsed.final) finals++;
    if (want && finals >= want) ws.close(1000);
  });
}

if (mode === 'feed') feed();
else if (mode === 'listen') listen();
else { process.stderr.write('usage: node ws_peer.js feed|listen URL [options]\n'); process.exit(2); }
