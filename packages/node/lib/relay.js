// The relay thread of supervise.js (Node.js without process.execve): starts the master,
// relays signals to it, and reports its end to the main thread, which is blocked for good.
//
// Signals: worker threads get no `process.on('SIGHUP')`, so this thread opens libuv signal
// handles itself, through process.binding('signal_wrap'), the object behind process.on in
// the main thread (present in every Node.js that lacks process.execve). Nothing here may
// print through process.stdout/stderr: those go through the blocked main thread.
'use strict';

const { workerData } = require('worker_threads');
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const { STATE, KIND, VALUE, DONE, EXITED, SIGNALED } = require('./supervise.js');

const cell = new Int32Array(workerData.cell);
const say = (msg) => {
  try {
    fs.writeSync(2, `master-process: ${msg}\n`);
  } catch {
    // nowhere to say it
  }
};

let finished = false;
function finish(kind, value) {
  if (finished) return;
  finished = true;
  Atomics.store(cell, KIND, kind);
  Atomics.store(cell, VALUE, value);
  Atomics.store(cell, STATE, DONE);
  Atomics.notify(cell, STATE);
}

const handles = [];
try {
  // Our one deliberate use of it: do not warn (the warning could not be printed anyway).
  process.noDeprecation = true;
  const { Signal } = process.binding('signal_wrap');
  let child;
  for (const name of workerData.forwarded) {
    const handle = new Signal();
    handle.onsignal = () => {
      if (child && child.exitCode === null && child.signalCode === null) {
        try {
          child.kill(name);
        } catch {
          // gone meanwhile: its exit is on its way
        }
      }
    };
    const err = handle.start(os.constants.signals[name]);
    if (err) throw new Error(`cannot catch ${name} (libuv error ${err})`);
    handles.push(handle);
  }
  child = spawn(workerData.bin, workerData.args, {
    stdio: 'inherit',
    env: workerData.env,
    detached: true,
  });
  child.on('error', (err) => {
    say(`cannot run ${workerData.bin}: ${err.message}`);
    closeHandles();
    finish(EXITED, 1);
  });
  child.on('exit', (code, signal) => {
    closeHandles();
    if (signal) finish(SIGNALED, os.constants.signals[signal] || 9);
    else finish(EXITED, code);
  });
} catch (err) {
  say(`cannot supervise the master from this Node.js ${process.version}: ${err.message}`);
  closeHandles();
  finish(EXITED, 1);
}

function closeHandles() {
  for (const h of handles.splice(0)) h.close();
}
