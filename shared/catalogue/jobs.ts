import type { Queryable } from '../db/pool.ts';
import { FilestoreError } from '../errors.ts';
import type { JobTransport } from './job-transport.ts';

/**
 * reconciliation_jobs: one row per reconciliation request that was not merged into a waiting
 * one. Every state transition below is one SQL statement; the row, not the queue, is the
 * truth a user sees (`GET /v1/reconcile/jobs/:id`).
 *
 * ```mermaid
 * stateDiagram-v2
 *   [*] --> queued: enqueueJob (or joins the waiting row: coalesced + 1)
 *   queued --> running: claimJob (attempts + 1)
 *   running --> succeeded: finishJob
 *   running --> failed: finishJob (not retryable, or out of attempts)
 *   running --> queued: retryLater
 *   running --> cancelled: retryLater while another row for the path waits (COALESCED)
 *   running --> queued: stopJob (stopped at a checkpoint: resumes after it; no attempt spent)
 *   running --> cancelled: stopJob while another row for the path waits (COALESCED)
 *   running --> queued: deferJob (could not start yet: an audit while another of its mount runs; no attempt spent)
 *   running --> cancelled: deferJob while another row for the path waits (COALESCED)
 * ```
 * retryLater, stopJob and deferJob are in job-requeue.ts.
 */
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
  /** Where an interrupted audit continues: `{after: <last path fully reconciled>, counts}`; startedAt: when its first attempt began (what its completion marks as checked). */
  checkpoint: { after: string; counts: Record<string, number>; startedAt?: string } | null;
  error: Record<string, unknown> | null;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  updatedAt: Date;
}

/** What a job does beyond its path: written explicitly on every row so merging is a plain OR. */
export interface ReconcileJobOptions {
  recursive: boolean;
  hash: boolean;
  /** Apply an audit past the mass-missing rule. */
  force?: boolean | undefined;
  /** A follow-up for paths another writer held (ReconcileRequest.followUp). */
  followUp?: number | undefined;
  /** S3: the event sequencer the run records on the path's node (ReconcileRequest.sequencer). */
  sequencer?: string | undefined;
}

/** A job still to run or running (not settled): what waits for it may still wait. */
export const isOpenJob = (status: ReconcileJobRow['status']): boolean => status === 'queued' || status === 'running';

export interface NewReconcileJob {
  mountId: string;
  path: string;
  reason: ReconcileJobRow['reason'];
  options: ReconcileJobOptions;
}

const FIELDS: ReadonlyArray<readonly [column: string, name: string]> = [
  ['id', 'id'], ['mount_id', 'mountId'], ['path', 'path'], ['reason', 'reason'], ['options', 'options'], ['status', 'status'],
  ['attempts', 'attempts'], ['coalesced', 'coalesced'], ['result', 'result'], ['checkpoint', 'checkpoint'], ['error', 'error'], ['created_at', 'createdAt'],
  ['started_at', 'startedAt'], ['finished_at', 'finishedAt'], ['updated_at', 'updatedAt'],
];
/** The select list of a ReconcileJobRow, columns qualified by `table` when given. */
export const columnsOf = (table?: string) =>
  FIELDS.map(([c, n]) => `${table ? `${table}.` : ''}${c}${c === n ? '' : ` AS "${n}"`}`).join(', ');

export const JOB_COLUMNS = columnsOf();
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

// Merging a request into a waiting job (`w`) from another (`n`): boolean options OR together
// (the waiting job then does at least what each request asked), other keys of the newer win.
export const mergeOptions = (w: string, n: string) => `${w}.options || ${n}.options || jsonb_build_object(
    'recursive', coalesce((${w}.options->>'recursive')::boolean, false) OR coalesce((${n}.options->>'recursive')::boolean, false),
    'hash', coalesce((${w}.options->>'hash')::boolean, false) OR coalesce((${n}.options->>'hash')::boolean, false))`;
