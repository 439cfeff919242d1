/**
 * The watcher subsystem of the on-prem agent (issue 5): one watcher per local mount turns file
 * system events into drift signals in the catalogue and reconcile jobs. See README.md beside
 * this file for the design, the guarantees and the inotify limits.
 *
 *   const handle = await watchMounts(core, await listMounts(core.pool), {
 *     debounceMs: config.FILESTORE_WATCH_DEBOUNCE_MS, agentId: config.FILESTORE_AGENT_ID, log,
 *   });
 *   …
 *   await handle.close(); // on SIGTERM, before core.close()
 */
export { watchMounts, type WatchMountsOptions, type WatchersHandle } from './watch-mounts.ts';
export { MountWatcher, type MountWatcherOptions, type MountWatcherStats } from './mount-watcher.ts';
export { Coalescer, netChange, DEFAULT_DEBOUNCE_MS, DEFAULT_MAX_PENDING_PATHS, type CoalescerOptions } from './coalescer.ts';
export { DriftSink, type DriftSinkOptions, type SinkResult } from './drift-sink.ts';
export { planJobs, type JobTarget } from '../../shared/reconcile/index.ts';
export {
  autoThreshold,
  chooseBackend,
  countTree,
  createWatchBackend,
  ChokidarBackend,
  ParcelBackend,
  AUTO_BUDGET_SHARE,
  AUTO_MAX_THRESHOLD,
  type BackendDecision,
} from './backends/index.ts';
export { inotifyWatchCount, inotifyWatchesByFd, maxQueuedEvents, maxUserWatches } from './inotify.ts';
export { WatchError, WatchOptionsError, WatchStartError, NotALocalMountError } from './errors.ts';
export * from './types.ts';
