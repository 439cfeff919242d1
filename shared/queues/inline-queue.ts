import { enqueueJob, openJobs } from '../catalogue/jobs.ts';
import { defaultMetrics } from '../metrics/prom.ts';
import type { FilestoreMetrics } from '../metrics/metrics.ts';
import type { ReconcileHandler, ReconcileRequest } from '../reconcile/types.ts';
import { deferralDelay, deferralLine, ReconcileWorker } from '../reconcile/worker.ts';
import {
  DEFAULT_ATTEMPTS,
  DEFAULT_BACKOFF_MS,
  DEFAULT_CONCURRENCY,
  RECONCILE_QUEUE,
  backoffDelay,
  refreshBacklogGauge,
  toNewJob,
  type ReconcileQueue,
  type ReconcileQueueOptions,
  type StartOptions,
} from '../reconcile/queue.ts';

interface Pending {
  id: number;
  reclaim: boolean;
}

/**
 * The reconciliation queue in this process (`REDIS_URL=inline`: `npm start`, tests): a FIFO
 * of row ids, a concurrency limit, and retries on timers. The rows are the durable part: what
 * waits in memory when the process stops is still `queued` in the database, and `start`
 * picks it up again. One process per database only — `start` takes over rows left running.
 */
export class InlineReconcileQueue implements ReconcileQueue {
  readonly name: string;
  private readonly metrics: FilestoreMetrics;
  private readonly worker: ReconcileWorker;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private handler: ReconcileHandler | null = null;
  private concurrency = DEFAULT_CONCURRENCY;
  private closing = false;
  private stopGauge: (() => void) | null = null;

  private readonly waiting: Pending[] = [];
  private readonly delayed = new Map<number, NodeJS.Timeout>();
  private readonly running = new Set<Promise<void>>();
  /** Ids waiting, delayed or running here: a row is in at most one of them. */
  private readonly held = new Set<number>();
  /** Consecutive attempts that failed to reach the catalogue, per job (for their backoff). */
  private readonly unreachable = new Map<number, number>();
  /** Consecutive deferrals per job (an audit while another audit of its mount runs), for their delay. */
  private readonly deferrals = new Map<number, number>();

  constructor(private readonly o: ReconcileQueueOptions) {
    this.name = o.name ?? RECONCILE_QUEUE;
    this.metrics = o.metrics ?? defaultMetrics();
    this.attempts = o.attempts ?? DEFAULT_ATTEMPTS;
    this.backoffMs = o.backoffMs ?? DEFAULT_BACKOFF_MS;
    this.worker = new ReconcileWorker({
      pool: o.pool,
      metrics: this.metrics,
      handler: (job, progress, limits) => (this.handler as ReconcileHandler)(job, progress, limits),
      onAttempt: o.onAttempt,
      log: o.log,
    });
  }

  async enqueue(request: ReconcileRequest) {
    const r = await enqueueJob(this.o.pool, toNewJob(request));
    if (r.coalesced) await this.worker.countCoalesced(r.job);
    else this.push({ id: r.job.id, reclaim: false });
    return r;
  }

  async start(handler: ReconcileHandler, options: StartOptions = {}): Promise<void> {
    if (this.handler) throw new Error(`reconcile queue ${this.name} is already started`);
    this.handler = handler;
    this.concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
    // Rows a previous run of this process left behind: queued ones wait again, running ones
    // were interrupted mid-run and run again (only this process runs inline jobs).
    const open = await openJobs(this.o.pool, { mountIds: this.o.mountIds, idleMs: 0, limit: 100_000 });
    for (const row of open) this.push({ id: row.id, reclaim: row.status === 'running' });
    this.stopGauge = refreshBacklogGauge(this, this.metrics, this.o.backlogIntervalMs ?? 15_000, (e) => this.o.log?.(`reconcile backlog not measured: ${e.message}`));
    this.pump();
  }

  async backlog(): Promise<number> {
    return this.waiting.length + this.delayed.size;
  }

  async close(): Promise<void> {
    this.closing = true;
    this.stopGauge?.();
    for (const timer of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    this.waiting.length = 0;
    await Promise.allSettled([...this.running]);
  }

  private push(p: Pending): void {
    if (this.closing || this.held.has(p.id)) return;
    this.held.add(p.id);
    this.waiting.push(p);
    this.pump();
  }

  private pump(): void {
    while (this.handler && !this.closing && this.running.size < this.concurrency && this.waiting.length > 0) {
      const next = this.waiting.shift() as Pending;
      const run: Promise<void> = this.attempt(next).finally(() => {
        this.running.delete(run);
        this.pump();
      });
      this.running.add(run);
    }
  }

  private async attempt(p: Pending): Promise<void> {
    try {
      const report = await this.worker.run(p.id, { reclaim: p.reclaim, finalAttempt: (job) => job.attempts >= this.attempts });
      this.unreachable.delete(p.id);
      this.held.delete(p.id);
      if (report.outcome === 'deferred') {
        // Not run (another audit of its mount runs): tried again later, holding no slot meanwhile.
        const n = (this.deferrals.get(p.id) ?? 0) + 1;
        this.deferrals.set(p.id, n);
        const line = deferralLine(p.id, n);
        if (line) this.o.log?.(line);
        this.later({ id: p.id, reclaim: false }, deferralDelay(n));
        return;
      }
      this.deferrals.delete(p.id);
      if (report.outcome === 'retried') this.later({ id: p.id, reclaim: false }, backoffDelay(this.backoffMs, report.job?.attempts ?? 1));
      // Stopped at a checkpoint (its limits: an abort): queued again, to continue after it.
      if (report.outcome === 'stopped') this.later({ id: p.id, reclaim: false }, deferralDelay(1));
    } catch (err) {
      // The catalogue could not be read or written: the row may be left running, so the next
      // try takes it as it is.
      const misses = (this.unreachable.get(p.id) ?? 0) + 1;
      this.unreachable.set(p.id, misses);
      this.held.delete(p.id);
      this.o.log?.(`reconcile job ${p.id}: catalogue unreachable (${(err as Error).message}); trying again`);
      this.later({ id: p.id, reclaim: true }, backoffDelay(this.backoffMs, misses));
    }
  }

  private later(p: Pending, delayMs: number): void {
    if (this.closing || this.held.has(p.id)) return;
    this.held.add(p.id);
    const timer = setTimeout(() => {
      this.delayed.delete(p.id);
      this.held.delete(p.id);
      this.push(p);
    }, delayMs);
    timer.unref();
    this.delayed.set(p.id, timer);
  }
}
