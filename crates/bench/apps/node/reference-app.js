// The reference module (the original Node.js master-process, installed by the bench under
// target/bench/reference when given `--reference PATH`; none of its code is in this
// repository) used as its README says: this code "at the very beginning of your node.js
// application", then the application itself, here the module named by BENCH_APP (the naive
// app, or the test suite's Node.js app). NODE_PATH points at the installed module. SIGHUP to
// this process reloads; SIGTERM stops.
'use strict';
const cluster = require('cluster');

if (cluster.isMaster && process.env.NODE_ENV !== 'test') {
  require('master-process').init();
  return;
}

require(process.env.BENCH_APP);
