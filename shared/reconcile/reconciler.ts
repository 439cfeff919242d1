import type { EntryStat, HashedFile } from '../backends/types.ts';
import { FilestoreError } from '../errors.ts';
import { saveCheckpoint, type ReconcileJobRow } from '../catalogue/jobs.ts';
import { getMount } from '../catalogue/mounts.ts';
import { findLiveByPath, scopePages, scopeRowId, scopeRowNode, type ScopeRow } from '../catalogue/nodes.ts';
import { recordsExactly, rowEntry, rowOfEntry, type StorageRow } from '../backends/entry-lines.ts';
import { SkippedNames, type SkipReason } from '../backends/skipped.ts';
import { loadAuditCandidates, saveAuditCandidates } from '../catalogue/audit-candidates.ts';
import { newNodeFromStat, recordSequencers, type NewNode } from '../catalogue/node-writes.ts';
import {
  applyChanges,
  analyzeIfStale,
  countLiveNodes,
  insertDiscovered,
  markMissing,
  reactivate,
  recordAudit,
  touchChecked,
  touchedSince,
  isLockTimeout,
  lockPathsForWrite,
  type Guard,
  type Observation,
} from '../catalogue/reconcile-writes.ts';
import { addInsertedToAncestors, recomputeRollupsCorrectingAncestors } from '../catalogue/rollups.ts';
import type { CatalogueNode, Mount } from '../catalogue/types.ts';
import { inTransaction, type Pool } from '../db/pool.ts';
import { lockKey } from '../catalogue/locks.ts';
import { ancestorsOf, comparePaths, isSameOrDescendant, normalizePath, parentOf } from '../paths.ts';
import type { ReconcileCore } from './core.ts';
import { AuditBusyError, MassMissingError, ReconcileError, ScanFailedError } from './errors.ts';
import { RunRoot } from './run-root.ts';
import { batches, flatten, mapItems, mergeBatches, pairPath } from './merge.ts';
import { EnqueueError, enqueuePlanned, type JobTarget } from './job-plan.ts';
import { strategyFor, type ReconcileStrategy } from './strategy.ts';
import { zeroCounts, type ReconcileCounts, type ReconcileHandler, type ReconcileRequest, type ReconcileResult, type RunLimits } from './types.ts';

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

// A ratio of a handful of nodes says nothing about an unmounted disk; below this many live
// nodes the mass-missing rule does not apply.
const MIN_NODES_FOR_RATIO = 20;
// Progress (the job row's counts, for `filestore reconcile --wait`) every PROGRESS_EVERY
// entries and at most every PROGRESS_MS, written beside the work rather than awaited by it:
// awaited every 2,000 entries, a 100k audit waited on ~50 UPDATEs of its job row.
const PROGRESS_EVERY = 2_000;
const PROGRESS_MS = 250;
// A full audit records where it is this often, so a retry (or the next Lambda invocation)
// continues from there instead of listing a huge bucket from the start.
const CHECKPOINT_EVERY = 10_000;
// Another writer holding a path is usually another run's batch transaction (milliseconds); a
// command holds its paths from its journal entry to its catalogue commit (an upload: as long
// as the upload). A run waits this long, then leaves the path to a follow-up job, whose own
// run waits again: a chain of at most MAX_FOLLOW_UPS, after which the next audit has it.
const LOCK_WAIT_MS = 5_000;
const MAX_FOLLOW_UPS = 3;

/**
 * A batch's statements are planned for the batch they write, at each execution. The pool keeps
 * generic plans (pool.ts: planned once per connection, without the parameters' values): planned
 * while a mount's catalogue was near empty (the start of a discovery) or from statistics no
 * ANALYZE has refreshed (autovacuum off or behind), they kept joining a batch of 2,000 paths to
 * every node of the mount (an index scan on mount_id, the path as a filter): a discovery's batch
 * writes grew with the catalogue, 20k files took 27 s and 100k several minutes. A custom plan
 * sees the arrays' lengths and the tables' current sizes; planning a few statements per batch
 * of thousands of rows costs next to nothing.
 */
const CUSTOM_PLANS = 'SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off';

/**
 * Statistics kept up with the catalogue (reconcile-writes.ts, analyzeIfStale): looked at when
 * an audit starts, at its checkpoints and when it ends, never awaited by its work, one ANALYZE
 * pass at a time per process. A table is analysed once it changed by STALE_SHARE of its rows
 * since its last ANALYZE (at least STALE_MIN rows): a discovery of N nodes analyses about
 * log2(N / STALE_MIN) times, each reading a sample of bounded size.
 */
