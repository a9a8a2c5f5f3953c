// The naive Node.js app of the bench's `naive` section: the reference module's README app,
// with nothing added. It binds PORT itself (`listen(process.env.PORT)`: every address,
// dual-stack) and has no SIGTERM handler, so a worker asked to stop dies at once unless its
// manager makes it drain. Every answer is the pid.
//
// Under the reference module it runs behind `reference-app.js` (the module's init() line);
// under pm2 and master-process it runs as it is.
'use strict';
const http = require('http');

http.createServer((req, res) => res.end(`${process.pid}\n`)).listen(process.env.PORT, () => {
  console.error(`naive-app[${process.pid}]: serving ${process.env.PORT}`);
});
