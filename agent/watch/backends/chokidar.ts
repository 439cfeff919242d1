import { watch, type FSWatcher } from 'chokidar';
import { claimNewInotifyFds, inotifyFdsBeforeStart, inotifyWatchesOf } from '../inotify.ts';
import type { WatchBackend, WatchEvent, WatchHandlers } from '../types.ts';
import { MountPaths } from './mount-paths.ts';
import { classifyProblem, isWatchLimit } from './problems.ts';

const TYPES: Record<string, WatchEvent['type'] | undefined> = {
  add: 'create',
  addDir: 'create',
  change: 'update',
  unlink: 'delete',
  unlinkDir: 'delete',
};

/**
 * chokidar 5: pure JavaScript over fs.watch. It costs one inotify watch per file *and* per
 * directory (plus a stat of every entry at start), so it suits small trees; the chooser
 * (choose.ts) moves larger ones to @parcel/watcher.
 *
 * Options, and why:
 * - `ignoreInitial`: what exists at start is the catch-up rescan's business, not 100k events;
 * - `followSymlinks: false`: a symlink is an entry of its own, never a way out of the mount;
 * - `atomic: false`: chokidar's atomic mode hides editor files by name (`x~`, `.x.swp`), even
 *   ones that stay on disk and must be catalogued; the coalescer folds atomic saves for both
 *   backends alike instead (a delete and a create of one path within the window = a change);
 * - `ignored` is a function (chokidar ≥ 4 has no globs): the staging area and everything below;
 * - `ignorePermissionErrors: false`: an unreadable directory is reported, never silently unwatched.
 */
export class ChokidarBackend implements WatchBackend {
  readonly kind = 'chokidar' as const;
  private watcher: FSWatcher | null = null;
  private closed = false;
  private readonly paths: MountPaths;

  constructor(
    root: string,
    private readonly handlers: WatchHandlers,
  ) {
    this.paths = new MountPaths(root);
  }

  async start(): Promise<void> {
    const before = await inotifyFdsBeforeStart();
    const watcher = watch(this.paths.root, {
      ignoreInitial: true,
      followSymlinks: false,
      atomic: false,
      persistent: true,
      ignorePermissionErrors: false,
      ignored: (p: string) => this.paths.isStaging(p),
    });
    this.watcher = watcher;
    watcher.on('all', (event, abs) => {
      const type = TYPES[event];
      if (this.closed || type === undefined) return;
      const path = this.paths.toMountPath(abs);
      if (path !== null) this.handlers.onEvents([{ type, path }]);
    });
    // Running out of inotify watches before the first crawl is done means the tree does not
    // fit: start fails at once (the caller moves to parcel under auto, or reports the mount
    // unwatched) instead of crawling on and watching part of it.
    let ready = false;
    const failedAtStart = new Promise<never>((_, reject) => {
      watcher.on('error', (err) => {
        if (this.closed) return;
        const problem = classifyProblem(err);
        if (!ready && isWatchLimit(problem)) reject(err);
        else this.handlers.onProblem(problem);
      });
    });
    void failedAtStart.catch(() => {}); // raced below
    try {
      await Promise.race([new Promise<void>((resolve) => watcher.once('ready', resolve)), failedAtStart]);
    } catch (err) {
      this.closed = true;
      await watcher.close().catch(() => {});
      this.watcher = null;
      throw err;
    }
    ready = true;
    await claimNewInotifyFds(this.kind, before);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.watcher?.close();
    this.watcher = null;
  }

  watchCount(): Promise<number | null> {
    return inotifyWatchesOf(this.kind);
  }
}
