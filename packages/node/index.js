// master-process for Node.js: `require('master-process').init()` at the top of an app makes
// the process the user started a master-process master (the Rust binary), which runs this
// same command line as its workers and reloads them with no downtime on SIGHUP.
'use strict';

const path = require('path');
const { findBinary, platformKey, packageName } = require('./lib/binary.js');
const { debug } = require('./lib/debug.js');

let result; // init() is idempotent

/**
 * Call first thing in the app.
 *
 * - In a worker (MASTER_PROCESS_WORKER is set by the master): returns at once, with the
 *   worker's indexes; SIGTERM drains the app's servers unless it handles SIGTERM itself.
 * - In the process the user started: runs the master with this same command line as the
 *   worker command, and never returns.
 * - When no master is possible or wanted: returns, and the app runs as one process (one
 *   warning line on stderr says why).
 */
function init() {
  if (result) return result;
  const env = process.env;

  if (env.MASTER_PROCESS_WORKER) {
    require('./lib/worker.js');
    result = Object.freeze({
      role: 'worker',
      workerIndex: toInt(env.WORKER_INDEX),
      reloadIndex: toInt(env.RELOAD_INDEX),
    });
    return result;
  }

  // Not a process a user started: code in someone else's cluster or a worker thread.
  if (!require('worker_threads').isMainThread || require('cluster').isWorker) {
    result = Object.freeze({ role: 'standalone', reason: 'not the main process' });
    return result;
  }

  const reason = standaloneReason(env);
  if (reason) return standalone(reason);

  const bin = findBinary(env); // throws if MASTER_PROCESS_BIN is set and unusable
  if (!bin) {
    return standalone(
      `no master-process binary for ${platformKey()} (the optional dependency ${packageName()} ` +
        'is not installed, MASTER_PROCESS_BIN is not set and PATH has none)',
    );
  }

  debug(`using ${bin.path} (${bin.source}); workers: ${process.argv.slice(1).join(' ')}`);

  // The worker command: this very Node.js with its flags, the script and its arguments, and
  // our preload first (drain on SIGTERM; the reference's `cluster.isMaster` guard).
  const command = [
    process.execPath,
    '--require',
    path.join(__dirname, 'lib', 'worker.js'),
    ...process.execArgv,
    ...process.argv.slice(1),
  ];
  require('./lib/supervise.js').runMaster(bin.path, ['--', ...command], { ...env });
  // not reached
  throw new Error('master-process: the master returned');
}

// Why this process must run the app itself, or undefined.
function standaloneReason(env) {
  const mode = (env.MASTER_PROCESS || '').toLowerCase();
  if (mode === 'off' || mode === 'test') return `MASTER_PROCESS=${env.MASTER_PROCESS}`;
  if (env.NODE_ENV === 'test') return 'NODE_ENV=test';
  if (underDebugger()) return 'a debugger is attached';
  const runner = testRunner(env);
  if (runner) return `under a test runner (${runner})`;
  // node --watch restarts its child on every change: a master there only slows that down.
  if (env.WATCH_REPORT_DEPENDENCIES) return 'under node --watch';
  if (process.platform !== 'linux') return `${process.platform} is not supported (Linux only)`;
  if (process.argv.length < 2 && !process.execArgv.some((a) => /^(-e|--eval|-p|--print)/.test(a))) {
    return 'no script to run as workers (REPL or stdin)';
  }
  return undefined;
}

function underDebugger() {
  if (process.execArgv.some((a) => /^--(inspect|debug)(-brk|-wait)?(=|$)/.test(a))) return true;
  if (typeof globalThis.v8debug === 'object') return true;
  try {
    return Boolean(require('inspector').url());
  } catch {
    return false; // built without the inspector
  }
}

function testRunner(env) {
  if (env.NODE_TEST_CONTEXT || process.execArgv.includes('--test')) return 'node --test';
  if (env.JEST_WORKER_ID) return 'jest';
  if (env.VITEST || env.VITEST_WORKER_ID) return 'vitest';
  if (/(^|[\\/])_?mocha(\.js)?$/.test(process.argv[1] || '') || env.MOCHA_WORKER_ID) return 'mocha';
  return undefined;
}

function standalone(reason) {
  process.stderr.write(
    `master-process: running as a single process, without master (${reason}); SIGHUP will not reload it\n`,
  );
  result = Object.freeze({ role: 'standalone', reason });
  return result;
}

function toInt(value) {
  const n = Number.parseInt(value, 10);
  return Number.isNaN(n) ? undefined : n;
}

module.exports = { init };
module.exports.default = module.exports;