const STALE_SHARE = 1;
const STALE_MIN = 5_000;
let analyzing: Promise<unknown> | null = null;
let analyzeAgain: Pool | null = null;
function refreshStatistics(pool: Pool): void {
  if (analyzing) {
    analyzeAgain = pool; // one more look once this one is done (an audit's end, say)
    return;
  }
  analyzing = analyzeIfStale(pool, { share: STALE_SHARE, minChanged: STALE_MIN })
    .catch(() => {}) // statistics are an optimisation: a failure (no privilege, a closing pool) changes nothing else
    .finally(() => {
      analyzing = null;
      const again = analyzeAgain;
      analyzeAgain = null;
      if (again) refreshStatistics(again);
    });
}

// What hashing a file the walk saw can meet when it changed since: gone, or no longer a file.
const CHANGED_SINCE_WALK = new Set(['NOT_FOUND', 'IS_A_DIRECTORY', 'NOT_A_DIRECTORY', 'SYMLINK_IN_PATH']);

/** One transaction's worth of catalogue writes that need their paths locked. */
interface Writes {
  changes: Observation[];
  confirm: CatalogueNode[];
  discovered: NewNode[];
}
/** A batch handed to the writer: its writes, and the unchanged rows (ids) and hashes it records as checked. */
interface Batch {
  writes: Writes;
  unchanged: number[];
  learned: Map<number, string>;
}
const writesCount = (w: Writes) => w.changes.length + w.confirm.length + w.discovered.length;

/** What the engine needs of the core: the catalogue, storage, metrics, the queue (follow-ups), cache and relay. */
export type { ReconcileCore };

/** The engine behind every reconciliation job (queue workers call it with the job row). */
export function createReconciler(fs: ReconcileCore, o: ReconcilerOptions = {}): ReconcileHandler {
  return (job, progress, limits) => reconcileJob(fs, job, o, progress, limits ?? {});
}

async function reconcileJob(
  fs: ReconcileCore,
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
  const mount = await getMount(fs.pool, request.mountId);
  if (mount.kind === 'local' && mount.agentId && o.agentId && mount.agentId !== o.agentId) {
    // Its disk is not on this host: looking would find the root missing and call the mount unhealthy.
    throw new ReconcileError(`local mount "${mount.key}" belongs to agent "${mount.agentId}", not "${o.agentId}"`, true, { agentId: mount.agentId });
  }
  const isAudit = request.path === '' && request.recursive;
  // At most one audit of a mount runs at a time, across processes: a session lock held on a
  // connection of its own for the audit's duration (gone with the process if it dies).
  const auditLock = isAudit ? await fs.pool.connect() : null;
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
    const run = new Run(fs, mount, job, request, o, progress, limits);
    return await run.execute(opts.force === true);
  } finally {
    if (auditLock) {
      await auditLock.query('SELECT pg_advisory_unlock_all()').catch(() => {});
      auditLock.release();
    }
  }
}

/** One reconciliation: walk, compare, apply in batches, then the destructive part (MISSING) only after a complete scan. */
class Run {
  private readonly strategy: ReconcileStrategy;
  private readonly root: RunRoot;
  private readonly counts = zeroCounts();
  private guard!: Guard;
  private readonly batchSize: number;
  // pending writes of the current batch
  private changes: Observation[] = [];
  private confirm: CatalogueNode[] = [];
  private discovered: NewNode[] = [];
  private unchanged: number[] = [];
  private learned = new Map<number, string>();
  private missingCandidates: CatalogueNode[] = [];
  private lastProgress = 0;
  private lastProgressAt = Number.NEGATIVE_INFINITY;
  private progressing: Promise<void> | null = null;
  /** A complete audit: unchanged rows are only counted (the mount's audit mark covers them). */
  private countOnlyUnchanged = false;
  /** Parents of nodes whose kind changed: their rollups are recomputed from the rows at the end. */
  private readonly recomputeAt = new Set<string>();
  private liveAtStart: Promise<number> = Promise.resolve(0);
  /** What other writers held through the wait: the follow-up job's targets. */
  private readonly deferred: JobTarget[] = [];
  /** Names the walk passed over (the listing counts them, off the per-entry path; totals come at its end). */
  private readonly skipped = new SkippedNames();

