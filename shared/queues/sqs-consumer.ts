import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { ChangeMessageVisibilityCommand } from '@aws-sdk/client-sqs';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { z } from 'zod';
import { isOpenJob } from '../catalogue/jobs.ts';
import { FilestoreError } from '../errors.ts';
import { backoffDelay, DEFAULT_ATTEMPTS, DEFAULT_BACKOFF_MS, type ReconcileQueue } from '../reconcile/queue.ts';
import { RoutedReconcileQueue, SqsReconcileQueue } from './sqs-queue.ts';
import { budgetDeadline, requireRunPool, runQueuedRow, type LambdaBudget, type RowRun, type RowRunOptions } from '../reconcile/lambda-run.ts';
import type { ReconcileCore } from '../reconcile/reconciler.ts';
import { isRetryable } from '../reconcile/worker.ts';

/** How long a message of a row another run holds waits before it looks again. */
const BUSY_RETRY_SECONDS = 30;
/** SQS's longest visibility timeout (12 hours). */
const MAX_VISIBILITY_SECONDS = 12 * 3600;

// Lenient: the row id is all a run needs; the rest of the body is for people reading the queue.
const Body = z.object({ rowId: z.number().int().positive() }).passthrough();

export interface ReconcileBatchOptions extends RowRunOptions {
  /** Where a stopped run's continuation is sent, and whose visibility timeouts set the backoff. */
  queue: SqsReconcileQueue;
  /** First retry after this, doubling per attempt (default 2000 ms; the visibility timeout of the failed message). */
  backoffMs?: number | undefined;
  /** How long the look again at a row another run holds waits (default 30 s). */
  busyRetrySeconds?: number | undefined;
  /** Hears what happened to each record (the Lambda logs it). */
  onRecord?: ((record: SQSRecord, run: RowRun | null, error?: unknown) => void) | undefined;
}

/** Why a record is reported as a batch item failure (its message comes back, or goes to the DLQ). */
class RecordFailure extends Error {}

/** The SQS reconcile queue of a core (FILESTORE_RECONCILE_QUEUE_URL), or null. */
export function sqsQueueOf(queue: ReconcileQueue): SqsReconcileQueue | null {
  if (queue instanceof SqsReconcileQueue) return queue;
  if (queue instanceof RoutedReconcileQueue) return queue.sqs;
  return null;
}

/**
 * The reconcile Lambda's work: one SQS batch of reconcile messages, records one after the other
 * (a run holds connections of its own; the pool is small), each a row run by runQueuedRow with
 * the invocation's deadline. What each outcome does with the message:
 * - succeeded, coalesced (another waiting row took the work), skipped (the row was settled or
 *   cancelled meanwhile): deleted;
 * - busy (another run holds the row: a duplicate delivery, the audit Lambda on the same row;
 *   or the row is a full audit and another audit of the mount runs): a new message looks again
 *   after `busyRetrySeconds`, then this one is deleted (no attempt spent). One such message
 *   per message received: the sweep sends none for a row whose run lock is held, so the
 *   look-agains of a long run do not multiply;
 * - stopped (an audit reached its deadline at a checkpoint, the row queued again): a new
 *   message continues it, then this one is deleted (a stop spends no attempt, and no delivery);
 * - retried: a batch item failure, its visibility timeout set to the backoff, so SQS delivers
 *   it again then; the row counted the attempt;
 * - failed on its last attempt (a retryable error, out of attempts): the row says failed, and
 *   the message is reported failed with no visibility timeout, so its next receive puts it in
 *   the DLQ (maxReceiveCount = attempts): what the DLQ alarm is for. Failed for a
 *   non-retryable reason (the mass-missing guard…): the row says why; deleted;
 * - the catalogue unreachable, a body that names no row: a batch item failure; after
 *   maxReceiveCount deliveries, the DLQ.
 * A record reached when the invocation's time (less the margin) is spent is sent on, untouched.
 * A delivery numbered `attempts` or more (ApproximateReceiveCount) is the row's last attempt
 * whatever the row counts (a container killed mid-run spent a delivery the row may not show).
 */
