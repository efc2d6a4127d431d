// Checks the fakes and oracles in this folder against the official SDK. Run: node --test spec/support/selftest.js
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { RoomServiceClient, EgressClient, AccessToken, WebhookReceiver } = require('livekit-server-sdk');
const http = require('node:http');
const WebSocket = require('ws');
const { FakeEgress } = require('./fake_egress');

const here = __dirname;
let fake;
let base;

function startFake(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'fake_livekit.js'), ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    child.stdout.once('data', (d) => {
      const m = /^listening (\d+)\n/.exec(d.toString());
      if (m) resolve({ child, port: Number(m[1]) }); else reject(new Error(`unexpected: ${d}`));
    });
    child.once('exit', (code) => reject(new Error(`fake exited ${code}`)));
  });
}

async function token(grant, secret = 'secret', key = 'devkey', identity = undefined) {
  const at = new AccessToken(key, secret, { ttl: '10m', identity });
  at.addGrant(grant);
  return at.toJwt();
}

async function twirp(method, body, auth, contentType = 'application/json') {
  const headers = { 'Content-Type': contentType };
  if (auth) headers.Authorization = auth;
  const res = await fetch(`${base}/twirp/livekit.RoomService/${method}`, { method: 'POST', headers, body: JSON.stringify(body) });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

before(async () => {
  fake = await startFake(['--port', '0', '--key', 'devkey', '--secret', 'secret']);
  base = `http://127.0.0.1:${fake.port}`;
});
after(() => fake.child.kill('SIGTERM'));

test('RoomServiceClient creates, lists, inspects and deletes rooms on the fake', async () => {
  const c = new RoomServiceClient(base, 'devkey', 'secret');
  const room = await c.createRoom({ name: 'st-1', emptyTimeout: 120, maxParticipants: 3, metadata: 'm' });
  assert.match(room.sid, /^RM_/);
  assert.equal(room.maxParticipants, 3);
  assert.equal((await c.createRoom({ name: 'st-1' })).sid, room.sid, 'CreateRoom on an existing name returns it');
  assert.deepEqual((await c.listRooms()).map((r) => r.name), ['st-1']);
  await fetch(`${base}/_fake/participants`, { method: 'POST', body: JSON.stringify({ room: 'st-1', identity: 'cand-42', name: 'Ada', metadata: 'x' }) });
  const ps = await c.listParticipants('st-1');
  assert.deepEqual(ps.map((p) => [p.identity, p.name, p.metadata]), [['cand-42', 'Ada', 'x']]);
  await c.deleteRoom('st-1');
  await assert.rejects(c.deleteRoom('st-1'), (e) => e.status === 404 && e.code === 'not_found');
  await assert.rejects(c.listParticipants('st-1'), (e) => e.status === 404 && e.message === 'requested room does not exist');
  const calls = await (await fetch(`${base}/_fake/calls`)).json();
  const create = calls.find((x) => x.method === 'CreateRoom');
  assert.deepEqual(create.grants, { roomCreate: true });
  assert.equal(create.body.emptyTimeout, 120);
  assert.deepEqual(calls.find((x) => x.method === 'ListParticipants').grants, { roomAdmin: true, room: 'st-1' });
});

test('a client with the wrong secret gets a plain-text 401', async () => {
  const bad = new RoomServiceClient(base, 'devkey', 'not-the-secret');
  await assert.rejects(bad.listRooms(), (e) => e.status === 401 && e.message.startsWith('invalid authorization token:'));
});

test('answers in snake_case with int64 as strings and accepts snake_case requests', async () => {
  const r = await twirp('CreateRoom', { name: 'st-2', empty_timeout: '60', max_participants: '2' }, `Bearer ${await token({ roomCreate: true })}`);
  assert.equal(r.status, 200);
  const room = JSON.parse(r.text);
  assert.equal(room.empty_timeout, 60);
  assert.equal(typeof room.creation_time, 'string');
  assert.equal(room.num_participants, 0);
});

test('wrong grant, wrong room, no header and wrong content type', async () => {
  let r = await twirp('ListRooms', {}, `Bearer ${await token({ roomCreate: true })}`);
  assert.deepEqual([r.status, JSON.parse(r.text)], [401, { code: 'unauthenticated', msg: 'permissions denied' }]);
  r = await twirp('ListParticipants', { room: 'st-2' }, `Bearer ${await token({ roomAdmin: true, room: 'other' })}`);
  assert.equal(r.status, 401);
  r = await twirp('ListRooms', {}, null);
  assert.equal(JSON.parse(r.text).code, 'unauthenticated');
  r = await twirp('ListRooms', {}, `Bearer ${await token({ roomList: true })}`, 'text/plain');
  assert.deepEqual([r.status, JSON.parse(r.text).code], [404, 'bad_route']);
});

test('error and slow modes', async () => {
  const auth = `Bearer ${await token({ roomList: true })}`;
  await fetch(`${base}/_fake/mode`, { method: 'POST', body: JSON.stringify({ mode: 'error' }) });
  let r = await twirp('ListRooms', {}, auth);
  assert.deepEqual([r.status, JSON.parse(r.text)], [500, { code: 'internal', msg: 'fake failure' }]);
  await fetch(`${base}/_fake/mode`, { method: 'POST', body: JSON.stringify({ mode: 'slow', delay_ms: 300 }) });
  const t0 = Date.now();
  r = await twirp('ListRooms', {}, auth);
  assert.equal(r.status, 200);
  assert.ok(Date.now() - t0 >= 290);
  await fetch(`${base}/_fake/mode`, { method: 'POST', body: JSON.stringify({ mode: 'ok', delay_ms: 0 }) });
});

test('the fake leaves when its stdin closes', async () => {
  const f = await startFake(['--port', '0']);
  await new Promise((r) => setTimeout(r, 600)); // past the startup grace
  const exited = new Promise((r) => f.child.once('exit', r));
  f.child.stdin.end();
  assert.equal(await exited, 0);
});

test('lk_verify accepts SDK tokens and rejects a wrong secret', async () => {
  const tok = await token({ roomJoin: true, room: 'r' }, 'secret', 'devkey', 'cand-42');
  const lines = [JSON.stringify({ token: tok, key: 'devkey', secret: 'secret' }), JSON.stringify({ token: tok, key: 'devkey', secret: 'x' })];
  const out = execFileSync(process.execPath, [path.join(here, 'lk_verify.js')], { input: `${lines.join('\n')}\n` }).toString().trim().split('\n').map(JSON.parse);
  assert.equal(out[0].ok, true);
  assert.equal(out[0].claims.video.room, 'r');
  assert.equal(out[1].ok, false);
});

test('lk_webhook signs the worked example body and its receiver accepts it, not a changed one', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lkwh-'));
  const body = '{"event":"participant_joined","room":{"sid":"RM_abc","name":"interview-7","emptyTimeout":300,"creationTime":"1767225600","numParticipants":1},"participant":{"sid":"PA_x","identity":"cand-42","state":"ACTIVE","joinedAt":"1767225601","name":"Ada","kind":"STANDARD"},"id":"EV_8sdFq3Wk2mGh","createdAt":"1767225601"}';
  const file = path.join(dir, 'body.json');
  fs.writeFileSync(file, body);
  const script = path.join(here, 'lk_webhook.js');
  const hdr = execFileSync(process.execPath, [script, '--key', 'devkey', '--secret', 'secret', '--body-file', file]).toString().trim();
  const claims = JSON.parse(Buffer.from(hdr.split('.')[1], 'base64url').toString());
  assert.equal(claims.sha256, 'tgb2jAwAaP7teB7CW9PRwe7WSZkjiZzTFaqomG6LNys=');
  assert.equal(claims.exp - claims.nbf, 300);
  const ok = JSON.parse(execFileSync(process.execPath, [script, '--receive', '--auth', hdr, '--body-file', file]).toString());
  assert.equal(ok.event.event, 'participant_joined');
  fs.writeFileSync(file, body.replace('Ada', 'Adb'));
  assert.throws(() => execFileSync(process.execPath, [script, '--receive', '--auth', hdr, '--body-file', file], { stdio: 'pipe' }));
  assert.equal(crypto.createHash('sha256').update(body).digest('hex'), 'b606f68c0c0068feed781ec25bd3d1c1eed6499923899cd315aaa8986e8b372b');
  fs.rmSync(dir, { recursive: true });
});