  constructor(
    private readonly fs: ReconcileCore,
    private readonly mount: Mount,
    private readonly job: ReconcileJobRow,
    private readonly request: ReconcileRequest,
    private readonly o: ReconcilerOptions,
    private readonly progress: (counts: ReconcileCounts) => Promise<void>,
    private readonly limits: RunLimits,
  ) {
    this.strategy = strategyFor(mount, () => fs.backends.forMount(mount), { s3MissingGraceMs: o.s3MissingGraceMs ?? 2_000, catalogue: fs.pool });
    this.root = new RunRoot(fs.pool, mount, this.strategy, request.path === '' && request.recursive);
    this.batchSize = o.batchSize ?? 2_000;
  }

  private get pool(): Pool {
    return this.fs.pool;
  }

  async execute(force: boolean): Promise<ReconcileResult> {
    try {
      return await this.executeRun(force);
    } finally {
      await this.progressing; // nothing of the run is left running after it
    }
  }

  /** Progress now, unless a report is still being written or the last one is too recent. */
  private reportProgress(): void {
    // The next look comes PROGRESS_EVERY entries later either way (not on every entry).
    this.lastProgress = this.counts.checked;
    const now = performance.now();
    if (this.progressing !== null || now - this.lastProgressAt < PROGRESS_MS) return;
    this.lastProgressAt = now;
    const counts = { ...this.counts };
    // The worker's callback logs a failed write itself: progress must not fail the work, even
    // a callback that throws rather than rejects.
    this.progressing = Promise.resolve()
      .then(() => this.progress(counts))
      .catch(() => {})
      .finally(() => (this.progressing = null));
  }

