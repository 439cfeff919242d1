import type { Queryable } from '../db/pool.ts';

/** Reads of reconciliation_jobs (the reconciliation worker writes them). */
export interface ReconcileJobRow {
  id: number;
  mountId: string;
  path: string;
  reason: 'drift' | 'audit' | 'manual' | 's3_event' | 'recovery';
  options: Record<string, unknown>;
  status: 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
  attempts: number;
  coalesced: number;
  result: Record<string, unknown> | null;
  error: Record<string, unknown> | null;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  updatedAt: Date;
}

export const JOB_COLUMNS = `id, mount_id AS "mountId", path, reason, options, status, attempts, coalesced, result, error,
  created_at AS "createdAt", started_at AS "startedAt", finished_at AS "finishedAt", updated_at AS "updatedAt"`;
const COLUMNS = JOB_COLUMNS;

export async function findJob(q: Queryable, id: number): Promise<ReconcileJobRow | null> {
  const { rows } = await q.query<ReconcileJobRow>(`SELECT ${COLUMNS} FROM filestore.reconciliation_jobs WHERE id = $1`, [id]);
  return rows[0] ?? null;
}

/** Newest first, keyset-paginated by id (`beforeId` = the last id of the previous page). */
export async function listJobs(
  q: Queryable,
  o: { mountId?: string | undefined; status?: ReconcileJobRow['status'] | undefined; beforeId?: number | undefined; limit: number },
): Promise<ReconcileJobRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (sql: string, value: unknown) => {
    params.push(value);
    where.push(sql.replace('?', `$${params.length}`));
  };
  if (o.mountId) add('mount_id = ?', o.mountId);
  if (o.status) add('status = ?', o.status);
  if (o.beforeId !== undefined) add('id < ?', o.beforeId);
  params.push(o.limit);
  const { rows } = await q.query<ReconcileJobRow>(
    `SELECT ${COLUMNS} FROM filestore.reconciliation_jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY id DESC LIMIT $${params.length}`,
    params,
  );
  return rows;
}