test('EgressClient starts, lists and stops a track egress on the fake, which signs its egress webhooks', async () => {
  const hooks = [];
  const receiver = new WebhookReceiver('devkey', 'secret');
  const sink = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', async () => {
      hooks.push(await receiver.receive(body, req.headers.authorization));
      res.end('{}');
    });
  });
  await new Promise((r) => sink.listen(0, '127.0.0.1', r));
  try {
    await fetch(`${base}/_fake/egress_config`, { method: 'POST',
      body: JSON.stringify({ webhook_url: `http://127.0.0.1:${sink.address().port}/` }) });
    await new RoomServiceClient(base, 'devkey', 'secret').createRoom({ name: 'st-eg' });
    const c = new EgressClient(base, 'devkey', 'secret');
    const info = await c.startTrackEgress('st-eg', 'ws://127.0.0.1:1/ingest?t=x', 'TR_st');
    assert.match(info.egressId, /^EG_/);
    assert.equal((await c.listEgress({ roomName: 'st-eg', active: true })).length, 1);
    await c.stopEgress(info.egressId);
    await assert.rejects(c.stopEgress('EG_nope'), (e) => e.status === 404);
    await assert.rejects(c.startTrackEgress('no-room', 'ws://x/', 'TR_x'), (e) => e.status === 404);
    for (let i = 0; i < 100 && hooks.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(hooks.map((h) => h.event), ['egress_started', 'egress_updated', 'egress_ended']);
    assert.equal(hooks[2].egressInfo.status, 3); // EGRESS_COMPLETE
    const calls = await (await fetch(`${base}/_fake/calls`)).json();
    const start = calls.find((x) => x.method === 'StartTrackEgress');
    assert.deepEqual(start.grants, { roomRecord: true });
    assert.deepEqual(start.body, { roomName: 'st-eg', trackId: 'TR_st', websocketUrl: 'ws://127.0.0.1:1/ingest?t=x' });
  } finally {
    await fetch(`${base}/_fake/egress_config`, { method: 'POST', body: '{}' });
    sink.close();
  }
});

