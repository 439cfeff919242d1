import { cancelInto, deferJob, retryLater, stopJob } from '../catalogue/job-requeue.ts';
import { claimJob, finishJob, isOpenJob, recordProgress, type ReconcileJobRow } from '../catalogue/jobs.ts';
import { announceSettled } from '../catalogue/job-waits.ts';
import { findMount } from '../catalogue/mounts.ts';
import type { Queryable } from '../db/pool.ts';
import { FilestoreError } from '../errors.ts';
import { defaultMetrics } from '../metrics/prom.ts';
import type { FilestoreMetrics } from '../metrics/metrics.ts';
import { AuditBusyError, ReconcileError } from './errors.ts';
import type { ReconcileCounts, ReconcileHandler, ReconcileResult, RunLimits } from './types.ts';

/**
 * What one attempt came to. `skipped`: the row was not claimable (cancelled, finished, gone);
 * `retried`: back to queued for another attempt; `coalesced`: another row for the path was
 * waiting and took the work over (this one is cancelled); `stopped`: the run stopped early at
 * a checkpoint (RunLimits), back to queued to continue after it — not a failure; `deferred`:
 * the run could not start yet (a full audit while another audit of its mount runs:
 * AuditBusyError), back to queued with its attempt given back, for the queue to try again
 * later (deferralDelay) — not a failure, and not counted in filestore_reconcile_jobs_total
 * (not an outcome of a run; SPEC §7's labels stay as they were).
 */
export type AttemptOutcome = 'succeeded' | 'failed' | 'retried' | 'coalesced' | 'stopped' | 'deferred' | 'skipped';

/**
 * How long a queue puts off a job deferred `deferrals` times in a row: 250 ms, then 500 ms for
 * about five seconds, then 2 s. The audit it waits for is often short (the watcher's job after a
 * burst of changes, ~1 s at 100k files, or one that stops for it: PREEMPT_LOOK_MS) and the
 * user's `reconcile --wait` waits on it; a look costs a claim and its give-back (a few round
 * trips and a dead row version), so a long wait backs off to one every 2 s. (It doubled to 2 s
 * at once: a user's audit could start 2 s after the one it waited for had ended.)
 */
export const deferralDelay = (deferrals: number): number => (deferrals <= 1 ? 250 : deferrals <= 10 ? 500 : 2_000);

/**
 * How often a running automatic full audit (the watcher's `drift`, a scheduled `audit`, a
 * recovery) looks for a person's request (`manual`) waiting for its mount's whole tree: it then
 * stops at its next checkpoint (every 10,000 entries) and the waiting row takes its work over
 * (`stopJob`: this row cancelled, COALESCED). What it wrote stays written; the user's audit
 * walks the whole tree from the start, as it would have after it. Without this the user's
 * `reconcile --wait` after a burst of changes waited for the watcher's whole-mount job first,
 * then ran its own (bench:audit's drift round: 1.8 s of a 3.1 s job in the queue). A running
 * `manual` audit is never stopped this way: each request is stopped for at most once.
 */
export const PREEMPT_LOOK_MS = 250;

/**
 * A line for the log when a job has been deferred `deferrals` times in a row, or null: after
 * about a minute of waiting, then about every five (a deferred job spends no attempt and counts
 * in no outcome, so a lock that stays held — a walk hung on stalled storage — is said here).
 */
export function deferralLine(jobId: number, deferrals: number): string | null {
  if (deferrals < 36 || (deferrals - 36) % 150 !== 0) return null;
  const minutes = Math.round((deferrals * deferralDelay(deferrals)) / 60_000);
  return `reconcile job ${jobId}: an audit of its mount has been running for about ${minutes} min or more; this audit waits its turn (queued, no attempt spent). If no audit of the mount makes progress, look for a stalled storage or a session holding the mount's audit lock`;
}

export interface AttemptReport {
  jobId: number;
  outcome: AttemptOutcome;
  /** The row as the attempt left it (null when skipped). */
  job: ReconcileJobRow | null;
  /** Time in the handler (0 when skipped). */
  durationMs: number;
  /** What the handler threw, for failed, retried, deferred and coalesced. */
  error?: unknown;
}

export interface AttemptOptions {
  /** Whether a retryable error should still fail the job, given the claimed row (out of attempts). */
  finalAttempt: (job: ReconcileJobRow) => boolean;
  /** Also take a row left running (see claimJob). */
  reclaim?: boolean | undefined;
  /** When the run should stop early (at a checkpoint of a full audit). */
  limits?: RunLimits | undefined;
}

