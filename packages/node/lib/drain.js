// master-process drain: makes an unchanged Node.js app stop gracefully on SIGTERM.
//
// Loaded in every worker (by the package's init(), and preloaded by the master-process
// binary with `--require` for `master-process -- node app.js`). When SIGTERM arrives and the
// app has no SIGTERM listener of its own, it:
//   1. stops accepting on every net server (http, https, http2, tls, plain net);
//   2. lets in-flight requests finish, and answers later requests on open HTTP/1 keep-alive
//      connections with `Connection: close`;
//   3. closes HTTP/1 connections that stay idle (no response in flight, no byte received)
//      for IDLE_MS (or MASTER_PROCESS_DRAIN_IDLE_MS), and asks HTTP/2 sessions to close
//      (GOAWAY);
//   4. exits (code 0) once every server has closed, or (code 1) a little before
//      MAX_KILL_TIMEOUT (the master's SIGKILL), whichever comes first.
// An app that listens for SIGTERM itself is left alone. A second SIGTERM kills at once.
//
// Self-contained on purpose: CommonJS, Node.js >= 18, no dependency, nothing but core
// modules, so that the master can preload this very file without the package installed.
// Idempotent: a second copy (another path, another version) finds the first one through a
// global symbol and does nothing.
'use strict';

const kDrain = Symbol.for('master-process.drain');

// How long an HTTP/1 connection must stay idle during a drain before it is closed: long
// enough that a client's next request, already on its way, is seen (and answered with
// `Connection: close`) instead of racing the close. MASTER_PROCESS_DRAIN_IDLE_MS (a number of
// milliseconds, read when the drain starts) overrides it: for clients known to wait longer
// between requests, and for tests that send a request after SIGTERM whatever the load.
const IDLE_MS = 500;
// How often idle connections are looked at during a drain.
const SWEEP_MS = 50;
// Exit this much before MAX_KILL_TIMEOUT, so that the worker exits by itself instead of
// being killed by the master at the same instant.
const MARGIN_MS = 100;

if (!globalThis[kDrain]) {
  Object.defineProperty(globalThis, kDrain, { value: install(), enumerable: false });
}
module.exports = globalThis[kDrain];

function install() {
  const net = require('net');

  const state = {
    version: 1,
    file: __filename,
    draining: false,
    servers: new Set(), // servers that listen (or asked to)
    hooked: new WeakSet(),
    conns: new WeakMap(), // server -> Set of its accepted sockets
    sessions: new WeakMap(), // server -> Set of its HTTP/2 sessions
    // Exposed for tests and for the package: what would happen on SIGTERM.
    parseDuration,
    killTimeoutMs,
    appHandlesSigterm,
    onSigterm,
  };

  const debug = debugEnabled(process.env.DEBUG)
    ? (msg) => process.stderr.write(`master-process drain[${process.pid}]: ${msg}\n`)
    : () => {};

  function track(server) {
    state.servers.add(server);
    if (state.hooked.has(server)) return;
    state.hooked.add(server);
    const conns = new Set();
    const sessions = new Set();
    state.conns.set(server, conns);
    state.sessions.set(server, sessions);
    // A TLS server hands HTTP its TLSSocket on 'secureConnection'; others on 'connection'.
    const tls = typeof server.setSecureContext === 'function';
    server.on(tls ? 'secureConnection' : 'connection', (socket) => {
      conns.add(socket);
      socket.once('close', () => conns.delete(socket));
      if (state.draining) state.watch(socket);
    });
    server.on('session', (session) => {
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
      if (state.draining) closeSession(session);
    });
    server.on('close', () => state.servers.delete(server));
  }

  // Every server that listens from now on, whatever its kind: they all inherit this.
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (...args) {
    track(this);
    return listen.apply(this, args);
  };
  Object.defineProperty(net.Server.prototype.listen, 'name', { value: 'listen' });
  Object.defineProperty(net.Server.prototype.listen, 'length', { value: listen.length });

  // Servers that already listen (this file loaded late), with their connections.
  if (typeof process._getActiveHandles === 'function') {
    const handles = process._getActiveHandles();
    for (const h of handles) if (h instanceof net.Server && h.listening) track(h);
    for (const h of handles) {
      if (h instanceof net.Socket && h.server && state.conns.has(h.server)) {
        state.conns.get(h.server).add(h);
        h.once('close', () => state.conns.get(h.server).delete(h));
      }
    }
  }

  function onSigterm() {
    if (state.draining) {
      // A second SIGTERM: stop now, as if we had never been here.
      debug('second SIGTERM: exiting now');
      process.removeListener('SIGTERM', onSigterm);
      process.kill(process.pid, 'SIGTERM');
      return;
    }
    if (appHandlesSigterm()) {
      debug('SIGTERM: the app listens for SIGTERM itself; left alone');
      return;
    }
    drain();
  }

  // Whether a SIGTERM listener other than ours (and other than signal-exit's, which only
  // re-raises the signal when it is alone) is installed.
  function appHandlesSigterm() {
    return process.listeners('SIGTERM').some((fn) => fn !== onSigterm && !isSignalExit(fn));
  }

  function drain() {
    state.draining = true;
    const started = Date.now();
    const timeout = killTimeoutMs(process.env.MAX_KILL_TIMEOUT);
    const idleMs = idleTimeMs(process.env.MASTER_PROCESS_DRAIN_IDLE_MS);
    const servers = [...state.servers].filter((s) => s.listening);
    let open = servers.length;
    debug(`SIGTERM: draining ${open} server(s), exit within ${timeout} ms`);

    const idle = new Map(); // HTTP/1 socket -> { bytes, since }
    state.watch = (socket) => {
      if (socket.parser) idle.set(socket, { bytes: received(socket), since: Date.now() });
    };

    const done = () => {
      debug(`drained in ${Date.now() - started} ms; exiting`);
      process.exit(0);
    };
    if (open === 0) return done();

    for (const server of servers) {
      // From now on every HTTP/1 response closes its connection.
      server.prependListener('request', noKeepAlive);
      // Stop accepting; 'close' comes once every connection of this server is gone. Not
      // http.Server#close: since Node 19 it also cuts "idle" keep-alive connections at once,
      // including those whose next request is already on its way.
      net.Server.prototype.close.call(server, () => {
        if (--open === 0) done();
      });
      for (const socket of state.conns.get(server) || []) {
        const res = socket._httpMessage;
        if (res && !res.headersSent) res.shouldKeepAlive = false;
        state.watch(socket);
      }
      for (const session of state.sessions.get(server) || []) closeSession(session);
    }

    // Close HTTP/1 connections that stayed idle for `idleMs`: no response in flight, and
    // no byte received (a request on its way shows up in bytesRead before it is parsed).
    // Idle at two sweeps in a row: after a stall (a process short of CPU), the first sweep
    // may run before the event loop has read a request already waiting in the socket; the
    // loop polls for I/O between two sweeps.
    const sweep = setInterval(() => {
      const now = Date.now();
      for (const [socket, seen] of idle) {
        if (socket.destroyed) {
          idle.delete(socket);
        } else if (socket._httpMessage || received(socket) !== seen.bytes || !socket.parser) {
          seen.bytes = received(socket);
          seen.since = now;
          seen.quiet = false;
          if (!socket.parser) idle.delete(socket); // upgraded (WebSocket...): not ours
        } else if (now - seen.since >= idleMs && !seen.quiet) {
          seen.quiet = true;
        } else if (seen.quiet) {
          idle.delete(socket);
          socket.end();
          // A peer that does not close its side in turn is cut.
          setTimeout(() => socket.destroy(), idleMs).unref();
        }
      }
    }, SWEEP_MS);
    sweep.unref();

    setTimeout(() => {
      let left = 0;
      for (const server of servers) left += (state.conns.get(server) || new Set()).size;
      process.stderr.write(
        `master-process drain[${process.pid}]: MAX_KILL_TIMEOUT: ${left} connection(s) still open after ${Date.now() - started} ms; exiting\n`,
      );
      process.exit(1);
    }, Math.max(0, timeout - Math.min(MARGIN_MS, timeout / 10))).unref();
  }

  process.on('SIGTERM', onSigterm);
  debug(`loaded from ${__filename}`);
  return state;
}

