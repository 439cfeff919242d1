import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { countLiveTree, type Mount } from '../../../shared/catalogue/index.ts';
import type { Queryable } from '../../../shared/db/index.ts';
import { STAGING_DIR } from '../../../shared/index-paths.ts';
import { maxUserWatches } from '../inotify.ts';
import type { WatchBackendChoice, WatchBackendKind } from '../types.ts';

/**
 * Which watcher a mount gets under `auto`: @parcel/watcher, or for a large tree with many files
 * per directory the `dirs` backend (below).
 *
 * chokidar costs the agent's one JavaScript thread about 0.2 ms per new file (it stats each
 * one, opens an fs.watch on it and re-reads its directory with an lstat per entry), and while
 * a burst arrives it holds the event loop so that everything else — the drift sink, the
 * reconciliation of what the burst brought — waits behind it: in the drift bench on a 2-vCPU
 * host, the first drift of a 10,000-file burst was judged 2.5–7 s after its first write with
 * chokidar, 0.2–1 s with parcel, whose crawl and event batching run in C++, and chokidar cost
 * the agent twice the CPU (docs/benchmarks.md, "Drift detection"). A burst costs the same in a small tree as in a large one, so no tree size
 * makes chokidar the better default. It also holds one inotify watch per file *and* per
 * directory, from a per-user budget, `fs.inotify.max_user_watches`, shared by every process of
 * that user (8,192 on old kernels, scaled with RAM on newer ones; read here from /proc); parcel
 * one per directory. What chokidar gives in return is ~50 ms less latency per change (parcel
 * batches events for 50 ms before it calls JavaScript).
 *
 * chokidar stays available when configured (`chokidar`), and under `auto` for trees below an
 * explicit `threshold` (entries at or above it get parcel): `autoThreshold()` gives the one
 * that fits this host's budget — min(50,000 entries, 25 % of max_user_watches), a quarter
 * leaving room for other mounts and other users of inotify, 50,000 bounding chokidar's
 * start-up (it stats every entry) and memory (a handle per file). If chokidar still runs out
 * (the tree grew), the mount watcher moves that mount to parcel and rescans it.
 *
 * parcel keeps an entry per *file* of the tree in the agent's memory for as long as it watches
 * (~270 B a file: 518–529 MB of PSS on a 1M-file mount, issue 17); `dirs` keeps state per
 * *directory* only (~2.6 KB each: 259 MB on the same mount, walkers included) and reported the
 * drift bench's changes as fast or faster (docs/benchmarks.md). Per file, parcel is cheaper
 * below ~10 files a directory. So a tree of DIRS_FROM_ENTRIES entries or more, with
 * DIRS_FILES_PER_DIR or more files per directory, gets `dirs`; smaller trees, where
 * parcel's memory does not matter, and trees of many small directories keep parcel. The counts
 * are the catalogue's (one count), or a walk of the disk capped at DIRS_FROM_ENTRIES entries
 * when the catalogue holds fewer (a mount not yet audited): directories met by then over
 * entries met by then.
 */
export const AUTO_MAX_THRESHOLD = 50_000;

/** Under `auto`: trees of at least this many entries… */
export const DIRS_FROM_ENTRIES = 100_000;
/** …with at least this many files (entries but directories) per directory, the root counted, get the `dirs` backend. */
export const DIRS_FILES_PER_DIR = 20;
export const AUTO_BUDGET_SHARE = 0.25;

/** A chokidar threshold that fits this host's inotify budget (pass it as `threshold` to use chokidar for smaller trees). */
export async function autoThreshold(cap = AUTO_MAX_THRESHOLD): Promise<number> {
  const budget = await maxUserWatches();
  return budget === null ? cap : Math.max(1, Math.min(cap, Math.floor(budget * AUTO_BUDGET_SHARE)));
}

/** Entries of a tree and how many of them are directories. */
export interface TreeCount {
  entries: number;
  directories: number;
}

/**
 * Entries (files, directories, symlinks) below `root`, counted up to `cap` and no further:
 * the walk stops as soon as the answer is known. Symlinks are counted, never followed; the
 * staging area is skipped; unreadable directories count as empty.
 */
export async function countTree(root: string, cap: number): Promise<TreeCount> {
  let count = 0;
  let directories = 0;
  const dirs = [root];
  while (dirs.length > 0 && count < cap) {
    const dir = dirs.pop() as string;
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      if (dir === root && e.name === STAGING_DIR) continue;
      if (++count >= cap) break;
      if (e.isDirectory()) {
        directories++;
        dirs.push(path.join(dir, e.name));
      }
    }
  }
  return { entries: count, directories };
}

export interface BackendDecision {
  kind: WatchBackendKind;
  choice: WatchBackendChoice;
  /** Auto: the larger of the catalogue's live nodes and the (capped) count on disk. */
  entries: number | null;
  /** Auto: directories among them. */
  directories: number | null;
  threshold: number | null;
  reason: string;
}

export interface ChooseOptions {
  pool: Queryable;
  mount: Mount;
  /** The mount root (absolute, real). */
  root: string;
  choice: WatchBackendChoice;
  /** Auto: trees with fewer entries than this get chokidar (default: none). */
  threshold?: number | undefined;
  /** Auto: trees with at least this many entries, DIRS_FILES_PER_DIR or more files per directory, get `dirs` (default DIRS_FROM_ENTRIES). */
  dirsFrom?: number | undefined;
}

/**
 * Picks the backend for a mount: the configured one, or under `auto` `dirs` for a large tree
 * of big directories, chokidar below an explicit `threshold`, parcel otherwise. Counting the
 * tree counts the catalogue first (one count) and walks the disk only when the catalogue holds
 * fewer entries than the larger of the two bounds (a mount not yet audited).
 */
export async function chooseBackend(o: ChooseOptions): Promise<BackendDecision> {
  if (o.choice !== 'auto') return { kind: o.choice, choice: o.choice, entries: null, directories: null, threshold: null, reason: 'configured' };
  const dirsFrom = o.dirsFrom ?? DIRS_FROM_ENTRIES;
  const cap = Math.max(o.threshold ?? 0, dirsFrom);
  const catalogued = await countLiveTree(o.pool, o.mount.id);
  let tree = catalogued;
  if (catalogued.entries < cap) {
    const onDisk = await countTree(o.root, cap);
    if (onDisk.entries > catalogued.entries) tree = onDisk;
  }
  const decide = (kind: WatchBackendKind, reason: string): BackendDecision => ({
    kind,
    choice: 'auto',
    entries: tree.entries,
    directories: tree.directories,
    threshold: o.threshold ?? null,
    reason,
  });
  if (o.threshold !== undefined && tree.entries < o.threshold) return decide('chokidar', `${tree.entries} entries, below the threshold of ${o.threshold}`);
  // Files (entries but directories) per directory, the root one of them.
  const perDir = Math.floor((tree.entries - tree.directories) / (tree.directories + 1));
  const size = tree.entries >= cap ? `${tree.entries}+ entries` : `${tree.entries} entries`;
  if (tree.entries >= dirsFrom && perDir >= DIRS_FILES_PER_DIR) {
    return decide('dirs', `${size}, ${perDir} files per directory: watched per directory, nothing kept per file`);
  }
  return decide('parcel', tree.entries >= dirsFrom ? `${size}, ${perDir} files per directory` : `${size}, below ${dirsFrom}`);
}
