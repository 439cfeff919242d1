import { enqueueJob, type ReconcileJobRow } from '../catalogue/jobs.ts';
import { getMount } from '../catalogue/mounts.ts';
import { FilestoreError } from '../errors.ts';
import { normalizePath } from '../paths.ts';
import { tryLockJobRun } from './job-run-lock.ts';
import { DEFAULT_ATTEMPTS, jobTransportOf, toNewJob } from './queue.ts';
import { createReconciler, type ReconcileCore, type ReconcilerOptions } from './reconciler.ts';
import { isSequencer } from './sequencer.ts';
import type { ReconcileRequest, ReconcileResult, RunLimits } from './types.ts';
import { ReconcileWorker, type AttemptOutcome } from './worker.ts';

export interface PathReconciliation {
  /** The job row as the run left it (succeeded, queued to continue or retry, failed, cancelled). */
  job: ReconcileJobRow;
  /**
   * succeeded; stopped (early, at a checkpoint: the next call continues); retried (a retryable
   * failure: the row waits, the next call runs it again); failed; coalesced (another waiting
   * row took the work over); skipped (a run of this row goes on elsewhere right now); deferred
   * (a full audit while another audit of its mount runs: the row waits, its attempt given back).
   */
  outcome: AttemptOutcome;
  /** The counts, when the run returned (succeeded or stopped). */
  result: ReconcileResult | null;
  /** The request joined a row that was already waiting for the same path (its options merged). */
  coalesced: boolean;
  /** What the run threw (retried, failed, coalesced). */
  error?: unknown;
}

export interface PathOptions extends ReconcilerOptions {
  /** Attempts a row may use before a retryable failure fails it (default 5, as the queues). */
  attempts?: number | undefined;
}

/**
 * Reconciles one path from a request, here and now: what the S3-event Lambda does per key
 * (reason `s3_event`, with the event's sequencer) and the audit Lambda per invocation (with a
 * deadline). The request is recorded as the queue records one (a `reconciliation_jobs` row,
 * joining the row already waiting for the same (mount, path) — an audit stopped at a
 * checkpoint is such a row, so the next call continues it), then that row is claimed and run
 * inline under its run lock (at most one run of a row at a time, across processes: a queue
 * worker delivered it meanwhile waits), and its outcome recorded on the row and in the
 * metrics like a queue worker's. Nothing is sent to a queue: a row left queued (stopped, or
 * a retryable failure) runs again on the next call, or when a queue consumer's sweep finds it.
 * A new row records the transport the core's queue routes the mount to (jobTransportOf), so
 * that the sweep that finds a row left open (a run killed with its Lambda) is the right one:
 * an S3 mount's in AWS goes to the reconcile Lambda (SQS), never to an agent's BullMQ worker.
 */
export async function reconcilePath(core: ReconcileCore, request: ReconcileRequest, limits: RunLimits = {}, o: PathOptions = {}): Promise<PathReconciliation> {
  const path = normalizePath(request.path);
  if (request.sequencer !== undefined) {
    if (!isSequencer(request.sequencer)) throw new FilestoreError('VALIDATION_ERROR', `sequencer must be a hex string as S3 event notifications carry it, not ${JSON.stringify(request.sequencer)}`);
    const mount = await getMount(core.pool, request.mountId);
    if (mount.kind !== 's3') throw new FilestoreError('VALIDATION_ERROR', `a sequencer orders S3 event notifications; mount "${mount.key}" is ${mount.kind}`);
  }
  const { job, coalesced } = await enqueueJob(core.pool, toNewJob({ ...request, path }), { transport: await jobTransportOf(core.reconcile, request.mountId) });
  const lock = await tryLockJobRun(core.pool, job.id);
  if (!lock) return { job, outcome: 'skipped', result: null, coalesced };
  try {
    let result: ReconcileResult | null = null;
    const reconcile = createReconciler(core, o);
    const worker = new ReconcileWorker({
      pool: core.pool,
      metrics: core.metrics,
      handler: async (row, progress, l) => (result = await reconcile(row, progress, l)),
    });
    const attempts = o.attempts ?? DEFAULT_ATTEMPTS;
    const report = await worker.run(job.id, { limits, finalAttempt: (row) => row.attempts >= attempts });
    // Not claimable: settled or taken between our insert and our lock (its run is over by now).
    if (report.outcome === 'skipped') return { job: report.job ?? job, outcome: 'skipped', result: null, coalesced };
    return { job: report.job ?? job, outcome: report.outcome, result, coalesced, ...(report.error !== undefined ? { error: report.error } : {}) };
  } finally {
    await lock.release();
  }
}
