import pg from 'pg';
import { z } from 'zod';
import { setJobTransport } from '../catalogue/job-transport.ts';
import { enqueueJob, failSpentRun, findJob, JOB_COLUMNS, type ReconcileJobRow } from '../catalogue/jobs.ts';
import type { Mount } from '../catalogue/types.ts';
import { findMount, getMount, listMounts } from '../catalogue/mounts.ts';
import { clientConfigOf, poolMax, type Pool } from '../db/pool.ts';
import { FilestoreError } from '../errors.ts';
import { lockKey } from '../catalogue/locks.ts';
import { DEFAULT_ATTEMPTS, toNewJob } from './queue.ts';
import { recordAuditAges } from './audit-age.ts';
import { createReconciler, type ReconcileCore, type ReconcilerOptions } from './reconciler.ts';
import { ReconcileWorker, type AttemptOutcome, type AttemptReport } from './worker.ts';

/**
 * The run code of the Lambdas that reconcile without a long-running worker: the audit Lambda
 * (a scheduled budget per mount) and the reconcile Lambda (one queued job per SQS message).
 * Both run a row here and now, as a queue worker would (ReconcileWorker: claim, run, record the
 * outcome on the row and in the metrics), under the row's run lock, with a deadline taken from
 * the invocation's remaining time, so that an audit stops cleanly at a checkpoint (outcome
 * `stopped`, the row back to queued) before Lambda kills the invocation.
 */

/** How much of the invocation is left unused (SPEC §10: stop when fewer than 60 s remain). */
export const DEFAULT_MARGIN_MS = 60_000;

export interface LambdaBudget {
  /** The invocation's remaining time (context.getRemainingTimeInMillis). */
  remainingMs: () => number;
  /** Stop at the first checkpoint once fewer than this remain (default DEFAULT_MARGIN_MS; tests: tiny). */
  marginMs?: number | undefined;
}

/** The epoch-ms deadline of a run started now under `budget` (already past when less than the margin remains). */
export const budgetDeadline = (budget: LambdaBudget, now = Date.now()): number => now + budget.remainingMs() - (budget.marginMs ?? DEFAULT_MARGIN_MS);

export interface RowRunOptions {
  reconciler?: ReconcilerOptions | undefined;
  /**
   * Attempts a row may use (default 5: the DLQ's maxReceiveCount): a retryable failure on the
   * last fails it, and a row a killed run left `running` with all of them used is failed
   * (INTERRUPTED) rather than run again.
   */
  attempts?: number | undefined;
}

/**
 * CONFIG_ERROR unless the core's pool has at least 2 connections: a full audit holds one for
 * the engine's per-mount audit lock for the whole run and queries on another, so with a pool
 * of 1 it waits for itself until the Lambda times out (as the S3-event handler refuses it).
 */
export function requireRunPool(core: Pick<ReconcileCore, 'pool'>, lambda: string): void {
  if (poolMax(core.pool) < 2) {
    throw new FilestoreError('CONFIG_ERROR', `the ${lambda} Lambda reconciles with a pool of at least 2 connections (a full audit holds one for its lock and queries on another): set FILESTORE_DB_POOL_SIZE=2`);
  }
}

/**
 * Session advisory locks of one run on a connection of their own, outside the core's pool: a
 * Lambda's pool holds 1-2 connections, and a full audit already needs two of them (the engine's
 * per-mount audit lock and its queries), so the run's own locks would starve it.
 */
export class RunLocks {
  private constructor(private readonly client: pg.Client) {}

