#!/usr/bin/env node
// Load for the durability spec: many POST /tokens/generate at once, each with its own
// participant identity; right after the Nth answer 200 arrives, SIGKILL the server.
//
//   node token_storm.js --url http://127.0.0.1:PORT --pid PID --answers N [--concurrency C]
//   node token_storm.js --url URL --crash 'CMD' --answers N [--then-s S] [--auth KEY]
//
// With --crash, the Nth answer runs CMD (a shell command: crash the store under the load)
// instead of a kill, and the requests go on for S more seconds (default 3), so some are in
// flight when the store goes and some arrive while it is away; then it reports.
//
// Prints one JSON line: {"answered":[identity, ...], "statuses":{"200":n, ...}, "killed":true}.
// `answered` holds every identity answered 200, also the answers that were already on their
// way when the kill went out (the server sent them before it died). Node kills from the
// same callback that counted the Nth answer, so the kill follows it within microseconds.
'use strict';

const http = require('node:http');
const { parseArgs } = require('node:util');

const opts = parseArgs({
  options: {
    url: { type: 'string' },
    pid: { type: 'string' },
    answers: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '128' },
    'timeout-s': { type: 'string', default: '60' },
    crash: { type: 'string' },
    'then-s': { type: 'string', default: '3' },
    auth: { type: 'string' },
  },
}).values;
if (!opts.url || (!opts.pid && !opts.crash)) {
  process.stderr.write('usage: node token_storm.js --url URL --pid PID --answers N [--concurrency C]\n');
  process.exit(2);
}

const url = new URL('/tokens/generate', opts.url);
const pid = Number(opts.pid);
const want = Number(opts.answers);
const concurrency = Number(opts.concurrency);
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const answered = [];
const statuses = {};
let killed = false;
let seq = 0;
let running = 0;

function finish() {
  // Exit once the line is out: a pipe takes it in pieces, and exit() would cut it short.
  process.stdout.write(JSON.stringify({ answered, statuses, killed }) + '\n', () => process.exit(0));
}

let crashed = false;
function kill() {
  if (killed) return;
  if (opts.crash) {
    if (crashed) return;
    crashed = true;
    require('node:child_process').exec(opts.crash, (err, _out, errText) => {
      if (err) process.stderr.write(`token_storm: ${opts.crash}: ${errText || err.message}\n`);
    });
    setTimeout(() => { killed = true; }, Number(opts['then-s']) * 1000);
    return;
  }
  killed = true;
  try {
    process.kill(pid, 'SIGKILL');
  } catch (e) {
    process.stderr.write(`token_storm: kill ${pid}: ${e.message}\n`);
  }
}

function one() {
  if (killed) {
    if (--running === 0) finish();
    return;
  }
  const identity = `storm-${process.pid}-${++seq}`;
  const body = JSON.stringify({ room_name: 'storm', participant_identity: identity, participant_type: 'candidate' });
  let settled = false; // a reset socket may report on both the request and the response
  const next = () => { if (!settled) { settled = true; one(); } };
  const req = http.request(url, {
    method: 'POST', agent,
    headers: Object.assign({ 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      opts.auth ? { authorization: `Bearer ${opts.auth}` } : {}),
  }, (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => {
      statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
      if (res.statusCode === 200 && Buffer.concat(chunks).toString().includes('"token"')) {
        answered.push(identity);
        if (answered.length >= want) kill();
      }
      next();
    });
    res.on('error', next);
    res.on('aborted', next);
  });
  req.on('error', () => {
    statuses.error = (statuses.error || 0) + 1;
    if (!killed && !opts.crash) kill(); // the server went away on its own: stop, report what we have
    next();
  });
  req.end(body);
}

setTimeout(() => { kill(); setTimeout(finish, 2000); }, Number(opts['timeout-s']) * 1000).unref();
for (let i = 0; i < concurrency; i++) {
  running++;
  one();
}