// Bytes received so far on a server connection. A TLSSocket's own count stops after the
// handshake: the TCP socket under it (`_parent`) counts on.
function received(socket) {
  const parent = socket._parent;
  return socket.bytesRead + (parent && typeof parent.bytesRead === 'number' ? parent.bytesRead : 0);
}

function noKeepAlive(req, res) {
  // HTTP/1 only (an HTTP/2 compatibility response has no such field).
  if (typeof res.shouldKeepAlive === 'boolean') res.shouldKeepAlive = false;
}

function closeSession(session) {
  try {
    session.close();
  } catch {
    // already closing
  }
}

// signal-exit (used by many libraries) listens for SIGTERM only to run exit hooks and
// re-raise the signal when it is the only listener: that is not the app handling SIGTERM.
function isSignalExit(fn) {
  const src = Function.prototype.toString.call(fn);
  return src.includes('__signal_exit_emitter__') || src.includes('emitter.count');
}

// MASTER_PROCESS_DRAIN_IDLE_MS: a whole number of milliseconds; anything else (or nothing):
// IDLE_MS.
function idleTimeMs(value) {
  return typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : IDLE_MS;
}

// MAX_KILL_TIMEOUT as the reference read it (the `ms` package): a bare number is
// milliseconds; otherwise numbers with units (`5s`, `5 seconds`, `1m30s`, `250ms`).
// Anything else: the default, 5 s.
function killTimeoutMs(value) {
  const ms = parseDuration(value);
  return ms === undefined ? 5000 : ms;
}

const UNITS = {
  ms: 1, msec: 1, msecs: 1, millisecond: 1, milliseconds: 1,
  s: 1e3, sec: 1e3, secs: 1e3, second: 1e3, seconds: 1e3,
  m: 6e4, min: 6e4, mins: 6e4, minute: 6e4, minutes: 6e4,
  h: 36e5, hr: 36e5, hrs: 36e5, hour: 36e5, hours: 36e5,
  d: 864e5, day: 864e5, days: 864e5,
};

function parseDuration(value) {
  if (typeof value !== 'string') return undefined;
  const text = value.trim().toLowerCase();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text));
  const part = /(\d+(?:\.\d+)?)\s*([a-z]+)\s*/y;
  let total = 0;
  let seen = false;
  part.lastIndex = 0;
  while (part.lastIndex < text.length) {
    const m = part.exec(text);
    if (!m || !(m[2] in UNITS)) return undefined;
    total += Number(m[1]) * UNITS[m[2]];
    seen = true;
  }
  return seen ? Math.round(total) : undefined;
}

// DEBUG as the `debug` package reads it: names separated by commas or spaces, `*` wildcards,
// `-name` to exclude.
function debugEnabled(value) {
  if (!value) return false;
  const name = 'master-process';
  let on = false;
  for (const item of value.split(/[\s,]+/).filter(Boolean)) {
    const neg = item.startsWith('-');
    const glob = neg ? item.slice(1) : item;
    const re = new RegExp(`^${glob.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*?')}$`);
    if (re.test(name)) {
      if (neg) return false;
      on = true;
    }
  }
  return on;
}
