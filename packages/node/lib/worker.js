// Preloaded (`node --require`) in every worker that init() starts, before the app runs.
'use strict';

// Unchanged apps drain on SIGTERM, unless MASTER_PROCESS_NODE_DRAIN turns it off (as it
// turns off the master's own preload).
if (require('./drain-wanted.js')(process.env)) require('./drain.js');

// The reference ran workers as Node cluster workers, and its README told apps to start with
// `if (cluster.isMaster) { require('master-process').init(); return; }`. Our workers are
// plain processes, where cluster.isMaster is true: that guard would return before the app
// runs. So in a worker of ours, cluster.isMaster is false, as it was under the reference.
// Only the deprecated alias the reference used: Node.js itself (net, dgram) reads isPrimary,
// which stays true, so that servers still listen by themselves.
if (process.env.MASTER_PROCESS_WORKER && !('NODE_UNIQUE_ID' in process.env)) {
  require('cluster').isMaster = false;
}
