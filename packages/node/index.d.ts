/** What `init()` found this process to be (it never returns in the process the user started). */
export type InitResult =
  | {
      /** A worker of the master: serve requests. */
      readonly role: 'worker';
      /** The worker's slot, `0..WORKERS-1` (`WORKER_INDEX`). */
      readonly workerIndex: number | undefined;
      /** 0 for the first generation, +1 per reload (`RELOAD_INDEX`). */
      readonly reloadIndex: number | undefined;
    }
  | {
      /** No master: the app runs as one process. */
      readonly role: 'standalone';
      /** Why (also printed once on stderr, unless it is not the main process). */
      readonly reason: string;
    };

/**
 * Call first thing in your app. In the process you started it runs the master (your same
 * command line as workers) and never returns; in a worker it returns at once; with no master
 * possible (debugger, test runner, `NODE_ENV=test`, `MASTER_PROCESS=off`, no binary for this
 * platform) it returns and the app runs as one process.
 *
 * @throws if `MASTER_PROCESS_BIN` is set but is not an executable file.
 */
export function init(): InitResult;

declare const masterProcess: { init: typeof init };
export default masterProcess;