test('fake_egress streams as livekit/egress does: audio/x-raw, no deflate, muted text, 1920-byte PCM, empty Close', async () => {
  const wss = new WebSocket.Server({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  const seen = { texts: [], sizes: [], pings: [], headers: null, close: null };
  wss.on('connection', (ws, req) => {
    seen.headers = req.headers;
    ws.on('message', (data, binary) => { if (binary) seen.sizes.push(data.length); else seen.texts.push(data.toString()); });
    ws.on('ping', (d) => seen.pings.push(d.toString()));
    ws.on('close', (code) => { seen.close = code; });
  });
  const e = new FakeEgress(`ws://127.0.0.1:${wss.address().port}/ingest?t=x`, { seconds: 0.2, speed: 4, pingMs: 20 });
  e.start();
  for (let i = 0; i < 200 && seen.close === null; i++) await new Promise((r) => setTimeout(r, 10));
  wss.close();
  assert.equal(seen.headers['content-type'], 'audio/x-raw');
  assert.equal(seen.headers['sec-websocket-extensions'], undefined);
  assert.deepEqual(seen.texts, ['{"muted":false}']);
  assert.equal(seen.sizes.length, 20);
  assert.ok(seen.sizes.every((n) => n === 1920));
  assert.ok(seen.pings.length >= 1 && seen.pings.every((p) => p === 'ping'));
  assert.equal(seen.close, 1005, 'a Close frame with no code');
});
