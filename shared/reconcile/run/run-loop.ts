/**
 * One reconciliation run: the walk of storage merged with the catalogue's rows, each pair
 * compared (compare.ts), batches handed to the writer (batch-writer.ts), checkpoints and early
 * stops of a full audit, progress, then MISSING (missing.ts) once the scan is complete.
 */
import type { EntryStat, HashedFile } from '../../backends/types.ts';
import { FilestoreError } from '../../errors.ts';
import { saveCheckpoint, type ReconcileJobRow } from '../../catalogue/jobs.ts';
import { findLiveByPath, scopePages, type ScopeRow } from '../../catalogue/nodes.ts';
import { rowEntry, rowOfEntry, type StorageRow } from '../../backends/entry-lines.ts';
import { SkippedNames, type SkipReason } from '../../backends/skipped.ts';
import { saveAuditCandidates } from '../../catalogue/audit-candidates.ts';
import { newNodeFromStat, recordSequencers, type NewNode } from '../../catalogue/node-writes.ts';
import { countLiveNodes, recordAudit, type Guard } from '../../catalogue/reconcile-writes.ts';
import type { Mount } from '../../catalogue/types.ts';
import { poolMax, type Pool } from '../../db/pool.ts';
import { ancestorsOf } from '../../paths.ts';
import type { ReconcileCore } from '../core.ts';
import { MassMissingError, ReconcileError, ScanFailedError } from '../errors.ts';
import { RunRoot } from '../run-root.ts';
import { batches, flatten, mapItems, mergeBatches, pairPath } from '../merge.ts';
import { strategyFor, type ReconcileStrategy } from '../strategy.ts';
import { zeroCounts, type ReconcileCounts, type ReconcileRequest, type ReconcileResult, type RunLimits } from '../types.ts';
import { BatchWriter } from './batch-writer.ts';
import { rememberScanHints, ScanHintRecorder, scanHintsOf } from './scan-hints.ts';
import { Comparison } from './compare.ts';
import { MissingMarker } from './missing.ts';
import type { ReconcilerOptions, RunContext } from './options.ts';
import { addCounts, PROGRESS_EVERY, ProgressReporter, subtractCounts } from './progress.ts';
import { refreshStatistics } from './statistics.ts';

// A full audit records where it is this often, so a retry (or the next Lambda invocation)
// continues from there instead of listing a huge bucket from the start.
const CHECKPOINT_EVERY = 10_000;

// What hashing a file the walk saw can meet when it changed since: gone, or no longer a file.
const CHANGED_SINCE_WALK = new Set(['NOT_FOUND', 'IS_A_DIRECTORY', 'NOT_A_DIRECTORY', 'SYMLINK_IN_PATH']);

/** One reconciliation: walk, compare, apply in batches, then the destructive part (MISSING) only after a complete scan. */
export class Run {
  private readonly strategy: ReconcileStrategy;
  private readonly root: RunRoot;
  private readonly counts = zeroCounts();
  private readonly batchSize: number;
  /** The comparison and the pending writes of the current batch. */
  private readonly comparison: Comparison;
  /** Set once the scan's start is known (the guard of every write). */
  private writer!: BatchWriter;
  private missing!: MissingMarker;
  private readonly reporter: ProgressReporter;
  private liveAtStart: Promise<number> = Promise.resolve(0);
  /** Names the walk passed over (the listing counts them, off the per-entry path; totals come at its end). */
  private readonly skipped = new SkippedNames();

  constructor(
    private readonly core: ReconcileCore,
    private readonly mount: Mount,
    private readonly job: ReconcileJobRow,
    private readonly request: ReconcileRequest,
    private readonly o: ReconcilerOptions,
    progress: (counts: ReconcileCounts) => Promise<void>,
    private readonly limits: RunLimits,
  ) {
    this.strategy = strategyFor(mount, () => core.backends.forMount(mount), { s3MissingGraceMs: o.s3MissingGraceMs ?? 2_000, catalogue: core.pool });
    this.root = new RunRoot(core.pool, mount, this.strategy, request.path === '' && request.recursive);
    this.batchSize = o.batchSize ?? 2_000;
    this.comparison = new Comparison(this.counts, this.strategy, mount.id);
    this.reporter = new ProgressReporter(this.counts, progress);
  }

