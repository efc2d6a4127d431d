#!/usr/bin/env node
// Signs and checks LiveKit webhooks with the official Node SDK (shared/protocols/livekit.md §4, §5).
//
//   node lk_webhook.js --key K --secret S --body-file F [--ttl 5m]
//       prints the Authorization header value for body F, as LiveKit sends it (the raw JWT, no "Bearer "):
//       AccessToken(K, S, {ttl}) with sha256 = base64(SHA-256(bytes of F)), toJwt(). Exit 0.
//   node lk_webhook.js --receive --key K --secret S --auth A --body-file F
//       oracle: new WebhookReceiver(K, S).receive(body, A); prints one JSON line
//       {"ok":true,"event":{...}} (exit 0) or {"ok":false,"error":"..."} (exit 1). --auth may be left out
//       (the SDK then says "authorization header is empty").
// --body-file - reads stdin. key/secret default to devkey/secret. --ttl takes "5m"-style or seconds.
'use strict';

const fs = require('node:fs');
const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const { AccessToken, WebhookReceiver } = require('livekit-server-sdk');

function usage(msg) {
  process.stderr.write(`lk_webhook: ${msg}\nusage: node lk_webhook.js --key K --secret S --body-file F [--ttl 5m]\n` +
    '       node lk_webhook.js --receive --key K --secret S --auth A --body-file F\n');
  process.exit(2);
}

let opts;
try {
  opts = parseArgs({
    options: {
      key: { type: 'string', default: 'devkey' },
      secret: { type: 'string', default: 'secret' },
      'body-file': { type: 'string' },
      ttl: { type: 'string', default: '5m' },
      receive: { type: 'boolean', default: false },
      auth: { type: 'string' },
    },
  }).values;
} catch (e) { usage(e.message); }
if (opts['body-file'] === undefined) usage('--body-file is required');

const body = fs.readFileSync(opts['body-file'] === '-' ? 0 : opts['body-file']);

async function main() {
  if (opts.receive) {
    try {
      // The SDK takes the body as a string and hashes its UTF-8 encoding.
      const event = await new WebhookReceiver(opts.key, opts.secret).receive(body.toString('utf8'), opts.auth);
      process.stdout.write(`${JSON.stringify({ ok: true, event: event.toJson() })}\n`);
    } catch (e) {
      process.stdout.write(`${JSON.stringify({ ok: false, error: e.code ? `${e.code}: ${e.message}` : e.message })}\n`);
      process.exitCode = 1;
    }
    return;
  }
  const ttl = /^\d+$/.test(opts.ttl) ? Number(opts.ttl) : opts.ttl;
  const at = new AccessToken(opts.key, opts.secret, { ttl });
  at.sha256 = crypto.createHash('sha256').update(body).digest('base64');
  process.stdout.write(`${await at.toJwt()}\n`);
}

main().catch((e) => { process.stderr.write(`lk_webhook: ${e.message}\n`); process.exit(2); });
