import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { claimNewInotifyFds, inotifyFdsBeforeStart, inotifyWatchesOf } from '../inotify.ts';
import type { WatchBackend, WatchEvent, WatchHandlers } from '../types.ts';
import { MountPaths } from './mount-paths.ts';
import { classifyProblem, isWatchLimit } from './problems.ts';

/** `abs` is a directory now (not followed if a symlink); false when gone or unreadable. */
const isDirectoryNow = (abs: string): Promise<boolean> => lstat(abs).then((st) => st.isDirectory(), () => false);

/** How long a new directory's watch may take to come up before its look-again is given up (chokidar reports what failed). */
const WATCH_UP_WAIT_MS = 30_000;

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
 *
 * A new directory: chokidar reports it, reads it, and only then opens its watch, so an entry
 * made between the read and the watch is known to nobody — its later rename or deletion would
 * be reported by nothing (seen under load: a file Filestore wrote into a directory it had just
 * made, then renamed outside it, left the catalogue holding the old name). So once the watch
 * of a directory chokidar reported is up, the directory is read again, and each entry chokidar
 * does not know is handed to it (`add`: watched from then on) and reported as created.
 * Known gaps: the same window exists for each directory of the start-up crawl (no event says
 * when it is); an entry made there is catalogued by the catch-up rescan, and chokidar learns of
 * it at the next event in its directory, not before. The other way round, an entry chokidar
 * read and reported that is removed before the directory's watch is up is reported gone at
 * the next event in that directory (chokidar reads it again) or by the next audit. A missed
 * subdirectory handed to chokidar is read by it silently (`add` counts as initial): what it
 * holds is reported by the mount watcher's walk of new directories (new-dirs.ts).
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
      if (path === null) return;
      this.handlers.onEvents([{ type, path }]);
      if (event === 'addDir') void this.lookAgain(abs);
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

  /**
   * Once chokidar's watch of the new directory `abs` is up: its entries that chokidar does not
   * know (made between its read and its watch) are watched and reported as created; a new
   * subdirectory among them is looked at the same way. Chokidar's own records are read here
   * (`_closers`, `_watched`: declared in its typings; pinned major): nothing public says
   * when a directory's watch is up.
   */
  private async lookAgain(abs: string): Promise<void> {
    const w = this.watcher;
    if (w === null) return;
    const deadline = Date.now() + WATCH_UP_WAIT_MS;
    for (let pause = 2; !w._closers.has(abs); pause = Math.min(pause * 2, 100)) {
      if (this.closed || Date.now() > deadline) return;
      await new Promise((r) => setTimeout(r, pause));
      // Gone again, or no longer a directory: whoever removed it is reported by its parent's watch.
      if (pause === 100 && !(await isDirectoryNow(abs))) return;
    }
    let names: string[];
    try {
      names = await readdir(abs);
    } catch {
      return; // gone again, or unreadable (chokidar reported that)
    }
    const known = w._watched.get(abs);
    const missed = names.filter((n) => !(known?.has(n) ?? false)).map((n) => path.join(abs, n)).filter((p) => !this.paths.isStaging(p));
    if (missed.length === 0 || this.closed) return;
    w.add(missed);
    const events = missed.flatMap((p) => {
      const mountPath = this.paths.toMountPath(p);
      return mountPath === null ? [] : [{ type: 'create' as const, path: mountPath }];
    });
    this.handlers.onEvents(events);
    for (const p of missed) {
      if (await isDirectoryNow(p)) await this.lookAgain(p);
    }
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
