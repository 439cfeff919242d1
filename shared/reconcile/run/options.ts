/** The engine's settings (createReconciler's options), and what the parts of one run share. */
import type { EntryStat } from '../../backends/types.ts';
import type { ReconcileJobRow } from '../../catalogue/jobs.ts';
import type { Guard } from '../../catalogue/reconcile-writes.ts';
import type { Mount } from '../../catalogue/types.ts';
import type { ReconcileCore } from '../core.ts';
import type { ReconcileCounts, ReconcileRequest } from '../types.ts';

export interface ReconcilerOptions {
  /** FILESTORE_MAX_MISSING_RATIO (default 0.5). */
  maxMissingRatio?: number | undefined;
  /** FILESTORE_S3_MISSING_GRACE_MS (default 2000). */
  s3MissingGraceMs?: number | undefined;
  /** Rows per catalogue write (default 2,000). */
  batchSize?: number | undefined;
  /** This process's agent id: a local mount owned by another agent is that agent's to reconcile. */
  agentId?: string | undefined;
  /** Entries between checkpoints of a full audit (default 10,000). */
  checkpointEvery?: number | undefined;
  /**
   * How long a write waits for the paths another writer holds before leaving them to a follow-up
   * job (default 5,000 ms, for all the locks of a batch together).
   */
  lockWaitMs?: number | undefined;
  /** Wraps the storage walk: fault injection for tests and drills (a listing that fails part-way). */
  wrapWalk?: ((walk: AsyncIterable<EntryStat>) => AsyncIterable<EntryStat>) | undefined;
}

/** What the run loop hands its batch writer and MISSING marker: one run's core, target, request, options, the writes' guard and counts. */
export interface RunContext {
  core: ReconcileCore;
  mount: Mount;
  job: ReconcileJobRow;
  request: ReconcileRequest;
  o: ReconcilerOptions;
  guard: Guard;
  counts: ReconcileCounts;
}