export interface ReconcileWorkerOptions {
  pool: Queryable;
  handler: ReconcileHandler;
  metrics?: FilestoreMetrics | undefined;
  /** Called once per settled attempt (not for skipped ones): the standalone worker logs a line. */
  onAttempt?: ((report: AttemptReport) => void) | undefined;
  log?: ((line: string) => void) | undefined;
}

/** Whether another attempt can help: a ReconcileError says so; anything else (a lost connection, a bug) gets the benefit of the doubt. */
export const isRetryable = (err: unknown): boolean => !(err instanceof ReconcileError) || err.retryable;

/** The `error` column of a job: code, message, details — never a stack. */
export function jobError(err: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  if (err instanceof FilestoreError) return { ...err.toJSON(), retryable: isRetryable(err), ...extra };
  const message = err instanceof Error ? err.message : String(err);
  return { code: 'INTERNAL', message, retryable: true, ...extra };
}

/** One line per run that passed over names the catalogue cannot hold: how many, why, a few examples (escaped). */
export function skippedLine(job: Pick<ReconcileJobRow, 'id' | 'mountId' | 'path'>, r: ReconcileResult): string {
  const reasons = Object.entries(r.skippedByReason ?? {}).map(([reason, n]) => `${reason} ${n}`);
  const examples = (r.skippedSample ?? []).map((p) => `"${p}"`).join(', ');
  return (
    `reconcile job ${job.id} (mount ${job.mountId}, path ${JSON.stringify(job.path)}): skipped ${r.skipped} names the catalogue cannot hold` +
    `${reasons.length > 0 ? ` (${reasons.join(', ')})` : ''}${examples ? `, e.g. ${examples}` : ''}; rename them to have them catalogued`
  );
}

/**
 * The consumer side shared by every queue: claims a row, runs the handler with progress
 * reporting, and records the outcome on the row and in the metrics. Queues decide only
 * *when* an attempt runs (order, concurrency, backoff); this decides what it did.
 */
export class ReconcileWorker {
  private readonly metrics: FilestoreMetrics;
  // A mount's kind never changes: one lookup per mount for the `backend` label.
  private readonly kinds = new Map<string, string>();

  constructor(private readonly o: ReconcileWorkerOptions) {
    this.metrics = o.metrics ?? defaultMetrics();
  }

  /** One attempt at job `id`. Throws only when the catalogue itself cannot be read or written. */
  async run(id: number, a: AttemptOptions): Promise<AttemptReport> {
    const job = await claimJob(this.o.pool, id, { reclaim: a.reclaim });
    if (!job) return { jobId: id, outcome: 'skipped', job: null, durationMs: 0 };
    const started = performance.now();
    const backend = await this.backendOf(job.mountId).catch(() => 'unknown');
    const progress = async (counts: ReconcileCounts) => {
      // Progress is for people watching; a failed write of it must not fail the work.
      await recordProgress(this.o.pool, id, counts).catch((e: Error) => this.o.log?.(`reconcile job ${id}: progress not recorded: ${e.message}`));
    };
    let counts: ReconcileResult;
    const preempt = this.preemptible(job, a.limits);
    try {
      counts = await this.o.handler(job, progress, preempt.limits);
    } catch (err) {
      const durationMs = performance.now() - started;
      if (err instanceof AuditBusyError) return this.defer(job, err, backend, durationMs);
      this.metrics.reconcileDuration.observe({ backend }, durationMs / 1000);
      return this.settleFailure(job, err, a.finalAttempt(job), backend, durationMs);
    } finally {
      preempt.done();
    }
    const durationMs = performance.now() - started;
    this.metrics.reconcileDuration.observe({ backend }, durationMs / 1000);
    if (counts.stopped) {
      // Stopped for a person's request of the tree: cancelled into it, never back to queued.
      const by = preempt.by();
      const again = (by === null ? null : await cancelInto(this.o.pool, id, by, counts)) ?? (await stopJob(this.o.pool, id, counts));
      return this.report({ jobId: id, outcome: again?.status === 'cancelled' ? 'coalesced' : 'stopped', job: again ?? job, durationMs }, backend);
    }
    const done = await finishJob(this.o.pool, id, { status: 'succeeded', result: counts, error: null });
    if (counts.skipped > 0) this.o.log?.(skippedLine(job, counts));
    return this.report({ jobId: id, outcome: 'succeeded', job: done ?? job, durationMs }, backend);
  }

