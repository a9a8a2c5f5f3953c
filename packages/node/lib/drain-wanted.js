// Whether the drain is wanted: MASTER_PROCESS_NODE_DRAIN (the master's --node-drain) read as
// the master reads it; on unless off, false, no or 0.
'use strict';

module.exports = function drainWanted(env) {
  const v = (env.MASTER_PROCESS_NODE_DRAIN || '').trim().toLowerCase();
  return !['off', 'false', 'no', '0'].includes(v);
};
