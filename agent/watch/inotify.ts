import { readdir, readFile, readlink } from 'node:fs/promises';

/**
 * inotify accounting from /proc (Linux). The kernel limits watches per user
 * (`fs.inotify.max_user_watches`, shared by every process of the user); a watcher that runs
 * out gets ENOSPC and stops seeing parts of the tree. These readers let the backend chooser
 * size its threshold and a benchmark report what each backend holds.
 */

const PROC_MAX_WATCHES = '/proc/sys/fs/inotify/max_user_watches';
const PROC_MAX_QUEUED = '/proc/sys/fs/inotify/max_queued_events';

async function readLimit(file: string): Promise<number | null> {
  try {
    const n = Number.parseInt((await readFile(file, 'utf8')).trim(), 10);
    return Number.isFinite(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/** fs.inotify.max_user_watches, or null where it cannot be read (not Linux). */
export const maxUserWatches = (): Promise<number | null> => readLimit(PROC_MAX_WATCHES);

/**
 * fs.inotify.max_queued_events: the events one inotify instance's kernel queue holds before
 * it drops the rest (default 16384), or null where it cannot be read (not Linux).
 */
export const maxQueuedEvents = (): Promise<number | null> => readLimit(PROC_MAX_QUEUED);

/**
 * Watches held on each inotify file descriptor of this process (fd → count of
 * `inotify wd:` lines in /proc/self/fdinfo/<fd>), or null where /proc is unavailable.
 * libuv (fs.watch, hence chokidar) shares one inotify fd per event loop; @parcel/watcher
 * opens its own.
 */
export async function inotifyWatchesByFd(): Promise<Map<number, number> | null> {
  let fds: string[];
  try {
    fds = await readdir('/proc/self/fd');
  } catch {
    return null;
  }
  const out = new Map<number, number>();
  await Promise.all(
    fds.map(async (fd) => {
      try {
        if ((await readlink(`/proc/self/fd/${fd}`)) !== 'anon_inode:inotify') return;
        const info = await readFile(`/proc/self/fdinfo/${fd}`, 'utf8');
        let n = 0;
        for (const line of info.split('\n')) if (line.startsWith('inotify wd:')) n++;
        out.set(Number(fd), n);
      } catch {
        // the fd closed while we looked
      }
    }),
  );
  return out;
}

/** All inotify watches this process holds, or null where that cannot be measured. */
export async function inotifyWatchCount(): Promise<number | null> {
  const byFd = await inotifyWatchesByFd();
  if (!byFd) return null;
  let n = 0;
  for (const c of byFd.values()) n += c;
  return n;
}

/**
 * Which inotify fds belong to which backend kind, learnt by comparing the fds before and
 * after a backend's first start in this process (both libraries keep one fd per process).
 */
const owners = new Map<number, string>();

/**
 * The inotify fds open before a backend starts (pass them to claimNewInotifyFds after).
 * Owners of fds no longer open are forgotten here: a library that closed its inotify fd (its
 * last watch gone) frees the number, and the next library's fd may get it.
 */
export async function inotifyFdsBeforeStart(): Promise<Map<number, number> | null> {
  const open = await inotifyWatchesByFd();
  if (open) for (const fd of [...owners.keys()]) if (!open.has(fd)) owners.delete(fd);
  return open;
}

/**
 * Records as `owner`'s the inotify fds that appeared since `before`, and unowned ones whose
 * watches grew: libuv keeps one inotify fd per process for every fs.watch, so it may have been
 * opened before chokidar's first start (by any fs.watch), and only its count tells.
 */
export async function claimNewInotifyFds(owner: string, before: Map<number, number> | null): Promise<void> {
  const after = await inotifyWatchesByFd();
  if (!before || !after) return;
  for (const [fd, watches] of after) {
    if (owners.has(fd)) continue;
    const was = before.get(fd);
    if (was === undefined || watches > was) owners.set(fd, owner);
  }
}

/** Watches on the fds claimed by `owner`, or null when none is known (or /proc is unavailable). */
export async function inotifyWatchesOf(owner: string): Promise<number | null> {
  const fds = [...owners.entries()].filter(([, o]) => o === owner).map(([fd]) => fd);
  if (fds.length === 0) return null;
  const byFd = await inotifyWatchesByFd();
  if (!byFd) return null;
  let n = 0;
  for (const fd of fds) {
    const c = byFd.get(fd);
    if (c === undefined) owners.delete(fd); // closed (the library let go of it)
    else n += c;
  }
  return n;
}
