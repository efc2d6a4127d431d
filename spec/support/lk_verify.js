#!/usr/bin/env node
// Oracle for our tokens: the official Node SDK's TokenVerifier (shared/protocols/livekit.md §1, §5).
//
//   node lk_verify.js [--key K --secret S]          reads JSON lines {"token", "key"?, "secret"?, "clock_tolerance"?}
//                                                   from stdin, prints one JSON line per input line, in order:
//                                                   {"ok":true,"claims":{...}} or {"ok":false,"error":"..."}
//   node lk_verify.js --token T --key K --secret S  one token; prints the same line; exit 0 if valid, 1 if not
//
// key/secret default to the --key/--secret options, then to LiveKit's dev pair devkey/secret.
// clock_tolerance (seconds, default the SDK's 10) is passed to verify().
'use strict';

const readline = require('node:readline');
const { parseArgs } = require('node:util');
const { TokenVerifier } = require('livekit-server-sdk');

let opts;
try {
  opts = parseArgs({
    options: {
      token: { type: 'string' },
      key: { type: 'string', default: 'devkey' },
      secret: { type: 'string', default: 'secret' },
      'clock-tolerance': { type: 'string' },
    },
  }).values;
} catch (e) {
  process.stderr.write(`lk_verify: ${e.message}\nusage: node lk_verify.js [--token T] [--key K] [--secret S] [--clock-tolerance SECONDS]\n`);
  process.exit(2);
}

async function check(input) {
  try {
    if (typeof input.token !== 'string') throw new Error('input has no "token" string');
    const tolerance = input.clock_tolerance ?? input.clockTolerance;
    const verifier = new TokenVerifier(input.key ?? opts.key, input.secret ?? opts.secret);
    const claims = tolerance === undefined ? await verifier.verify(input.token) : await verifier.verify(input.token, Number(tolerance));
    return { ok: true, claims };
  } catch (e) {
    return { ok: false, error: e.code ? `${e.code}: ${e.message}` : e.message };
  }
}

async function main() {
  if (opts.token !== undefined) {
    const res = await check({ token: opts.token, clock_tolerance: opts['clock-tolerance'] });
    process.stdout.write(`${JSON.stringify(res)}\n`);
    process.exitCode = res.ok ? 0 : 1;
    return;
  }
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (line.trim() === '') continue;
    let input;
    try {
      input = JSON.parse(line);
    } catch (e) {
      process.stdout.write(`${JSON.stringify({ ok: false, error: `bad input line: ${e.message}` })}\n`);
      continue;
    }
    if (input === null || typeof input !== 'object') input = {};
    process.stdout.write(`${JSON.stringify(await check(input))}\n`);
  }
}

main();
