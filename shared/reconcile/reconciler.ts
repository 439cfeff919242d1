/**
 * The engine behind every reconciliation job: createReconciler, and the per-mount audit lock
 * around a run. The run itself is in run/: the loop (run-loop.ts), the comparison
 * (compare.ts), the batch writer (batch-writer.ts), MISSING and the mass-missing rule
 * (missing.ts).
 */
import type { ReconcileJobRow } from '../catalogue/jobs.ts';
import { getMount } from '../catalogue/mounts.ts';
import { lockKey } from '../catalogue/locks.ts';
import { normalizePath } from '../paths.ts';
import type { ReconcileCore } from './core.ts';
import { AuditBusyError, ReconcileError } from './errors.ts';
import type { ReconcilerOptions } from './run/options.ts';
import { Run } from './run/run-loop.ts';
import type { ReconcileCounts, ReconcileHandler, ReconcileRequest, ReconcileResult, RunLimits } from './types.ts';

export type { ReconcilerOptions };

/** What the engine needs of the core: the catalogue, storage, metrics, the queue (follow-ups), cache and relay. */
export type { ReconcileCore };

/** The engine behind every reconciliation job (queue workers call it with the job row). */
export function createReconciler(core: ReconcileCore, o: ReconcilerOptions = {}): ReconcileHandler {
  return (job, progress, limits) => reconcileJob(core, job, o, progress, limits ?? {});
}

async function reconcileJob(
  core: ReconcileCore,
  job: ReconcileJobRow,
  o: ReconcilerOptions,
  progress: (counts: ReconcileCounts) => Promise<void>,
  limits: RunLimits,
): Promise<ReconcileResult> {
  const opts = job.options as { recursive?: boolean; hash?: boolean; force?: boolean; sequencer?: string };
  const request: ReconcileRequest = {
    mountId: job.mountId,
    path: normalizePath(job.path),
    reason: job.reason,
    recursive: opts.recursive !== false,
    hash: opts.hash === true,
    sequencer: typeof opts.sequencer === 'string' ? opts.sequencer : undefined,
  };
  const mount = await getMount(core.pool, request.mountId);
  if (mount.kind === 'local' && mount.agentId && o.agentId && mount.agentId !== o.agentId) {
    // Its disk is not on this host: looking would find the root missing and call the mount unhealthy.
    throw new ReconcileError(`local mount "${mount.key}" belongs to agent "${mount.agentId}", not "${o.agentId}"`, true, { agentId: mount.agentId });
  }
  const isAudit = request.path === '' && request.recursive;
  // At most one audit of a mount runs at a time, across processes: a session lock held on a
  // connection of its own for the audit's duration (gone with the process if it dies).
  const auditLock = isAudit ? await core.pool.connect() : null;
  try {
    if (auditLock) {
      const key = lockKey('audit', mount.id).toString();
      // Another audit of the mount running (the watcher's catch-up of a mount just added, a
      // scheduled one): this one is not waited for here — waiting held a queue worker slot and
      // a pool connection, so every other mount's jobs waited behind it. AuditBusyError at
      // once: the worker puts the job back as queued without spending an attempt (outcome
      // `deferred`) and each queue tries it again later (worker.ts, shared/queues/).
      const { rows } = await auditLock.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [key]);
      if (!rows[0]?.ok) throw new AuditBusyError(mount.key, mount.id);
    }
    const run = new Run(core, mount, job, request, o, progress, limits);
    return await run.execute(opts.force === true);
  } finally {
    if (auditLock) {
      await auditLock.query('SELECT pg_advisory_unlock_all()').catch(() => {});
      auditLock.release();
    }
  }
}
