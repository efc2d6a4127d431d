// The npm `ws` client, driven by a JSON plan, for spec/websocket_spec.lua: what a real
// client library does with our server (handshake, masking, fragments, pings, close).
//   node ws_client.js PLAN.json  ->  JSON report on stdout
// Plan: {url, headers?, steps: [{send: text} | {send_binary: n} | {send_fragments: [text...]}
//        | {ping: text} | {close: [code, reason]} | {wait_ms: n} | {wait_messages: n}
//        | {terminate: true}], timeout_ms}
// Report: {opened, status?, body?, messages: [{text|len, binary}], pongs: [text],
//          close: {code, reason}, error?}
const WebSocket = require('ws');
const fs = require('fs');

const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const report = { opened: false, messages: [], pongs: [] };
let finished = false;
function finish() {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(report));
  process.exit(0);
}
setTimeout(() => { report.timeout = true; finish(); }, plan.timeout_ms || 10000);

const ws = new WebSocket(plan.url, { headers: plan.headers || {} });
let waiters = [];
ws.on('message', (data, isBinary) => {
  report.messages.push(isBinary ? { binary: true, len: data.length, sum: [...data].reduce((a, b) => (a + b) % 65536, 0) }
    : { text: data.toString() });
  waiters = waiters.filter(w => !w());
});
ws.on('pong', d => report.pongs.push(d.toString()));
ws.on('close', (code, reason) => { report.close = { code, reason: reason.toString() }; finish(); });
ws.on('error', e => { report.error = e.message; });
ws.on('unexpected-response', (req, res) => {
  report.status = res.statusCode;
  report.headers = res.headers;
  let body = '';
  res.on('data', d => { body += d; });
  res.on('end', () => { report.body = body; finish(); });
});
ws.on('open', async () => {
  report.opened = true;
  for (const step of plan.steps || []) {
    if (step.send !== undefined) ws.send(step.send);
    else if (step.send_binary !== undefined) {
      const b = Buffer.alloc(step.send_binary);
      for (let i = 0; i < b.length; i++) b[i] = (i * 7 + 3) & 255;
      ws.send(b, { binary: true });
    } else if (step.send_fragments) {
      const parts = step.send_fragments;
      parts.forEach((p, i) => ws.send(p, { fin: i === parts.length - 1 }));
    } else if (step.ping !== undefined) ws.ping(step.ping);
    else if (step.close) ws.close(step.close[0], step.close[1]);
    else if (step.terminate) ws.terminate();
    else if (step.wait_ms) await new Promise(r => setTimeout(r, step.wait_ms));
    else if (step.wait_messages) {
      await new Promise(r => {
        const w = () => { if (report.messages.length >= step.wait_messages) { r(); return true; } return false; };
        if (!w()) waiters.push(w);
      });
    }
  }
});
