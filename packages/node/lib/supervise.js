// Runs the master-process binary in place of this Node.js process, and never returns.
//
// - Where Node.js has process.execve (22.15+, 23.11+): the process becomes the master, same
//   pid, so `kill -HUP <pid>` reaches the master itself.
// - Elsewhere (Node.js 18, 20, 22.0-22.14): the master runs as a child, in its own session
//   (so that Ctrl-C reaches it once, through us), with our stdio. This thread blocks for good
//   in Atomics.wait, so no code of the app ever runs again here; a helper thread relays
//   SIGHUP, SIGINT, SIGTERM, SIGQUIT and SIGUSR2 to the master, and wakes this thread when
//   the master exits: we exit with its code, or die of its signal. The master gets
//   MASTER_PROCESS_PARENT_PID, and dies with us.
'use strict';

const path = require('path');
const os = require('os');

const FORWARDED = ['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGQUIT', 'SIGUSR2'];

// Layout of the shared cell: [state, kind, value]; state DONE once the master is gone.
const STATE = 0;
const KIND = 1;
const VALUE = 2;
const DONE = 1;
const EXITED = 1;
const SIGNALED = 2;

function runMaster(bin, args, env) {
  if (typeof process.execve === 'function') {
    // Throws (ENOENT, EACCES...) and leaves this process as it was if the exec fails.
    process.execve(bin, [bin, ...args], env);
  }
  const { Worker } = require('worker_threads');
  const cell = new Int32Array(new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT));
  // Until the relay thread takes them over (before it starts the master), a SIGHUP or
  // SIGUSR2 must not kill us with its default action: caught here, and lost (this thread
  // never runs their listeners), which is harmless with no master yet. SIGINT, SIGTERM and
  // SIGQUIT keep theirs: stopped that early, we stop, and nothing is left behind.
  const noop = () => {};
  const HARMLESS = ['SIGHUP', 'SIGUSR2'];
  for (const sig of HARMLESS) process.on(sig, noop);
  new Worker(path.join(__dirname, 'relay.js'), {
    workerData: {
      cell: cell.buffer,
      bin,
      args,
      env: { ...env, MASTER_PROCESS_PARENT_PID: String(process.pid) },
      forwarded: FORWARDED,
    },
    stdout: false,
    stderr: false,
  });
  while (Atomics.load(cell, STATE) !== DONE) Atomics.wait(cell, STATE, 0);
  const kind = Atomics.load(cell, KIND);
  const value = Atomics.load(cell, VALUE);
  for (const sig of HARMLESS) process.removeListener(sig, noop);
  if (kind === SIGNALED) {
    // Die of the master's signal, as a shell would see it; exit 128+N if it does not kill.
    const name = Object.keys(os.constants.signals).find((n) => os.constants.signals[n] === value);
    if (name) {
      for (const l of process.listeners(name)) process.removeListener(name, l);
      try {
        process.kill(process.pid, name);
      } catch {
        // fall through
      }
    }
    process.exit(128 + value);
  }
  process.exit(kind === EXITED ? value : 1);
}

module.exports = { runMaster, FORWARDED, STATE, KIND, VALUE, DONE, EXITED, SIGNALED };
