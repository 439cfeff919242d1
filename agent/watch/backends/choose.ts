import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { countLiveNodes } from '../../../shared/catalogue/reconcile-writes.ts';
import type { Mount } from '../../../shared/catalogue/types.ts';
import type { Queryable } from '../../../shared/db/pool.ts';
import { STAGING_DIR } from '../../../shared/paths.ts';
import { maxUserWatches } from '../inotify.ts';
import type { WatchBackendChoice, WatchBackendKind } from '../types.ts';

/**
 * Which watcher a mount gets under `auto`.
 *
 * chokidar holds one inotify watch per file and per directory; @parcel/watcher one per
 * directory. Watches come from a per-user budget, `fs.inotify.max_user_watches`, shared by
 * every process of that user (IDEs, other agents, other mounts of this one): 8,192 on old
 * kernels, scaled with RAM on newer ones (here: read from /proc). A chokidar watcher that
 * exhausts it gets ENOSPC and goes blind to part of its tree (and starves other processes).
 *
 * So `auto` uses chokidar only for trees under a threshold of
 *   min(50,000 entries, 25% of max_user_watches)
 * — a quarter leaves room for several mounts and other users of inotify; 50,000 bounds
 * chokidar's start-up cost (it stats every entry) and memory (a handle per file) even on a
 * host with a huge budget. Larger trees get parcel. If chokidar still runs out (the tree grew),
 * the mount watcher moves that mount to parcel and rescans it.
 */
export const AUTO_MAX_THRESHOLD = 50_000;
export const AUTO_BUDGET_SHARE = 0.25;

/** The `auto` threshold on this host: entries at or above it get parcel. */
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
  /** Auto: the larger of the catalogue's live nodes and the (capped) count on disk. */
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
  /** Overrides the host's auto threshold (tests, operators who know their budget). */
  threshold?: number | undefined;
}

/**
 * Picks the backend for a mount. Auto counts the catalogue first (one index count) and
 * walks the disk only when the catalogue is below the threshold (a mount not yet audited).
 */
export async function chooseBackend(o: ChooseOptions): Promise<BackendDecision> {
  if (o.choice !== 'auto') return { kind: o.choice, choice: o.choice, entries: null, threshold: null, reason: 'configured' };
  const threshold = o.threshold ?? (await autoThreshold());
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
