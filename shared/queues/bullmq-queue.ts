import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { enqueueJob, openJobs, type ReconcileJobRow } from '../catalogue/jobs.ts';
import { defaultMetrics, type FilestoreMetrics } from '../metrics/metrics.ts';
import type { ReconcileHandler, ReconcileRequest } from '../reconcile/types.ts';
import { ReconcileWorker } from '../reconcile/worker.ts';
import {
  DEFAULT_ATTEMPTS,
  DEFAULT_BACKOFF_MS,
  DEFAULT_CONCURRENCY,
  RECONCILE_QUEUE,
  refreshBacklogGauge,
  toNewJob,
  type ReconcileQueue,
  type ReconcileQueueOptions,
  type StartOptions,
} from './reconcile-queue.ts';

export interface BullMqReconcileQueueOptions extends ReconcileQueueOptions {
  /** Redis key prefix (BullMQ's default `bull`); tests use their own. */
  prefix?: string | undefined;
  /** How often a consumer looks for open rows that have no BullMQ job (default 60 000 ms). */
  sweepIntervalMs?: number | undefined;
}

/** The message: the row id is what counts (the row holds the merged options); the rest is for people reading Redis. */
export interface ReconcileMessage {
  rowId: number;
  mountId: string;
  path: string;
  reason: ReconcileJobRow['reason'];
}

const JOB_NAME = 'reconcile';
// BullMQ refuses integer custom ids (they would collide with its own counter).
export const bullJobId = (rowId: number): string => `job-${rowId}`;
// How long an open row must sit still before a periodic sweep re-adds it: longer than an
// enqueue between its insert and its Redis add.
const SWEEP_IDLE_MS = 30_000;
const SWEEP_BATCH = 1_000;
// Finished BullMQ jobs are only a trace (the row is the record): keep a day / a week of them.
const KEEP_COMPLETED = { age: 24 * 3600, count: 1_000 };
const KEEP_FAILED = { age: 7 * 24 * 3600, count: 5_000 };

/**
 * `filestore-reconcile` on BullMQ. The row is written first, then the BullMQ job (id
 * `job-<row id>`) — only for a new row: a request that joins a waiting row adds nothing to
 * Redis. BullMQ owns retry timing (attempts, exponential backoff); the row says queued,
 * running, succeeded or failed; a non-retryable error becomes an UnrecoverableError. A
 * consumer re-adds, at start and every `sweepIntervalMs`, open rows whose BullMQ job is
 * missing or finished — a crash between the insert and the add, a flushed Redis — so the
 * row, not Redis, decides that work is owed.
 */
export class BullMqReconcileQueue implements ReconcileQueue {
  readonly name: string;
  private readonly metrics: FilestoreMetrics;
  private readonly reconcileWorker: ReconcileWorker;
  private readonly connection: Redis;
  private readonly queue: Queue<ReconcileMessage>;
  private handler: ReconcileHandler | null = null;
  private workerConnection: Redis | null = null;
  private worker: Worker<ReconcileMessage> | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweeping: Promise<void> | null = null;
  private stopGauge: (() => void) | null = null;
  private closed: Promise<void> | null = null;

  constructor(
    private readonly redisUrl: string,
    private readonly o: BullMqReconcileQueueOptions,
  ) {
    this.name = o.name ?? RECONCILE_QUEUE;
    this.metrics = o.metrics ?? defaultMetrics();
    this.reconcileWorker = new ReconcileWorker({
      pool: o.pool,
      metrics: this.metrics,
      handler: (job, progress) => (this.handler as ReconcileHandler)(job, progress),
      onAttempt: o.onAttempt,
      log: o.log,
    });
    this.connection = new Redis(redisUrl, { maxRetriesPerRequest: 3 });
    this.connection.on('error', () => {}); // reported by the command that fails
    this.queue = new Queue<ReconcileMessage>(this.name, {
      connection: this.connection,
      prefix: o.prefix,
      defaultJobOptions: {
        attempts: o.attempts ?? DEFAULT_ATTEMPTS,
        backoff: { type: 'exponential', delay: o.backoffMs ?? DEFAULT_BACKOFF_MS },
        removeOnComplete: KEEP_COMPLETED,
        removeOnFail: KEEP_FAILED,
      },
    });
    this.queue.on('error', (e) => o.log?.(`reconcile queue: ${e.message}`));
  }

