#!/usr/bin/env node
// Fake ElevenLabs realtime speech-to-text server for specs (shared/protocols/stt-llm.md §1 and §4), plus a
// plain echo endpoint for the WebSocket client's own spec.
//
//   node fake_elevenlabs.js --port 0 --key KEY [--order plain-first|ts-first|alternate]
//                           [--tls-cert FILE --tls-key FILE]   (wss:// and https:// instead)
// Prints "listening <port>" on stdout when ready. Exits on SIGTERM/SIGINT or when a piped stdin closes.
//
// /v1/speech-to-text/realtime: the `xi-api-key` header (or `token` query) must equal --key, else the upgrade
// is refused 401 (auth "upgrade") or accepted with an in-band auth_error and a close (auth "inband", the
// default). Query checked: model_id = scribe_v2_realtime, audio_format pcm_16000 (the only rate this fake
// decodes), commit_strategy manual|vad; anything else -> invalid_request + close. session_started comes
// first. Client frames are checked as the service does (JSON text, input_audio_chunk, base64 of whole s16
// samples, sample_rate 16000, previous_text on the first chunk only, at most 2 s of audio) -> input_error
// or chunk_size_exceeded.
//
// Deterministic recognition: a run of at least 50 ms of one constant sample k != 0 is the word "w<k>",
// zeros are silence. A partial_transcript (the uncommitted words) follows a chunk that changed them; a
// commit yields committed_transcript and committed_transcript_with_timestamps (words and spacing, times
// on the connection's own sample count) in the order --order says.
//
// Control (plain HTTP on the same port):
//   POST /_fake/script {connections: [FAULT, ...], refuse: K, refuse_status: 503, auth: "inband"|"upgrade"}
//        FAULTs are taken one per new connection, in order; {} is a connection with no fault. A FAULT:
//        {drop_after_chunks: N}           TCP drop, no Close, after the Nth audio chunk
//        {drop_mid_frame_after_chunks: N} half a frame written, then the TCP drop
//        {close_after_chunks: N, code: 1000|1011, reason}
//        {error_after_chunks: N, error: "transcriber_error"}  the error message, then a close 1011
//        {auth_error: true}               in-band auth_error, then a close
//        {quota: true}                    quota_exceeded, then a close
//        {delay_session_ms: N}            session_started N ms late
//        {commit_throttle_ms: X}          commit_throttled when commits come less than X ms apart
//   GET  /_fake/connections -> [{id, key, query, chunks, commits, previous_text, samples, committed: [..],
//                               errors: [..], fault, closed}]
//   GET  /_fake/echo_closes -> [{code, reason}] of the Closes /echo received (1005: an empty Close)
//   GET  /_fake/ingest -> what each /ingest connection got (a feeder's test): query, content_type, texts,
//                         binary messages, bytes, sizes {len: count}, pings, close code, sha256 of the PCM
//   POST /_fake/reset
// /echo: echoes text and binary; the text "close CODE REASON" closes with that code, "drop" drops TCP,
// "big N" answers N bytes of "x" as text, "headers" answers the request's headers as JSON.
// Any other path is refused 404; /refuse/NNN is refused with status NNN.
'use strict';

const http = require('node:http');
const https = require('node:https');
const fs = require('node:fs');
const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const { WebSocketServer } = require('ws');
const { exitWithStdin, onTermSignals } = require('./lib/lifecycle');

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    key: { type: 'string', default: 'test-key' },
    order: { type: 'string', default: 'alternate' },
    host: { type: 'string', default: '127.0.0.1' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
  },
});

const RATE = 16000;
const MIN_WORD = RATE / 20; // 50 ms
const MAX_CHUNK_BYTES = 2 * RATE * 2;
const FORMATS = ['pcm_8000', 'pcm_16000', 'pcm_22050', 'pcm_24000', 'pcm_44100', 'pcm_48000', 'ulaw_8000'];