  static async open(pool: Pool): Promise<RunLocks> {
    // The pool's settings: host, user, TLS and the password function (RDS IAM tokens) alike.
    const client = new pg.Client({ ...clientConfigOf(pool), application_name: `${pool.options.application_name ?? 'filestore'}-locks` });
    // A session lost mid-run loses its locks and the run goes on without them, as a queue
    // worker's whose lock connection died (job-run-lock.ts): the catalogue's own locks still
    // guard every write. Its error must not crash the container.
    client.on('error', () => {});
    try {
      await client.connect();
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    return new RunLocks(client);
  }

  /** The run lock of a reconciliation row: the key tryLockJobRun (reconcile/job-run-lock.ts) takes, so queue workers and these runs exclude each other. */
  tryRow(rowId: number): Promise<boolean> {
    return this.try(lockKey('reconcile-job', String(rowId)));
  }

  /**
   * Whether a full audit of the mount runs now (the engine's per-mount audit lock, reconciler.ts,
   * is held): a look, the lock given back at once. Another audit may still start right after.
   */
  async auditRunning(mountId: string): Promise<boolean> {
    const key = lockKey('audit', mountId);
    if (!(await this.try(key))) return true;
    await this.client.query('SELECT pg_advisory_unlock($1::bigint)', [key.toString()]);
    return false;
  }

  /** One audit Lambda invocation per mount at a time (claiming its audit row included). */
  tryAuditClaim(mountId: string): Promise<boolean> {
    return this.try(lockKey('audit-claim', mountId));
  }

  private async try(key: bigint): Promise<boolean> {
    const { rows } = await this.client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [key.toString()]);
    return rows[0]?.ok === true;
  }

  /** Gives every lock back by ending the session. */
  async close(): Promise<void> {
    await this.client.end().catch(() => {});
  }
}

/**
 * What one run of a row came to: a worker's outcome, or `busy` (a run of the row goes on
 * elsewhere, or — a full audit — another audit of its mount runs). `interrupted`: failed
 * without a run, every attempt having been spent by runs that never ended (see attemptRow).
 */
export interface RowRun {
  outcome: AttemptOutcome | 'busy';
  job: ReconcileJobRow | null;
  report: AttemptReport | null;
  interrupted?: true | undefined;
}

const isFullAudit = (row: ReconcileJobRow) => row.path === '' && row.options.recursive === true;

/**
 * One attempt at row `rowId`, with `deadline`. The caller holds the row's run lock (on
 * `locks`): a row left `running` is then a run that is over (a container killed or frozen
 * mid-run) and is taken over — unless it has used all its attempts: then it is failed with
 * INTERRUPTED, not run. Only audits stop at a deadline (at checkpoints); any other run that
 * outlasts the function's timeout is killed on every delivery, and would otherwise be taken over
 * for ever (the sweep sends the row again after its message went to the DLQ). An audit killed
 * after its last checkpoint (marking MISSING) ends the same way.
 * A full audit while another audit of its mount runs is `busy`, not run: the engine would
 * refuse it (retryable), and its retries, seconds apart, would spend every attempt and send it
 * to the DLQ while the other audit runs for minutes.
 */
async function attemptRow(core: ReconcileCore, locks: RunLocks, rowId: number, deadline: number, o: RowRunOptions, final?: (row: ReconcileJobRow) => boolean): Promise<RowRun> {
  const attempts = o.attempts ?? DEFAULT_ATTEMPTS;
  const spent = await failSpentRun(core.pool, rowId, attempts, {
    code: 'INTERRUPTED',
    message: `all ${attempts} attempts of this job were interrupted before they ended (the function timed out, or its container was stopped); it is not run again. A job other than a full audit must finish within the function's timeout: reconcile smaller paths`,
    retryable: false,
    attempts,
  });
  if (spent) {
    const backend = (await findMount(core.pool, spent.mountId).catch(() => null))?.kind ?? 'unknown';
    core.metrics.reconcileJobs.inc({ backend, reason: spent.reason, outcome: 'failed' });
    return { outcome: 'failed', job: spent, report: null, interrupted: true };
  }
  const row = await findJob(core.pool, rowId);
  if (row && (row.status === 'queued' || row.status === 'running') && isFullAudit(row) && (await locks.auditRunning(row.mountId))) {
    return { outcome: 'busy', job: row, report: null };
  }
  const worker = new ReconcileWorker({ pool: core.pool, metrics: core.metrics, handler: createReconciler(core, o.reconciler) });
  const report = await worker.run(rowId, { reclaim: true, limits: { deadline }, finalAttempt: (row) => row.attempts >= attempts || final?.(row) === true });
  // Another audit of the mount took its lock after the look above (AuditBusyError): the row is
  // queued again with its attempt given back, and is busy like one caught by that look.
  if (report.outcome === 'deferred') return { outcome: 'busy', job: report.job, report };
  return { outcome: report.outcome, job: report.job, report };
}