  private async executeRun(force: boolean): Promise<ReconcileResult> {
    // The root is readable and the mount's own (not another directory where it was): run-root.ts.
    await this.root.begin();
    const { rows } = await this.pool.query<{ now: Date }>('SELECT now() AS now');
    this.guard = { mountId: this.mount.id, jobId: this.job.id, scanStartedAt: rows[0]?.now as Date };

    await this.discoverAncestors();
    // A full audit interrupted or stopped earlier continues after the last path it had fully
    // recorded. MISSING candidates of the ranges before were saved with the checkpoints and are
    // marked when the scan is complete (applyMissing): nothing is marked from a partial scan.
    const isAudit = this.request.path === '' && this.request.recursive;
    const resume = isAudit ? (this.job.checkpoint ?? undefined) : undefined;
    if (resume) Object.assign(this.counts, resume.counts);
    const every = this.o.checkpointEvery ?? CHECKPOINT_EVERY;
    if (isAudit) this.refreshStatistics();
    // A complete audit marks the mount checked as of when it (its first attempt) began,
    // instead of rewriting every row it finds unchanged (rows.ts reads the later of the two).
    this.countOnlyUnchanged = isAudit;
    // The mass-missing rule's denominator. A whole audit reads every live node of the mount
    // anyway: it counts them as they come (below). A resumed one reads only what follows its
    // checkpoint, so it counts them in SQL, beside the walk (a count of a big mount is not free).
    const countAsRead = isAudit && !force && !resume;
    let liveRead = 0;
    if (isAudit && !force && resume) {
      const before = this.counts.discovered; // an earlier attempt's discoveries are in the count
      this.liveAtStart = countLiveNodes(this.pool, this.mount.id).then((n) => n - before);
      this.liveAtStart.catch(() => {}); // awaited in applyMissing
    }
    const auditStartedAt = resume?.startedAt ? new Date(resume.startedAt) : this.guard.scanStartedAt;
    let sinceCheckpoint = 0;
    let stoppedAfter: string | null = null;
    try {
      const raw = this.storageWalk(resume?.after);
      // Fault injection sees the entries one by one, as a listing that fails part-way would stop.
      const wrap = this.o.wrapWalk;
      const walk = wrap ? batches(mapItems(wrap(mapItems(flatten(raw), rowEntry)), rowOfEntry), 256) : raw;
      const nodes = scopePages(this.pool, this.mount.id, this.request.path, this.request.recursive, resume?.after);
      scan: for await (const pairs of mergeBatches(walk, nodes)) {
        for (let i = 0; i < pairs.seen.length; i++) {
          const seen = pairs.seen[i] ?? null;
          const node = pairs.node[i] ?? null;
          // Every live node but the mount's root (whose line starts with its empty path).
          if (countAsRead && node !== null && node.charCodeAt(0) !== 9) liveRead++;
          if (this.request.hash) await this.compareHashing(seen, node);
          else this.compare(seen, node, null);
          if (this.pendingWrites() >= this.batchSize) await this.flush();
          if (this.counts.checked - this.lastProgress >= PROGRESS_EVERY) this.reportProgress();
          if (isAudit && ++sinceCheckpoint >= every) {
            sinceCheckpoint = 0;
            // The checkpoint is saved once everything handed over up to this path is written,
            // in the writer's queue: the walk does not wait for it. Its counts are this path's:
            // what the comparison counted by now, plus what the writes up to here recorded.
            // The MISSING candidates so far are saved before it (they lie in the range it
            // covers): the run that completes the scan, this one or a later one, marks them.
            await this.flush();
            const after = pairPath(pairs, i);
            const counted = subtractCounts(this.counts, this.landed);
            const candidates = this.missingCandidates.splice(0);
            // What other writers held up to here is queued first: a retry resuming after this
            // path would never look at it again.
            this.inflight = this.inflight.then(async () => {
              await this.enqueueFollowUps();
              await saveAuditCandidates(this.pool, this.job.id, candidates);
              await saveCheckpoint(this.pool, this.job.id, { after, counts: { ...addCounts(counted, this.landed) }, startedAt: auditStartedAt.toISOString() });
            });
            void this.inflight.catch(() => {}); // surfaced by a later flush or the drain
            this.refreshStatistics();
            if (this.stopRequested()) {
              stoppedAfter = after;
              break scan;
            }
          }
        }
      }
    } catch (err) {
      // What was found so far is recorded; nothing is marked MISSING from a partial scan.
      await this.drain().catch(() => {});
      await this.finishRollups().catch(() => {});
      await this.enqueueFollowUps().catch(() => {});
      if (err instanceof ReconcileError) throw err;
      const e = err as { code?: string; message?: string };
      throw new ScanFailedError(e.message ?? String(err), { code: e.code });
    }
    if (stoppedAfter !== null) return this.stop(stoppedAfter);
    if (countAsRead) this.liveAtStart = Promise.resolve(liveRead);
    this.countSkipped();
    try {
      await this.drain();
      await this.applyMissing(force);
    } catch (err) {
      if (err instanceof MassMissingError) await this.root.refused(err).catch(() => {});
      // Refused (mass-missing) or failed after the scan: what was written keeps its rollups,
      // what was held still gets its follow-up.
      await this.finishRollups().catch(() => {});
      await this.enqueueFollowUps().catch(() => {});
      throw err;
    }
    await this.finishRollups();
    await this.enqueueFollowUps();
    if (isAudit) {
      await recordAudit(this.pool, this.mount.id, auditStartedAt);
      await this.root.completed();
      this.refreshStatistics();
    }
    if (resume || isAudit) await saveCheckpoint(this.pool, this.job.id, null);
    // An S3 event's key has been looked at: events up to this one are accounted for.
    if (this.request.sequencer && this.mount.kind === 's3') {
      await recordSequencers(this.pool, this.mount.id, [{ path: this.request.path, sequencer: this.request.sequencer }]);
    }
    if (this.skipped.total === 0) return { ...this.counts };
    const { byReason, sample } = this.skipped.summary();
    return { ...this.counts, skippedByReason: byReason, skippedSample: sample };
  }

  /**
   * refreshStatistics, except in a run with a deadline (a Lambda's): its pool has two
   * connections, one of them the audit lock's, and an ANALYZE would hold the other from the run.
   */
  private refreshStatistics(): void {
    if (this.limits.deadline === undefined) refreshStatistics(this.pool);
  }

  /** Whether the run's limits say stop (looked at at checkpoints only). */
  private stopRequested(): boolean {
    const { signal, deadline } = this.limits;
    return signal?.aborted === true || (deadline !== undefined && Date.now() >= deadline);
  }

  /**
   * Stops at the checkpoint just handed to the writer: everything up to it is written and the
   * checkpoint saved with the MISSING candidates so far (the next run continues after it and
   * marks them once the scan is complete); nothing is marked MISSING now.
   */
  private async stop(after: string): Promise<ReconcileResult> {
    await this.drain();
    await this.finishRollups();
    await this.enqueueFollowUps();
    return { ...this.counts, stopped: { after } };
  }

