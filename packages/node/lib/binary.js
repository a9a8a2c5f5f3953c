// Where the master-process binary is: MASTER_PROCESS_BIN, else this platform's package
// (`@master-process/<platform>`, an optional dependency holding the prebuilt binary), else
// `master-process` on PATH.
'use strict';

const fs = require('fs');
const path = require('path');

const SCOPE = '@master-process';

// The platform packages published, by platform key. Each holds `bin/master-process`.
// (`pack` builds the one of the machine it runs on; see README.md for the others.)
const PLATFORMS = {
  'linux-x64-gnu': { os: 'linux', cpu: 'x64', libc: 'glibc', target: 'x86_64-unknown-linux-gnu' },
  'linux-arm64-gnu': { os: 'linux', cpu: 'arm64', libc: 'glibc', target: 'aarch64-unknown-linux-gnu' },
  'linux-x64-musl': { os: 'linux', cpu: 'x64', libc: 'musl', target: 'x86_64-unknown-linux-musl' },
  'linux-arm64-musl': { os: 'linux', cpu: 'arm64', libc: 'musl', target: 'aarch64-unknown-linux-musl' },
};

// The C library this very Node.js runs on: the platform packages are built per libc.
function libc() {
  try {
    const maps = fs.readFileSync('/proc/self/maps', 'utf8');
    return /\/(ld-)?musl[-.]/.test(maps) || maps.includes('libc.musl') ? 'musl' : 'gnu';
  } catch {
    return 'gnu';
  }
}

// `linux-x64-gnu`, `linux-arm64-musl`, `darwin-arm64`...
function platformKey() {
  const base = `${process.platform}-${process.arch}`;
  return process.platform === 'linux' ? `${base}-${libc()}` : base;
}

function packageName(key = platformKey()) {
  return `${SCOPE}/${key}`;
}

function isExecutableFile(file) {
  try {
    if (!fs.statSync(file).isFile()) return false;
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

// The npm command shim of this package (node_modules/.bin/master-process), which must not be
// taken for the binary.
function isOurShim(file) {
  try {
    const real = fs.realpathSync(file);
    return path.basename(real) === 'master-process.js' && path.basename(path.dirname(real)) === 'bin';
  } catch {
    return false;
  }
}

/**
 * Finds the binary. Returns `{ path, source }` with source `MASTER_PROCESS_BIN`, the platform
 * package's name or `PATH`; `null` if there is none. Throws if MASTER_PROCESS_BIN is set but
 * does not name an executable file: an explicit choice that cannot be honoured fails loudly.
 */
function findBinary(env = process.env) {
  const override = env.MASTER_PROCESS_BIN;
  if (override) {
    if (!isExecutableFile(override)) {
      const err = new Error(
        `master-process: MASTER_PROCESS_BIN=${override} is not an executable file; ` +
          'unset it to use the binary of the platform package',
      );
      err.code = 'MASTER_PROCESS_BIN';
      throw err;
    }
    return { path: path.resolve(override), source: 'MASTER_PROCESS_BIN' };
  }
  const name = packageName();
  try {
    const dir = path.dirname(require.resolve(`${name}/package.json`));
    const file = path.join(dir, 'bin', 'master-process');
    if (isExecutableFile(file)) return { path: file, source: name };
  } catch {
    // not installed: optional dependencies are skipped on other platforms
  }
  for (const dir of (env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, 'master-process');
    if (isExecutableFile(file) && !isOurShim(file)) return { path: file, source: 'PATH' };
  }
  return null;
}

module.exports = { findBinary, platformKey, packageName, PLATFORMS, SCOPE };
