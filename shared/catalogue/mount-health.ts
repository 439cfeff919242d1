/** A mount's health: what the last look at its root found. */
import type { Queryable } from '../db/pool.ts';
import { lit } from './inline-writes.ts';

/** setMountHealth(…, 'healthy', null) as text, to send with other statements (simple protocol). */
export function setMountHealthySql(mountId: string): string {
  return `UPDATE filestore.mounts SET health = 'healthy', health_reason = NULL, health_checked_at = now() WHERE id = ${lit(mountId)}`;
}

/** Records what the last look at the mount's root found. */
export async function setMountHealth(q: Queryable, mountId: string, health: 'healthy' | 'unhealthy', reason: string | null): Promise<void> {
  await q.query(
    `UPDATE filestore.mounts SET health = $2, health_reason = $3, health_checked_at = now() WHERE id = $1`,
    [mountId, health, reason],
  );
}