  /**
   * The run's limits, with a stop when a person's request waits for the whole tree this
   * automatic full audit walks (PREEMPT_LOOK_MS). `done()` ends the looking.
   */
  private preemptible(job: ReconcileJobRow, limits: RunLimits | undefined): { limits: RunLimits | undefined; done(): void; by(): number | null } {
    const fullAudit = job.path === '' && job.options.recursive === true;
    if (!fullAudit || job.reason === 'manual') return { limits, done: () => {}, by: () => null };
    const stop = new AbortController();
    let looking = false;
    let by: number | null = null;
    const timer = setInterval(() => {
      if (looking || stop.signal.aborted) return;
      looking = true;
      this.o.pool
        .query<{ id: number }>(
          // A request for the whole tree only: a look at the root alone would be made a whole audit by the merge.
          `SELECT id FROM filestore.reconciliation_jobs
            WHERE mount_id = $1 AND path = $2 AND status = 'queued' AND reason = 'manual' AND id <> $3 AND options->>'recursive' = 'true' LIMIT 1`,
          [job.mountId, job.path, job.id],
        )
        .then(({ rows }) => {
          if (rows[0] === undefined || stop.signal.aborted) return;
          by = rows[0].id;
          this.o.log?.(`reconcile job ${job.id} (${job.reason}) stops at its next checkpoint: job ${rows[0].id}, requested by a user for the same tree, takes its work over`);
          stop.abort();
        })
        .catch(() => {}) // a missed look: the next one
        .finally(() => {
          looking = false;
        });
    }, PREEMPT_LOOK_MS);
    timer.unref?.();
    const signal = limits?.signal ? AbortSignal.any([limits.signal, stop.signal]) : stop.signal;
    return { limits: { ...limits, signal }, done: () => clearInterval(timer), by: () => by };
  }

  /** Counts a request that joined a waiting job (outcome `coalesced`), from the queue's enqueue. */
  async countCoalesced(job: Pick<ReconcileJobRow, 'mountId' | 'reason'>): Promise<void> {
    const backend = await this.backendOf(job.mountId).catch(() => 'unknown');
    this.metrics.reconcileJobs.inc({ backend, reason: job.reason, outcome: 'coalesced' });
  }

  private async settleFailure(job: ReconcileJobRow, err: unknown, final: boolean, backend: string, durationMs: number): Promise<AttemptReport> {
    if (!isRetryable(err) || final) {
      const failed = await finishJob(this.o.pool, job.id, { status: 'failed', error: jobError(err, { attempts: job.attempts }) });
      return this.report({ jobId: job.id, outcome: 'failed', job: failed ?? job, durationMs, error: err }, backend);
    }
    const again = await retryLater(this.o.pool, job.id, jobError(err, { attempts: job.attempts }));
    const outcome: AttemptOutcome = again?.status === 'cancelled' ? 'coalesced' : 'retried';
    return this.report({ jobId: job.id, outcome, job: again ?? job, durationMs, error: err }, backend);
  }

  /**
   * Back to queued as before the claim (deferJob: attempts unchanged), or cancelled into the row
   * waiting for the same path (`coalesced`, as a retry would). No run happened: no duration.
   */
  private async defer(job: ReconcileJobRow, err: unknown, backend: string, durationMs: number): Promise<AttemptReport> {
    const again = await deferJob(this.o.pool, job.id);
    const outcome: AttemptOutcome = again?.status === 'cancelled' ? 'coalesced' : 'deferred';
    return this.report({ jobId: job.id, outcome, job: again ?? job, durationMs, error: err }, backend);
  }

  private report(r: AttemptReport, backend: string): AttemptReport {
    if (r.job && r.outcome !== 'deferred') this.metrics.reconcileJobs.inc({ backend, reason: r.job.reason, outcome: r.outcome });
    if (r.job && !isOpenJob(r.job.status)) announceSettled(this.o.pool, r.jobId);
    try {
      this.o.onAttempt?.(r);
    } catch {
      // a throwing logger must not change the job's outcome
    }
    return r;
  }

  private async backendOf(mountId: string): Promise<string> {
    let kind = this.kinds.get(mountId);
    if (kind === undefined) {
      kind = (await findMount(this.o.pool, mountId))?.kind ?? 'unknown';
      this.kinds.set(mountId, kind);
    }
    return kind;
  }
}
