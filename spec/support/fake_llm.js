#!/usr/bin/env node
// Fake LLM server for specs, both API shapes of shared/protocols/stt-llm.md §3:
// POST /v1/chat/completions (OpenAI-compatible) and POST /v1/messages (Anthropic). Every call is
// recorded (path, headers, body, arrival time) and answered from a per-test queue of replies.
//
//   node fake_llm.js --port 0        prints "listening <port>"; exits on SIGTERM/SIGINT or stdin EOF
//
// Test helpers:
//   POST /_fake/queue  [reply, ...]  appended to the queue; a reply is
//        { content: "text" }            a success in the shape of the path called, with
//                                       usage {input, output}, finish_reason / stop_reason
//        { status, headers, body }      any answer (body: string, or an object sent as JSON)
//        { delay_ms }                   wait before answering (with any of the above)
//        { hang: true }                 never answer (the client's timeout must end it)
//        { close_mid_body: true }       send the head and half a body, then drop the socket
//   GET  /_fake/calls  -> [{path, headers, body, at_ms}]
//   GET  /_fake/stats  -> {max_inflight, inflight}
//   POST /_fake/reset  -> empty queue and log
// With the queue empty a call gets 400 {"error":{"message":"fake_llm: no reply queued"}}.
'use strict';

const http = require('node:http');
const { parseArgs } = require('node:util');
const { exitWithStdin, onTermSignals } = require('./lib/lifecycle');

const { values: args } = parseArgs({ options: { port: { type: 'string', default: '0' } } });

let queue = [];
let calls = [];
let inflight = 0;
let maxInflight = 0;
const started = Date.now();

function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

function sendJson(res, status, obj, headers = {}) {
  const body = typeof obj === 'string' ? obj : JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

function success(path, reply, model) {
  const usage = reply.usage || { input: 11, output: 7 };
  if (path.endsWith('/messages')) {
    return {
      id: 'msg_fake', type: 'message', role: 'assistant', model: model || 'claude-fake',
      content: [{ type: 'text', text: reply.content }],
      stop_reason: reply.stop_reason || 'end_turn', stop_sequence: null,
      usage: { input_tokens: usage.input, output_tokens: usage.output },
    };
  }
  return {
    id: 'chatcmpl-fake', object: 'chat.completion', created: Math.floor(Date.now() / 1000), model: model || 'gpt-fake',
    choices: [{ index: 0, message: { role: 'assistant', content: reply.content, refusal: null },
                finish_reason: reply.finish_reason || 'stop' }],
    usage: { prompt_tokens: usage.input, completion_tokens: usage.output, total_tokens: usage.input + usage.output },
  };
}

const server = http.createServer(async (req, res) => {
  const raw = await readBody(req);
  const url = req.url.split('?')[0];
  if (url === '/_fake/queue' && req.method === 'POST') {
    queue.push(...JSON.parse(raw));
    return sendJson(res, 200, { queued: queue.length });
  }
  if (url === '/_fake/calls') return sendJson(res, 200, calls);
  if (url === '/_fake/stats') return sendJson(res, 200, { max_inflight: maxInflight, inflight });
  if (url === '/_fake/reset' && req.method === 'POST') {
    queue = []; calls = []; maxInflight = 0;
    return sendJson(res, 200, {});
  }
  if (req.method !== 'POST' || !(url.endsWith('/chat/completions') || url.endsWith('/messages'))) {
    return sendJson(res, 404, { error: { message: `fake_llm: no route ${req.method} ${url}` } });
  }
  let body = null;
  try { body = JSON.parse(raw); } catch { body = raw; }
  calls.push({ path: url, headers: req.headers, body, at_ms: Date.now() - started });
  const reply = queue.shift();
  if (!reply) return sendJson(res, 400, { error: { message: 'fake_llm: no reply queued' } });
  inflight++;
  if (inflight > maxInflight) maxInflight = inflight;
  const done = () => { inflight--; };
  if (reply.hang) {
    req.socket.on('close', done);
    return; // never answered
  }
  setTimeout(() => {
    if (reply.close_mid_body) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '400' });
      res.write('{"id":"chatcmpl-fake","choices":[');
      setTimeout(() => { req.socket.destroy(); done(); }, 20);
      return;
    }
    done();
    if (reply.content !== undefined) return sendJson(res, 200, success(url, reply, body && body.model), reply.headers);
    return sendJson(res, reply.status || 200, reply.body === undefined ? {} : reply.body, reply.headers || {});
  }, reply.delay_ms || 0);
});

server.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
exitWithStdin('fake_llm');
onTermSignals(() => server.close());