  /**
   * What the walk passed over, once it is complete: the count (the walk's own, not carried
   * over from a checkpoint: a resumed local walk reads the whole tree again) and the metric.
   */
  private countSkipped(): void {
    this.counts.skipped = this.skipped.total;
    for (const [reason, n] of Object.entries(this.skipped.byReason) as Array<[SkipReason, number]>) {
      this.fs.metrics.reconcileSkipped.inc({ mount: this.mount.key, reason }, n);
    }
  }

  /** What storage holds in the scope, in batches: the path itself, then (directories) its children or subtree. */
  private async *storageWalk(startAfter?: string): AsyncGenerator<StorageRow[]> {
    const self = await this.strategy.stat(this.request.path);
    if (!self) return;
    if (startAfter === undefined) yield [rowOfEntry(self)];
    if (self.kind !== 'directory') return;
    yield* this.strategy.listRows(this.request.path, this.request.recursive, startAfter, this.skipped);
  }

  /** The comparison with hashing asked for: the bytes of every file on storage are read. */
  private async compareHashing(stored: StorageRow | null, row: ScopeRow | null): Promise<void> {
    const seen = stored ? rowEntry(stored) : null;
    this.compare(stored, row, seen && seen.kind === 'file' ? await this.hashOf(seen) : null);
  }

  /**
   * The sha256 of exactly the version the walk saw, or null: a file rewritten while it was
   * read (no single version has that hash), or changed or gone since the walk (the hash would
   * be recorded beside a size and mtime it does not belong to), is compared without a hash
   * this time and looked at again by a follow-up job.
   */
  private async hashOf(seen: EntryStat): Promise<string | null> {
    let hashed: HashedFile | null;
    try {
      hashed = await this.strategy.hash(seen.path);
    } catch (err) {
      if (!(err instanceof FilestoreError && CHANGED_SINCE_WALK.has(err.code))) throw err;
      hashed = null;
    }
    if (hashed !== null && this.strategy.sameVersion(seen, hashed)) return hashed.sha256;
    this.defer([{ path: seen.path, recursive: false }]);
    return null;
  }

  private compare(stored: StorageRow | null, row: ScopeRow | null, sha256: string | null): void {
    this.counts.checked++;
    if (stored && row) {
      // Most rows of an audit are unchanged: the lines say so without building anything.
      if (sha256 === null && recordsExactly(row, stored)) {
        if (this.countOnlyUnchanged) this.counts.unchanged++;
        else this.unchanged.push(scopeRowId(row));
        return;
      }
      const seen = rowEntry(stored);
      const node = scopeRowNode(row, this.mount.id);
      const changed =
        seen.kind !== node.kind ||
        this.strategy.differs(node, seen) ||
        (sha256 !== null && node.sha256 !== null && sha256 !== node.sha256);
      if (changed) {
        this.changes.push({ node, seen, sha256 });
        return;
      }
      const learned = sha256 !== null && node.sha256 === null;
      if (learned) this.learned.set(node.id, sha256);
      if (node.consistencyState !== 'ACTIVE') this.confirm.push(node);
      else if (learned || !this.countOnlyUnchanged) this.unchanged.push(node.id);
      else this.counts.unchanged++;
    } else if (stored) {
      this.discovered.push(newNodeFromStat(rowEntry(stored), sha256));
    } else if (row) {
      const node = scopeRowNode(row, this.mount.id);
      if (node.consistencyState !== 'MISSING') this.missingCandidates.push(node);
      else if (this.countOnlyUnchanged) this.counts.unchanged++;
      else this.unchanged.push(node.id);
    }
  }

  /** filestore_node_transitions_total: ACTIVE→ACTIVE is a recorded change (drift reconciled), UNTRACKED→ACTIVE a discovery. */
  private transition(from: string, to: string): void {
    this.fs.metrics.nodeTransitions.inc({ from, to });
  }

  private pendingWrites(): number {
    return this.changes.length + this.confirm.length + this.discovered.length + this.unchanged.length;
  }

  /** The last batch handed to the writer; each batch is chained after the one before it. */
  private inflight: Promise<void> = Promise.resolve();
  /** The batch handed over before that one: what a new batch waits for (two in the writer at most). */
  private previous: Promise<void> = Promise.resolve();
  /** What the writes have recorded so far (also in `counts`): a checkpoint's counts are taken in two parts. */
  private readonly landed = zeroCounts();

