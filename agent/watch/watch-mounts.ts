import type { Mount } from '../../shared/catalogue/index.ts';
import { asFilestoreError, type FilestoreError } from '../../shared/index.ts';
import type { Filestore } from '../../shared/index-runtime.ts';
import { MountWatcher, type MountWatcherOptions, type MountWatcherStats } from './mount-watcher.ts';
import type { WatchBackendChoice } from './types.ts';

export interface WatchMountsOptions extends MountWatcherOptions {
  /** Backend per mount (e.g. from the agent's configuration); undefined falls back to `backend`. */
  backendFor?: ((mount: Mount) => WatchBackendChoice | undefined) | undefined;
  /**
   * This process's agent: a local mount owned by another agent is skipped (its disk is not
   * here). Mounts without an owner are watched (single-process `npm start`).
   */
  agentId?: string | undefined;
}

export interface WatchersHandle {
  readonly watchers: readonly MountWatcher[];
  /** Mounts whose watcher could not start (the error says why; e.g. STORAGE_ERROR / WATCH_LIMIT). */
  readonly failed: ReadonlyArray<{ mount: Mount; error: FilestoreError }>;
  stats(): Promise<MountWatcherStats[]>;
  /** Judges everything pending on every mount now. */
  flush(): Promise<void>;
  /** Stops every watcher (each judges what is pending first). */
  close(): Promise<void>;
}

/**
 * Starts one watcher per local mount of `mounts` (S3 mounts are skipped: their drift arrives
 * as bucket events). Watchers start one after another: each backend's start-up crawl is
 * I/O-bound, and sequential starts keep the per-backend inotify accounting exact.
 * A mount whose watcher fails to start is reported in `failed` (and logged); the others run.
 */
export async function watchMounts(core: Filestore, mounts: readonly Mount[], o: WatchMountsOptions = {}): Promise<WatchersHandle> {
  const log = o.log ?? (() => {});
  const watchers: MountWatcher[] = [];
  const failed: Array<{ mount: Mount; error: FilestoreError }> = [];
  for (const mount of mounts) {
    if (mount.kind !== 'local') continue;
    if (o.agentId && mount.agentId && mount.agentId !== o.agentId) continue;
    const watcher = new MountWatcher(core, mount, { ...o, backend: o.backendFor?.(mount) ?? o.backend });
    try {
      await watcher.start();
      watchers.push(watcher);
    } catch (err) {
      const error = asFilestoreError(err);
      log(`watcher ${mount.key}: not started: ${error.message}`);
      failed.push({ mount, error });
      await watcher.close().catch(() => {});
    }
  }
  return {
    watchers,
    failed,
    stats: () => Promise.all(watchers.map((w) => w.stats())),
    async flush() {
      await Promise.all(watchers.map((w) => w.flush()));
    },
    async close() {
      await Promise.all(watchers.map((w) => w.close()));
    },
  };
}
