import { lstatSync, watch, type FSWatcher } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { WatchBackend, WatchEvent, WatchHandlers } from '../types.ts';
import { MountPaths } from './mount-paths.ts';
import { classifyProblem } from './problems.ts';

/** fs.watch watchers open in this process, all 'dirs' backends together (watchCount). */
let openWatchers = 0;

/** Directory walks running at once (start, a new tree). */
const WALK_CONCURRENCY = 8;

/** Directories whose watch ran out of inotify watches or descriptors are tried again after this, doubled after each failed try up to RETRY_MAX_MS. */
const RETRY_FIRST_MS = 1_000;
const RETRY_MAX_MS = 60_000;

/** errno codes of a watch that failed for want of inotify watches or file descriptors: worth trying again later. */
const OUT_OF_WATCHES = new Set(['ENOSPC', 'EMFILE', 'ENFILE']);

/** What identifies a directory: its inode number and birth time (lstat's birthtimeMs, from statx btime; 0 where the filesystem has none). */
interface Identity {
  ino: number;
  birthtimeMs: number;
}

/** `st` is a directory, and the one `id` names: same inode number, same birth time. */
const isDirectoryOf = (st: Identity & { isDirectory(): boolean }, id: Identity): boolean =>
  st.isDirectory() && st.ino === id.ino && st.birthtimeMs === id.birthtimeMs;

/**
 * `st` is the directory `d` watches. Where birth times are unknown (0: no statx btime), an
 * entry a 'rename' named (`renamed`) is taken for another directory whatever its inode number
 * (ext4 reuses a removed directory's number at once).
 */
const sameDir = (d: Dir, st: Identity & { isDirectory(): boolean }, renamed: boolean): boolean =>
  isDirectoryOf(st, d) && (d.birthtimeMs !== 0 || !renamed);

/** What opens one directory's watch: node:fs `watch` (tests inject their own). */
export type WatchFunction = (
  filename: string,
  options: { persistent: boolean; recursive: boolean },
  listener: (eventType: string, filename: string | Buffer | null) => void,
) => FSWatcher;

export interface DirsBackendOptions {
  /** Opens a directory's watch; default node:fs `watch`. For tests (a watch that fails, a swap in its window). */
  watch?: WatchFunction | undefined;
}

/** One watched directory: the only state this backend keeps (nothing per file). */
interface Dir {
  watcher: FSWatcher;
  /** The inode watched and its birth time (identity: a directory replaced under the same name is another one). */
  ino: number;
  /** lstat's birthtimeMs (statx btime; ext4, xfs, btrfs): a directory made again under a reused inode number gets a new one. 0: unknown. */
  birthtimeMs: number;
  parent: Dir | null;
  name: string;
  /** Watched subdirectories by name; null while there are none (an empty Map costs ~200 B a directory). */
  children: Map<string, Dir> | null;
  open: boolean;
}

/**
 * One non-recursive `fs.watch` (inotify through libuv) per directory of the mount, and
 * per-directory state only: unlike @parcel/watcher, which keeps an entry per *file* of the
 * tree in the process's memory for as long as the mount is watched (~270 MB at 1M files,
 * issue 17), and chokidar, which holds an inotify watch and a handle per file.
 *
 * - start: walks the directories (readdir withFileTypes: symlinks are entries, never
 *   followed; the staging area skipped) and watches each; resolves once all are watched.
 * - An event names an entry of a watched directory. 'change' (IN_MODIFY/IN_ATTRIB) is an
 *   `update`; 'rename' (created, removed, moved) is looked at with one lstat: gone is a
 *   `delete`, a directory not yet watched is watched with its whole subtree at once and
 *   every entry found in it (after its watch is up) is reported as `create` — files written
 *   before the watch was up are not missed; anything else a `create`. The type is a hint only.
 * - A 'rename' naming a watched subdirectory (libuv's name for anything but a file's
 *   IN_MODIFY/IN_ATTRIB: `chmod`/`utimes` of a directory too, IN_ISDIR counts) is judged by
 *   identity, inode number and birth time (lstat's birthtimeMs, statx btime): the same
 *   directory is an `update`, its watches kept (no subtree walk per directory under `chmod -R`,
 *   `rsync -a`); gone, its watchers and those below are closed (a `delete`, no problem);
 *   another one (ext4 gives a directory removed and made again at once the same inode number,
 *   not the same birth time) is watched anew with its subtree (entries reported). Without birth
 *   times (0), a 'rename' always re-watches.
 * - An event about a watched directory itself (its own watch names it by its basename, no
 *   entry of that name there) is an `update` of it (and a `delete` of the entry of that name:
 *   libuv cannot tell one removed from it); nothing if it is gone, no child forgotten for it.
 * - A directory forgotten while its walk reads it gets no watch under it (the walk stops).
 * - A watch is kept only if, right after `fs.watch` (which follows symlinks), the path still is
 *   the directory (inode) lstat found: an entry swapped for a symlink in between is not watched
 *   through it.
 * - ENOSPC/EMFILE adding a watch: `overflow` (coverage lost), once per episode: that directory
 *   is tried again after 1 s, doubling to 60 s while the watches stay spent; once watched, its
 *   subtree is walked and every entry reported. When none waits any more, one more `overflow`
 *   (no code): what was removed meanwhile needs the rescan. Other errors: `error`.
 *
 * Known gap, as for the others: libuv drops the kernel's IN_Q_OVERFLOW notice (its event has
 * wd -1, which matches no watcher, and is skipped: src/unix/linux.c, uv__inotify_read), so
 * a queue overflow is not seen here; the mount watcher's overflow-risk rescan covers it.
 */
