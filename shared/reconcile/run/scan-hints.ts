/**
 * Where the last complete audit of each mount passed every SCOPE_PAGE_ROWS-th path: the next
 * audit of that mount in this process cuts its catalogue read there (catalogue/nodes.ts
 * scopePages `split`) and reads two ranges at a time, at no cost to PostgreSQL (marking the
 * ranges out with a query of its own read every row's heap tuple again where the visibility
 * map was not set: as much as the page it saved on a freshly discovered catalogue).
 *
 * Hints only split the key space: ranges never overlap nor leave anything out, whatever the
 * catalogue holds by then, so stale hints cost evenness, never a row. Kept in memory (a
 * path every 1,000 entries: ~1,000 strings for a million), for the last MOUNTS mounts audited.
 */
import { SCOPE_PAGE_ROWS } from '../../catalogue/nodes.ts';

const MOUNTS = 64;
const hints = new Map<string, readonly string[]>();

/** The ends the last complete audit of the mount passed (empty: none yet in this process). */
export function scanHintsOf(mountId: string): readonly string[] {
  return hints.get(mountId) ?? [];
}

/** What a complete audit of the mount passed, replacing what an earlier one left. */
export function rememberScanHints(mountId: string, ends: readonly string[]): void {
  hints.delete(mountId); // re-inserted last: the map's order is the audits' order
  hints.set(mountId, ends);
  for (const key of hints.keys()) {
    if (hints.size <= MOUNTS) break;
    hints.delete(key);
  }
}

/** Collects every SCOPE_PAGE_ROWS-th path of a scan, as it goes. */
export class ScanHintRecorder {
  readonly ends: string[] = [];
  private count = 0;

  /** Called for each path of the scan, in order: true when it is one to keep (then call keep). */
  due(): boolean {
    if (++this.count < SCOPE_PAGE_ROWS) return false;
    this.count = 0;
    return true;
  }

  keep(path: string): void {
    // A copy: the path is a slice of a whole batch of lines (~16,000 characters, or a page of
    // the catalogue's), which a kept slice would keep in memory with it (16 MB at 1M entries).
    this.ends.push(Buffer.from(path, 'utf8').toString('utf8'));
  }
}
