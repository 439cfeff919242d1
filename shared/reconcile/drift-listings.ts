import type { Observed } from '../backends/local/disk-stat.ts';
import { liveDirectoriesAmong, openListings } from '../catalogue/drift-writes.ts';
import type { Queryable } from '../db/pool.ts';
import { parentOf } from '../paths.ts';

/**
 * Drift detection (drift.ts) leaves to a listing already on its way the paths it will see:
 * while a burst is still arriving, a batch does not judge, lock, or enqueue again what the job
 * of an earlier batch is about to find.
 */

// Slack when a job's start (database clock) is compared with an event's arrival (ours).
const CLOCK_MARGIN_MS = 10;

/**
 * The non-recursive reconcile jobs queued or running on the directories of `paths`: for each
 * directory, the moment (our clock) after which its listing began — +∞ for a queued one (it
 * starts after now). Ages, not timestamps, cross between the clocks.
 */
export async function listingsOnTheirWay(q: Queryable, mountId: string, paths: readonly string[]): Promise<Map<string, number>> {
  const dirs = new Set<string>();
  for (const p of paths) {
    const dir = parentOf(p);
    if (dir !== null) dirs.add(dir);
  }
  const asked = performance.now();
  const open = await openListings(q, mountId, [...dirs]);
  const startedAfter = new Map<string, number>();
  for (const l of open) {
    const since = l.startedAgoMs === null ? Number.POSITIVE_INFINITY : asked - l.startedAgoMs;
    startedAfter.set(l.path, Math.max(startedAfter.get(l.path) ?? Number.NEGATIVE_INFINITY, since));
  }
  return startedAfter;
}

/**
 * The paths of a chunk that a listing of their directory already on its way will see, so
 * judging them now would only repeat its work: a non-recursive job of the directory that is
 * queued (`covered`: it starts after now, so after the change), or running since after the
 * path was reported (`waiting`: looked at again when it is over, since a reconciliation skips
 * what someone else holds at that moment). Their locks are not taken, so that listing is not
 * made to skip them. Only files and symlinks, on storage and in the catalogue: a new, vanished
 * or replaced directory needs a recursive look that a listing of its parent does not give.
 */
export async function coveredByListings(
  q: Queryable,
  mountId: string,
  listings: ReadonlyMap<string, number>,
  seenAt: ReadonlyMap<string, number> | undefined,
  paths: readonly string[],
  seen: ReadonlyMap<string, Observed>,
): Promise<{ covered: Set<string>; waiting: Set<string> }> {
  const none = { covered: new Set<string>(), waiting: new Set<string>() };
  if (listings.size === 0) return none;
  const queued: string[] = [];
  const running: string[] = [];
  for (const p of paths) {
    const observed = seen.get(p);
    if (!observed || observed.kind === 'directory') continue;
    const startedAfter = listings.get(parentOf(p) ?? '');
    if (startedAfter === undefined) continue;
    if (startedAfter === Number.POSITIVE_INFINITY) queued.push(p);
    else {
      const at = seenAt?.get(p);
      if (at !== undefined && startedAfter > at + CLOCK_MARGIN_MS) running.push(p);
    }
  }
  if (queued.length + running.length === 0) return none;
  const dirs = await liveDirectoriesAmong(q, mountId, [...queued, ...running]);
  return { covered: new Set(queued.filter((p) => !dirs.has(p))), waiting: new Set(running.filter((p) => !dirs.has(p))) };
}
