import { normalizeMountPrefix } from '../../backends/s3/keys.ts';
import type { Mount } from '../../catalogue/types.ts';
import { normalizePath, STAGING_DIR } from '../../paths.ts';

/** Why a key is left alone: no mount covers it, Filestore's staging area, or a key no path maps to (the audit skips those too). */
export type KeySkip = 'outside_mounts' | 'staging' | 'not_a_path';

/**
 * The S3 mounts of the buckets a batch names, and the mount-relative path of each key.
 * A key may belong to several mounts (a mount of the whole bucket and one of a prefix): each
 * gets its path. Paused mounts are included: a pause refuses Filestore's writes, and the
 * catalogue keeps following storage, as an agent's watcher does for a paused local mount.
 */
export class MountIndex {
  private constructor(private readonly byBucket: ReadonlyMap<string, Mount[]>) {}

  /**
   * The index of `mounts`, read once per batch (mounts change rarely, a stale cache would miss
   * a new one): the S3 mounts of `buckets`, in the order given.
   */
  static of(mounts: Iterable<Mount>, buckets: Iterable<string>): MountIndex {
    const wanted = new Set(buckets);
    const byBucket = new Map<string, Mount[]>();
    for (const m of mounts) {
      if (m.kind !== 's3' || m.bucket === null || !wanted.has(m.bucket)) continue;
      byBucket.set(m.bucket, [...(byBucket.get(m.bucket) ?? []), m]);
    }
    return new MountIndex(byBucket);
  }

  /**
   * The mounts and paths of one key, or why it has none. A key in the staging area of ANY
   * mount of the bucket is skipped for all of them: with nested mounts (one of the whole
   * bucket, one of "tenant/"), the inner mount's staged bytes would otherwise be files of the
   * outer one, tracked as drift and then MISSING on every write.
   */
  locate(bucket: string, key: string): Array<{ mount: Mount; path: string }> | KeySkip {
    const mounts = this.byBucket.get(bucket) ?? [];
    if (mounts.some((m) => inStaging(key, normalizeMountPrefix(m.prefix)))) return 'staging';
    const found: Array<{ mount: Mount; path: string }> = [];
    let reason: KeySkip = 'outside_mounts';
    for (const mount of mounts) {
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
  if (inStaging(relative, '')) return 'staging';
  const bare = relative.endsWith('/') ? relative.slice(0, -1) : relative;
  if (bare === '') return 'not_a_path'; // the mount prefix's own marker: the root is no object
  try {
    return normalizePath(bare) === bare ? bare : 'not_a_path';
  } catch {
    return 'not_a_path';
  }
}

/** True for the staging area of the mount with prefix `prefix` ("" or ending with "/"), its marker included. */
function inStaging(key: string, prefix: string): boolean {
  if (!key.startsWith(prefix)) return false;
  const rel = key.slice(prefix.length);
  return rel === STAGING_DIR || rel.startsWith(`${STAGING_DIR}/`);
}
