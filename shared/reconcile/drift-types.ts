import type { EntryStat } from '../backends/types.ts';
import type { CatalogueNode } from '../catalogue/types.ts';
import type { PoolClient } from '../db/pool.ts';
import type { ReconcileCore } from './core.ts';
import type { DriftObserver } from './drift-observer.ts';
import type { JobTarget } from './job-plan.ts';

/*
 * The shapes of detectDrift (drift.ts): what it is given, what it returns, and the hook by
 * which a caller works inside a chunk's transaction (DriftTx, the S3-event batch apply).
 */

/** What a path amounts to over the window its signals covered (a watcher's coalesced events, an S3 event). */
export type DriftChange = 'created' | 'changed' | 'deleted';

/** Paths storage says changed, judged together (a watcher's coalesced batch, the keys of an SQS batch). */
export interface DriftBatch {
  changes: ReadonlyMap<string, DriftChange>;
  /** Subtrees to reconcile whole without judging (a watcher that lost events). */
  rescans?: readonly string[] | undefined;
  /** When each path was reported (performance.now() of this process): see `waiting` in DriftResult. */
  seenAt?: ReadonlyMap<string, number> | undefined;
  /**
   * S3: the newest event sequencer per key. A path found as recorded (Filestore's own write,
   * a duplicate) gets it stored on its node here; a path that needs a reconciliation gets it
   * from that reconciliation (reconcilePath's `sequencer`), which the caller's `dispatch` runs.
   */
  sequencers?: ReadonlyMap<string, string> | undefined;
  /**
   * Database time read before anything of this batch was looked at in storage (saves the
   * first chunk its own `SELECT now()`): rows changed after it are deferred, not judged. A
   * caller that read the catalogue just before passes that statement's now().
   */
  since?: Date | undefined;
}

/** What detectDrift needs of the core. */
export type DriftCore = ReconcileCore;

export interface DriftOptions {
  /** `reason` in the drift events (default 'watcher'). */
  reason?: string | undefined;
  /** How storage is looked at (default: driftObserverFor the mount; pass one built once for a long-lived caller). */
  observer?: DriftObserver | undefined;
  /** Paths judged per transaction, whose jobs are sent before the next chunk is judged (default 1,000). */
  chunkSize?: number | undefined;
  /** Untracked entries of one directory in one batch at or above which they are reported by one event (default 16). */
  groupUntrackedAt?: number | undefined;
  /** Reconcile jobs one batch may enqueue before targets move up the tree (default 32; for the default dispatch). */
  maxJobs?: number | undefined;
  /** No hand-back (a watcher closing): paths held or waiting get a job instead of being returned. */
  final?: boolean | undefined;
  /**
   * Called with the directories that appeared in the batch (created, the topmost ones) before
   * its last jobs are sent; returns those that need a recursive look (the agent's parcel
   * backend does not watch what a new directory held).
   */
  beforeJobs?: ((appeared: string[]) => Promise<string[]>) | undefined;
  /**
   * Asked after each chunk's look at storage: is the root still the one approved for this
   * batch? false: what was seen is not the mount's, the chunk is `dropped` unjudged; null
   * (the look failed): handed back unjudged (`deferred`). The agent's root guard.
   */
  rootUnchanged?: (() => Promise<boolean | null>) | undefined;
  /**
   * Where the reconciliations go: receives the targets of a chunk (unplanned) and returns how
   * many requests it made. Default: planned (job-plan.ts) and enqueued with reason 'drift',
   * within `maxJobs` per batch. The S3-event Lambda reconciles each key inline instead.
   */
  dispatch?: ((targets: JobTarget[]) => Promise<number>) | undefined;
  /** Leave out paths a listing of their directory already on its way will see (default true; costs one query per batch). */
  skipCoveredByListings?: boolean | undefined;
  /**
   * Work done in each chunk's transaction after its drift writes, before its COMMIT, on what
   * was judged: the S3-event handler applies the plain drifted keys there (s3-events/apply.ts).
   */
  inTransaction?: DriftTx | undefined;
}

/** What a chunk's transaction holds when `inTransaction` runs: the path locks, and what was read after them. */
export interface JudgedChunk {
  client: PoolClient;
  /** The chunk's reconciliation targets (also handed to `dispatch` after the COMMIT). */
  targets: JobTarget[];
  /** What the look at storage found (null: gone; undefined: could not be read), after `since`. */
  observed: ReadonlyMap<string, EntryStat | null | undefined>;
  /** Live rows of the chunk's paths and of `also`'s, as read after the locks (marked rows as marked). */
  live: ReadonlyMap<string, CatalogueNode>;
  /** Paths whose locks this transaction holds. */
  free: ReadonlySet<string>;
  /** Paths whose rows a write changed after `since`. */
  changed: ReadonlySet<string>;
  since: Date;
}

/** What `inTransaction` adds to the COMMIT's round trip: statements as text (after the drift events), rows to mark checked with their sequencers. */
export interface TxWork {
  sql: Array<string | null>;
  touched: Array<{ id: number; sequencer: string | undefined }>;
  /** Statements as text sent last, after the checks and just before the COMMIT (a row lock taken there is held for no wait of ours). */
  last?: Array<string | null>;
  /** The catalogue changed (beyond drift marks): the chunk's commit is followed by core.changed() even without drift. */
  changed?: boolean;
}

export interface DriftTx {
  /** More paths to read with a chunk's (what `run` needs to see). */
  also(paths: string[]): string[];
  /** On the chunk's connection; a failure fails the chunk, unless `run` undid its own writes itself and returned. */
  run(tx: JudgedChunk): Promise<TxWork>;
}

export interface DriftResult {
  /** Paths compared with the catalogue. */
  checked: number;
  /** Paths left to a queued listing of their directory (not judged, no job of their own). */
  covered: number;
  /**
   * Paths a running listing of their directory will see: not judged now, to be looked at again
   * once it is over (`seenAt` kept): by then they match the catalogue, or, if that listing
   * could not record one (someone else held it), they are judged as usual.
   */
  waiting: string[];
  /** Drift signals written (nodes marked INCONSISTENT + untracked paths reported). */
  drift: number;
  /** Paths a running command holds (or looked at while the root could not be looked at): look again later. */
  deferred: string[];
  /** Paths looked at while the root changed (`rootUnchanged` said false): not judged, not to be looked at again. */
  dropped: string[];
  /** Reconcile requests made. */
  jobs: number;
  /**
   * What the look at storage found at each path judged to need a reconciliation (null: gone),
   * as of after `since`: a caller that reconciles them itself may apply it without looking again.
   */
  observed: Map<string, EntryStat | null>;
  /** The database time read before the first chunk's look at storage (what `observed` is newer than). */
  since: Date | undefined;
}