  private land(delta: Partial<ReconcileCounts>): void {
    for (const [k, v] of Object.entries(delta) as Array<[keyof ReconcileCounts, number]>) {
      this.counts[k] += v;
      this.landed[k] += v;
    }
  }

  /**
   * Hands the pending writes to the writer, after the batch it is writing: batches land in
   * order (a discovered parent before its children). Returns once the batch before that one
   * is written, so the walk goes on while one batch is written and the next waits its turn.
   * (Waiting for the batch being written instead held the walk up at every checkpoint of a
   * drifted tree: a batch took longer to write than the next 10,000 entries took to compare.)
   */
  private async flush(): Promise<void> {
    await this.previous;
    // What the next flush waits for: everything handed over so far, checkpoints included (an
    // unchanged tree hands over no batch, and its checkpoints must not pile up either).
    this.previous = this.inflight;
    if (this.pendingWrites() === 0) return;
    const batch = this.takeBatch();
    this.inflight = this.inflight.then(() => this.write(batch));
    void this.inflight.catch(() => {}); // surfaced by a later flush or the drain
  }

  /** Waits until everything handed over is written. */
  private async drain(): Promise<void> {
    await this.flush();
    await this.inflight;
  }

  /** The pending writes, taken out as one batch. */
  private takeBatch(): Batch {
    const batch: Batch = {
      writes: { changes: this.changes, confirm: this.confirm, discovered: this.discovered },
      unchanged: this.unchanged,
      learned: this.learned,
    };
    this.changes = [];
    this.confirm = [];
    this.discovered = [];
    this.unchanged = [];
    this.learned = new Map();
    return batch;
  }

  /**
   * Writes the batch in one transaction, try-locking its paths. What another writer holds
   * right now (another run's batch, a command) is written in a second transaction that waits
   * for those locks; what is still held after LOCK_WAIT_MS is deferred to a follow-up job.
   * Nothing is skipped silently: a path is written, found changed since the scan began (the
   * guards of reconcile-writes.ts: its writer's record stands), or deferred.
   */
  private async write({ writes, unchanged, learned }: Batch): Promise<void> {
    if (writesCount(writes) === 0) {
      // Only checks to record: one statement, no transaction, nothing for caches or the relay.
      await touchChecked(this.pool, this.guard, unchanged, learned);
      this.land({ unchanged: unchanged.length });
      return;
    }
    await this.writeOrDefer(
      writes,
      // The checks are recorded with the first transaction.
      (w, waitMs) => (waitMs === undefined ? this.writeLocked(w, undefined, unchanged, learned) : this.writeLocked(w, waitMs)),
      writesCount,
      (held) => [
        ...held.changes.map((c) => this.followUpTarget(c.node.path, c.seen.kind, c.node.kind)),
        ...held.confirm.map((n) => this.followUpTarget(n.path, n.kind)),
        ...held.discovered.map((n) => this.followUpTarget(n.path, n.kind)),
      ],
    );
    await this.fs.changed(this.mount.id);
  }

  /**
   * A guarded write of `items`: one transaction with try-locks (`attempt` without a wait);
   * what another writer held then is written in a second that waits up to lockWaitMs for
   * those locks; what is still held after that is deferred to a follow-up job.
   */
  private async writeOrDefer<T>(items: T, attempt: (items: T, waitMs?: number) => Promise<T>, size: (items: T) => number, targets: (held: T) => JobTarget[]): Promise<void> {
    const held = await attempt(items);
    if (size(held) === 0) return;
    try {
      await attempt(held, this.o.lockWaitMs ?? LOCK_WAIT_MS);
    } catch (err) {
      if (!isLockTimeout(err)) throw err;
      this.defer(targets(held));
    }
  }

  /** A follow-up for a held path: its subtree too when this run is recursive and it is (or was) a directory. */
  private followUpTarget(path: string, ...kinds: string[]): JobTarget {
    return { path, recursive: this.request.recursive && kinds.includes('directory') };
  }

