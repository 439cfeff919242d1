import { DelayedError, Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { jobTransport } from '../catalogue/job-transport.ts';
import { enqueueJob, markQueueOwed, type JobToSend, type ReconcileJobRow } from '../catalogue/jobs.ts';
import { defaultMetrics } from '../metrics/prom.ts';
import type { FilestoreMetrics } from '../metrics/metrics.ts';
import { RedisHealth } from '../redis/health.ts';
import type { ReconcileHandler, ReconcileRequest } from '../reconcile/types.ts';
import { deferralDelay, deferralLine, ReconcileWorker } from '../reconcile/worker.ts';
import { ReconcileResender } from './bullmq-resend.ts';
import { tryLockJobRun } from '../reconcile/job-run-lock.ts';
import {
  DEFAULT_ATTEMPTS,
  DEFAULT_BACKOFF_MS,
  DEFAULT_CONCURRENCY,
  RECONCILE_QUEUE,
  refreshBacklogGauge,
  toNewJob,
  type Enqueued,
  type ReconcileQueue,
  type ReconcileQueueOptions,
  type StartOptions,
} from '../reconcile/queue.ts';

export interface BullMqReconcileQueueOptions extends ReconcileQueueOptions {
  /**
   * Redis key prefix of the catalogue's queues: `Filestore.queuePrefix` (`filestore:<catalogue
   * id>` or FILESTORE_QUEUE_PREFIX), so that catalogues sharing a Redis database never share
   * a queue. Unset: BullMQ's default `bull` (tests with a prefix of their own).
   */
  prefix?: string | undefined;
  /**
   * The agent this consumer is: besides the shared queue it consumes `<name>-<agentId>`, where
   * jobs for the local mounts that agent owns go (their disk is on its host only).
   */
  agentId?: string | undefined;
  /** How often a consumer looks for open rows that have no BullMQ job (default 60 000 ms). */
  sweepIntervalMs?: number | undefined;
  /** How long a delivery of a row that is running elsewhere waits before it looks again (default 5 000 ms). */
  busyRetryMs?: number | undefined;
}

/** The message: the row id is what counts (the row holds the merged options); the rest is for people reading Redis. */
export interface ReconcileMessage {
  rowId: number;
  mountId: string;
  path: string;
  reason: ReconcileJobRow['reason'];
  /** Consecutive deferrals of this delivery (an audit while another audit of its mount runs), for their delay. */
  deferrals?: number | undefined;
}

const JOB_NAME = 'reconcile';
/**
 * The BullMQ job id of a row: `job-<row id>-<created_at in ms, base 36>`. Not the row id
 * alone: a row id can come back — a catalogue restored from a backup, whose id sequence went
 * back, on the same prefix — and BullMQ silently drops an add whose id it still holds (finished
 * jobs are kept a day), so the new row would wait for the sweep. The creation time makes the
 * id unique to this row. (BullMQ refuses integer custom ids: they would collide with its counter.)
 */
export const bullJobId = (row: Pick<ReconcileJobRow, 'id' | 'createdAt'>): string => `job-${row.id}-${row.createdAt.getTime().toString(36)}`;
// How long an open row must sit still before a periodic sweep re-adds it: longer than an
// enqueue between its insert and its Redis add.
const SWEEP_IDLE_MS = 30_000;
const BUSY_RETRY_MS = 5_000;
const ROUTE_TTL_MS = 30_000;
// Finished BullMQ jobs are only a trace (the row is the record): keep a day / a week of them.
const KEEP_COMPLETED = { age: 24 * 3600, count: 1_000 };
const KEEP_FAILED = { age: 7 * 24 * 3600, count: 5_000 };

/**
 * `filestore-reconcile` on BullMQ, under the catalogue's prefix. The row is written first,
 * then the BullMQ job (id `bullJobId`) — only for a new row: a request that joins a waiting row adds nothing to
 * Redis. BullMQ owns retry timing (attempts, exponential backoff); the row says queued,
 * running, succeeded or failed; a non-retryable error becomes an UnrecoverableError. A
 * consumer re-adds, at start and every `sweepIntervalMs`, open rows whose BullMQ job is
 * missing or finished — a crash between the insert and the add, a flushed Redis — so the
 * row, not Redis, decides that work is owed (ReconcileResender). Only rows of transport
 * `redis` are this queue's: rows carried by SQS (S3 mounts in AWS) are left to the Lambdas,
 * and a delivery of one (adopted by the audit Lambda since) completes without running it. A row runs once at a time:
 * a delivery of a row whose run goes on elsewhere is put off (tryLockJobRun).
 *
 * Routing: jobs for a local mount owned by an agent go to `filestore-reconcile-<agentId>`,
 * consumed by that agent only (the disk is on its host); S3 mounts and local mounts without
 * an owner go to `filestore-reconcile`, consumed by every consumer.
 *
 * Redis unreachable: a request is still recorded (the row, marked `queue_owed`) and answered
 * `queuePending`; whichever process's connection is ready again first sends the owed rows,
 * and consumers' sweeps cover a process that stopped meanwhile. The outage is logged once per connection
 * (RedisHealth), not per failed add, sweep or backlog measurement.
 */
export class BullMqReconcileQueue implements ReconcileQueue {
  readonly name: string;
  /** The Redis key prefix of its queues (the audit scheduler puts its own queue under it too). */
  readonly prefix: string | undefined;
  private readonly metrics: FilestoreMetrics;
  private readonly reconcileWorker: ReconcileWorker;
  private readonly connection: Redis;
  private readonly queue: Queue<ReconcileMessage>;
  /** Queues of agents (`<name>-<agentId>`) this process has sent jobs to. */
  private readonly agentQueues = new Map<string, Queue<ReconcileMessage>>();
  /** Where each mount's jobs go, looked up once in a while (a mount's owner rarely changes). */
  private readonly routes = new Map<string, { queue: string; until: number }>();
  /** The producing connection's reachability; the workers' is `workerHealth`. */
  private readonly health: RedisHealth;
  private readonly workerHealth: RedisHealth;
  /** Sends rows recorded while Redis was unreachable, and sweeps for rows without a message. */
  private readonly resender: ReconcileResender;
  private handler: ReconcileHandler | null = null;
  private workerConnection: Redis | null = null;
  private workers: Worker<ReconcileMessage>[] = [];
  private sweepTimer: NodeJS.Timeout | null = null;
  private stopGauge: (() => void) | null = null;
  private closed: Promise<void> | null = null;

  constructor(
    private readonly redisUrl: string,
    private readonly o: BullMqReconcileQueueOptions,
  ) {
    this.name = o.name ?? RECONCILE_QUEUE;
    this.prefix = o.prefix;
    this.metrics = o.metrics ?? defaultMetrics();
    this.reconcileWorker = new ReconcileWorker({
      pool: o.pool,
      metrics: this.metrics,
      handler: (job, progress, limits) => (this.handler as ReconcileHandler)(job, progress, limits),
      onAttempt: o.onAttempt,
      log: o.log,
    });
    const log = o.log ?? (() => {});
    this.health = new RedisHealth('reconcile queue', log);
    this.workerHealth = new RedisHealth('reconcile worker', log);
    this.resender = new ReconcileResender({
      pool: o.pool,
      mountIds: o.mountIds,
      add: (row) => this.add(row),
      stateOf: async (row) => (await this.routeOf(row.mountId)).getJobState(bullJobId(row)),
      remove: async (row) => (await this.routeOf(row.mountId)).remove(bullJobId(row)),
      outage: (e) => this.health.covers(e),
      log,
    });
    this.connection = this.health.watch(new Redis(redisUrl, { maxRetriesPerRequest: 3 }));
    // Back (or up for the first time): rows recorded meanwhile, by any process, are sent.
    this.connection.on('ready', () => void this.resender.sendOwed());
    this.queue = this.openQueue(this.name);
  }

  private openQueue(name: string): Queue<ReconcileMessage> {
    const queue = new Queue<ReconcileMessage>(name, {
      connection: this.connection,
      prefix: this.o.prefix,
      defaultJobOptions: {
        attempts: this.o.attempts ?? DEFAULT_ATTEMPTS,
        backoff: { type: 'exponential', delay: this.o.backoffMs ?? DEFAULT_BACKOFF_MS },
        removeOnComplete: KEEP_COMPLETED,
        removeOnFail: KEEP_FAILED,
      },
    });
    queue.on('error', (e) => {
      if (!this.health.explains(e)) this.o.log?.(`reconcile queue ${name}: ${e.message}`);
    });
    return queue;
  }

  /** The queue of an agent's local mounts. */
  agentQueueName(agentId: string): string {
    return `${this.name}-${agentId}`;
  }

  private queueNamed(name: string): Queue<ReconcileMessage> {
    if (name === this.name) return this.queue;
    let q = this.agentQueues.get(name);
    if (!q) this.agentQueues.set(name, (q = this.openQueue(name)));
    return q;
  }

  /** A local mount owned by an agent has its jobs on that agent's queue; everything else on the shared one. */
  private async routeOf(mountId: string): Promise<Queue<ReconcileMessage>> {
    const now = Date.now();
    let route = this.routes.get(mountId);
    if (!route || route.until < now) {
      const { rows } = await this.o.pool.query<{ kind: string; agent_id: string | null }>('SELECT kind, agent_id FROM filestore.mounts WHERE id = $1', [mountId]);
      const m = rows[0];
      const queue = m && m.kind === 'local' && m.agent_id !== null ? this.agentQueueName(m.agent_id) : this.name;
      if (this.routes.size > 10_000) this.routes.clear();
      this.routes.set(mountId, (route = { queue, until: now + ROUTE_TTL_MS }));
    }
    return this.queueNamed(route.queue);
  }

  async enqueue(request: ReconcileRequest): Promise<Enqueued> {
    // Known to be down: the row is recorded as owed its message, without waiting for the
    // client's retries to give up (seconds per request).
    const down = !this.health.reachable;
    const r = await enqueueJob(this.o.pool, toNewJob(request), { queueOwed: down });
    if (r.coalesced) {
      await this.reconcileWorker.countCoalesced(r.job);
      return r;
    }
    if (down) return this.pending(r.job);
    const queue = await this.routeOf(r.job.mountId);
    try {
      await this.addTo(queue, r.job);
    } catch (err) {
      if (!this.health.explains(err)) throw err;
      try {
        await markQueueOwed(this.o.pool, r.job.id);
      } catch (e) {
        // Left to the consumers' sweeps, which walk every open row.
        this.o.log?.(`reconcile queue: job ${r.job.id} not marked to be queued when Redis is back: ${(e as Error).message}`);
      }
      return this.pending(r.job);
    }
    return r;
  }

  /** A recorded row, marked owed its message: sent by whoever reaches Redis first. */
  private pending(job: ReconcileJobRow): Enqueued {
    // Redis came back while it was recorded: the pass at 'ready' may have looked before the mark.
    if (this.health.reachable) void this.resender.sendOwed();
    return { job, coalesced: false, queuePending: true };
  }

  async start(handler: ReconcileHandler, options: StartOptions = {}): Promise<void> {
    if (this.handler) throw new Error(`reconcile queue ${this.name} is already started`);
    this.handler = handler;
    await this.sweep(0);
    this.workerConnection = this.workerHealth.watch(new Redis(this.redisUrl, { maxRetriesPerRequest: null }));
    for (const name of this.consumedQueues()) {
      const worker = new Worker<ReconcileMessage>(name, (job) => this.process(job), {
        connection: this.workerConnection,
        prefix: this.o.prefix,
        concurrency: options.concurrency ?? DEFAULT_CONCURRENCY,
      });
      // Its blocking connection (a duplicate) reports through here: an outage is logged once.
      worker.on('error', (e) => {
        if (!this.workerHealth.explains(e)) this.o.log?.(`reconcile worker ${name}: ${e.message}`);
      });
      this.workers.push(worker);
    }
    this.sweepTimer = setInterval(() => void this.sweep(SWEEP_IDLE_MS), this.o.sweepIntervalMs ?? 60_000);
    this.sweepTimer.unref();
    this.stopGauge = refreshBacklogGauge(this, this.metrics, this.o.backlogIntervalMs ?? 15_000, (e) => {
      if (!this.health.explains(e)) this.o.log?.(`reconcile backlog not measured: ${e.message}`);
    });
  }

  /** The shared queue, and this agent's own when the consumer is an agent. */
  private consumedQueues(): string[] {
    return this.o.agentId ? [this.name, this.agentQueueName(this.o.agentId)] : [this.name];
  }

  async backlog(): Promise<number> {
    const counts = await Promise.all(this.consumedQueues().map((n) => this.queueNamed(n).getJobCountByTypes('waiting', 'prioritized', 'delayed')));
    return counts.reduce((a, b) => a + b, 0);
  }

  /**
   * Jobs waiting in each queue of the catalogue: the shared one, this agent's, and the queue of
   * every agent that owns a local mount or is registered — an agent that is down has its
   * jobs waiting there, and only this gauge shows them.
   */
  async backlogs(): Promise<Map<string, number>> {
    const { rows } = await this.o.pool.query<{ id: string }>(
      `SELECT agent_id AS id FROM filestore.mounts WHERE kind = 'local' AND agent_id IS NOT NULL
       UNION SELECT id FROM filestore.agents`,
    );
    if (this.closed) return new Map(); // closing: no queue is opened again
    const names = [...new Set([...this.consumedQueues(), ...rows.map((r) => this.agentQueueName(r.id))])];
    const counts = await Promise.all(names.map((n) => this.queueNamed(n).getJobCountByTypes('waiting', 'prioritized', 'delayed')));
    return new Map(names.map((n, i) => [n, counts[i] as number]));
  }

  /** Stops taking jobs, waits for the running ones (BullMQ's graceful close), then disconnects. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      if (this.sweepTimer) clearInterval(this.sweepTimer);
      this.stopGauge?.();
      await Promise.all(this.workers.map((w) => w.close()));
      await this.resender.settled();
      await Promise.all([this.queue, ...this.agentQueues.values()].map((q) => q.close()));
      await Promise.allSettled([this.connection.quit(), this.workerConnection?.quit()]);
    })();
    return this.closed;
  }

  private async process(job: Job<ReconcileMessage>, token?: string): Promise<{ outcome: string }> {
    const rowId = job.data.rowId;
    const lock = await tryLockJobRun(this.o.pool, rowId);
    if (!lock) {
      // A run of this row goes on elsewhere (BullMQ handed the job out again after its worker
      // lost the lock): look again later, without spending an attempt, and then do what the
      // row needs by then (nothing if that run settled it).
      await job.moveToDelayed(Date.now() + (this.o.busyRetryMs ?? BUSY_RETRY_MS), token);
      throw new DelayedError();
    }
    try {
      // A row the SQS queue carries (the audit Lambda adopted it since its message was added
      // here) is the Lambdas' to run: its storage may be out of this process's reach.
      if ((await jobTransport(this.o.pool, rowId)) === 'sqs') return { outcome: 'skipped' };
      return await this.attempt(job, rowId, token);
    } finally {
      await lock.release();
    }
  }

  private async attempt(job: Job<ReconcileMessage>, rowId: number, token: string | undefined): Promise<{ outcome: string }> {
    // BullMQ retries while attemptsMade + 1 < attempts: past that, a retryable error fails the row too.
    const final = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    // With the run lock held, a row still running was left by a run that is over (a worker
    // that died, or lost its lock and has finished since): take it over (see claimJob).
    const report = await this.reconcileWorker.run(rowId, { reclaim: true, finalAttempt: () => final });
    if (report.outcome === 'deferred') {
      // Not run (another audit of its mount runs; the row is queued, its attempt given back):
      // looked at again later without spending a BullMQ attempt, holding no worker slot meanwhile.
      const deferrals = (job.data.deferrals ?? 0) + 1;
      await job.updateData({ ...job.data, deferrals });
      const line = deferralLine(rowId, deferrals);
      if (line) this.o.log?.(line);
      await job.moveToDelayed(Date.now() + deferralDelay(deferrals), token);
      throw new DelayedError();
    }
    if (report.outcome === 'stopped') {
      // Stopped at a checkpoint (its limits: an abort), queued again: delivered again to
      // continue after it, without spending a BullMQ attempt.
      await job.moveToDelayed(Date.now() + deferralDelay(1), token);
      throw new DelayedError();
    }
    if (report.outcome === 'retried') throw report.error instanceof Error ? report.error : new Error(String(report.error));
    if (report.outcome === 'failed') {
      const message = report.error instanceof Error ? report.error.message : String(report.error);
      throw new UnrecoverableError(message);
    }
    return { outcome: report.outcome };
  }

  private async add(row: JobToSend) {
    return this.addTo(await this.routeOf(row.mountId), row);
  }

  private addTo(queue: Queue<ReconcileMessage>, row: Pick<ReconcileJobRow, 'id' | 'createdAt' | 'mountId' | 'path' | 'reason'>) {
    const data: ReconcileMessage = { rowId: row.id, mountId: row.mountId, path: row.path, reason: row.reason };
    return queue.add(JOB_NAME, data, { jobId: bullJobId(row) });
  }

  /** Sends owed rows, then looks at the next page of open rows (idle for `idleMs`) for missing messages. */
  private async sweep(idleMs: number): Promise<void> {
    await this.resender.sendOwed();
    await this.resender.sweep(idleMs);
  }
}
