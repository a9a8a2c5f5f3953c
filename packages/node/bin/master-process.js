#!/usr/bin/env node
// `master-process` from npm (npx master-process, package.json scripts): runs the binary of
// this platform's package with these arguments, e.g. `master-process -- node app.js`.
'use strict';

const { findBinary, platformKey, packageName } = require('../lib/binary.js');

let bin;
try {
  bin = findBinary(process.env);
} catch (err) {
  process.stderr.write(`${err.message}\n`);
  process.exit(2);
}
if (!bin) {
  process.stderr.write(
    `master-process: no binary for ${platformKey()}: the optional dependency ${packageName()} ` +
      'is not installed (npm install --include=optional), or set MASTER_PROCESS_BIN\n',
  );
  process.exit(2);
}
require('../lib/debug.js').debug(`using ${bin.path} (${bin.source})`);
require('../lib/supervise.js').runMaster(bin.path, process.argv.slice(2), { ...process.env });
