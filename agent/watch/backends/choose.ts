import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { countLiveNodes, type Mount } from '../../../shared/catalogue/index.ts';
import type { Queryable } from '../../../shared/db/index.ts';
import { STAGING_DIR } from '../../../shared/index-paths.ts';
import { maxUserWatches } from '../inotify.ts';
import type { WatchBackendChoice, WatchBackendKind } from '../types.ts';

/**
 * Which watcher a mount gets under `auto`: @parcel/watcher, whatever the size of the tree.
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
 */
export const AUTO_MAX_THRESHOLD = 50_000;
export const AUTO_BUDGET_SHARE = 0.25;

/** A chokidar threshold that fits this host's inotify budget (pass it as `threshold` to use chokidar for smaller trees). */
export async function autoThreshold(cap = AUTO_MAX_THRESHOLD): Promise<number> {
  const budget = await maxUserWatches();
  return budget === null ? cap : Math.max(1, Math.min(cap, Math.floor(budget * AUTO_BUDGET_SHARE)));
}

/**
 * Entries (files, directories, symlinks) below `root`, counted up to `cap` and no further:
 * the walk stops as soon as the answer is known. Symlinks are counted, never followed; the
 * staging area is skipped; unreadable directories count as empty.
 */
export async function countEntries(root: string, cap: number): Promise<number> {
  let count = 0;
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
      if (e.isDirectory()) dirs.push(path.join(dir, e.name));
    }
  }
  return count;
}

export interface BackendDecision {
  kind: WatchBackendKind;
  choice: WatchBackendChoice;
  /** Auto with a threshold: the larger of the catalogue's live nodes and the (capped) count on disk. */
  entries: number | null;
  threshold: number | null;
  reason: string;
}

export interface ChooseOptions {
  pool: Queryable;
  mount: Mount;
  /** The mount root (absolute, real). */
  root: string;
  choice: WatchBackendChoice;
  /** Auto: trees with fewer entries than this get chokidar (default: none, parcel for every tree). */
  threshold?: number | undefined;
}

/**
 * Picks the backend for a mount: the configured one, or under `auto` parcel — unless a
 * `threshold` is given, then chokidar below it. Counting the tree counts the catalogue first
 * (one index count) and walks the disk only when the catalogue is below the threshold (a
 * mount not yet audited).
 */
export async function chooseBackend(o: ChooseOptions): Promise<BackendDecision> {
  if (o.choice !== 'auto') return { kind: o.choice, choice: o.choice, entries: null, threshold: null, reason: 'configured' };
  if (o.threshold === undefined) return { kind: 'parcel', choice: 'auto', entries: null, threshold: null, reason: 'auto: parcel for every tree' };
  const threshold = o.threshold;
  const catalogued = await countLiveNodes(o.pool, o.mount.id);
  const entries = catalogued >= threshold ? catalogued : Math.max(catalogued, await countEntries(o.root, threshold));
  const kind: WatchBackendKind = entries >= threshold ? 'parcel' : 'chokidar';
  return {
    kind,
    choice: 'auto',
    entries,
    threshold,
    reason: kind === 'parcel' ? `${entries}+ entries, at or above the threshold of ${threshold}` : `${entries} entries, below the threshold of ${threshold}`,
  };
}
