#!/usr/bin/env node
// Fake LiveKit server for specs: RoomService and Egress over Twirp JSON, answering the way livekit-server does
// (shared/protocols/livekit.md §2 and §5). Tokens are checked with the official SDK's TokenVerifier and
// request/response JSON goes through @livekit/protocol's generated messages, so key styles, int64 strings
// and enum names match protojson exactly.
//
//   node fake_livekit.js --port P --key devkey --secret secret [--mode ok|slow|error|badauth] [--delay-ms N]
//                        [--host 127.0.0.1] [--verbose]
// Prints "listening <port>" on stdout when ready. Exits on SIGTERM/SIGINT or when a piped stdin closes.
//
// Test helpers (not Twirp):
//   POST   /_fake/participants {room, identity, name?, metadata?, kind?, state?, attributes?, tracks?, is_publisher?}
//   GET    /_fake/calls        -> [{seq, method, path, body, grants, claims, status, ...}]
//   DELETE /_fake/calls        -> clears the log
//   POST   /_fake/mode         {mode, delay_ms}
//   GET    /_fake/rooms        -> {rooms:[Room with participants]}
//   POST   /_fake/reset        -> forget rooms and calls, mode back to ok, no holds
//   POST   /_fake/egress_config {webhook_url?, dial?, wav?, fail?}: what a started Track Egress does.
//                              webhook_url: egress_started / egress_updated / egress_ended webhooks are POSTed there,
//                              signed as LiveKit signs them (key/secret of --key/--secret). dial: the egress dials
//                              its websocket_url with fake_egress.js (PCM from wav, else silence) and fails as
//                              EGRESS_FAILED when the handshake fails. fail: the next N egresses end EGRESS_FAILED
//                              right after they start. {} puts every knob back (no webhooks, no dial, no failures).
//   GET    /_fake/egress       -> [EgressInfo (wire form) + {conn: fake_egress status | null}]
//   POST   /_fake/hold         {method, room, ms, when: "before"|"after"}: the next calls of method for room
//                              wait ms before they are carried out ("before") or after the change is made but
//                              before the answer goes out ("after"), as a server or network that stalls may.
//                              {} clears every hold and lets the calls still waiting go on at once.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const { TokenVerifier } = require('livekit-server-sdk');
const P = require('@livekit/protocol');
const { exitWithStdin, onTermSignals } = require('./lib/lifecycle');
const { AccessToken } = require('livekit-server-sdk');
const { FakeEgress } = require('./fake_egress');

const MODES = ['ok', 'slow', 'error', 'badauth'];
const METHODS = {
  CreateRoom: { req: P.CreateRoomRequest, grant: 'roomCreate' },
  ListRooms: { req: P.ListRoomsRequest, grant: 'roomList' },
  DeleteRoom: { req: P.DeleteRoomRequest, grant: 'roomCreate' },
  ListParticipants: { req: P.ListParticipantsRequest, grant: 'roomAdmin' },
  GetParticipant: { req: P.RoomParticipantIdentity, grant: 'roomAdmin' },
  RemoveParticipant: { req: P.RoomParticipantIdentity, grant: 'roomAdmin' },
  UpdateParticipant: { req: P.UpdateParticipantRequest, grant: 'roomAdmin' },
  // Egress (livekit.md §3): every method takes roomRecord, with no room in the grant.
  StartTrackEgress: { req: P.TrackEgressRequest, grant: 'roomRecord', service: 'Egress' },
  StopEgress: { req: P.StopEgressRequest, grant: 'roomRecord', service: 'Egress' },
  ListEgress: { req: P.ListEgressRequest, grant: 'roomRecord', service: 'Egress' },
};
const serviceOf = (method) => METHODS[method].service || 'RoomService';
const TWIRP_STATUS = {
  invalid_argument: 400, malformed: 400, unauthenticated: 401, permission_denied: 403, not_found: 404,
  bad_route: 404, deadline_exceeded: 408, already_exists: 409, failed_precondition: 412,
  resource_exhausted: 429, internal: 500, unknown: 500, unimplemented: 501, unavailable: 503,
};
// livekit-server defaults applied to a CreateRoom that leaves them at 0.
const DEFAULT_EMPTY_TIMEOUT = 300;
const DEFAULT_DEPARTURE_TIMEOUT = 20;
const DEFAULT_CODECS = ['audio/opus', 'audio/red', 'video/vp8', 'video/h264', 'video/vp9', 'video/av1'];