export class DirsBackend implements WatchBackend {
  readonly kind = 'dirs' as const;
  private closed = false;
  private readonly paths: MountPaths;
  private readonly dirs = new Map<string, Dir>();
  private readonly watchFn: WatchFunction;
  /** Directories whose watch failed with OUT_OF_WATCHES, by absolute path: tried again on `retryTimer`. */
  private readonly unwatched = new Map<string, { parent: Dir; name: string }>();
  /** An overflow was reported for the directories waiting in `unwatched`: none more until they are all watched (or gone). */
  private outOfWatches = false;
  private retryDelayMs = RETRY_FIRST_MS;
  private retryTimer: NodeJS.Timeout | null = null;
  private retrying = false;
  /** The latest look of each entry being looked at (absolute path → sequence): an earlier one finishing later is stale and drops its result. */
  private readonly looking = new Map<string, number>();
  private lookSeq = 0;

  constructor(
    root: string,
    private readonly handlers: WatchHandlers,
    o: DirsBackendOptions = {},
  ) {
    this.paths = new MountPaths(root);
    this.watchFn = o.watch ?? watch;
  }

  async start(): Promise<void> {
    const st = await lstat(this.paths.root);
    if (!st.isDirectory()) throw Object.assign(new Error(`not a directory: ${this.paths.root}`), { code: 'ENOTDIR' });
    const root = this.watchDir(this.paths.root, null, '', st);
    if (root === null) throw Object.assign(new Error(`cannot watch ${this.paths.root}`), { code: 'EWATCH' });
    await this.walk([root], false);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.unwatched.clear();
    this.looking.clear();
    for (const d of this.dirs.values()) this.closeOne(d);
    this.dirs.clear();
  }

  watchCount(): Promise<number | null> {
    return Promise.resolve(openWatchers);
  }

