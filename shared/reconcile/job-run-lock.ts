import type { Pool, PoolClient } from '../db/pool.ts';
import { lockKey } from '../catalogue/locks.ts';

/** A held run lock of one reconciliation row; `release` gives it (and its connection) back. */
export interface JobRunLock {
  release(): Promise<void>;
}

/**
 * At most one run of a reconciliation row at a time, across processes: a session advisory
 * lock on a connection of its own, held from before the row is claimed until its outcome is
 * recorded. BullMQ hands a job out again when the worker running it lost its lock (a Redis
 * outage longer than the lock: the worker could not renew it, and its run goes on), and
 * `claimJob(reclaim)` takes the still-running row; without this lock the two runs would
 * overlap — each claim adds an attempt, whichever settles first decides the row (a retryable
 * failure of one puts the row back to queued under the other, whose success is then dropped),
 * and the counts recorded are one run's share of work the two split. Gone with the session
 * if the process dies, so a dead run never holds it.
 *
 * Null when another session holds it (a run of the row goes on somewhere).
 */
export async function tryLockJobRun(pool: Pool, rowId: number): Promise<JobRunLock | null> {
  const key = lockKey('reconcile-job', String(rowId)).toString();
  const client: PoolClient = await pool.connect();
  let locked = false;
  try {
    const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [key]);
    locked = rows[0]?.ok === true;
  } catch (err) {
    client.release(err as Error);
    throw err;
  }
  if (!locked) {
    client.release();
    return null;
  }
  return {
    release: async () => {
      try {
        await client.query('SELECT pg_advisory_unlock($1::bigint)', [key]);
        client.release();
      } catch (err) {
        // A connection that could not unlock is not given back to the pool (its session, and
        // the lock, end with it).
        client.release(err as Error);
      }
    },
  };
}