class TwirpErr extends Error {
  constructor(code, msg, meta) { super(msg); this.code = code; this.meta = meta; }
}

function usage(msg) {
  process.stderr.write(`fake_livekit: ${msg}\n` +
    'usage: node fake_livekit.js --port P --key K --secret S [--mode ok|slow|error|badauth] [--delay-ms N] [--host H] [--verbose]\n');
  process.exit(2);
}

let opts;
try {
  opts = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      key: { type: 'string', default: 'devkey' },
      secret: { type: 'string', default: 'secret' },
      mode: { type: 'string', default: 'ok' },
      'delay-ms': { type: 'string', default: '0' },
      verbose: { type: 'boolean', default: false },
    },
  }).values;
} catch (e) { usage(e.message); }

const port = Number(opts.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`bad --port ${opts.port}`);
const state = {
  mode: opts.mode,
  delayMs: Number(opts['delay-ms']),
  rooms: new Map(), // name -> { room: P.Room, participants: Map(identity -> P.ParticipantInfo) }
  calls: [],
  seq: 0,
  holds: [], // {method, room, ms, when}
  waiting: new Set(), // resolvers of held calls, so clearing the holds releases them
  egresses: new Map(), // egress id -> { info: P.EgressInfo, conn: FakeEgress | null }
  egressConfig: { webhook_url: null, dial: false, wav: null, fail: 0 },
  webhookChain: Promise.resolve(), // webhooks go out one after the other, in order
};
if (!MODES.includes(state.mode)) usage(`bad --mode ${opts.mode}`);
if (!Number.isFinite(state.delayMs) || state.delayMs < 0) usage(`bad --delay-ms ${opts['delay-ms']}`);
const verifier = new TokenVerifier(opts.key, opts.secret);

function log(line) { if (opts.verbose) process.stderr.write(`fake_livekit ${line}\n`); }

function randId(prefix) {
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';
  const bytes = crypto.randomBytes(12);
  let s = prefix;
  for (const b of bytes) s += alphabet[b % alphabet.length];
  return s;
}

// Go protojson with EmitUnpopulated writes null for an unset message field; protobuf-es leaves it out.
function fillNulls(msg, json) {
  for (const f of msg.getType().fields.list()) {
    if (f.kind !== 'message' || f.oneof) continue;
    const v = msg[f.localName];
    if (f.repeated) {
      (v || []).forEach((el, i) => fillNulls(el, json[f.name][i]));
    } else if (v === undefined) {
      json[f.name] = null;
    } else {
      fillNulls(v, json[f.name]);
    }
  }
  return json;
}
function toWire(msg) {
  return fillNulls(msg, msg.toJson({ emitDefaultValues: true, useProtoFieldName: true }));
}

function nowVersion() {
  return new P.TimedVersion({ unixMicro: BigInt(Date.now()) * 1000n, ticks: 0 });
}

function refreshCounts(entry) {
  const ps = [...entry.participants.values()];
  entry.room.numParticipants = ps.length;
  entry.room.numPublishers = ps.filter((p) => p.isPublisher).length;
}

function getRoom(name) {
  const entry = state.rooms.get(name);
  if (!entry) throw new TwirpErr('not_found', 'requested room does not exist');
  return entry;
}
function getParticipant(roomName, identity) {
  const entry = state.rooms.get(roomName);
  const p = entry && entry.participants.get(identity);
  if (!p) throw new TwirpErr('not_found', 'participant does not exist');
  return { entry, p };
}

