import type { JobTransport } from '../catalogue/job-transport.ts';
import type { NewReconcileJob, ReconcileJobRow } from '../catalogue/jobs.ts';
import type { Pool } from '../db/pool.ts';
import type { FilestoreMetrics } from '../metrics/metrics.ts';
import type { ReconcileHandler, ReconcileRequest } from './types.ts';
import type { AttemptReport } from './worker.ts';

/** SPEC §6: the queue of drift and audit jobs. */
export const RECONCILE_QUEUE = 'filestore-reconcile';

/**
 * The reconciliation queue, on BullMQ or in-process. Guarantees, for both:
 * - a request is recorded as a `reconciliation_jobs` row before `enqueue` returns; requests
 *   for the same (mount, path) join the row while it waits (`coalesced`), never while it runs;
 * - a retryable failure is retried with exponential backoff up to `attempts`, a
 *   non-retryable one fails the job at once; a failed job never blocks later ones;
 * - rows left queued or running by a process that died are picked up by `start`.
 * - one run of a job at a time (in-process: one queue holds it; BullMQ: a lock per row while
 *   it runs, as BullMQ hands a job out again when its worker lost its lock).
 * Not guaranteed: exactly-once. A job whose worker dies mid-run runs again (the engine is
 * idempotent), and ordering between different paths follows arrival only roughly.
 */
export interface ReconcileQueue {
  /** The queue's name: the BullMQ queue and the `queue` label of filestore_reconcile_backlog. */
  readonly name: string;
  /** BullMQ: the Redis key prefix of its queues (the catalogue's); undefined in-process. */
  readonly prefix?: string | undefined;
  /**
   * Records the request (a new row, or joins the waiting one) and, for a new row, queues it.
   * `queuePending`: the row is recorded but Redis could not be reached to queue it; it is
   * queued when Redis answers again (by this queue, or by a consumer's sweep) and runs then.
   */
  enqueue(request: ReconcileRequest): Promise<Enqueued>;
  /** Starts consuming with `handler`; before this, a queue only accepts requests. */
  start(handler: ReconcileHandler, options?: StartOptions): Promise<void>;
  /** Jobs waiting to run, retries waiting out their backoff included (the queues this process consumes). */
  backlog(): Promise<number>;
  /**
   * Jobs waiting per queue name, for filestore_reconcile_backlog{queue}: every queue of the
   * catalogue this queue can see — BullMQ: the shared one and each agent's
   * (`<name>-<agentId>`), consumed here or not. Unset: `{[name]: backlog()}`.
   */
  backlogs?(): Promise<Map<string, number>>;
  /** Stops taking jobs and waits for running ones; waiting jobs stay queued for the next start. */
  close(): Promise<void>;
  /** What carries the jobs of `mountId` (jobTransportOf): unset, `redis`. The SQS queues say `sqs` where they send it there. */
  transportOf?(mountId: string): Promise<JobTransport>;
}

/**
 * The transport a row of `mountId` records when it is run in place of being queued
 * (reconcilePath): the one whose sweep picks it up if that run is killed — `sqs` where `queue`
 * sends the mount's jobs to SQS (the Lambdas, then), else `redis`.
 */
export async function jobTransportOf(queue: ReconcileQueue, mountId: string): Promise<JobTransport> {
  return (await queue.transportOf?.(mountId)) ?? 'redis';
}

export interface Enqueued {
  job: ReconcileJobRow;
  coalesced: boolean;
  queuePending?: boolean | undefined;
}

export interface StartOptions {
  /** Jobs run at once by this consumer (FILESTORE_RECONCILE_CONCURRENCY; default 2). */
  concurrency?: number | undefined;
}

export interface ReconcileQueueOptions {
  pool: Pool;
  /** Where jobs, durations and the backlog are counted (default: the process-wide registry). */
  metrics?: FilestoreMetrics | undefined;
  /** Default `filestore-reconcile`; tests use their own. */
  name?: string | undefined;
  /** Attempts per job, the first included (default 5). */
  attempts?: number | undefined;
  /** Delay before the first retry, doubling with each further one (default 2000 ms). */
  backoffMs?: number | undefined;
  /**
   * The mounts whose open rows this consumer picks up at start (default: all). Processes
   * that share a database but serve different mounts (tests running side by side) set it.
   */
  mountIds?: readonly string[] | undefined;
  /** Called once per settled attempt: the standalone worker logs one line per job. */
  onAttempt?: ((report: AttemptReport) => void) | undefined;
  log?: ((line: string) => void) | undefined;
  /** How often the backlog gauge is refreshed while consuming (default 15 000 ms). */
  backlogIntervalMs?: number | undefined;
}

export const DEFAULT_ATTEMPTS = 5;
export const DEFAULT_BACKOFF_MS = 2_000;
export const DEFAULT_CONCURRENCY = 2;
/** Retries never wait longer than this, whatever the attempt. */
export const MAX_BACKOFF_MS = 5 * 60_000;

/** Exponential backoff as BullMQ computes it: `backoffMs · 2^(attempt−1)` after failed attempt `attempt`. */
export const backoffDelay = (backoffMs: number, attempt: number): number =>
  Math.min(MAX_BACKOFF_MS, backoffMs * 2 ** Math.max(0, attempt - 1));

export function toNewJob(r: ReconcileRequest): NewReconcileJob {
  const options = { recursive: r.recursive, hash: r.hash, ...(r.force ? { force: true } : {}), ...(r.followUp ? { followUp: r.followUp } : {}) };
  return { mountId: r.mountId, path: r.path, reason: r.reason, options: r.sequencer ? { ...options, sequencer: r.sequencer } : options };
}

/**
 * Keeps filestore_reconcile_backlog{queue} current while a queue consumes, one series per queue
 * (`backlogs`: an agent's queue has its own label, whether its agent runs or not); a queue no
 * longer listed reads 0. Returns the stopper. `onError` hears a failed measurement (a queue
 * logs it unless it is an outage it reported).
 */
export function refreshBacklogGauge(queue: ReconcileQueue, metrics: FilestoreMetrics, intervalMs: number, onError?: (e: Error) => void): () => void {
  let stopped = false;
  const shown = new Set<string>();
  const measure = async (): Promise<Map<string, number>> => (queue.backlogs ? queue.backlogs() : new Map([[queue.name, await queue.backlog()]]));
  const refresh = () => {
    measure()
      .then((counts) => {
        if (stopped) return;
        for (const name of shown) if (!counts.has(name)) metrics.reconcileBacklog.set({ queue: name }, 0);
        for (const [name, n] of counts) {
          metrics.reconcileBacklog.set({ queue: name }, n);
          shown.add(name);
        }
      })
      .catch((e: Error) => onError?.(e));
  };
  refresh();
  const timer = setInterval(refresh, intervalMs);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
