#!/usr/bin/env node
// Bench peer: the cheapest quantcoach endpoint, GET /health, on plain node:http.
//   node node_health.js --port P [--host 127.0.0.1]
// Prints "listening <port>" when ready (port 0 = pick one). GET /health -> 200
// {"status":"ok","uptime_s":<number>,"generation":1,"reloaded_at":"<iso>","reload_error":null};
// anything else -> 404 {"error":{"code":"not_found","message":"..."}}. Exits on SIGTERM/SIGINT or a closed stdin pipe.
'use strict';

const http = require('node:http');
const { parseArgs } = require('node:util');
const { exitWithStdin, onTermSignals } = require('../../spec/support/lib/lifecycle');

const opts = parseArgs({
  options: { port: { type: 'string', default: '0' }, host: { type: 'string', default: '127.0.0.1' } },
}).values;

const started = process.hrtime.bigint();
const reloadedAt = new Date().toISOString();
const NOT_FOUND = JSON.stringify({ error: { code: 'not_found', message: 'no such route' } });

const server = http.createServer((req, res) => {
  const path = req.url.split('?', 1)[0];
  if (req.method === 'GET' && path === '/health') {
    const body = JSON.stringify({
      status: 'ok',
      uptime_s: Number(process.hrtime.bigint() - started) / 1e9,
      generation: 1,
      reloaded_at: reloadedAt,
      reload_error: null,
    });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  req.resume();
  res.writeHead(404, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(NOT_FOUND) });
  res.end(NOT_FOUND);
});

server.on('error', (e) => { process.stderr.write(`node_health: ${e.message}\n`); process.exit(1); });
server.listen(Number(opts.port), opts.host, () => process.stdout.write(`listening ${server.address().port}\n`));
onTermSignals(() => server.close());
exitWithStdin('node_health');
