import parcel from '@parcel/watcher';
import { claimNewInotifyFds, inotifyWatchesByFd, inotifyWatchesOf } from '../inotify.ts';
import type { WatchBackend, WatchEvent, WatchHandlers } from '../types.ts';
import { MountPaths } from './mount-paths.ts';
import { classifyProblem } from './problems.ts';

/**
 * @parcel/watcher: native, one inotify watch per *directory* on Linux (a directory's watch
 * reports its files' changes too), and the initial crawl runs in C++ — the backend for large
 * trees. Events arrive in batches of create/update/delete with absolute paths.
 *
 * Known gap (documented in README.md): on Linux the library drops the kernel's
 * IN_Q_OVERFLOW notice without telling its caller, so a queue overflow is not seen here;
 * the catch-up rescan at start and the scheduled audits cover it. Errors it does report
 * ("Events were dropped", ENOSPC on a new directory) arrive through the callback.
 */
export class ParcelBackend implements WatchBackend {
  readonly kind = 'parcel' as const;
  private subscription: parcel.AsyncSubscription | null = null;
  private closed = false;
  private readonly paths: MountPaths;

  constructor(
    root: string,
    private readonly handlers: WatchHandlers,
  ) {
    this.paths = new MountPaths(root);
  }

  async start(): Promise<void> {
    const before = await inotifyWatchesByFd();
    this.subscription = await parcel.subscribe(
      this.paths.root,
      (err, events) => {
        if (this.closed) return;
        if (err) this.handlers.onProblem(classifyProblem(err));
        const out: WatchEvent[] = [];
        for (const e of events ?? []) {
          const path = this.paths.toMountPath(e.path);
          if (path !== null) out.push({ type: e.type, path });
        }
        if (out.length > 0) this.handlers.onEvents(out);
      },
      // Absolute paths are accepted; the library then skips the whole subtree.
      { ignore: [this.paths.staging] },
    );
    await claimNewInotifyFds(this.kind, before);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.subscription?.unsubscribe();
    this.subscription = null;
  }

  watchCount(): Promise<number | null> {
    return inotifyWatchesOf(this.kind);
  }
}