function createRoom(req) {
  if (!req.name) throw new TwirpErr('invalid_argument', 'room name is required');
  const existing = state.rooms.get(req.name);
  if (existing) return existing.room;
  const ms = Date.now();
  const room = new P.Room({
    sid: randId('RM_'),
    name: req.name,
    emptyTimeout: req.emptyTimeout || DEFAULT_EMPTY_TIMEOUT,
    departureTimeout: req.departureTimeout || DEFAULT_DEPARTURE_TIMEOUT,
    maxParticipants: req.maxParticipants || 0,
    creationTime: BigInt(Math.floor(ms / 1000)),
    creationTimeMs: BigInt(ms),
    turnPassword: crypto.randomBytes(12).toString('hex'),
    enabledCodecs: DEFAULT_CODECS.map((mime) => new P.Codec({ mime })),
    metadata: req.metadata || '',
    version: nowVersion(),
  });
  state.rooms.set(req.name, { room, participants: new Map() });
  return room;
}

// ---- egress ------------------------------------------------------------------------------------------

const nowNs = () => BigInt(Date.now()) * 1000000n;
const ACTIVE_EGRESS = new Set([P.EgressStatus.EGRESS_STARTING, P.EgressStatus.EGRESS_ACTIVE, P.EgressStatus.EGRESS_ENDING]);

// LiveKit's webhook: protojson of WebhookEvent (camelCase, zero values left out), signed with sha256 of the body.
function sendWebhook(event, egressInfo) {
  const url = state.egressConfig.webhook_url;
  if (!url) return;
  const body = JSON.stringify(new P.WebhookEvent({
    event, egressInfo, id: randId('EV_'), createdAt: BigInt(Math.floor(Date.now() / 1000)),
  }).toJson());
  state.webhookChain = state.webhookChain.then(async () => {
    try {
      const at = new AccessToken(opts.key, opts.secret, { ttl: '5m' });
      at.sha256 = crypto.createHash('sha256').update(body).digest('base64');
      const res = await fetch(url, { method: 'POST', body,
        headers: { Authorization: await at.toJwt(), 'Content-Type': 'application/webhook+json', 'User-Agent': 'LiveKit' } });
      log(`webhook ${event} -> ${res.status}`);
      await res.arrayBuffer();
    } catch (e) { log(`webhook ${event} failed: ${e.message}`); }
  });
}

function endEgress(entry, status, error) {
  const info = entry.info;
  if (!ACTIVE_EGRESS.has(info.status)) return;
  info.status = status;
  info.error = error || '';
  info.endedAt = nowNs();
  info.updatedAt = info.endedAt;
  if (entry.conn) entry.conn.stop();
  sendWebhook('egress_ended', info);
}

