#!/usr/bin/env node
// Bench peer: POST /tokens/generate on node:http + livekit-server-sdk's AccessToken.
//   node node_tokens.js --port P [--host 127.0.0.1] [--key K] [--secret S] [--url U]
// key/secret/url default to LIVEKIT_API_KEY / LIVEKIT_API_SECRET / LIVEKIT_URL, then devkey / secret /
// ws://127.0.0.1:7880. Prints "listening <port>" when ready. Exits on SIGTERM/SIGINT or a closed stdin pipe.
//
// body {room_name, participant_identity, participant_name?, participant_type: interviewer|candidate|agent}
//   -> 200 {token, url, room_name, participant_identity, participant_type, expires_at}  (TTL 2 h, expires_at ISO UTC)
//   -> 422 {"error":{"code":"invalid_request","message":"..."}} on bad JSON, a missing field, an unknown type
// other routes -> 404 JSON.
'use strict';

const http = require('node:http');
const { parseArgs } = require('node:util');
const { AccessToken } = require('livekit-server-sdk');
const { exitWithStdin, onTermSignals } = require('../../spec/support/lib/lifecycle');

const opts = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    key: { type: 'string', default: process.env.LIVEKIT_API_KEY || 'devkey' },
    secret: { type: 'string', default: process.env.LIVEKIT_API_SECRET || 'secret' },
    url: { type: 'string', default: process.env.LIVEKIT_URL || 'ws://127.0.0.1:7880' },
  },
}).values;

const TTL_S = 2 * 60 * 60;

function grantFor(type, room) {
  switch (type) {
    case 'interviewer':
    case 'candidate':
      return { roomJoin: true, room, canPublish: true, canSubscribe: true };
    case 'agent':
      return { roomJoin: true, room, hidden: true, canSubscribe: true, canPublish: false, canPublishData: true };
    default:
      return null;
  }
}

function isoSeconds(unix) {
  return new Date(unix * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

class Invalid extends Error {}

async function generate(raw) {
  let body;
  try { body = JSON.parse(raw); } catch { throw new Invalid('body is not valid JSON'); }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Invalid('body must be a JSON object');
  for (const f of ['room_name', 'participant_identity', 'participant_type']) {
    if (typeof body[f] !== 'string' || body[f] === '') throw new Invalid(`${f} is required`);
  }
  const name = body.participant_name;
  if (name !== undefined && name !== null && typeof name !== 'string') throw new Invalid('participant_name must be a string');
  const grant = grantFor(body.participant_type, body.room_name);
  if (!grant) throw new Invalid('participant_type must be one of interviewer, candidate, agent');

  const at = new AccessToken(opts.key, opts.secret, {
    identity: body.participant_identity,
    name: name || undefined,
    ttl: TTL_S,
  });
  at.addGrant(grant);
  const token = await at.toJwt();
  const exp = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp;
  return {
    token,
    url: opts.url,
    room_name: body.room_name,
    participant_identity: body.participant_identity,
    participant_type: body.participant_type,
    expires_at: isoSeconds(exp),
  };
}

function send(res, status, obj) {
  const data = JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?', 1)[0];
  if (req.method !== 'POST' || path !== '/tokens/generate') {
    req.resume();
    send(res, 404, { error: { code: 'not_found', message: 'no such route' } });
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    generate(Buffer.concat(chunks).toString('utf8')).then(
      (out) => send(res, 200, out),
      (e) => {
        if (e instanceof Invalid) send(res, 422, { error: { code: 'invalid_request', message: e.message } });
        else send(res, 500, { error: { code: 'internal', message: e.message } });
      },
    );
  });
});

server.on('error', (e) => { process.stderr.write(`node_tokens: ${e.message}\n`); process.exit(1); });
server.listen(Number(opts.port), opts.host, () => process.stdout.write(`listening ${server.address().port}\n`));
onTermSignals(() => server.close());
exitWithStdin('node_tokens');
