// ESM entry: `import { init } from 'master-process'` or `import mp from 'master-process'`.
import mp from './index.js';

export const init = mp.init;
export default mp;
