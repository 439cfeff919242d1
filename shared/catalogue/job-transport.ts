import type { Queryable } from '../db/pool.ts';

/**
 * What carries a reconciliation row's queue message (`reconciliation_jobs.transport`, migration
 * 14), so that each consumer looks after its own rows only:
 * - `redis`: BullMQ (or the in-process queue of REDIS_URL=inline). Its consumers' resender
 *   re-adds open rows without a message (openJobs, owedJobs in jobs.ts read only these).
 * - `sqs`: the SQS reconcile queue and the Lambdas (S3 mounts in AWS: the reconcile Lambda, and
 *   the audit Lambda for full audits). Its sweep (SqsReconcileQueue.sweep) sends them again.
 * An agent thus never runs a job meant for the Lambdas (it may lack access to the bucket), nor
 * continues an audit the audit Lambda stopped at a checkpoint. A row keeps its transport; a
 * request joining a waiting row leaves it as it is.
 */
export type JobTransport = 'redis' | 'sqs';

/** The transport of row `id` (null: no such row). */
export async function jobTransport(q: Queryable, id: number): Promise<JobTransport | null> {
  const { rows } = await q.query<{ transport: JobTransport }>('SELECT transport FROM filestore.reconciliation_jobs WHERE id = $1', [id]);
  return rows[0]?.transport ?? null;
}

/**
 * Hands an open row over to `transport`: the audit Lambda adopting a waiting full audit that a
 * BullMQ producer recorded, which it then stops at checkpoints and continues itself. The caller
 * holds the row's run lock, so no run of it by the old transport's consumer is under way (and
 * one delivered later sees the new transport under that lock). Leaves `updated_at` alone.
 */
export async function setJobTransport(q: Queryable, id: number, transport: JobTransport): Promise<void> {
  await q.query(
    `UPDATE filestore.reconciliation_jobs SET transport = $2 WHERE id = $1 AND transport <> $2 AND status IN ('queued', 'running')`,
    [id, transport],
  );
}