// The merged job keeps the reason of higher precedence, manual > audit > recovery > s3_event >
// drift: what a person asked for is what the job list should say it is; ties keep the first.
const REASON_RANK = `ARRAY['drift', 's3_event', 'recovery', 'audit', 'manual']`;
export const mergeReason = (w: string, n: string) =>
  `CASE WHEN array_position(${REASON_RANK}, ${n}.reason) > array_position(${REASON_RANK}, ${w}.reason) THEN ${n}.reason ELSE ${w}.reason END`;

/** What a row's `options` holds: recursive and hash always (merging ORs them), the rest when set. */
const jobOptionsJson = (o: ReconcileJobOptions) =>
  JSON.stringify({
    recursive: o.recursive,
    hash: o.hash,
    ...(o.force ? { force: true } : {}),
    ...(o.followUp ? { followUp: o.followUp } : {}),
    ...(o.sequencer ? { sequencer: o.sequencer } : {}),
  });

/**
 * Records a request: a new queued row, or — when a row for the same (mount, path) is already
 * waiting — that row, with `coalesced` + 1 and the options and reason merged (see above).
 * `coalesced` in the answer says which happened; a coalesced request needs no queue message.
 * `queueOwed`: a new row is recorded as owed its queue message (Redis known to be down; see
 * owedJobs); `transport`: what carries a new row's message (default `redis`). A row joined
 * keeps its own mark and transport (its message, if any, is already on its way).
 */
export async function enqueueJob(
  q: Queryable,
  r: NewReconcileJob,
  o: { queueOwed?: boolean; transport?: JobTransport } = {},
): Promise<{ job: ReconcileJobRow; coalesced: boolean }> {
  try {
    const { rows } = await q.query<ReconcileJobRow & { joined: boolean }>(
      `INSERT INTO filestore.reconciliation_jobs AS w (mount_id, path, reason, options, queue_owed, transport)
       VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (mount_id, path) WHERE status = 'queued' DO UPDATE
          SET coalesced = w.coalesced + 1,
              options = ${mergeOptions('w', 'EXCLUDED')},
              reason = ${mergeReason('w', 'EXCLUDED')},
              updated_at = now()
       RETURNING ${COLUMNS}, coalesced > 0 AS joined`,
      [r.mountId, r.path, r.reason, jobOptionsJson(r.options), o.queueOwed === true, o.transport ?? 'redis'],
    );
    const { joined, ...job } = rows[0] as ReconcileJobRow & { joined: boolean };
    return { job, coalesced: joined };
  } catch (err) {
    if ((err as { code?: string }).code === '23503') throw new FilestoreError('MOUNT_NOT_FOUND', `no mount "${r.mountId}"; list mounts with \`filestore mounts list\``);
    throw err;
  }
}

/**
 * queued → running: attempts + 1, started_at (of the first attempt) and updated_at set. Null
 * when the row is no longer queued (cancelled, finished, taken by another worker).
 * `reclaim` also takes a row left `running`: for a queue that hands one job to one worker at
 * a time (BullMQ's lock), a running row whose job is delivered again belongs to a worker that
 * died or lost its lock, so running it again is the recovery, not a duplicate (the BullMQ
 * queue holds a lock per row for a run, so a run that lost its BullMQ lock is over by then).
 * A claimed row had its message: it is no longer owed one.
 */
export async function claimJob(q: Queryable, id: number, o: { reclaim?: boolean } = {}): Promise<ReconcileJobRow | null> {
  // Two statement texts rather than a status parameter: each keeps its own generic plan (see db/pool.ts).
  const statuses = o.reclaim ? `status IN ('queued', 'running')` : `status = 'queued'`;
  const { rows } = await q.query<ReconcileJobRow>(
    `UPDATE filestore.reconciliation_jobs
        SET status = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now()), updated_at = now(), queue_owed = false
      WHERE id = $1 AND ${statuses}
      RETURNING ${COLUMNS}`,
    [id],
  );
  return rows[0] ?? null;
}

