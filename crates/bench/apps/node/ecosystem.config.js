// pm2's configuration for the bench's `peers`, `queue` and `naive` sections; the port comes
// from PEERS_PORT in the environment of the `pm2 start` command.
//
// By default, the test suite's Node.js app with pm2's best settings for a zero-downtime
// reload: cluster mode (Node's cluster shares the port), `wait_ready` (a new worker counts as
// up once it sends 'ready', after it listens), a long `listen_timeout` (otherwise the old
// worker is stopped after 3 s even when the new one is not ready) and a `kill_timeout` long
// enough for the app's graceful drain (pm2's default is 1.6 s).
//
// With PEERS_APP=naive: the naive app (`naive.js`, no SIGTERM or SIGINT handler, binds PORT
// itself) as a user would run it: cluster mode, 2 instances, pm2's defaults otherwise (a new
// worker counts as up when it listens).
'use strict';
const path = require('path');

const app = path.resolve(__dirname, '../../../../tests/fixtures/node');
const port = process.env.PEERS_PORT || '3000';

const apps = {
  default: {
    name: 'app',
    script: path.join(app, 'server.js'),
    cwd: app,
    exec_mode: 'cluster',
    instances: 2,
    wait_ready: true,
    listen_timeout: 10000,
    kill_timeout: 10000,
    autorestart: true,
    env: { PORT: port, HOST: '127.0.0.1' },
  },
  naive: {
    name: 'app',
    script: path.join(__dirname, 'naive.js'),
    cwd: __dirname,
    exec_mode: 'cluster',
    instances: 2,
    env: { PORT: port },
  },
};

module.exports = { apps: [apps[process.env.PEERS_APP || 'default']] };