export async function processReconcileBatch(core: ReconcileCore, event: SQSEvent, budget: LambdaBudget, o: ReconcileBatchOptions): Promise<SQSBatchResponse> {
  requireRunPool(core, 'reconcile');
  const attempts = o.attempts ?? DEFAULT_ATTEMPTS;
  const backoffMs = o.backoffMs ?? DEFAULT_BACKOFF_MS;
  const visibility = (record: SQSRecord, seconds: number) =>
    o.queue.client
      .send(new ChangeMessageVisibilityCommand({ QueueUrl: o.queue.queueUrl, ReceiptHandle: record.receiptHandle, VisibilityTimeout: Math.min(MAX_VISIBILITY_SECONDS, Math.ceil(seconds)) }))
      .catch(() => {}); // without it the queue's own visibility timeout applies

  let started = 0;
  const handle = async (record: SQSRecord): Promise<void> => {
    let run: RowRun | null = null;
    const delivery = Number(record.attributes.ApproximateReceiveCount) || 1;
    // When the message comes back after a failure: the backoff of the attempt it failed (the
    // row's, else the delivery's), or at once for its last receive (the DLQ takes it then).
    let comeBackInSeconds = backoffDelay(backoffMs, delivery) / 1000;
    try {
      const body = Body.safeParse(safeJson(record.body));
      if (!body.success) throw new RecordFailure(`not a reconcile message (expected {"rowId": <job id>}): ${record.body.slice(0, 200)}`);
      const deadline = budgetDeadline(budget);
      if (started++ > 0 && Date.now() >= deadline) {
        // The records before it took the invocation's time: a run started now (one without
        // checkpoints runs to its end) could outlast it. Sent on to the next invocation instead
        // (no attempt, no delivery spent).
        await o.queue.sendBody(record.body);
        o.onRecord?.(record, null);
        return;
      }
      run = await runQueuedRow(core, body.data.rowId, deadline, { ...o, attempts, final: () => delivery >= attempts });
      if (run.outcome === 'stopped' && run.job) await o.queue.send(run.job);
      else if (run.outcome === 'busy' && run.job && isOpenJob(run.job.status)) {
        // Its run goes on elsewhere; a look later (not a failure: no delivery spent) does what
        // the row needs by then, nothing if that run settled it.
        await o.queue.send(run.job, o.busyRetrySeconds ?? BUSY_RETRY_SECONDS);
      } else if (run.outcome === 'retried') {
        comeBackInSeconds = backoffDelay(backoffMs, run.job?.attempts ?? delivery) / 1000;
        throw new RecordFailure(`job ${body.data.rowId}: attempt ${run.job?.attempts} failed, retried after its backoff`);
      } else if (run.outcome === 'failed' && !run.interrupted && isRetryable(run.report?.error)) {
        comeBackInSeconds = 0;
        throw new RecordFailure(`job ${body.data.rowId}: failed on its last attempt (${run.job?.attempts}); the message goes to the DLQ`);
      }
      o.onRecord?.(record, run);
    } catch (err) {
      await visibility(record, comeBackInSeconds);
      o.onRecord?.(record, run, err);
      throw err;
    }
  };
  const processor = new BatchProcessor(EventType.SQS);
  return processPartialResponse(event, handle, processor, { processInParallel: false, throwOnFullBatchFailure: false });
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** ReconcileSetup.sqs from the environment (FILESTORE_RECONCILE_QUEUE_URL), for whoever wires a core in AWS. */
export function sqsSetupFromEnv(env: NodeJS.ProcessEnv = process.env): { queueUrl: string } | undefined {
  const queueUrl = env.FILESTORE_RECONCILE_QUEUE_URL?.trim();
  return queueUrl ? { queueUrl } : undefined;
}

export interface SqsRouted {
  /** The core with its reconcile queue sending S3 mounts' jobs (follow-ups) to SQS. */
  core: ReconcileCore;
  queue: SqsReconcileQueue;
}

const routedCores = new WeakMap<object, SqsRouted>();

/**
 * The SQS reconcile queue of a core: the one it was wired with (ReconcileSetup.sqs), else one
 * made once per core from FILESTORE_RECONCILE_QUEUE_URL (the SDK's region and credentials),
 * with the core's queue routed through it so that follow-up jobs of S3 mounts go to SQS too.
 * Null when neither.
 */
export function sqsRouted(core: ReconcileCore, env: NodeJS.ProcessEnv = process.env): SqsRouted | null {
  const wired = sqsQueueOf(core.reconcile);
  if (wired) return { core, queue: wired };
  let made = routedCores.get(core.pool);
  if (!made) {
    const setup = sqsSetupFromEnv(env);
    if (!setup) return null;
    const queue = new SqsReconcileQueue({ pool: core.pool, metrics: core.metrics }, setup);
    made = { core: { ...core, reconcile: new RoutedReconcileQueue(core.pool, queue, core.reconcile) }, queue };
    routedCores.set(core.pool, made);
  }
  return made;
}

/** sqsRouted, or CONFIG_ERROR: the reconcile Lambda consumes that queue and continues stopped jobs on it. */
export function requireSqsRouted(core: ReconcileCore, env: NodeJS.ProcessEnv = process.env): SqsRouted {
  const routed = sqsRouted(core, env);
  if (!routed) throw new FilestoreError('CONFIG_ERROR', 'FILESTORE_RECONCILE_QUEUE_URL is unset: the reconcile Lambda consumes that SQS queue and sends stopped jobs\' continuations to it');
  return routed;
}
