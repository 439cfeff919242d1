/** The engine's settings (createReconciler's options), shared by the run's parts. */
import type { EntryStat } from '../../backends/types.ts';

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
