import type { SkipReason } from '../backends/skipped.ts';
import type { ReconcileJobRow } from '../catalogue/jobs.ts';

/** Why a reconciliation runs (SPEC §3 `reconciliation_jobs.reason`). */
export type ReconcileReason = 'drift' | 'audit' | 'manual' | 's3_event' | 'recovery';

/** A request to bring the catalogue of `path` (and, if recursive, its subtree) in line with storage. */
export interface ReconcileRequest {
  mountId: string;
  /** Canonical path; "" is the mount root (with recursive: a full audit). */
  path: string;
  reason: ReconcileReason;
  /** The whole subtree; otherwise the path itself and, for a directory, its direct children. */
  recursive: boolean;
  /** Compare content by sha256 too (catches a change that kept size and mtime). */
  hash: boolean;
  /** Apply an audit even when it would mark more than FILESTORE_MAX_MISSING_RATIO of the mount MISSING. */
  force?: boolean | undefined;
  /**
   * A follow-up of a run that found these paths held by another writer: its generation (1 for
   * the first). A run that is itself the last allowed generation leaves what is still held to
   * the next audit instead of queueing another (reconciler.ts, MAX_FOLLOW_UPS).
   */
  followUp?: number | undefined;
  /**
   * S3: the sequencer of the event notification that asked for this run (shared/reconcile/
   * sequencer.ts). Once the run has looked at the key, it is recorded on the path's node if
   * newer than the one stored, so later duplicates and older events can be dropped.
   */
  sequencer?: string | undefined;
}

/**
 * When a run should stop early. Both are looked at at each checkpoint of a full audit (every
 * `checkpointEvery` entries): the run stops there, cleanly — its checkpoint saved, nothing
 * marked MISSING from the incomplete scan, the job left to continue after it — and reports
 * `stopped`. A run always gets to its first checkpoint, so runs in a row make progress
 * whatever the budget. Other runs (a path, a directory's children, a subtree) have no
 * checkpoints and run to their end.
 */
export interface RunLimits {
  signal?: AbortSignal | undefined;
  /** Epoch milliseconds (Date.now()) at or after which the run stops at its next checkpoint. */
  deadline?: number | undefined;
}

/** The result counts of SPEC §6 / issue 4, kept in `reconciliation_jobs.result`. */
export interface ReconcileCounts {
  /** Entries compared (storage and catalogue together, each path once). */
  checked: number;
  unchanged: number;
  /** Existing nodes whose record changed (metadata, content, kind) or that came back from MISSING. */
  updated: number;
  /** Untracked objects found on storage and catalogued. */
  discovered: number;
  /** Nodes gone from storage, marked MISSING. */
  missing: number;
  /**
   * Paths another writer (a command, another run) held through the wait: not written by this
   * run, left to a follow-up job for them (or, after the last follow-up, to the next audit).
   */
  deferred: number;
  /**
   * Names on storage the catalogue cannot hold (backends/skipped.ts: control characters, not
   * UTF-8, not NFC, FIFOs, sockets, devices), passed over by the walk. Known when the walk ends.
   */
  skipped: number;
}

/** A finished run's result: its counts, and what was skipped by reason with a few escaped paths (when anything was). */
export interface ReconcileResult extends ReconcileCounts {
  skippedByReason?: Partial<Record<SkipReason, number>> | undefined;
  skippedSample?: string[] | undefined;
  /**
   * The run stopped early at a checkpoint (RunLimits): the counts are those up to `after`, the
   * last path recorded; the job continues after it when run again. Not a failure.
   */
  stopped?: { after: string } | undefined;
}

export const zeroCounts = (): ReconcileCounts => ({ checked: 0, unchanged: 0, updated: 0, discovered: 0, missing: 0, deferred: 0, skipped: 0 });

/** Runs one job (the engine, shared/reconcile/reconciler.ts); `progress` is called now and then with counts so far; `limits` may stop it early. */
export type ReconcileHandler = (job: ReconcileJobRow, progress: (counts: ReconcileCounts) => Promise<void>, limits?: RunLimits) => Promise<ReconcileResult>;