  /**
   * One transaction: locks the writes' paths (try-locks, or waiting up to `waitMs`), writes
   * what it locked, records `unchanged` as checked. Returns what it could not lock.
   */
  private async writeLocked(w: Writes, waitMs?: number, unchanged: number[] = [], learned = new Map<number, string>()): Promise<Writes> {
    const reason = this.request.reason;
    const client = await this.pool.connect();
    try {
      return await inTransaction(client, async () => {
        await client.query(CUSTOM_PLANS);
        const paths = [...w.changes.map((c) => c.node.path), ...w.confirm.map((n) => n.path), ...w.discovered.map((n) => n.path)];
        const locked = await lockPathsForWrite(client, this.mount.id, paths, waitMs);
        const mine: Writes = {
          changes: w.changes.filter((c) => locked.has(c.node.path)),
          confirm: w.confirm.filter((n) => locked.has(n.path)),
          discovered: w.discovered.filter((n) => locked.has(n.path)),
        };
        const updated = await applyChanges(client, this.guard, mine.changes, reason);
        const reactivated = await reactivate(client, this.guard, mine.confirm, reason);
        const touched = await touchedSince(client, this.guard, mine.discovered.map((n) => n.path));
        // Rows, snapshots, rollup rows and `filestore.node.reconciled` events (change `discovered`).
        const inserted = await insertDiscovered(client, this.mount.id, mine.discovered.filter((n) => !touched.has(n.path)), { jobId: this.job.id, reason });
        await addInsertedToAncestors(client, this.mount.id, inserted);
        await touchChecked(client, this.guard, unchanged, learned);
        const was = new Map([...mine.changes.map((c) => [c.node.id, c.node.consistencyState] as const), ...mine.confirm.map((n) => [n.id, n.consistencyState] as const)]);
        const kindWas = new Map(mine.changes.map((c) => [c.node.id, c.node.kind]));
        for (const n of updated) if (kindWas.get(n.id) !== n.kind) this.recomputeAt.add(parentOf(n.path) ?? '');
        for (const n of [...updated, ...reactivated]) this.transition(was.get(n.id) ?? 'ACTIVE', 'ACTIVE');
        for (let i = 0; i < inserted.length; i++) this.transition('UNTRACKED', 'ACTIVE');
        // Drift a watcher or an S3 event reported (INCONSISTENT) was counted when it was reported.
        const newDrift = updated.filter((n) => was.get(n.id) !== 'INCONSISTENT').length;
        if (newDrift > 0) this.fs.metrics.driftDetected.inc({ mount: this.mount.key }, newDrift);
        this.land({ updated: updated.length + reactivated.length, discovered: inserted.length });
        // Unchanged, plus what was changed since the scan began or is already catalogued (its
        // writer's record stands: a command that held the path created it, say).
        this.land({
          unchanged:
            unchanged.length + (mine.changes.length - updated.length) + (mine.confirm.length - reactivated.length) + (mine.discovered.length - inserted.length),
        });
        return {
          changes: w.changes.filter((c) => !locked.has(c.node.path)),
          confirm: w.confirm.filter((n) => !locked.has(n.path)),
          discovered: w.discovered.filter((n) => !locked.has(n.path)),
        };
      });
    } finally {
      client.release();
    }
  }

  private defer(targets: JobTarget[]): void {
    this.deferred.push(...targets);
    this.land({ deferred: targets.length });
  }

  /**
   * Queues what other writers held through the wait as follow-up jobs, planned like the
   * watcher's (a directory's held children become one job for the directory). The last
   * generation allowed queues nothing: the next audit looks at those paths.
   */
  private async enqueueFollowUps(): Promise<void> {
    const targets = this.deferred.splice(0);
    if (targets.length === 0) return;
    const generation = Number((this.job.options as { followUp?: number }).followUp ?? 0) + 1;
    if (generation > MAX_FOLLOW_UPS) return;
    try {
      await enqueuePlanned(this.fs.reconcile, targets, { mountId: this.mount.id, reason: this.request.reason, hash: this.request.hash, followUp: generation });
    } catch (err) {
      // Kept for the next try (the failure paths try again): held paths are never dropped.
      if (err instanceof EnqueueError) this.deferred.push(...err.unsent);
      throw err;
    }
  }

