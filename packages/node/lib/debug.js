// `DEBUG=master-process` lines, as the reference printed them (the `debug` package's rules:
// names separated by commas or spaces, `*` wildcards, `-name` excludes).
'use strict';

function enabled(value = process.env.DEBUG) {
  if (!value) return false;
  let on = false;
  for (const item of value.split(/[\s,]+/).filter(Boolean)) {
    const neg = item.startsWith('-');
    const glob = neg ? item.slice(1) : item;
    const re = new RegExp(`^${glob.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*?')}$`);
    if (re.test('master-process')) {
      if (neg) return false;
      on = true;
    }
  }
  return on;
}

function debug(msg) {
  if (enabled()) process.stderr.write(`master-process: ${msg}\n`);
}

module.exports = { enabled, debug };