/**
 * Runs queued row `rowId` under its run lock with `deadline` (the reconcile Lambda, per SQS
 * message). `busy` when another run holds the row. `final` may declare this the last attempt
 * (the message's last delivery before the DLQ).
 */
export async function runQueuedRow(core: ReconcileCore, rowId: number, deadline: number, o: RowRunOptions & { final?: (row: ReconcileJobRow) => boolean } = {}): Promise<RowRun> {
  const locks = await RunLocks.open(core.pool);
  try {
    if (!(await locks.tryRow(rowId))) return { outcome: 'busy', job: await findJob(core.pool, rowId), report: null };
    return await attemptRow(core, locks, rowId, deadline, o, o.final);
  } finally {
    await locks.close();
  }
}

/** The audit Lambda's event (EventBridge Scheduler's input): one mount (id or key), or every S3 mount. */
export interface AuditEvent {
  mountId?: string | undefined;
}

export interface MountAudit {
  mountId: string;
  key: string;
  /**
   * A worker's outcome (`stopped`: continues at the next invocation); `busy`: another
   * invocation or worker is auditing the mount; `deferred`: no time left for it in this one.
   */
  outcome: AttemptOutcome | 'busy' | 'deferred';
  jobId: number | null;
  /** Where a stopped audit continues. */
  after?: string | undefined;
}

export interface AuditRunReport {
  mounts: MountAudit[];
}

export interface AuditRunOptions extends RowRunOptions {
  /**
   * Which mounts an event without mountId audits, of the active S3 mounts (default: all). Tests
   * keep to their own mounts: a catalogue shared with other test files holds many more.
   */
  scope?: ((mountId: string) => boolean) | undefined;
}

/**
 * The audit Lambda's work: for the mount of `event` (or each active S3 mount, the longest
 * unaudited first) claims or resumes its audit job and runs it until the budget's deadline,
 * when it stops at a checkpoint; the next invocation continues it (no self-invocation). One
 * invocation per mount at a time: a second returns `busy` without a job of its own. Mounts left
 * when the deadline has passed are `deferred`. Then sets filestore_audit_age_seconds{mount} of
 * the mounts looked at (published with the invocation's metrics).
 */
export async function runAudits(core: ReconcileCore, event: AuditEvent, budget: LambdaBudget, o: AuditRunOptions = {}): Promise<AuditRunReport> {
  requireRunPool(core, 'audit');
  const deadline = budgetDeadline(budget);
  const mounts = (await auditedMounts(core, event)).filter((m) => event.mountId !== undefined || !o.scope || o.scope(m.id));
  const report: AuditRunReport = { mounts: [] };
  for (const mount of mounts) {
    // The first mount always gets its run (a run reaches its first checkpoint whatever the budget).
    if (report.mounts.length > 0 && Date.now() >= deadline) {
      report.mounts.push({ mountId: mount.id, key: mount.key, outcome: 'deferred', jobId: null });
      continue;
    }
    report.mounts.push(await auditMount(core, mount, deadline, o));
  }
  if (mounts.length > 0) await recordAuditAges(core.pool, core.metrics, { mountIds: mounts.map((m) => m.id) });
  return report;
}

