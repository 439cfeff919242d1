import { normalizeMountPrefix } from '../../backends/s3/keys.ts';
import { listMounts } from '../../catalogue/mounts.ts';
import type { Mount } from '../../catalogue/types.ts';
import type { Queryable } from '../../db/pool.ts';
import { normalizePath, STAGING_DIR } from '../../paths.ts';

/** Why a key is left alone: no mount covers it, Filestore's staging area, or a key no path maps to (the audit skips those too). */
export type KeySkip = 'outside_mounts' | 'staging' | 'not_a_path';

/**
 * The active S3 mounts of the buckets a batch names, and the mount-relative path of each key.
 * A key may belong to several mounts (a mount of the whole bucket and one of a prefix): each
 * gets its path.
 */
export class MountIndex {
  private constructor(private readonly byBucket: ReadonlyMap<string, Mount[]>) {}

  /** One query per batch: mounts change rarely, a stale cache would miss a new one. */
  static async load(q: Queryable, buckets: Iterable<string>): Promise<MountIndex> {
    const wanted = new Set(buckets);
    const byBucket = new Map<string, Mount[]>();
    if (wanted.size === 0) return new MountIndex(byBucket);
    for (const m of await listMounts(q)) {
      if (m.kind !== 's3' || m.state !== 'active' || m.bucket === null || !wanted.has(m.bucket)) continue;
      byBucket.set(m.bucket, [...(byBucket.get(m.bucket) ?? []), m]);
    }
    return new MountIndex(byBucket);
  }

  /** The mounts and paths of one key, or why it has none. */
  locate(bucket: string, key: string): Array<{ mount: Mount; path: string }> | KeySkip {
    const found: Array<{ mount: Mount; path: string }> = [];
    let reason: KeySkip = 'outside_mounts';
    for (const mount of this.byBucket.get(bucket) ?? []) {
      const prefix = normalizeMountPrefix(mount.prefix);
      if (!key.startsWith(prefix)) continue;
      const path = pathOfKey(key.slice(prefix.length));
      if (typeof path === 'string') found.push({ mount, path });
      else if (reason === 'outside_mounts' || path === 'staging') reason = path;
    }
    return found.length > 0 ? found : reason;
  }
}

/**
 * The canonical path of a key below a mount's prefix: a directory marker ("dir/") is its
 * directory. The staging area and keys that are not already canonical paths (empty, ".",
 * "..", "//", not NFC, control characters) are skipped, as the audit's listing skips them.
 */
export function pathOfKey(relative: string): string | KeySkip {
  if (relative === STAGING_DIR || relative.startsWith(`${STAGING_DIR}/`)) return 'staging';
  const bare = relative.endsWith('/') ? relative.slice(0, -1) : relative;
  if (bare === '') return 'not_a_path'; // the mount prefix's own marker: the root is no object
  try {
    return normalizePath(bare) === bare ? bare : 'not_a_path';
  } catch {
    return 'not_a_path';
  }
}
