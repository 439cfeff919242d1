import type { Observed } from '../backends/local/disk-stat.ts';
import { DiskStat } from '../backends/local/disk-stat.ts';
import type { BackendRegistry } from '../backends/registry.ts';
import type { EntryStat } from '../backends/types.ts';
import type { CatalogueNode, Mount } from '../catalogue/types.ts';
import { forEachLimited } from './strategies/base.ts';
import { LocalStrategy } from './strategies/local.ts';
import { S3Strategy } from './strategies/s3.ts';

export type { Observed };

/**
 * How drift detection (drift.ts) looks at storage: what is at each path now, and whether that
 * differs from a node's record (the reconcile strategy's rule, so a signal and the job after
 * it agree on what a change is).
 */
export interface DriftObserver {
  /**
   * What storage holds at each path: an entry, null (absent, or not part of the tree), or no
   * key at all / undefined (could not be read: no judgement, the reconciliation looks).
   */
  observe(paths: readonly string[]): Promise<ReadonlyMap<string, Observed>>;
  /** True when the record differs from what storage holds (same kind). */
  differs(node: CatalogueNode, seen: EntryStat): boolean;
}

// HEADs at once for a batch of S3 keys: an SQS batch holds at most 10 records, a watcher burst
// does not reach S3; the same bound as the second look before MISSING.
const S3_LOOKS_AT_ONCE = 16;

/**
 * The observer for a mount: local disks are lstat'ed directory by directory through DiskStat
 * (one open per directory, synchronous lstats: the burst path of the agent's watcher); S3
 * keys are looked at with HEAD, a few at once (an error is "could not read").
 */
export function driftObserverFor(backends: Pick<BackendRegistry, 'forMount'>, mount: Mount): DriftObserver {
  if (mount.kind === 'local') {
    const strategy = new LocalStrategy(mount.rootPath as string, () => backends.forMount(mount));
    const disk = new DiskStat(mount.rootPath as string, (path) => strategy.stat(path));
    return { observe: (paths) => disk.statAll(paths), differs: (node, seen) => strategy.differs(node, seen) };
  }
  const strategy = new S3Strategy(() => backends.forMount(mount), 0);
  return {
    async observe(paths) {
      const out = new Map<string, Observed>();
      await forEachLimited([...paths], S3_LOOKS_AT_ONCE, async (p) => {
        try {
          out.set(p, await strategy.stat(p));
        } catch {
          out.set(p, undefined);
        }
      });
      return out;
    },
    differs: (node, seen) => strategy.differs(node, seen),
  };
}