async function auditedMounts(core: ReconcileCore, event: AuditEvent): Promise<Mount[]> {
  if (event.mountId !== undefined) {
    const mount = await getMount(core.pool, event.mountId);
    if (mount.kind !== 's3') {
      throw new FilestoreError('VALIDATION_ERROR', `mount "${mount.key}" is local: its agent audits it (FILESTORE_AUDIT_CRON); the audit Lambda audits S3 mounts`);
    }
    return mount.state === 'active' ? [mount] : [];
  }
  const all = (await listMounts(core.pool)).filter((m) => m.kind === 's3' && m.state === 'active');
  const { rows } = await core.pool.query<{ id: string; audited: Date | null }>(
    'SELECT id, coalesce(audited_at, created_at) AS audited FROM filestore.mounts WHERE id = ANY ($1::uuid[])',
    [all.map((m) => m.id)],
  );
  const since = new Map(rows.map((r) => [r.id, r.audited?.getTime() ?? 0]));
  return all.sort((a, b) => (since.get(a.id) ?? 0) - (since.get(b.id) ?? 0) || (a.key < b.key ? -1 : 1));
}

async function auditMount(core: ReconcileCore, mount: Mount, deadline: number, o: RowRunOptions): Promise<MountAudit> {
  const done = (outcome: MountAudit['outcome'], job: ReconcileJobRow | null): MountAudit => ({
    mountId: mount.id,
    key: mount.key,
    outcome,
    jobId: job?.id ?? null,
    ...(outcome === 'stopped' && job?.checkpoint ? { after: job.checkpoint.after } : {}),
  });
  const locks = await RunLocks.open(core.pool);
  try {
    if (!(await locks.tryAuditClaim(mount.id))) return done('busy', null);
    // The mount's open full audit, whoever asked for it (a schedule, POST /v1/reconcile): the
    // one a killed invocation left running first (its checkpoint holds its progress), else the
    // waiting one; none: a new row. Its transport is `sqs`: stopped at a checkpoint it waits
    // for the next invocation, and BullMQ consumers (an agent, which may lack S3 access) leave
    // it alone — one a BullMQ producer recorded is adopted, under the row's run lock.
    const row =
      (await openAudit(core, mount.id)) ??
      (await enqueueJob(core.pool, toNewJob({ mountId: mount.id, path: '', reason: 'audit', recursive: true, hash: false }), { transport: 'sqs' })).job;
    if (!(await locks.tryRow(row.id))) return done('busy', row);
    await setJobTransport(core.pool, row.id, 'sqs');
    const run = await attemptRow(core, locks, row.id, deadline, o);
    return done(run.outcome, run.job ?? row);
  } finally {
    await locks.close();
  }
}

async function openAudit(core: ReconcileCore, mountId: string): Promise<ReconcileJobRow | null> {
  const { rows } = await core.pool.query<ReconcileJobRow>(
    `SELECT ${JOB_COLUMNS} FROM filestore.reconciliation_jobs
      WHERE mount_id = $1 AND path = '' AND status IN ('running', 'queued') AND coalesce((options->>'recursive')::boolean, false)
      ORDER BY status = 'running' DESC, id LIMIT 1`,
    [mountId],
  );
  return rows[0] ?? null;
}

const ReconcileEnv = z.object({
  FILESTORE_MAX_MISSING_RATIO: z.coerce.number().min(0).max(1).default(0.5),
  FILESTORE_S3_MISSING_GRACE_MS: z.coerce.number().int().min(0).max(600_000).default(2_000),
});

/** The engine's settings of a Lambda's environment (SPEC §8, as shared/config.ts reads them); CONFIG_ERROR naming a bad one. */
export function reconcilerOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): ReconcilerOptions {
  const parsed = ReconcileEnv.safeParse(env);
  if (!parsed.success) {
    throw new FilestoreError('CONFIG_ERROR', `invalid reconcile settings: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  return { maxMissingRatio: parsed.data.FILESTORE_MAX_MISSING_RATIO, s3MissingGraceMs: parsed.data.FILESTORE_S3_MISSING_GRACE_MS };
}