/** Counts so far of a running job (`result`), for `filestore reconcile --wait`. False once the row is no longer running. */
export async function recordProgress(q: Queryable, id: number, counts: object): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE filestore.reconciliation_jobs SET result = $2, updated_at = now() WHERE id = $1 AND status = 'running'`,
    [id, JSON.stringify(counts)],
  );
  return (rowCount ?? 0) > 0;
}

/**
 * running → succeeded | failed, with the final counts (or, left undefined, the last progress)
 * and the error. Null when the row was not running (someone else settled it).
 */
export async function finishJob(
  q: Queryable,
  id: number,
  o: { status: 'succeeded' | 'failed'; result?: object | null | undefined; error?: object | null | undefined },
): Promise<ReconcileJobRow | null> {
  // A settled job has no use for an audit's saved MISSING candidates (audit-candidates.ts).
  const { rows } = await q.query<ReconcileJobRow>(
    `WITH done AS (
       UPDATE filestore.reconciliation_jobs
          SET status = $2, result = coalesce($3::jsonb, result), error = $4::jsonb, finished_at = now(), updated_at = now()
        WHERE id = $1 AND status = 'running'
        RETURNING *
     ), dropped AS (
       DELETE FROM filestore.audit_missing_candidates WHERE job_id IN (SELECT id FROM done)
     )
     SELECT ${COLUMNS} FROM done`,
    [id, o.status, o.result == null ? null : JSON.stringify(o.result), o.error == null ? null : JSON.stringify(o.error)],
  );
  return rows[0] ?? null;
}

/** What a queue needs of a row to (re)send its message. */
export type JobToSend = Pick<ReconcileJobRow, 'id' | 'mountId' | 'path' | 'reason' | 'status' | 'createdAt'>;
const TO_SEND = `id, mount_id AS "mountId", path, reason, status, created_at AS "createdAt"`;

/**
 * Rows still open (queued or running) that have not moved for `idleMs`, in id order after
 * `afterId` (a page of a walk through them all): what a queue checks at start and now and then
 * so that no row is left without a queue message (a crash between the insert and the queue
 * add, a flushed Redis). `mountIds` limits the look to the mounts a queue serves; undefined
 * means all. Transport `redis` only: SQS rows are the Lambdas' (job-transport.ts).
 */
export async function openJobs(
  q: Queryable,
  o: { mountIds?: readonly string[] | undefined; idleMs: number; limit: number; afterId?: number | undefined },
): Promise<JobToSend[]> {
  // The mount filter is in the statement text or not at all (no "$n IS NULL OR": see db/pool.ts).
  const params: unknown[] = [o.idleMs, o.limit, o.afterId ?? 0];
  if (o.mountIds) params.push([...o.mountIds]);
  const { rows } = await q.query<JobToSend>(
    `SELECT ${TO_SEND} FROM filestore.reconciliation_jobs
      WHERE status IN ('queued', 'running') AND transport = 'redis'
        AND updated_at <= now() - make_interval(secs => $1::float8 / 1000) AND id > $3
        ${o.mountIds ? 'AND mount_id = ANY ($4::uuid[])' : ''}
      ORDER BY id LIMIT $2`,
    params,
  );
  return rows;
}

/**
 * Rows of transport `redis` marked owed their queue message (recorded while Redis was
 * unreachable), in id order after `afterId`, whatever their status (a row settled meanwhile is
 * only unmarked). Reads a partial index that holds exactly the owed rows: nothing owed, nothing read.
 */
export async function owedJobs(
  q: Queryable,
  o: { mountIds?: readonly string[] | undefined; limit: number; afterId: number },
): Promise<JobToSend[]> {
  const params: unknown[] = [o.afterId, o.limit];
  if (o.mountIds) params.push([...o.mountIds]);
  const { rows } = await q.query<JobToSend>(
    `SELECT ${TO_SEND} FROM filestore.reconciliation_jobs
      WHERE queue_owed AND transport = 'redis' AND id > $1 ${o.mountIds ? 'AND mount_id = ANY ($3::uuid[])' : ''}
      ORDER BY id LIMIT $2`,
    params,
  );
  return rows;
}

/** Marks a row owed its queue message (its add to Redis failed). Leaves `updated_at` alone. */
export async function markQueueOwed(q: Queryable, id: number): Promise<void> {
  await q.query(`UPDATE filestore.reconciliation_jobs SET queue_owed = true WHERE id = $1 AND status IN ('queued', 'running')`, [id]);
}

/** Unmarks rows whose queue message was sent (or that no longer need one). */
export async function clearQueueOwed(q: Queryable, ids: readonly number[]): Promise<void> {
  if (ids.length === 0) return;
  await q.query('UPDATE filestore.reconciliation_jobs SET queue_owed = false WHERE id = ANY ($1::bigint[]) AND queue_owed', [[...ids]]);
}

/**
 * Active mounts due an audit: none of them has an audit running right now (a waiting one
 * is fine: the new request joins it). `agentId` keeps local mounts of that agent only;
 * `mountIds` limits the set further.
 */
export async function mountsDueForAudit(
  q: Queryable,
  o: { agentId?: string | undefined; mountIds?: readonly string[] | undefined } = {},
): Promise<Array<{ id: string; key: string; kind: 'local' | 's3' }>> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (o.agentId !== undefined) {
    params.push(o.agentId);
    where.push(`m.kind = 'local' AND m.agent_id = $${params.length}`);
  }
  if (o.mountIds) {
    params.push([...o.mountIds]);
    where.push(`m.id = ANY ($${params.length}::uuid[])`);
  }
  const { rows } = await q.query<{ id: string; key: string; kind: 'local' | 's3' }>(
    `SELECT m.id, m.key, m.kind FROM filestore.mounts m
      WHERE m.state = 'active' ${where.map((w) => `AND ${w}`).join(' ')}
        AND NOT EXISTS (SELECT 1 FROM filestore.reconciliation_jobs j
                         WHERE j.mount_id = m.id AND j.reason = 'audit' AND j.status = 'running')
      ORDER BY m.key`,
    params,
  );
  return rows;
}

/** Records where an interrupted audit continues, or clears it (null) with the MISSING candidates saved beside it. */
export async function saveCheckpoint(q: Queryable, id: number, checkpoint: ReconcileJobRow['checkpoint']): Promise<void> {
  if (checkpoint !== null) {
    await q.query('UPDATE filestore.reconciliation_jobs SET checkpoint = $2, updated_at = now() WHERE id = $1', [id, JSON.stringify(checkpoint)]);
    return;
  }
  await q.query(
    `WITH dropped AS (DELETE FROM filestore.audit_missing_candidates WHERE job_id = $1)
     UPDATE filestore.reconciliation_jobs SET checkpoint = NULL, updated_at = now() WHERE id = $1`,
    [id],
  );
}

/**
 * running → failed, without a run, for a row a run left `running` (killed or frozen mid-run:
 * the caller holds the row's run lock, so no run of it is under way) that has already used
 * `maxAttempts` attempts: taking it over would run it once more past its limit, and a run that
 * is killed each time (one longer than the function's timeout) would run forever. `error` is
 * the row's `error` column. Null when the row is not such a row (queued, settled, attempts left).
 */
export async function failSpentRun(q: Queryable, id: number, maxAttempts: number, error: object): Promise<ReconcileJobRow | null> {
  const { rows } = await q.query<ReconcileJobRow>(
    `WITH done AS (
       UPDATE filestore.reconciliation_jobs
          SET status = 'failed', error = $3::jsonb, finished_at = now(), updated_at = now(), queue_owed = false
        WHERE id = $1 AND status = 'running' AND attempts >= $2
        RETURNING *
     ), dropped AS (
       DELETE FROM filestore.audit_missing_candidates WHERE job_id IN (SELECT id FROM done)
     )
     SELECT ${COLUMNS} FROM done`,
    [id, maxAttempts, JSON.stringify(error)],
  );
  return rows[0] ?? null;
}
