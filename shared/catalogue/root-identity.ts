import type { Queryable } from '../db/pool.ts';

/**
 * The identity (device:inode, shared/backends/local/root-check.ts) of a local mount's root as
 * the catalogue knows it: the directory its last complete audit walked, or the first one seen
 * healthy. A reconciliation or a watcher that finds another directory there (a disk unmounted
 * from under a root that is its mount point leaves the empty mount point; a root removed and
 * made again) does not take it for the mount: directory jobs refuse, and only a full audit
 * that completes — under the mass-missing rule, or forced — accepts it.
 */

/** The recorded identity, recording `seen` first when none is (a new mount, or one from before migration 12). */
export async function recordedRootIdentity(q: Queryable, mountId: string, seen: string): Promise<string> {
  const { rows } = await q.query<{ id: string | null }>('SELECT root_identity AS id FROM filestore.mounts WHERE id = $1', [mountId]);
  const recorded = rows[0]?.id ?? null;
  if (recorded !== null) return recorded;
  const set = await q.query<{ id: string }>(
    `UPDATE filestore.mounts SET root_identity = coalesce(root_identity, $2) WHERE id = $1 RETURNING root_identity AS id`,
    [mountId, seen],
  );
  return set.rows[0]?.id ?? seen;
}

/** A complete audit walked this root: from now on it is the mount's. */
export async function acceptRootIdentity(q: Queryable, mountId: string, id: string): Promise<void> {
  await q.query('UPDATE filestore.mounts SET root_identity = $2 WHERE id = $1', [mountId, id]);
}