let state;
function reset() {
  state = { script: [], refuse: 0, refuseStatus: 503, auth: 'inband', connections: [], nextId: 1, commitsSeen: 0,
    echoCloses: [], ingests: [] };
}
reset();

const wss = new WebSocketServer({ noServer: true, maxPayload: 8 << 20 });

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

const onRequest = (req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    if (req.method === 'POST' && req.url === '/_fake/script') {
      const s = body ? JSON.parse(body) : {};
      state.script = Array.isArray(s.connections) ? s.connections.slice() : [];
      state.refuse = s.refuse || 0;
      state.refuseStatus = s.refuse_status || 503;
      state.auth = s.auth || 'inband';
      return json(res, 200, { ok: true });
    }
    if (req.method === 'GET' && req.url === '/_fake/connections') {
      return json(res, 200, state.connections.map((c) => c.record));
    }
    if (req.method === 'GET' && req.url === '/_fake/echo_closes') return json(res, 200, state.echoCloses);
    if (req.method === 'GET' && req.url === '/_fake/ingest') {
      return json(res, 200, state.ingests.map((r) => ({ ...r, sha256: r.hash.copy().digest('base64'), hash: undefined })));
    }
    if (req.method === 'POST' && req.url === '/_fake/reset') {
      for (const c of state.connections) if (c.ws) c.ws.terminate();
      reset();
      return json(res, 200, { ok: true });
    }
    json(res, 404, { error: 'not found' });
  });
};
const server = opt['tls-cert']
  ? https.createServer({ cert: fs.readFileSync(opt['tls-cert']), key: fs.readFileSync(opt['tls-key']) }, onRequest)
  : http.createServer(onRequest);

function refuse(socket, status, text) {
  socket.write(`HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${
    Buffer.byteLength(JSON.stringify({ detail: text }))}\r\nConnection: close\r\n\r\n${JSON.stringify({ detail: text })}`);
  socket.destroy();
}

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://fake');
  const m = url.pathname.match(/^\/refuse\/(\d{3})$/);
  if (m) return refuse(socket, Number(m[1]), 'Refused');
  if (url.pathname === '/ingest') {
    return wss.handleUpgrade(req, socket, head, (ws) => ingest(ws, req, url));
  }
  if (url.pathname === '/echo') {
    return wss.handleUpgrade(req, socket, head, (ws) => echo(ws, req));
  }
  if (url.pathname !== '/v1/speech-to-text/realtime') return refuse(socket, 404, 'Not Found');
  if (state.refuse > 0) {
    state.refuse--;
    return refuse(socket, state.refuseStatus, 'Service Unavailable');
  }
  const key = req.headers['xi-api-key'] || url.searchParams.get('token') || '';
  if (key !== opt.key && state.auth === 'upgrade') return refuse(socket, 401, 'Unauthorized');
  wss.handleUpgrade(req, socket, head, (ws) => session(ws, req, url, key));
});

function echo(ws, req) {
  ws.on('close', (code, reason) => state.echoCloses.push({ code, reason: reason.toString() }));
  ws.on('message', (data, isBinary) => {
    if (isBinary) return ws.send(data, { binary: true });
    const text = data.toString();
    let m;
    if ((m = text.match(/^close (\d+) ?(.*)$/))) return ws.close(Number(m[1]), m[2]);
    if (text === 'drop') return ws._socket.destroy();
    if ((m = text.match(/^big (\d+)$/))) return ws.send('x'.repeat(Number(m[1])));
    if (text === 'headers') return ws.send(JSON.stringify(req.headers));
    ws.send(text);
  });
}

// What a feeder sent, as our /ingest would see it.
function ingest(ws, req, url) {
  const r = { query: Object.fromEntries(url.searchParams), content_type: req.headers['content-type'] || null,
    texts: [], binary: 0, bytes: 0, sizes: {}, pings: 0, close: null, first_kind: null, hash: crypto.createHash('sha256') };
  state.ingests.push(r);
  ws.on('ping', () => { r.pings++; });
  ws.on('message', (data, isBinary) => {
    if (!r.first_kind) r.first_kind = isBinary ? 'binary' : 'text';
    if (!isBinary) return r.texts.push(data.toString());
    r.binary++;
    r.bytes += data.length;
    r.sizes[data.length] = (r.sizes[data.length] || 0) + 1;
    r.hash.update(data);
  });
  ws.on('close', (code) => { r.close = code; });
}