  /**
   * Watches `abs` (one fs.watch), or null when it cannot be (gone, no longer the directory
   * `id`, out of watches: tried again later, or a problem reported). Synchronous: no gap
   * between the check and the watch. Null too when `abs` is watched already (whatever its
   * inode: `id` may be older than that watch; replacing one is `look`'s, after a fresh lstat)
   * or `parent` is no longer watched (forgotten while its walk read it: a watch under it would
   * be an orphan no one closes).
   */
  private watchDir(abs: string, parent: Dir | null, name: string, id: Identity): Dir | null {
    if (this.closed || this.dirs.has(abs) || (parent !== null && !parent.open)) return null;
    let watcher: FSWatcher;
    try {
      watcher = this.watchFn(abs, { persistent: true, recursive: false }, (eventType, filename) => this.onEvent(dir, eventType, filename));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException | null)?.code;
      if (parent && code !== undefined && OUT_OF_WATCHES.has(code)) {
        this.unwatched.set(abs, { parent, name });
        if (!this.outOfWatches) {
          this.outOfWatches = true;
          this.problem(err);
        }
        this.scheduleRetry();
      } else {
        this.problem(err);
      }
      return null;
    }
    // fs.watch follows symlinks: if the entry was swapped for one (or anything else) since the
    // lstat that found the directory, this watch may be outside the mount. Its parent's watch
    // reports the entry.
    let now;
    try {
      now = lstatSync(abs, { throwIfNoEntry: false });
    } catch {
      now = undefined; // a parent replaced by a file (ENOTDIR)…: not the directory found
    }
    if (!now || !isDirectoryOf(now, id)) {
      try {
        watcher.close();
      } catch {
        // already closed
      }
      return null;
    }
    openWatchers++;
    const dir: Dir = { watcher, ino: id.ino, birthtimeMs: id.birthtimeMs, parent, name, children: null, open: true };
    watcher.on('error', (err) => {
      if (this.closed || this.dirs.get(abs) !== dir) return;
      this.forget(dir);
      // Gone (removed, renamed away): not a problem by itself; anything else is.
      void lstat(abs).then(
        (s) => {
          if (!this.closed && isDirectoryOf(s, dir)) this.problem(err);
        },
        () => {},
      );
    });
    this.dirs.set(abs, dir);
    if (parent) (parent.children ??= new Map()).set(name, dir);
    // Watched by another way (its parent's look): the episode may be over (a retry round ends it itself).
    if (this.unwatched.delete(abs) && !this.retrying) this.endOutOfWatches();
    return dir;
  }

  /** Reads each directory after its watch is up and watches its subdirectories; with `report`, every entry found is a `create`. */
  private async walk(start: Dir[], report: boolean): Promise<void> {
    const todo = [...start];
    // Workers idle while others read: a directory being read may yet hand over subdirectories
    // (a worker that left on an empty queue left the rest of a deep tree to one worker).
    let reading = 0;
    const idle: Array<() => void> = [];
    const wake = () => {
      for (const w of idle.splice(0)) w();
    };
    const worker = async (): Promise<void> => {
      while (!this.closed) {
        const dir = todo.pop();
        if (dir === undefined) {
          if (reading === 0) return wake();
          await new Promise<void>((r) => idle.push(r));
          continue;
        }
        reading++;
        try {
          const subs = await this.readOne(dir, report);
          if (subs.length > 0) {
            todo.push(...subs);
            wake();
          }
        } finally {
          reading--;
          if (reading === 0 && todo.length === 0) wake();
        }
      }
      wake();
    };
    await Promise.all(Array.from({ length: WALK_CONCURRENCY }, worker));
  }

  /** Reads one watched directory (after its watch is up): watches its subdirectories (returned, to be read in turn); with `report`, each entry is a `create`. */
  private async readOne(dir: Dir, report: boolean): Promise<Dir[]> {
    const subs: Dir[] = [];
    const abs = this.absOf(dir);
    let entries;
    try {
      entries = await readdir(abs, { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR' && !this.closed && this.dirs.get(abs) === dir) this.problem(err);
      return subs;
    }
    if (this.closed || this.dirs.get(abs) !== dir) return subs;
    const out: WatchEvent[] = [];
    for (const e of entries) {
      const child = path.join(abs, e.name);
      const p = this.paths.toMountPath(child);
      if (p === null) continue; // the staging area, or a name Filestore cannot catalogue
      if (report) out.push({ type: 'create', path: p });
      if (!e.isDirectory()) continue;
      let st;
      try {
        st = await lstat(child);
      } catch {
        st = null; // gone since: its parent's watch reports it
      }
      // Forgotten meanwhile (removed, replaced: a new walk reads what is there now): its watches
      // below are closed; nothing more is watched under it, nor reported.
      if (this.closed || !dir.open || this.dirs.get(abs) !== dir) return [];
      if (!st?.isDirectory()) continue;
      const sub = this.watchDir(child, dir, e.name, st);
      if (sub) subs.push(sub);
    }
    if (out.length > 0 && !this.closed) this.handlers.onEvents(out);
    return subs;
  }

  private onEvent(dir: Dir, eventType: string, filename: string | Buffer | null): void {
    if (this.closed) return;
    const abs = this.absOf(dir);
    if (this.dirs.get(abs) !== dir) return; // closed meanwhile
    if (filename === null) {
      // No name: the directory itself changed somehow; its judgement (a directory's look) says what.
      const p = this.paths.toMountPath(abs);
      if (p !== null) this.handlers.onEvents([{ type: 'update', path: p }]);
      return;
    }
    const name = typeof filename === 'string' ? filename : filename.toString('utf8');
    const child = path.join(abs, name);
    const p = this.paths.toMountPath(child);
    if (p === null) return;
    if (eventType === 'change' && !dir.children?.has(name)) {
      this.handlers.onEvents([{ type: 'update', path: p }]);
      return;
    }
    void this.look(dir, name, child, p, eventType === 'rename');
  }

  /**
   * One lstat of an entry a 'rename' (or a 'change' of a watched subdirectory) named: gone, a
   * new directory (watched whole), or a file. A watched subdirectory is still the one watched
   * when its inode number and birth time are unchanged (`touch`, `chmod`, `utimes` of it, its
   * name moved away and back: a 'rename', as inotify's IN_ISDIR bit makes libuv call anything
   * but a file's IN_MODIFY/IN_ATTRIB): an `update`, its watches kept. Gone: forgotten, a
   * `delete`. Another directory: forgotten, and the one there watched and walked anew.
   * `renamed`: a 'rename' (see sameDir where birth times are unknown).
   */
  private async look(parent: Dir, name: string, child: string, p: string, renamed: boolean): Promise<void> {
    const seq = ++this.lookSeq;
    this.looking.set(child, seq);
    // lstats run on libuv's pool and may finish out of order: only the entry's latest look acts
    // (an older result could forget the watch of the directory a newer one found there).
    const latest = (): boolean => {
      if (this.looking.get(child) !== seq) return false;
      this.looking.delete(child);
      return true;
    };
    let st;
    try {
      st = await lstat(child);
    } catch (err) {
      if (!latest() || this.closed) return;
      const abs = this.absOf(parent);
      if (name === path.basename(abs)) {
        // Perhaps about the directory itself (IN_ATTRIB, IN_MOVE_SELF, IN_DELETE_SELF on its
        // own watch name it by its basename), perhaps an entry of that name removed from it.
        await this.lookSelf(parent, abs, name, child, p);
        return;
      }
      const watched = parent.children?.get(name);
      if (watched) this.forget(watched);
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') this.problem(err);
      this.handlers.onEvents([{ type: 'delete', path: p }]);
      return;
    }
    if (!latest() || this.closed || this.dirs.get(this.absOf(parent)) !== parent) return;
    const watched = parent.children?.get(name);
    if (watched) {
      if (sameDir(watched, st, renamed)) {
        this.handlers.onEvents([{ type: 'update', path: p }]);
        return;
      }
      this.forget(watched); // renamed away, replaced
    }
    if (st.isDirectory()) {
      this.handlers.onEvents([{ type: 'create', path: p }]);
      const dir = this.watchDir(child, parent, name, st);
      if (dir) await this.walk([dir], true);
      return;
    }
    this.handlers.onEvents([{ type: watched ? 'update' : 'create', path: p }]);
  }

  /**
   * An event naming `name`, the basename of the watched directory `dir` (at `abs`), with no entry
   * `child` of that name found in it: about the directory itself, or an entry of that name
   * removed from it — libuv does not say which. `dir` gone or another directory there: nothing
   * (its parent's watch reports it; the event does not show that `child` is gone: `dir` may be
   * away for a moment, moved with a parent, and its watched subdirectory of that name with it).
   * Still there: an `update` of it, and a `delete` of `child` (an entry of that name removed
   * would go unseen otherwise; for an event about the directory itself it is a path that does
   * not exist, which the judgement finds untracked and absent: nothing). A watched subdirectory
   * of that name is forgotten only if it is still missing once `dir` is known to be in place.
   */
  private async lookSelf(dir: Dir, abs: string, name: string, child: string, p: string): Promise<void> {
    const here = (st: Identity & { isDirectory(): boolean }): boolean =>
      !this.closed && dir.open && this.dirs.get(abs) === dir && isDirectoryOf(st, dir);
    let st;
    try {
      st = await lstat(abs);
    } catch {
      return;
    }
    if (!here(st)) return;
    const self = this.paths.toMountPath(abs);
    this.handlers.onEvents(self === null ? [{ type: 'delete', path: p }] : [{ type: 'update', path: self }, { type: 'delete', path: p }]);
    const watched = dir.children?.get(name);
    if (!watched) return;
    try {
      await lstat(child);
      return; // there again: its own events say what it is
    } catch {
      // still missing, with `dir` in place
    }
    if (!this.closed && dir.children?.get(name) === watched) this.forget(watched);
  }

  private scheduleRetry(): void {
    if (this.closed || this.retryTimer || this.retrying || this.unwatched.size === 0) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.retryUnwatched();
    }, this.retryDelayMs);
    this.retryTimer.unref?.();
  }

  /**
   * Tries again to watch the directories whose watch ran out of watches, parents first; each
   * watched now has its subtree walked and every entry reported (what changed meanwhile went
   * unseen). The first that fails for want of watches again ends the round: the next waits
   * twice as long (≤ 60 s), with no new problem reported. Once none wait, the episode ends
   * (endOutOfWatches).
   */
  private async retryUnwatched(): Promise<void> {
    this.retrying = true;
    let spent = false;
    try {
      for (const [abs, { parent, name }] of [...this.unwatched]) {
        if (this.closed) return;
        if (this.unwatched.get(abs)?.parent !== parent) continue; // tried meanwhile
        this.unwatched.delete(abs);
        // Its parent no longer watched (gone, replaced: its new watch walks it), or watched meanwhile.
        if (this.dirs.get(this.absOf(parent)) !== parent || this.dirs.has(abs)) continue;
        let st;
        try {
          st = await lstat(abs);
        } catch (err) {
          this.problem(err); // gone: its parent's watch reports it
          continue;
        }
        if (this.closed) return;
        if (!st.isDirectory() || this.dirs.get(this.absOf(parent)) !== parent || this.dirs.has(abs)) continue;
        const dir = this.watchDir(abs, parent, name, st);
        if (dir) {
          await this.walk([dir], true);
        } else if (this.unwatched.has(abs)) {
          spent = true;
          break;
        }
      }
    } finally {
      this.retrying = false;
    }
    if (this.closed) return;
    if (this.unwatched.size === 0) {
      this.endOutOfWatches();
      return;
    }
    if (spent) this.retryDelayMs = Math.min(this.retryDelayMs * 2, RETRY_MAX_MS);
    this.scheduleRetry();
  }

  /**
   * No directory waits for a watch any more (watched, or gone): the episode is over. The walks
   * of those watched again reported what they hold, but not what was removed while they were
   * unwatched: one more `overflow` asks the mount watcher for the rescan that finds it. The next
   * time watches run out, an overflow is reported again.
   */
  private endOutOfWatches(): void {
    if (this.unwatched.size > 0 || !this.outOfWatches) return;
    this.outOfWatches = false;
    this.retryDelayMs = RETRY_FIRST_MS;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.closed) return;
    this.handlers.onProblem({
      kind: 'overflow',
      message:
        'every directory left unwatched for want of inotify watches or file descriptors is watched again (or gone): ' +
        'a rescan is needed to find what was removed meanwhile',
    });
  }

  /** Stops watching `dir` and everything below it (no problem: it is gone or replaced). */
  private forget(dir: Dir): void {
    const stack = [dir];
    while (stack.length > 0) {
      const d = stack.pop() as Dir;
      for (const c of d.children?.values() ?? []) stack.push(c);
      d.children = null;
      this.closeOne(d);
    }
    const siblings = dir.parent?.children;
    if (siblings?.get(dir.name) === dir) siblings.delete(dir.name);
  }

  private closeOne(d: Dir): void {
    const abs = this.absOf(d);
    if (this.dirs.get(abs) === d) this.dirs.delete(abs);
    try {
      d.watcher.close();
    } catch {
      // already closed
    }
    if (d.open) {
      d.open = false;
      openWatchers--;
    }
  }

  private absOf(d: Dir): string {
    const names: string[] = [];
    for (let x: Dir | null = d; x && x.parent; x = x.parent) names.push(x.name);
    return names.length === 0 ? this.paths.root : path.join(this.paths.root, ...names.reverse());
  }

  private problem(err: unknown): void {
    if (this.closed) return;
    const code = (err as NodeJS.ErrnoException | null)?.code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return; // gone before its watch: its parent reports it
    this.handlers.onProblem(classifyProblem(err));
  }
}
