// The delay from a final committed on instance A to its delivery on instance B's live socket
// (bench/store.sh). One live client on B; finals posted to A one at a time at --rate a second.
// A's answer carries its wall clock just before and just after transcripts.on_event (unix
// seconds; the commit is in between, then A's own windows and analytics); each live message is
// stamped on arrival with this machine's wall clock, the same clock. Finals are matched by their
// text (a window or evaluation may take the next sequence number).
//   node bench/live_delay.js --a http://127.0.0.1:PA --b ws://127.0.0.1:PB --key K [--finals N] [--rate R]
'use strict';
const http = require('node:http');
const { performance } = require('node:perf_hooks');
const WebSocket = require('ws');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const finals = Number(args.finals || 2000);
const rate = Number(args.rate || 200);
const room = 'delay-' + process.pid;
const now = () => (performance.timeOrigin + performance.now()) / 1000;

function post(body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request(args.a + '/bench/final', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + args.key, 'Content-Length': Buffer.byteLength(data) },
    }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(res.statusCode + ' ' + text))));
    });
    req.on('error', reject);
    req.end(data);
  });
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

async function main() {
  // The room exists before the client subscribes: one final first, on A.
  await post({ room, text: 'warm up', t: 0 });
  const arrived = new Map();
  const order = [];
  const ws = new WebSocket(`${args.b}/rooms/${room}/live?token=${encodeURIComponent(args.key)}`);
  ws.on('message', (m) => {
    const t = now();
    const msg = JSON.parse(m.toString());
    if (msg.type === 'transcript' && msg.final) {
      const m2 = /^final number (\d+) /.exec(msg.text || '');
      if (m2) arrived.set(Number(m2[1]), t);
      order.push(msg.seq);
    }
  });
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  await new Promise((r) => setTimeout(r, 300));
  const committed = new Map();
  const gap = 1000 / rate;
  const start = performance.now();
  for (let i = 1; i <= finals; i++) {
    const wait = start + i * gap - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const res = await post({ room, text: 'final number ' + i + ' of the delay run', t: i * 2 });
    committed.set(i, res);
  }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && [...committed.keys()].some((s) => !arrived.has(s))) await new Promise((r) => setTimeout(r, 20));
  ws.close();
  const fromBefore = [];
  const fromAfter = [];
  let missing = 0;
  for (const [i, res] of committed) {
    if (!arrived.has(i)) { missing++; continue; }
    fromBefore.push((arrived.get(i) - res.before) * 1000);
    fromAfter.push((arrived.get(i) - res.after) * 1000);
  }
  let inOrder = true;
  for (let i = 1; i < order.length; i++) if (order[i] <= order[i - 1]) inOrder = false;
  const line = `A->B live delay: ${finals} finals at ${rate}/s, ${fromBefore.length} delivered, ${missing} missing, ` +
    (inOrder ? 'in order' : 'OUT OF ORDER');
  if (!fromBefore.length) { console.log(line); process.exit(1); }
  const show = (d) => {
    d.sort((x, y) => x - y);
    return `p50 ${pct(d, 0.5).toFixed(2)} p90 ${pct(d, 0.9).toFixed(2)} p99 ${pct(d, 0.99).toFixed(2)} max ${d[d.length - 1].toFixed(2)}`;
  };
  console.log(line);
  console.log('  delay ms from the start of the commit on A: ' + show(fromBefore));
  console.log('  delay ms from the end of on_event on A:     ' + show(fromAfter) + ' (negative: B had it before A was done)');
  if (missing) process.exit(1);
}
main().catch((e) => { console.error('live_delay: ' + e.message); process.exit(1); });
