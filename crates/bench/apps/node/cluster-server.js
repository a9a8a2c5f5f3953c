// A stand-in for the reference, used by the bench when it is not given the reference module
// itself (`--reference PATH`): a Node.js cluster primary that reloads as the original Node.js
// master-process module did (its behaviour as described in shared/research/peers.md §0).
// The primary owns the listening socket (Node's cluster, round-robin: it accepts every
// connection and hands it to a worker), forks WORKERS workers running BENCH_APP (default: the
// test suite's Node.js app), and on SIGHUP forks a new worker for every slot at once; when a
// new worker listens, the older workers of its slot get SIGTERM. SIGTERM stops everything.
'use strict';
const cluster = require('cluster');
const path = require('path');

if (!cluster.isPrimary) {
  require(process.env.BENCH_APP || path.resolve(__dirname, '../../../../tests/fixtures/node/server.js'));
  return;
}

const slots = Math.max(1, Number(process.env.WORKERS || 1));
let generation = 0;
let stopping = false;

function start(slot, gen) {
  const worker = cluster.fork({ WORKER_INDEX: String(slot), RELOAD_INDEX: String(gen) });
  worker.slot = slot;
  worker.generation = gen;
  worker.once('listening', () => {
    for (const other of Object.values(cluster.workers)) {
      if (other.slot === slot && other.generation < gen && !other.retired) {
        other.retired = true;
        other.process.kill('SIGTERM');
      }
    }
  });
}

cluster.on('exit', (worker) => {
  if (stopping && Object.keys(cluster.workers).length === 0) process.exit(0);
  // A worker that died unasked is replaced after a second (the reference's throttle).
  if (!stopping && !worker.retired) setTimeout(() => start(worker.slot, generation), 1000);
});

process.on('SIGHUP', () => {
  generation += 1;
  for (let slot = 0; slot < slots; slot++) start(slot, generation);
});
process.on('SIGTERM', () => {
  stopping = true;
  for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
  setTimeout(() => process.exit(0), 10000).unref();
});

for (let slot = 0; slot < slots; slot++) start(slot, generation);
