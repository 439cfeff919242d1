/**
 * The batch writer of a run: the comparison's pending writes, written in order one batch at a
 * time behind the walk, each in a transaction that locks its paths; what other writers hold is
 * deferred to follow-up jobs. Also the rollups of kind changes, recomputed at the end.
 */
import {
  applyChanges,
  insertDiscovered,
  isLockTimeout,
  lockPathsForWrite,
  reactivate,
  touchChecked,
  deletedSince,
} from '../../catalogue/reconcile-writes.ts';
import { addInsertedToAncestors, recomputeRollupsCorrectingAncestors } from '../../catalogue/rollups.ts';
import { inTransaction, type Pool } from '../../db/pool.ts';
import { comparePaths, isSameOrDescendant, parentOf } from '../../paths.ts';
import { EnqueueError, enqueuePlanned, type JobTarget } from '../job-plan.ts';
import { zeroCounts, type ReconcileCounts } from '../types.ts';
import { writesCount, type Batch, type Comparison, type Writes } from './compare.ts';
import type { RunContext } from './options.ts';

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
export const CUSTOM_PLANS = 'SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off';

/** Writes a run's batches in order, behind the walk; records what it wrote in the run's counts. */
export class BatchWriter {
  /** The last batch handed to the writer; each batch is chained after the one before it. */
  private inflight: Promise<void> = Promise.resolve();
  /** The batch handed over before that one: what a new batch waits for (two in the writer at most). */
  private previous: Promise<void> = Promise.resolve();
  /** What the writes have recorded so far (also in `counts`): a checkpoint's counts are taken in two parts. */
  readonly landed = zeroCounts();
  /** Parents of nodes whose kind changed: their rollups are recomputed from the rows at the end. */
  private readonly recomputeAt = new Set<string>();
  /** What other writers held through the wait: the follow-up job's targets. */
  private readonly deferred: JobTarget[] = [];

  constructor(
    private readonly run: RunContext,
    private readonly pending: Comparison,
  ) {}

  private get pool(): Pool {
    return this.run.core.pool;
  }

  /** filestore_node_transitions_total: ACTIVE→ACTIVE is a recorded change (drift reconciled), UNTRACKED→ACTIVE a discovery. */
  transition(from: string, to: string): void {
    this.run.core.metrics.nodeTransitions.inc({ from, to });
  }

