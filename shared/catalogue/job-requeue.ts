import type { Queryable } from '../db/pool.ts';
import { columnsOf, mergeOptions, mergeReason, type ReconcileJobRow } from './jobs.ts';

/** The transitions that put a running reconciliation row back: a retry, a stop at a checkpoint, a deferral (jobs.ts has the others). */

/**
 * running → queued for another attempt, keeping `error` as the last attempt's. When another
 * row for the same (mount, path) already waits, that row does the same work: this one becomes
 * `cancelled` with error `{code: 'COALESCED', jobId}` and its options and reason are merged
 * into the waiting one (coalesced + 1) — so a failing job never blocks the ones after it.
 * Null when the row was not running.
 */
export async function retryLater(q: Queryable, id: number, error: object): Promise<ReconcileJobRow | null> {
  return backToQueue(q, requeueStatement({ error: '$2::jsonb', lastError: '$2::jsonb' }), [id, JSON.stringify(error)]);
}

/**
 * A run that stopped at a checkpoint (a deadline, an abort; reconciler.ts): running → queued,
 * to continue after its checkpoint when run again, with its counts so far as `result`, no
 * error, and the attempt given back (a stop is not a failure). When another row for the path
 * waits, that row does the work instead (as retryLater: this one is cancelled, COALESCED).
 * Null when the row was not running.
 */
export async function stopJob(q: Queryable, id: number, counts: object): Promise<ReconcileJobRow | null> {
  const extra = `attempts = CASE WHEN waiting.id IS NULL THEN greatest(j.attempts - 1, 0) ELSE j.attempts END, result = $2::jsonb,`;
  return backToQueue(q, requeueStatement({ error: 'NULL::jsonb', lastError: 'j.error', extra }), [id, JSON.stringify(counts)]);
}

/**
 * A run stopped for a person's request of the same tree (worker.ts, preemption): running →
 * cancelled into that row `intoId` (`COALESCED`), whether it still waits or has started since
 * (it took the audit lock the moment this run let go of it), with its counts so far as
 * `result`. While the other row waits, this one's options and reason are merged into it, as a
 * coalesced request's are; a running one keeps what it runs with. This row's saved audit
 * candidates go (the other walks the whole tree). Never back to queued, so no row is left
 * waiting that no queue delivers, and no request for the tree can join a row that would resume
 * a walk begun before it. Null when this row was not running or the other is no longer open
 * (finished meanwhile): the caller then stops it as usual (stopJob).
 */
export async function cancelInto(q: Queryable, id: number, intoId: number, counts: object): Promise<ReconcileJobRow | null> {
  const { rows } = await q.query<ReconcileJobRow>(
    `WITH me AS (
       SELECT id, mount_id, path, reason, options FROM filestore.reconciliation_jobs WHERE id = $1 AND status = 'running'
     ), target AS (
       SELECT w.id, w.status FROM filestore.reconciliation_jobs w JOIN me ON w.mount_id = me.mount_id AND w.path = me.path
        WHERE w.id = $2 AND w.status IN ('queued', 'running')
        FOR UPDATE OF w
     ), merged AS (
       UPDATE filestore.reconciliation_jobs w
          SET coalesced = w.coalesced + 1, options = ${mergeOptions('w', 'me')}, reason = ${mergeReason('w', 'me')}, updated_at = now()
         FROM me, target
        WHERE w.id = target.id AND target.status = 'queued'
       RETURNING w.id
     ), dropped AS (
       DELETE FROM filestore.audit_missing_candidates WHERE job_id = $1 AND EXISTS (SELECT 1 FROM target)
     )
     UPDATE filestore.reconciliation_jobs j
        SET status = 'cancelled', result = $3::jsonb, checkpoint = NULL, finished_at = now(), updated_at = now(),
            error = jsonb_build_object('code', 'COALESCED', 'jobId', target.id,
                      'message', 'job ' || target.id || ', requested for the same tree, does this work')
       FROM me, target
      WHERE j.id = me.id
     RETURNING ${columnsOf('j')}`,
    [id, intoId, JSON.stringify(counts)],
  );
  return rows[0] ?? null;
}

/**
 * A run that could not start yet (a full audit while another audit of its mount runs:
 * AuditBusyError): running → queued as it was before its claim — the attempt given back, so
 * `attempts` is what it was; `error`, `result` and the checkpoint untouched; `started_at`
 * cleared when this claim set it (no attempt and no checkpoint before it). When another row for
 * the path waits, that row does the work instead (as retryLater: this one is cancelled,
 * COALESCED). Null when the row was not running.
 */
export async function deferJob(q: Queryable, id: number): Promise<ReconcileJobRow | null> {
  const extra =
    `attempts = CASE WHEN waiting.id IS NULL THEN greatest(j.attempts - 1, 0) ELSE j.attempts END,` +
    ` started_at = CASE WHEN waiting.id IS NULL AND j.attempts <= 1 AND j.checkpoint IS NULL THEN NULL ELSE j.started_at END,`;
  return backToQueue(q, requeueStatement({ error: 'j.error', lastError: 'j.error', extra }), [id]);
}

/**
 * running → queued, or → cancelled into the row already waiting for the same (mount, path)
 * (its options and reason merged in, coalesced + 1). A cancelled row's saved audit candidates
 * go with its checkpoint (the waiting row starts from the beginning).
 */
const requeueStatement = (o: { error: string; lastError: string; extra?: string }) => `
    WITH me AS (
      SELECT id, mount_id, path, reason, options FROM filestore.reconciliation_jobs WHERE id = $1 AND status = 'running'
    ), waiting AS (
      UPDATE filestore.reconciliation_jobs w
         SET coalesced = w.coalesced + 1, options = ${mergeOptions('w', 'me')}, reason = ${mergeReason('w', 'me')}, updated_at = now()
        FROM me
       WHERE w.mount_id = me.mount_id AND w.path = me.path AND w.status = 'queued' AND w.id <> me.id
      RETURNING w.id
    ), dropped AS (
      DELETE FROM filestore.audit_missing_candidates WHERE job_id = $1 AND EXISTS (SELECT 1 FROM waiting)
    )
    UPDATE filestore.reconciliation_jobs j
       SET status = CASE WHEN waiting.id IS NULL THEN 'queued' ELSE 'cancelled' END,
           error = CASE WHEN waiting.id IS NULL THEN ${o.error}
                   ELSE jsonb_build_object('code', 'COALESCED', 'jobId', waiting.id,
                          'message', 'job ' || waiting.id || ' was waiting for the same path and does this work', 'lastError', ${o.lastError}) END,
           finished_at = CASE WHEN waiting.id IS NULL THEN NULL ELSE now() END, ${o.extra ?? ''}
           updated_at = now()
      FROM me LEFT JOIN waiting ON true
     WHERE j.id = me.id
     RETURNING ${columnsOf('j')}`;

async function backToQueue(q: Queryable, statement: string, params: unknown[]): Promise<ReconcileJobRow | null> {
  // A request that arrives between this statement's snapshot and its write makes the row it
  // inserted the waiting one; the next try sees it.
  for (let attempt = 1; ; attempt++) {
    try {
      const { rows } = await q.query<ReconcileJobRow>(statement, params);
      return rows[0] ?? null;
    } catch (err) {
      if ((err as { code?: string }).code !== '23505' || attempt >= 5) throw err;
    }
  }
}
