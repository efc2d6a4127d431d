#!/usr/bin/env node
// Load for the durability spec: many POST /tokens/generate at once, each with its own
// participant identity; right after the Nth answer 200 arrives, SIGKILL the server.
//
//   node token_storm.js --url http://127.0.0.1:PORT --pid PID --answers N [--concurrency C]
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
  },
}).values;
if (!opts.url || !opts.pid) {
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

function kill() {
  if (killed) return;
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
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
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
    if (!killed) kill(); // the server went away on its own: stop, report what we have
    next();
  });
  req.end(body);
}

setTimeout(() => { kill(); setTimeout(finish, 2000); }, Number(opts['timeout-s']) * 1000).unref();
for (let i = 0; i < concurrency; i++) {
  running++;
  one();
}
