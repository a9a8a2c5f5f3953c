// The Node.js app of the bench's `peers` section: answers every request with its pid.
//
// Where it listens: fd 3 when LISTEN_FDS is set (under master-process), else PORT on HOST
// (bare, and under pm2 cluster mode, where Node's cluster module shares the port: the
// primary, pm2's God daemon, accepts and hands each connection to a worker).
//
// Graceful shutdown, the same under every manager (on SIGTERM, SIGINT -- pm2's kill signal --
// or pm2's `shutdown` message): stop accepting, answer further requests on open connections
// with `Connection: close`, close connections idle for 500 ms, exit when none is left (10 s
// at most). Not http.Server#close: since Node 19 it also closes "idle" keep-alive connections
// at once, including those whose next request is already on its way.
'use strict';
const http = require('http');
const net = require('net');

const pid = process.pid;
const log = (msg) => console.error(`node-app[${pid}]: ${msg}`);
const IDLE_MS = 500;
const underPm2 = process.env.pm_id !== undefined;

let draining = false;
const conns = new Map(); // socket -> { busy, idleSince }

const server = http.createServer((req, res) => {
  if (draining) res.setHeader('Connection', 'close');
  res.setHeader('Content-Type', 'text/plain');
  res.end(`${pid}\n`);
});
server.keepAliveTimeout = 60000;

server.on('connection', (socket) => {
  conns.set(socket, { busy: false, idleSince: Date.now() });
  socket.on('close', () => conns.delete(socket));
});
server.on('request', (req, res) => {
  const c = conns.get(req.socket);
  if (c) c.busy = true;
  res.on('finish', () => {
    const c = conns.get(req.socket);
    if (c) { c.busy = false; c.idleSince = Date.now(); }
  });
});

const onListening = (where) => () => {
  log(`listening on ${where}`);
  // pm2 with wait_ready: the new worker is ready once it says so.
  if (underPm2 && process.send) process.send('ready');
};
if (process.env.LISTEN_FDS) {
  server.listen({ fd: 3 }, onListening('fd 3'));
} else {
  const port = Number(process.env.PORT || 3000);
  const host = process.env.HOST || '127.0.0.1';
  server.listen(port, host, onListening(`${host}:${port}`));
}

function drain(why) {
  if (draining) return;
  draining = true;
  log(`draining (${why})`);
  net.Server.prototype.close.call(server, () => { log('exit'); process.exit(0); });
  setInterval(() => {
    const now = Date.now();
    for (const [socket, c] of conns) {
      if (!c.busy && now - c.idleSince >= IDLE_MS) socket.end();
    }
  }, 50);
  setTimeout(() => { log('drain timeout'); process.exit(0); }, 10000).unref();
}

process.on('SIGTERM', () => drain('SIGTERM'));
process.on('SIGINT', () => drain('SIGINT'));
process.on('message', (msg) => { if (msg === 'shutdown') drain('shutdown message'); });