  /** MISSING only after a complete scan, only what a second look confirms, and never most of a mount at once. */
  private async applyMissing(force: boolean): Promise<void> {
    const isAudit = this.request.path === '' && this.request.recursive;
    // An audit's candidates from the ranges before its checkpoints (this run's, or earlier ones').
    const saved = isAudit ? await loadAuditCandidates(this.pool, this.job.id) : [];
    const fresh = new Set(this.missingCandidates.map((n) => n.id));
    const candidates = [...saved.filter((n) => !fresh.has(n.id)), ...this.missingCandidates];
    this.missingCandidates = [];
    if (candidates.length === 0) return;
    if (isAudit && !force) {
      // The mount's live nodes the audit read (or counted, resuming), plus what it discovered.
      const total = (await this.liveAtStart) + this.counts.discovered;
      const ratio = this.o.maxMissingRatio ?? 0.5;
      if (total >= MIN_NODES_FOR_RATIO && candidates.length > ratio * total) throw new MassMissingError(candidates.length, total, ratio);
    }
    const gone = await this.strategy.confirmGone(candidates.map((n) => n.path));
    // Still the root the run began with, after its second look: a disk unmounted meanwhile
    // leaves a directory where every candidate reads as gone.
    await this.root.beforeMissing();
    const confirmed = candidates.filter((n) => gone.has(n.path));
    for (let i = 0; i < confirmed.length; i += this.batchSize) {
      await this.writeOrDefer(
        confirmed.slice(i, i + this.batchSize),
        (nodes, waitMs) => this.markMissingLocked(nodes, waitMs),
        (nodes) => nodes.length,
        (held) => held.map((n) => this.followUpTarget(n.path, n.kind)),
      );
      await this.fs.changed(this.mount.id);
    }
    this.counts.unchanged += candidates.length - confirmed.length;
  }

  /** One transaction marking `nodes` MISSING (try-locks, or waiting up to `waitMs`); returns what it could not lock. */
  private async markMissingLocked(nodes: CatalogueNode[], waitMs?: number): Promise<CatalogueNode[]> {
    const client = await this.pool.connect();
    try {
      return await inTransaction(client, async () => {
        await client.query(CUSTOM_PLANS);
        const locked = await lockPathsForWrite(client, this.mount.id, nodes.map((n) => n.path), waitMs);
        const mine = nodes.filter((n) => locked.has(n.path));
        const marked = await markMissing(client, this.guard, mine, this.request.reason);
        const was = new Map(mine.map((n) => [n.id, n.consistencyState]));
        for (const n of marked) this.transition(was.get(n.id) ?? 'ACTIVE', 'MISSING');
        this.counts.missing += marked.length;
        // Changed since the scan began: its writer's record stands.
        this.counts.unchanged += mine.length - marked.length;
        return nodes.filter((n) => !locked.has(n.path));
      });
    } finally {
      client.release();
    }
  }

  /**
   * Untracked ancestors of the path (a drift job for "a/b/c.txt" when "a" was created
   * outside Filestore) are catalogued first, so the path has a parent to hang from.
   */
  private async discoverAncestors(): Promise<void> {
    const missing: NewNode[] = [];
    for (const a of ancestorsOf(this.request.path).slice(1)) {
      if (await findLiveByPath(this.pool, this.mount.id, a)) continue;
      const seen = await this.strategy.stat(a);
      if (!seen || seen.kind !== 'directory') return;
      missing.push(newNodeFromStat(seen));
    }
    this.discovered.push(...missing);
    this.counts.checked += missing.length;
    await this.drain();
  }

  /**
   * Rollups follow each write as deltas (discoveries, files that changed size). A change of
   * kind (a file became a directory, or the other way) is the exception: the rollups of the
   * directory holding it are recomputed from the rows, the correction going to the
   * directories above it.
   */
  private async finishRollups(): Promise<void> {
    const dirs = [...this.recomputeAt].sort(comparePaths);
    this.recomputeAt.clear();
    // A directory below another one being recomputed is covered by it.
    const covered = (d: string) => dirs.some((o) => o !== d && isSameOrDescendant(d, o));
    for (const dir of dirs.filter((d) => !covered(d))) await recomputeRollupsCorrectingAncestors(this.pool, this.mount.id, dir);
    if (dirs.length > 0) await this.fs.changed(this.mount.id);
  }
}

function addCounts(a: ReconcileCounts, b: ReconcileCounts): ReconcileCounts {
  const out = { ...a };
  for (const k of Object.keys(b) as Array<keyof ReconcileCounts>) out[k] += b[k];
  return out;
}

function subtractCounts(a: ReconcileCounts, b: ReconcileCounts): ReconcileCounts {
  const out = { ...a };
  for (const k of Object.keys(b) as Array<keyof ReconcileCounts>) out[k] -= b[k];
  return out;
}
