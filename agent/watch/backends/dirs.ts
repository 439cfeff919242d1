import { watch, type FSWatcher } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { WatchBackend, WatchEvent, WatchHandlers } from '../types.ts';
import { MountPaths } from './mount-paths.ts';
import { classifyProblem } from './problems.ts';

/** fs.watch watchers open in this process, all 'dirs' backends together (watchCount). */
let openWatchers = 0;

/** Directory walks running at once (start, a new tree). */
const WALK_CONCURRENCY = 8;

/** One watched directory: the only state this backend keeps (nothing per file). */
interface Dir {
  watcher: FSWatcher;
  /** The inode watched: a directory replaced under the same name is another one. */
  ino: number;
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
 * - A watched directory removed or renamed away (its name gone from its parent, or another
 *   inode there): its watchers and those below it are closed, no problem reported.
 * - ENOSPC/EMFILE adding a watch: `overflow` (coverage lost); other errors: `error`.
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

  constructor(
    root: string,
    private readonly handlers: WatchHandlers,
  ) {
    this.paths = new MountPaths(root);
  }

  async start(): Promise<void> {
    const st = await lstat(this.paths.root);
    if (!st.isDirectory()) throw Object.assign(new Error(`not a directory: ${this.paths.root}`), { code: 'ENOTDIR' });
    const root = this.watchDir(this.paths.root, null, '', st.ino);
    if (root === null) throw Object.assign(new Error(`cannot watch ${this.paths.root}`), { code: 'EWATCH' });
    await this.walk([root], false);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const d of this.dirs.values()) this.closeOne(d);
    this.dirs.clear();
  }

  watchCount(): Promise<number | null> {
    return Promise.resolve(openWatchers);
  }

  /** Watches `abs` (one fs.watch), or null when it cannot be (gone, a problem reported). Synchronous: no gap between the check and the watch. */
  private watchDir(abs: string, parent: Dir | null, name: string, ino: number): Dir | null {
    if (this.closed) return null;
    const existing = this.dirs.get(abs);
    if (existing) return existing.ino === ino ? null : (this.forget(existing), this.watchDir(abs, parent, name, ino));
    let watcher: FSWatcher;
    try {
      watcher = watch(abs, { persistent: true, recursive: false }, (eventType, filename) => this.onEvent(dir, eventType, filename));
    } catch (err) {
      this.problem(err);
      return null;
    }
    openWatchers++;
    const dir: Dir = { watcher, ino, parent, name, children: null, open: true };
    watcher.on('error', (err) => {
      if (this.closed || this.dirs.get(abs) !== dir) return;
      this.forget(dir);
      // Gone (removed, renamed away): not a problem by itself; anything else is.
      void lstat(abs).then(
        (s) => {
          if (!this.closed && s.isDirectory() && s.ino === ino) this.problem(err);
        },
        () => {},
      );
    });
    this.dirs.set(abs, dir);
    if (parent) (parent.children ??= new Map()).set(name, dir);
    return dir;
  }

  /** Reads each directory after its watch is up and watches its subdirectories; with `report`, every entry found is a `create`. */
  private async walk(start: Dir[], report: boolean): Promise<void> {
    const todo = [...start];
    const worker = async (): Promise<void> => {
      while (todo.length > 0 && !this.closed) {
        const dir = todo.pop() as Dir;
        const abs = this.absOf(dir);
        let entries;
        try {
          entries = await readdir(abs, { withFileTypes: true });
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'ENOENT' && code !== 'ENOTDIR' && !this.closed && this.dirs.get(abs) === dir) this.problem(err);
          continue;
        }
        if (this.closed || this.dirs.get(abs) !== dir) continue;
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
            continue; // gone since: its parent's watch reports it
          }
          if (!st.isDirectory()) continue;
          const sub = this.watchDir(child, dir, e.name, st.ino);
          if (sub) todo.push(sub);
        }
        if (out.length > 0 && !this.closed) this.handlers.onEvents(out);
      }
    };
    await Promise.all(Array.from({ length: WALK_CONCURRENCY }, worker));
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
    void this.look(dir, name, child, p);
  }

  /** One lstat of an entry a 'rename' named: gone, a new directory (watched whole), or a file. */
  private async look(parent: Dir, name: string, child: string, p: string): Promise<void> {
    let st;
    try {
      st = await lstat(child);
    } catch (err) {
      if (this.closed) return;
      const watched = parent.children?.get(name);
      if (watched) this.forget(watched);
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') this.problem(err);
      this.handlers.onEvents([{ type: 'delete', path: p }]);
      return;
    }
    if (this.closed || this.dirs.get(this.absOf(parent)) !== parent) return;
    const watched = parent.children?.get(name);
    if (watched && !(st.isDirectory() && st.ino === watched.ino)) this.forget(watched); // renamed away, replaced
    if (st.isDirectory() && !parent.children?.has(name)) {
      this.handlers.onEvents([{ type: 'create', path: p }]);
      const dir = this.watchDir(child, parent, name, st.ino);
      if (dir) await this.walk([dir], true);
      return;
    }
    this.handlers.onEvents([{ type: watched ? 'update' : 'create', path: p }]);
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