function startEgress(req) {
  if (!req.roomName) throw new TwirpErr('invalid_argument', 'room_name is required');
  if (!req.trackId) throw new TwirpErr('invalid_argument', 'track_id is required');
  if (req.output.case !== 'websocketUrl') throw new TwirpErr('invalid_argument', 'only websocket_url output is faked');
  const url = req.output.value;
  if (!/^wss?:\/\//i.test(url)) throw new TwirpErr('invalid_argument', 'websocket url must start with ws:// or wss://');
  const room = getRoom(req.roomName).room; // the server loads the room first: not_found when it has none
  const info = new P.EgressInfo({
    egressId: randId('EG_'), roomId: room.sid, roomName: req.roomName, status: P.EgressStatus.EGRESS_STARTING,
    sourceType: P.EgressSourceType.SDK, startedAt: nowNs(), updatedAt: nowNs(),
    request: { case: 'track', value: req },
  });
  const entry = { info, conn: null };
  state.egresses.set(info.egressId, entry);
  const cfg = state.egressConfig;
  // The worker joins and dials after the call has been answered.
  setImmediate(() => {
    sendWebhook('egress_started', info);
    if (cfg.fail > 0) {
      cfg.fail -= 1;
      return endEgress(entry, P.EgressStatus.EGRESS_FAILED, 'fake: egress failed (injected)');
    }
    if (!cfg.dial) {
      info.status = P.EgressStatus.EGRESS_ACTIVE;
      info.updatedAt = nowNs();
      return sendWebhook('egress_updated', info);
    }
    entry.conn = new FakeEgress(url, {
      wav: cfg.wav || undefined,
      onEvent: (ev) => {
        log(`egress ${info.egressId} ${ev.event}`);
        if (ev.event === 'open' && info.status === P.EgressStatus.EGRESS_STARTING) {
          info.status = P.EgressStatus.EGRESS_ACTIVE;
          info.updatedAt = nowNs();
          sendWebhook('egress_updated', info);
        } else if (ev.event === 'handshake_failed' || (ev.event === 'error' && entry.conn.state === 'failed')) {
          endEgress(entry, P.EgressStatus.EGRESS_FAILED, entry.conn.error);
        } else if (ev.event === 'closed' && ACTIVE_EGRESS.has(info.status)) {
          // Our peer closed or dropped the socket: the egress's next write fails.
          endEgress(entry, P.EgressStatus.EGRESS_FAILED, `websocket closed by the peer (${ev.code})`);
        }
      },
    });
    entry.conn.start();
  });
  return info;
}

function egressWire(entry) {
  return { ...toWire(entry.info), conn: entry.conn ? entry.conn.status() : null };
}

const handlers = {
  CreateRoom: (req) => toWire(createRoom(req)),
  ListRooms: (req) => {
    const names = req.names || [];
    const rooms = [...state.rooms.values()].map((e) => e.room)
      .filter((r) => names.length === 0 || names.includes(r.name));
    return toWire(new P.ListRoomsResponse({ rooms }));
  },
  DeleteRoom: (req) => {
    getRoom(req.room);
    state.rooms.delete(req.room);
    // The room's egresses end with it (EOS).
    for (const e of state.egresses.values()) {
      if (e.info.roomName === req.room) setImmediate(() => endEgress(e, P.EgressStatus.EGRESS_COMPLETE));
    }
    return toWire(new P.DeleteRoomResponse());
  },
  ListParticipants: (req) => {
    const entry = getRoom(req.room);
    return toWire(new P.ListParticipantsResponse({ participants: [...entry.participants.values()] }));
  },
  GetParticipant: (req) => toWire(getParticipant(req.room, req.identity).p),
  RemoveParticipant: (req) => {
    const { entry } = getParticipant(req.room, req.identity);
    entry.participants.delete(req.identity);
    refreshCounts(entry);
    return toWire(new P.RemoveParticipantResponse());
  },
  StartTrackEgress: (req) => toWire(startEgress(req)),
  StopEgress: (req) => {
    const entry = state.egresses.get(req.egressId);
    if (!entry) throw new TwirpErr('not_found', 'egress does not exist');
    if (!ACTIVE_EGRESS.has(entry.info.status)) {
      throw new TwirpErr('failed_precondition', `egress with status ${P.EgressStatus[entry.info.status]} cannot be stopped`);
    }
    entry.info.status = P.EgressStatus.EGRESS_ENDING;
    entry.info.updatedAt = nowNs();
    const answer = toWire(entry.info);
    setImmediate(() => endEgress(entry, P.EgressStatus.EGRESS_COMPLETE));
    return answer;
  },
  ListEgress: (req) => {
    const items = [...state.egresses.values()].map((e) => e.info).filter((i) =>
      (!req.roomName || i.roomName === req.roomName) && (!req.egressId || i.egressId === req.egressId) &&
      (!req.active || ACTIVE_EGRESS.has(i.status)));
    return toWire(new P.ListEgressResponse({ items }));
  },
  UpdateParticipant: (req) => {
    const { p } = getParticipant(req.room, req.identity);
    if (req.metadata) p.metadata = req.metadata;
    if (req.name) p.name = req.name;
    for (const [k, v] of Object.entries(req.attributes || {})) {
      if (v === '') delete p.attributes[k]; else p.attributes[k] = v;
    }
    if (req.permission) p.permission = req.permission;
    p.version += 1;
    return toWire(p);
  },
};

// ---- auth -------------------------------------------------------------------------------------------

function decodeSegment(seg) {
  return JSON.parse(Buffer.from(seg, 'base64url').toString('utf8'));
}

// Returns claims, or null when there is no Authorization header. Throws {plain} for a bad token:
// livekit-server answers those in plain text before Twirp sees the request.
async function authenticate(header) {
  if (header === undefined || header === '') return null;
  const fail = (why) => { const e = new Error(`invalid authorization token: ${why}`); e.plain = true; throw e; };
  if (!header.startsWith('Bearer ')) fail('authorization header must start with "Bearer "');
  const token = header.slice('Bearer '.length);
  let head, payload;
  try {
    const parts = token.split('.');
    if (parts.length !== 3) throw new Error('not a compact JWS');
    head = decodeSegment(parts[0]);
    payload = decodeSegment(parts[1]);
  } catch (e) { fail(`malformed token: ${e.message}`); }
  if (payload.iss !== opts.key) fail(`invalid API key: ${payload.iss}`);
  if (head.alg !== 'HS256') fail(`unsupported alg ${head.alg}`); // the server pins HS256, jose does not
  try {
    return await verifier.verify(token);
  } catch (e) { fail(e.message); }
  return null; // unreachable
}

function checkGrant(method, claims, req) {
  const video = (claims && claims.video) || {};
  const need = METHODS[method].grant;
  const ok = need === 'roomAdmin' ? video.roomAdmin === true && video.room === req.room : video[need] === true;
  if (!ok) throw new TwirpErr('unauthenticated', 'permissions denied');
}

// ---- HTTP -------------------------------------------------------------------------------------------

function send(res, status, body, contentType) {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': contentType || 'application/json', 'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}
function sendTwirpError(res, err) {
  const body = { code: err.code, msg: err.message };
  if (err.meta) body.meta = err.meta;
  send(res, TWIRP_STATUS[err.code] || 500, body); // exactly "application/json": the Node SDK compares it whole
}
function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function holdFor(ms) {
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); state.waiting.delete(done); resolve(); };
    const timer = setTimeout(done, ms);
    state.waiting.add(done);
  });
}
function releaseHolds() {
  state.holds = [];
  for (const done of [...state.waiting]) done();
}