function send(ws, obj) {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(obj));
}

function errorAndClose(c, type, text, code) {
  c.record.errors.push(type);
  send(c.ws, { message_type: type, error: text });
  c.record.closed = `${type}`;
  c.ws.close(code || 1008, type);
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

function session(ws, req, url, key) {
  const fault = state.script.length ? state.script.shift() || {} : {};
  const c = {
    ws,
    started: false,
    run: { value: 0, len: 0, start: 0 }, // the current run of one sample value
    words: [], // recognised, not yet committed: {text, start, end}
    lastPartial: '',
    lastCommitAt: 0,
    commitIndex: 0,
    record: {
      id: state.nextId++, key, query: Object.fromEntries(url.searchParams), chunks: 0, commits: 0,
      previous_text: null, samples: 0, committed: [], errors: [], fault, closed: null,
    },
  };
  state.connections.push(c);
  ws.on('close', (code) => { if (!c.record.closed) c.record.closed = `client ${code}`; c.ws = null; });
  ws.on('error', () => {});

  if (key !== opt.key || fault.auth_error) {
    return setImmediate(() => errorAndClose(c, 'auth_error', 'Invalid API key', 1008));
  }
  const q = url.searchParams;
  const bad = q.get('model_id') !== 'scribe_v2_realtime' ? 'model_id'
    : !FORMATS.includes(q.get('audio_format') || 'pcm_16000') ? 'audio_format'
      : !['manual', 'vad'].includes(q.get('commit_strategy') || 'manual') ? 'commit_strategy'
        : (q.get('audio_format') || 'pcm_16000') !== 'pcm_16000' ? 'audio_format (this fake decodes pcm_16000 only)'
          : null;
  if (bad) return setImmediate(() => errorAndClose(c, 'invalid_request', `invalid ${bad}`, 1008));
  if (fault.quota) return setImmediate(() => errorAndClose(c, 'quota_exceeded', 'Quota exceeded', 1008));

  const start = () => {
    if (!c.ws) return;
    c.started = true;
    send(ws, {
      message_type: 'session_started', session_id: crypto.randomBytes(16).toString('hex'),
      config: {
        sample_rate: RATE, audio_format: 'pcm_16000', language_code: q.get('language_code'),
        model_id: 'scribe_v2_realtime', commit_strategy: q.get('commit_strategy') || 'manual',
        include_timestamps: q.get('include_timestamps') === 'true',
      },
    });
  };
  if (fault.delay_session_ms) setTimeout(start, fault.delay_session_ms);
  else start();

  ws.on('message', (data, isBinary) => onFrame(c, data, isBinary));
}

function endRun(c) {
  const r = c.run;
  if (r.value !== 0 && r.len >= MIN_WORD) {
    c.words.push({ text: `w${r.value}`, start: r.start / RATE, end: (r.start + r.len) / RATE });
  }
}

function feed(c, samples) {
  const r = c.run;
  for (let i = 0; i < samples.length; i++) {
    const v = samples[i];
    if (v === r.value && r.len > 0) { r.len++; continue; }
    endRun(c);
    r.value = v; r.len = 1; r.start = c.record.samples + i;
  }
  c.record.samples += samples.length;
}

function uncommitted(c) {
  const w = c.words.map((x) => x.text);
  if (c.run.value !== 0 && c.run.len >= MIN_WORD) w.push(`w${c.run.value}`);
  return w.join(' ');
}

function commit(c) {
  endRun(c);
  c.run = { value: 0, len: 0, start: c.record.samples };
  const words = c.words;
  c.words = [];
  c.lastPartial = '';
  const text = words.map((w) => w.text).join(' ');
  const items = [];
  words.forEach((w, i) => {
    if (i) items.push({ text: ' ', start: words[i - 1].end, end: w.start, type: 'spacing', logprob: 0 });
    items.push({ text: w.text, start: w.start, end: w.end, type: 'word', logprob: -0.01 });
  });
  c.record.commits++;
  c.record.committed.push(text);
  const plain = { message_type: 'committed_transcript', text };
  const ts = { message_type: 'committed_transcript_with_timestamps', text, language_code: 'en', words: items };
  const tsFirst = opt.order === 'ts-first' || (opt.order === 'alternate' && (state.commitsSeen++ % 2) === 1);
  for (const m of tsFirst ? [ts, plain] : [plain, ts]) send(c.ws, m);
}

function onFrame(c, data, isBinary) {
  if (!c.ws) return;
  const f = c.record.fault;
  const inputError = (why) => { c.record.errors.push('input_error'); send(c.ws, { message_type: 'input_error', error: why }); };
  if (isBinary) return inputError('binary frames are not accepted');
  let m;
  try { m = JSON.parse(data.toString()); } catch { return inputError('invalid JSON'); }
  if (!m || m.message_type !== 'input_audio_chunk') return inputError('unknown message_type');
  if (typeof m.audio_base_64 !== 'string' || !B64.test(m.audio_base_64)) return inputError('audio_base_64 must be base64');
  if (m.sample_rate !== undefined && m.sample_rate !== RATE) return inputError('sample_rate does not match audio_format');
  if (m.previous_text !== undefined) {
    if (c.record.chunks > 0 || c.record.commits > 0) return inputError('previous_text is only allowed on the first chunk');
    if (typeof m.previous_text !== 'string' || m.previous_text.length >= 50) return inputError('previous_text too long');
    c.record.previous_text = m.previous_text;
  }
  if (!c.started) return inputError('audio before session_started');
  const audio = Buffer.from(m.audio_base_64, 'base64');
  if (audio.length % 2) return inputError('audio is not whole 16-bit samples');
  if (audio.length > MAX_CHUNK_BYTES) {
    c.record.errors.push('chunk_size_exceeded');
    return send(c.ws, { message_type: 'chunk_size_exceeded', error: 'chunk too large' });
  }
  if (audio.length) {
    c.record.chunks++;
    const samples = new Int16Array(audio.buffer.slice(audio.byteOffset, audio.byteOffset + audio.length));
    feed(c, samples);
    const p = uncommitted(c);
    if (p !== c.lastPartial && p !== '') {
      c.lastPartial = p;
      send(c.ws, { message_type: 'partial_transcript', text: p });
    }
  }
  if (m.commit === true) {
    const now = Date.now();
    if (f.commit_throttle_ms && c.lastCommitAt && now - c.lastCommitAt < f.commit_throttle_ms) {
      c.record.errors.push('commit_throttled');
      send(c.ws, { message_type: 'commit_throttled', error: 'commits too frequent' });
    } else {
      c.lastCommitAt = now;
      commit(c);
    }
  }
  const n = c.record.chunks;
  if (!audio.length) return;
  if (f.drop_after_chunks === n) {
    c.record.closed = 'drop';
    c.ws._socket.destroy();
  } else if (f.drop_mid_frame_after_chunks === n) {
    c.record.closed = 'drop mid-frame';
    c.ws._socket.write(Buffer.from([0x81, 0x7e, 0x10]));
    c.ws._socket.destroy();
  } else if (f.close_after_chunks === n) {
    c.record.closed = `server ${f.code || 1000}`;
    c.ws.close(f.code || 1000, f.reason || '');
  } else if (f.error_after_chunks === n) {
    errorAndClose(c, f.error || 'transcriber_error', 'injected fault', 1011);
  }
}

exitWithStdin('fake_elevenlabs');
onTermSignals(() => server.close());
server.listen(Number(opt.port), opt.host, () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