  async enqueue(request: ReconcileRequest) {
    const r = await enqueueJob(this.o.pool, toNewJob(request));
    if (r.coalesced) await this.reconcileWorker.countCoalesced(r.job);
    else await this.add(r.job);
    return r;
  }

  async start(handler: ReconcileHandler, options: StartOptions = {}): Promise<void> {
    if (this.handler) throw new Error(`reconcile queue ${this.name} is already started`);
    this.handler = handler;
    await this.sweep(0);
    this.workerConnection = new Redis(this.redisUrl, { maxRetriesPerRequest: null });
    this.workerConnection.on('error', () => {});
    this.worker = new Worker<ReconcileMessage>(this.name, (job) => this.process(job), {
      connection: this.workerConnection,
      prefix: this.o.prefix,
      concurrency: options.concurrency ?? DEFAULT_CONCURRENCY,
    });
    this.worker.on('error', (e) => this.o.log?.(`reconcile worker: ${e.message}`));
    this.sweepTimer = setInterval(() => void this.sweep(SWEEP_IDLE_MS), this.o.sweepIntervalMs ?? 60_000);
    this.sweepTimer.unref();
    this.stopGauge = refreshBacklogGauge(this, this.metrics, this.o.backlogIntervalMs ?? 15_000, this.o.log);
  }

  async backlog(): Promise<number> {
    return this.queue.getJobCountByTypes('waiting', 'prioritized', 'delayed');
  }

  /** Stops taking jobs, waits for the running ones (BullMQ's graceful close), then disconnects. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      if (this.sweepTimer) clearInterval(this.sweepTimer);
      this.stopGauge?.();
      await this.worker?.close();
      await this.sweeping?.catch(() => {});
      await this.queue.close();
      await Promise.allSettled([this.connection.quit(), this.workerConnection?.quit()]);
    })();
    return this.closed;
  }

  private async process(job: Job<ReconcileMessage>): Promise<{ outcome: string }> {
    const rowId = job.data.rowId;
    // BullMQ retries while attemptsMade + 1 < attempts: past that, a retryable error fails the row too.
    const final = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    // BullMQ hands a job to one worker at a time, so a row still running here was left by a
    // worker that died or lost its lock: take it over (see claimJob).
    const report = await this.reconcileWorker.run(rowId, { reclaim: true, finalAttempt: () => final });
    if (report.outcome === 'retried') throw report.error instanceof Error ? report.error : new Error(String(report.error));
    if (report.outcome === 'failed') {
      const message = report.error instanceof Error ? report.error.message : String(report.error);
      throw new UnrecoverableError(message);
    }
    return { outcome: report.outcome };
  }

  private add(row: Pick<ReconcileJobRow, 'id' | 'mountId' | 'path' | 'reason'>) {
    const data: ReconcileMessage = { rowId: row.id, mountId: row.mountId, path: row.path, reason: row.reason };
    return this.queue.add(JOB_NAME, data, { jobId: bullJobId(row.id) });
  }

  /** Re-adds open rows (idle for `idleMs`) of this queue's mounts whose BullMQ job is missing or finished. */
  private sweep(idleMs: number): Promise<void> {
    if (this.sweeping) return this.sweeping;
    this.sweeping = (async () => {
      const rows = await openJobs(this.o.pool, { mountIds: this.o.mountIds, idleMs, limit: SWEEP_BATCH });
      let readded = 0;
      for (const row of rows) {
        const jobId = bullJobId(row.id);
        const state = await this.queue.getJobState(jobId);
        if (state === 'completed' || state === 'failed') await this.queue.remove(jobId);
        else if (state !== 'unknown') continue; // waiting, delayed, active: on its way
        await this.add(row);
        readded++;
      }
      if (readded > 0) this.o.log?.(`reconcile queue: ${readded} job(s) found in the catalogue without a queue message were queued again`);
    })()
      .catch((e: Error) => this.o.log?.(`reconcile queue: sweep failed: ${e.message}`))
      .finally(() => {
        this.sweeping = null;
      });
    return this.sweeping;
  }
}
