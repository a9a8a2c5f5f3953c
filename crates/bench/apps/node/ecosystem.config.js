// pm2's configuration for the bench's `peers` section, with pm2's best settings for a
// zero-downtime reload: cluster mode (Node's cluster shares the port), `wait_ready` (a new
// worker counts as up once it sends 'ready', after it listens), a long `listen_timeout`
// (otherwise the old worker is stopped after 3 s even when the new one is not ready) and a
// `kill_timeout` long enough for the app's graceful drain (pm2's default is 1.6 s).
// The app is the test suite's Node.js worker; the port comes from PEERS_PORT in the
// environment of the `pm2 start` command.
'use strict';
const path = require('path');

const app = path.resolve(__dirname, '../../../../tests/fixtures/node');

module.exports = {
  apps: [
    {
      name: 'app',
      script: path.join(app, 'server.js'),
      cwd: app,
      exec_mode: 'cluster',
      instances: 2,
      wait_ready: true,
      listen_timeout: 10000,
      kill_timeout: 10000,
      autorestart: true,
      env: { PORT: process.env.PEERS_PORT || '3000', HOST: '127.0.0.1' },
    },
  ],
};
