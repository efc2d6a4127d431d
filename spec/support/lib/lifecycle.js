// Process lifetime for the fake peers: leave on SIGTERM/SIGINT, and when the test that started us closes
// our stdin, so a spec that forgets to stop a fake never leaves it running.
'use strict';

const fs = require('node:fs');

// A stdin that is already at EOF when we start (an inherited, drained pipe, as under CI with no input)
// was never meant for us; only an EOF that comes after this grace counts as "the test let go of us".
const STARTUP_GRACE_MS = 500;

function exitWithStdin(name) {
  let st;
  try { st = fs.fstatSync(0); } catch { return; } // no fd 0 at all
  if (!st.isFIFO() && !st.isSocket()) return; // a tty, /dev/null or a file: nothing to watch
  const started = Date.now();
  const onEof = () => {
    if (Date.now() - started < STARTUP_GRACE_MS) {
      process.stderr.write(`${name}: stdin was closed at start; not tying my life to it\n`);
      return;
    }
    process.exit(0);
  };
  process.stdin.on('data', () => {});
  process.stdin.once('end', onEof);
  process.stdin.once('error', onEof);
  process.stdin.resume();
  // Do not let a stdin that stays open keep the process alive by itself.
  if (process.stdin.unref) process.stdin.unref();
}

function onTermSignals(cleanup) {
  const stop = () => {
    try { if (cleanup) cleanup(); } catch { /* exiting anyway */ }
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

module.exports = { exitWithStdin, onTermSignals };