async function handleTwirp(req, res, path, raw) {
  const m = /^\/twirp\/livekit\.(\w+)\/(\w+)$/.exec(path);
  const method = m ? m[2] : path.split('/').pop();
  let body = raw;
  try { body = raw === '' ? null : JSON.parse(raw); } catch { /* keep the raw text */ }
  const call = {
    seq: ++state.seq, at: new Date().toISOString(), method, path, http_method: req.method,
    content_type: req.headers['content-type'] || null, authorization: req.headers.authorization || null,
    body, grants: null, claims: null, status: null, error: null,
  };
  state.calls.push(call);
  const answer = (status, payload, contentType) => {
    call.status = status;
    if (status >= 400) call.error = typeof payload === 'string' ? payload.trim() : payload.msg;
    log(`${method} -> ${status}`);
    send(res, status, payload, contentType);
  };

  if (state.mode === 'slow') await sleep(state.delayMs);
  if (state.mode === 'error') return answer(500, { code: 'internal', msg: 'fake failure' });
  if (state.mode === 'badauth') {
    return answer(401, 'invalid authorization token: signature is invalid (fake badauth mode)\n', 'text/plain; charset=utf-8');
  }

  let claims;
  try {
    claims = await authenticate(req.headers.authorization);
  } catch (e) {
    return answer(401, `${e.message}\n`, 'text/plain; charset=utf-8');
  }
  call.claims = claims;
  call.grants = claims ? claims.video || null : null;

  try {
    const route = `${req.method} ${path}`;
    if (req.method !== 'POST') {
      throw new TwirpErr('bad_route', `unsupported method "${req.method}" (only POST is allowed)`, { twirp_invalid_route: route });
    }
    const ctype = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    if (ctype !== 'application/json') {
      throw new TwirpErr('bad_route', `unexpected Content-Type: "${req.headers['content-type'] || ''}"`, { twirp_invalid_route: route });
    }
    if (!m || !Object.hasOwn(METHODS, method) || serviceOf(method) !== m[1]) {
      throw new TwirpErr('bad_route', `no handler for path "${path}"`, { twirp_invalid_route: route });
    }
    let msg;
    try {
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('not a JSON object');
      msg = METHODS[method].req.fromJson(body, { ignoreUnknownFields: true });
    } catch (e) {
      throw new TwirpErr('malformed', `the json request could not be decoded: ${e.message}`);
    }
    checkGrant(method, claims, msg);
    const hold = state.holds.find((h) => h.method === method && h.room === (msg.name || msg.room || msg.roomName));
    if (hold && hold.when === 'before') await holdFor(hold.ms);
    const result = handlers[method](msg);
    if (hold && hold.when === 'after') { call.held = true; await holdFor(hold.ms); }
    return answer(200, result);
  } catch (e) {
    if (!(e instanceof TwirpErr)) {
      process.stderr.write(`fake_livekit: ${e.stack}\n`);
      e = new TwirpErr('internal', e.message);
    }
    return answer(TWIRP_STATUS[e.code] || 500, { code: e.code, msg: e.message, ...(e.meta ? { meta: e.meta } : {}) });
  }
}