  private get pool(): Pool {
    return this.core.pool;
  }

  async execute(force: boolean): Promise<ReconcileResult> {
    try {
      return await this.executeRun(force);
    } finally {
      await this.reporter.running; // nothing of the run is left running after it
    }
  }

  private async executeRun(force: boolean): Promise<ReconcileResult> {
    // The root is readable and the mount's own (not another directory where it was): run-root.ts.
    await this.root.begin();
    const { rows } = await this.pool.query<{ now: Date }>('SELECT now() AS now');
    const guard: Guard = { mountId: this.mount.id, jobId: this.job.id, scanStartedAt: rows[0]?.now as Date };
    const comparison = this.comparison;
    const reporter = this.reporter;
    const run: RunContext = { core: this.core, mount: this.mount, job: this.job, request: this.request, o: this.o, guard, counts: this.counts };
    const writer = (this.writer = new BatchWriter(run, comparison));
    this.missing = new MissingMarker(run, this.strategy, this.root, writer, this.batchSize);

    await this.discoverAncestors();
    // A full audit interrupted or stopped earlier continues after the last path it had fully
    // recorded. MISSING candidates of the ranges before were saved with the checkpoints and are
    // marked when the scan is complete (missing.ts): nothing is marked from a partial scan.
    const isAudit = this.request.path === '' && this.request.recursive;
    const resume = isAudit ? (this.job.checkpoint ?? undefined) : undefined;
    if (resume) Object.assign(this.counts, resume.counts);
    const every = this.o.checkpointEvery ?? CHECKPOINT_EVERY;
    if (isAudit) this.refreshStatistics();
    // A complete audit marks the mount checked as of when it (its first attempt) began,
    // instead of rewriting every row it finds unchanged (rows.ts reads the later of the two).
    comparison.countOnlyUnchanged = isAudit;
    // The mass-missing rule's denominator. A whole audit reads every live node of the mount
    // anyway: it counts them as they come (below). A resumed one reads only what follows its
    // checkpoint, so it counts them in SQL, beside the walk (a count of a big mount is not free).
    const countAsRead = isAudit && !force && !resume;
    let liveRead = 0;
    if (isAudit && !force && resume) {
      const before = this.counts.discovered; // an earlier attempt's discoveries are in the count
      this.liveAtStart = countLiveNodes(this.pool, this.mount.id).then((n) => n - before);
      this.liveAtStart.catch(() => {}); // awaited in MissingMarker.apply
    }
    const auditStartedAt = resume?.startedAt ? new Date(resume.startedAt) : guard.scanStartedAt;
    let sinceCheckpoint = 0;
    let stoppedAfter: string | null = null;
    // Where this audit passes every 1,000th path: the next one's cuts (scan-hints.ts).
    const hints = isAudit && !resume ? new ScanHintRecorder() : null;
    try {
      const raw = this.storageWalk(resume?.after);
      // Fault injection sees the entries one by one, as a listing that fails part-way would stop.
      const wrap = this.o.wrapWalk;
      const walk = wrap ? batches(mapItems(wrap(mapItems(flatten(raw), rowEntry)), rowOfEntry), 256) : raw;
      // A full audit's catalogue read is cut where the last one of this mount passed every
      // 1,000th path (scan-hints.ts) and read two ranges at a time, where the pool has
      // connections to spare: one page at a time, the scan waited for PostgreSQL most of its
      // time. A Lambda's pool of 2 (one connection held by the audit lock) reads one at a time.
      const split = isAudit && poolMax(this.pool) >= 8 ? { inFlight: 2, ends: scanHintsOf(this.mount.id) } : undefined;
      const nodes = scopePages(this.pool, this.mount.id, this.request.path, this.request.recursive, resume?.after, undefined, split);
      scan: for await (const pairs of mergeBatches(walk, nodes)) {
        for (let i = 0; i < pairs.seen.length; i++) {
          const seen = pairs.seen[i] ?? null;
          const node = pairs.node[i] ?? null;
          if (hints !== null && hints.due()) hints.keep(pairPath(pairs, i));
          // Every live node but the mount's root (whose line starts with its empty path).
          if (countAsRead && node !== null && node.charCodeAt(0) !== 9) liveRead++;
          if (this.request.hash) await this.compareHashing(seen, node);
          else comparison.compare(seen, node, null);
          if (comparison.pendingWrites() >= this.batchSize) await writer.flush();
          if (this.counts.checked - reporter.last >= PROGRESS_EVERY) reporter.report();
          if (isAudit && ++sinceCheckpoint >= every) {
            sinceCheckpoint = 0;
            // The checkpoint is saved once everything handed over up to this path is written,
            // in the writer's queue: the walk does not wait for it. Its counts are this path's:
            // what the comparison counted by now, plus what the writes up to here recorded.
            // The MISSING candidates so far are saved before it (they lie in the range it
            // covers): the run that completes the scan, this one or a later one, marks them.
            await writer.flush();
            const after = pairPath(pairs, i);
            const counted = subtractCounts(this.counts, writer.landed);
            const candidates = comparison.missingCandidates.splice(0);
            // What other writers held up to here is queued first: a retry resuming after this
            // path would never look at it again.
            writer.after(async () => {
              await writer.enqueueFollowUps();
              await saveAuditCandidates(this.pool, this.job.id, candidates);
              await saveCheckpoint(this.pool, this.job.id, { after, counts: { ...addCounts(counted, writer.landed) }, startedAt: auditStartedAt.toISOString() });
            });
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
      await writer.drain().catch(() => {});
      await writer.finishRollups().catch(() => {});
      await writer.enqueueFollowUps().catch(() => {});
      if (err instanceof ReconcileError) throw err;
      const e = err as { code?: string; message?: string };
      throw new ScanFailedError(e.message ?? String(err), { code: e.code });
    }
    if (stoppedAfter !== null) return this.stop(stoppedAfter);
    if (hints !== null) rememberScanHints(this.mount.id, hints.ends);
    if (countAsRead) this.liveAtStart = Promise.resolve(liveRead);
    this.countSkipped();
    try {
      await writer.drain();
      await this.missing.apply(comparison, this.liveAtStart, force);
    } catch (err) {
      if (err instanceof MassMissingError) await this.root.refused(err).catch(() => {});
      // Refused (mass-missing) or failed after the scan: what was written keeps its rollups,
      // what was held still gets its follow-up.
      await writer.finishRollups().catch(() => {});
      await writer.enqueueFollowUps().catch(() => {});
      throw err;
    }
    await writer.finishRollups();
    await writer.enqueueFollowUps();
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
    await this.writer.drain();
    await this.writer.finishRollups();
    await this.writer.enqueueFollowUps();
    return { ...this.counts, stopped: { after } };
  }

  /**
   * What the walk passed over, once it is complete: the count (the walk's own, not carried
   * over from a checkpoint: a resumed local walk reads the whole tree again) and the metric.
   */
  private countSkipped(): void {
    this.counts.skipped = this.skipped.total;
    for (const [reason, n] of Object.entries(this.skipped.byReason) as Array<[SkipReason, number]>) {
      this.core.metrics.reconcileSkipped.inc({ mount: this.mount.key, reason }, n);
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
    this.comparison.compare(stored, row, seen && seen.kind === 'file' ? await this.hashOf(seen) : null);
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
    this.writer.defer([{ path: seen.path, recursive: false }]);
    return null;
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
    this.comparison.discovered.push(...missing);
    this.counts.checked += missing.length;
    await this.writer.drain();
  }
}
