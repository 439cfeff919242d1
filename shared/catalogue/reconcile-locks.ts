/** The path locks of reconciliation's guarded writes: try-locks, or a bounded wait, for one transaction. */
import type { Queryable } from '../db/pool.ts';
import { pathLockSet } from './locks.ts';

/**
 * Locks, for the transaction, what writing `paths` needs: exclusive on each path, shared on
 * its ancestors, in key order (the order commands take theirs, so neither can deadlock the other).
 * - Without `waitMs`: try-locks. Returns the paths all of whose locks were free.
 * - With `waitMs`: waits up to `waitMs` for all the locks together. Returns every path, or
 *   throws (`isLockTimeout`: 55P03 or 57014), which aborts the transaction.
 */
export async function lockPathsForWrite(q: Queryable, mountId: string, paths: string[], waitMs?: number): Promise<Set<string>> {
  const { locks, keysOf } = pathLockSet(mountId, paths);
  if (locks.length === 0) return new Set();
  // In key order already; the SQL keeps that order (ORDER BY key).
  const params = [locks.map((l) => l.key.toString()), locks.map((l) => l.mode === 'exclusive')];
  if (waitMs !== undefined) {
    // lock_timeout bounds each lock's wait, statement_timeout all of them together; the
    // latter is put back as it was for the rest of the transaction.
    const ms = `${Math.max(1, Math.round(waitMs))}ms`;
    const { rows } = await q.query<{ prev: string }>(
      `SELECT current_setting('statement_timeout') AS prev, set_config('lock_timeout', $1, true), set_config('statement_timeout', $1, true)`,
      [ms],
    );
    await q.query(
      `SELECT CASE WHEN ex THEN pg_advisory_xact_lock(key) ELSE pg_advisory_xact_lock_shared(key) END
         FROM (SELECT key, ex FROM unnest($1::bigint[], $2::boolean[]) AS t(key, ex) ORDER BY key) AS ordered`,
      params,
    );
    await q.query(`SELECT set_config('statement_timeout', $1, true)`, [rows[0]?.prev ?? '0']);
    return new Set(paths);
  }
  // Every lock is tried (the CTE runs to completion); only the refused keys come back, usually none.
  const { rows } = await q.query<{ key: string }>(
    `WITH tried AS MATERIALIZED (
       SELECT key, CASE WHEN ex THEN pg_try_advisory_xact_lock(key) ELSE pg_try_advisory_xact_lock_shared(key) END AS ok
         FROM unnest($1::bigint[], $2::boolean[]) AS t(key, ex) ORDER BY key
     )
     SELECT key::text FROM tried WHERE NOT ok`,
    params,
  );
  if (rows.length === 0) return new Set(paths);
  const refused = new Set(rows.map((r) => BigInt(r.key)));
  return new Set(paths.filter((p) => !keysOf(p).some((k) => refused.has(k))));
}

/**
 * The error lockPathsForWrite throws when its locks were not free within the wait: one lock
 * past lock_timeout (55P03, lock_not_available) or all of them past statement_timeout (57014).
 */
export const isLockTimeout = (err: unknown): boolean => {
  const code = (err as { code?: string } | null)?.code;
  return code === '55P03' || code === '57014';
};