function pick(obj, ...keys) {
  for (const k of keys) if (obj[k] !== undefined) return obj[k];
  return undefined;
}

async function handleFake(req, res, path, raw) {
  let body = {};
  if (raw !== '') {
    try { body = JSON.parse(raw); } catch (e) { return send(res, 400, { error: `bad JSON: ${e.message}` }); }
  }
  const route = `${req.method} ${path}`;
  if (route === 'GET /_fake/calls') return send(res, 200, state.calls);
  if (route === 'DELETE /_fake/calls') { state.calls = []; return send(res, 200, {}); }
  if (route === 'GET /_fake/rooms') {
    return send(res, 200, {
      rooms: [...state.rooms.values()].map((e) => ({
        ...toWire(e.room), participants: [...e.participants.values()].map(toWire),
      })),
    });
  }
  if (route === 'POST /_fake/reset') {
    state.rooms.clear(); state.calls = []; state.mode = 'ok'; state.delayMs = 0; releaseHolds();
    for (const e of state.egresses.values()) if (e.conn) e.conn.drop();
    state.egresses.clear();
    state.egressConfig = { webhook_url: null, dial: false, wav: null, fail: 0 };
    return send(res, 200, {});
  }
  if (route === 'POST /_fake/mode') {
    const mode = body.mode === undefined ? state.mode : body.mode;
    const delay = Number(pick(body, 'delay_ms', 'delayMs') ?? state.delayMs);
    if (!MODES.includes(mode)) return send(res, 400, { error: `mode must be one of ${MODES.join('|')}` });
    if (!Number.isFinite(delay) || delay < 0) return send(res, 400, { error: 'delay_ms must be a number >= 0' });
    state.mode = mode; state.delayMs = delay;
    return send(res, 200, { mode, delay_ms: delay });
  }
  if (route === 'GET /_fake/egress') return send(res, 200, [...state.egresses.values()].map(egressWire));
  if (route === 'POST /_fake/egress_config') {
    const cfg = { webhook_url: null, dial: false, wav: null, fail: 0 };
    if (body.webhook_url !== undefined && body.webhook_url !== null) {
      if (typeof body.webhook_url !== 'string') return send(res, 400, { error: 'webhook_url must be a string' });
      cfg.webhook_url = body.webhook_url;
    }
    cfg.dial = body.dial === true;
    if (body.wav !== undefined && body.wav !== null) cfg.wav = String(body.wav);
    if (body.fail !== undefined) {
      if (!Number.isInteger(body.fail) || body.fail < 0) return send(res, 400, { error: 'fail must be an integer >= 0' });
      cfg.fail = body.fail;
    }
    state.egressConfig = cfg;
    return send(res, 200, cfg);
  }
  if (route === 'POST /_fake/hold') {
    if (body.method === undefined) { releaseHolds(); return send(res, 200, { holds: state.holds }); }
    const when = body.when || 'after';
    const ms = Number(body.ms);
    if (!Object.hasOwn(METHODS, body.method) || typeof body.room !== 'string' || !['before', 'after'].includes(when) ||
        !Number.isFinite(ms) || ms < 0) {
      return send(res, 400, { error: 'hold needs {method, room, ms >= 0, when: before|after}' });
    }
    state.holds.push({ method: body.method, room: body.room, ms, when });
    return send(res, 200, { holds: state.holds });
  }
  if (route === 'POST /_fake/participants') {
    const roomName = body.room;
    if (typeof roomName !== 'string' || !roomName || typeof body.identity !== 'string' || !body.identity) {
      return send(res, 400, { error: 'room and identity are required strings' });
    }
    const info = { ...body };
    delete info.room;
    let p;
    try {
      p = P.ParticipantInfo.fromJson(info, { ignoreUnknownFields: true });
    } catch (e) { return send(res, 400, { error: `bad participant: ${e.message}` }); }
    const ms = Date.now();
    if (!p.sid) p.sid = randId('PA_');
    if (pick(body, 'state') === undefined) p.state = P.ParticipantInfo_State.ACTIVE;
    if (!p.joinedAt) p.joinedAt = BigInt(Math.floor(ms / 1000));
    if (!p.joinedAtMs) p.joinedAtMs = BigInt(ms);
    if (!p.permission) {
      p.permission = new P.ParticipantPermission({ canSubscribe: true, canPublish: true, canPublishData: true });
    }
    for (const t of p.tracks) if (!t.sid) t.sid = randId('TR_');
    if (pick(body, 'is_publisher', 'isPublisher') === undefined) p.isPublisher = p.tracks.length > 0;
    p.region = p.region || 'local';
    p.version = 1;
    // Joining creates the room, as on a real server.
    if (!state.rooms.has(roomName)) createRoom(new P.CreateRoomRequest({ name: roomName }));
    const entry = state.rooms.get(roomName);
    entry.participants.set(p.identity, p);
    refreshCounts(entry);
    return send(res, 200, toWire(p));
  }
  return send(res, 404, { error: `no fake route ${route}` });
}

const server = http.createServer(async (req, res) => {
  try {
    const path = new URL(req.url, 'http://x').pathname;
    const raw = await readBody(req);
    if (path.startsWith('/twirp/')) return await handleTwirp(req, res, path, raw);
    if (path.startsWith('/_fake/')) return await handleFake(req, res, path, raw);
    if (path === '/' && req.method === 'GET') return send(res, 200, 'OK', 'text/plain; charset=utf-8');
    return send(res, 404, '404 page not found\n', 'text/plain; charset=utf-8');
  } catch (e) {
    process.stderr.write(`fake_livekit: ${e.stack}\n`);
    if (!res.headersSent) send(res, 500, { code: 'internal', msg: e.message });
  }
});

server.on('error', (e) => { process.stderr.write(`fake_livekit: ${e.message}\n`); process.exit(1); });
server.listen(port, opts.host, () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
onTermSignals(() => server.close());
exitWithStdin('fake_livekit');