  private land(delta: Partial<ReconcileCounts>): void {
    for (const [k, v] of Object.entries(delta) as Array<[keyof ReconcileCounts, number]>) {
      this.run.counts[k] += v;
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
  async flush(): Promise<void> {
    await this.previous;
    // What the next flush waits for: everything handed over so far, checkpoints included (an
    // unchanged tree hands over no batch, and its checkpoints must not pile up either).
    this.previous = this.inflight;
    if (this.pending.pendingWrites() === 0) return;
    const batch = this.pending.takeBatch();
    this.inflight = this.inflight.then(() => this.write(batch));
    void this.inflight.catch(() => {}); // surfaced by a later flush or the drain
  }

  /** Queues `task` after everything handed over so far (a checkpoint): the walk does not wait for it. */
  after(task: () => Promise<void>): void {
    this.inflight = this.inflight.then(task);
    void this.inflight.catch(() => {}); // surfaced by a later flush or the drain
  }

  /** Waits until everything handed over is written. */
  async drain(): Promise<void> {
    await this.flush();
    await this.inflight;
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
      await touchChecked(this.pool, this.run.guard, unchanged, learned);
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
    await this.run.core.changed(this.run.mount.id);
  }

  /**
   * A guarded write of `items`: one transaction with try-locks (`attempt` without a wait);
   * what another writer held then is written in a second that waits up to lockWaitMs for
   * those locks; what is still held after that is deferred to a follow-up job.
   */
  async writeOrDefer<T>(items: T, attempt: (items: T, waitMs?: number) => Promise<T>, size: (items: T) => number, targets: (held: T) => JobTarget[]): Promise<void> {
    const held = await attempt(items);
    if (size(held) === 0) return;
    try {
      await attempt(held, this.run.o.lockWaitMs ?? LOCK_WAIT_MS);
    } catch (err) {
      if (!isLockTimeout(err)) throw err;
      this.defer(targets(held));
    }
  }

  /** A follow-up for a held path: its subtree too when this run is recursive and it is (or was) a directory. */
  followUpTarget(path: string, ...kinds: string[]): JobTarget {
    return { path, recursive: this.run.request.recursive && kinds.includes('directory') };
  }

  /**
   * One transaction: locks the writes' paths (try-locks, or waiting up to `waitMs`), writes
   * what it locked, records `unchanged` as checked. Returns what it could not lock.
   */
  private async writeLocked(w: Writes, waitMs?: number, unchanged: number[] = [], learned = new Map<number, string>()): Promise<Writes> {
    const reason = this.run.request.reason;
    const client = await this.pool.connect();
    try {
      return await inTransaction(client, async () => {
        await client.query(CUSTOM_PLANS);
        const paths = [...w.changes.map((c) => c.node.path), ...w.confirm.map((n) => n.path), ...w.discovered.map((n) => n.path)];
        const locked = await lockPathsForWrite(client, this.run.mount.id, paths, waitMs);
        const mine: Writes = {
          changes: w.changes.filter((c) => locked.has(c.node.path)),
          confirm: w.confirm.filter((n) => locked.has(n.path)),
          discovered: w.discovered.filter((n) => locked.has(n.path)),
        };
        const updated = await applyChanges(client, this.run.guard, mine.changes, reason);
        const reactivated = await reactivate(client, this.run.guard, mine.confirm, reason);
        // Not what a command deleted since the scan began; what one created or changed since
        // has a live row, which the insert leaves alone.
        const deleted = await deletedSince(client, this.run.guard, mine.discovered.map((n) => n.path));
        // Rows, snapshots, rollup rows and `filestore.node.reconciled` events (change `discovered`).
        const inserted = await insertDiscovered(client, this.run.mount.id, mine.discovered.filter((n) => !deleted.has(n.path)), { jobId: this.run.job.id, reason });
        await addInsertedToAncestors(client, this.run.mount.id, inserted);
        await touchChecked(client, this.run.guard, unchanged, learned);
        const was = new Map([...mine.changes.map((c) => [c.node.id, c.node.consistencyState] as const), ...mine.confirm.map((n) => [n.id, n.consistencyState] as const)]);
        const kindWas = new Map(mine.changes.map((c) => [c.node.id, c.node.kind]));
        for (const n of updated) if (kindWas.get(n.id) !== n.kind) this.recomputeAt.add(parentOf(n.path) ?? '');
        for (const n of [...updated, ...reactivated]) this.transition(was.get(n.id) ?? 'ACTIVE', 'ACTIVE');
        for (let i = 0; i < inserted.length; i++) this.transition('UNTRACKED', 'ACTIVE');
        // Drift a watcher or an S3 event reported (INCONSISTENT) was counted when it was reported.
        const newDrift = updated.filter((n) => was.get(n.id) !== 'INCONSISTENT').length;
        if (newDrift > 0) this.run.core.metrics.driftDetected.inc({ mount: this.run.mount.key }, newDrift);
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

  defer(targets: JobTarget[]): void {
    this.deferred.push(...targets);
    this.land({ deferred: targets.length });
  }

  /**
   * Queues what other writers held through the wait as follow-up jobs, planned like the
   * watcher's (a directory's held children become one job for the directory). The last
   * generation allowed queues nothing: the next audit looks at those paths.
   */
  async enqueueFollowUps(): Promise<void> {
    const targets = this.deferred.splice(0);
    if (targets.length === 0) return;
    const generation = Number((this.run.job.options as { followUp?: number }).followUp ?? 0) + 1;
    if (generation > MAX_FOLLOW_UPS) return;
    try {
      await enqueuePlanned(this.run.core.reconcile, targets, { mountId: this.run.mount.id, reason: this.run.request.reason, hash: this.run.request.hash, followUp: generation });
    } catch (err) {
      // Kept for the next try (the failure paths try again): held paths are never dropped.
      if (err instanceof EnqueueError) this.deferred.push(...err.unsent);
      throw err;
    }
  }

  /**
   * Rollups follow each write as deltas (discoveries, files that changed size). A change of
   * kind (a file became a directory, or the other way) is the exception: the rollups of the
   * directory holding it are recomputed from the rows, the correction going to the
   * directories above it.
   */
  async finishRollups(): Promise<void> {
    const dirs = [...this.recomputeAt].sort(comparePaths);
    this.recomputeAt.clear();
    // A directory below another one being recomputed is covered by it.
    const covered = (d: string) => dirs.some((o) => o !== d && isSameOrDescendant(d, o));
    for (const dir of dirs.filter((d) => !covered(d))) await recomputeRollupsCorrectingAncestors(this.pool, this.run.mount.id, dir);
    if (dirs.length > 0) await this.run.core.changed(this.run.mount.id);
  }
}
