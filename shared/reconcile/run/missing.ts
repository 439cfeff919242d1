/**
 * MISSING, the destructive part of a run: only after a complete scan, only what a second look
 * confirms gone, and never most of a mount at once (the mass-missing rule).
 */
import { loadAuditCandidates } from '../../catalogue/audit-candidates.ts';
import { markMissing, lockPathsForWrite } from '../../catalogue/reconcile-writes.ts';
import type { CatalogueNode } from '../../catalogue/types.ts';
import { inTransaction, type Pool } from '../../db/pool.ts';
import { MassMissingError } from '../errors.ts';
import type { RunRoot } from '../run-root.ts';
import type { ReconcileStrategy } from '../strategy.ts';
import { CUSTOM_PLANS, type BatchWriter } from './batch-writer.ts';
import type { Comparison } from './compare.ts';
import type { RunContext } from './options.ts';

// A ratio of a handful of nodes says nothing about an unmounted disk; below this many live
// nodes the mass-missing rule does not apply.
const MIN_NODES_FOR_RATIO = 20;

/**
 * The mass-missing rule: an audit refuses to mark more than `ratio` of the mount's live nodes
 * (`total`) MISSING at once (a disk not mounted, a prefix emptied by mistake), unless forced.
 */
export function refuseMassMissing(candidates: number, total: number, ratio: number): void {
  if (total >= MIN_NODES_FOR_RATIO && candidates > ratio * total) throw new MassMissingError(candidates, total, ratio);
}

/** Marks a run's confirmed MISSING candidates, in batches through the run's writer. */
export class MissingMarker {
  constructor(
    private readonly run: RunContext,
    private readonly strategy: ReconcileStrategy,
    private readonly root: RunRoot,
    private readonly writer: BatchWriter,
    private readonly batchSize: number,
  ) {}

  private get pool(): Pool {
    return this.run.core.pool;
  }

  /**
   * MISSING only after a complete scan, only what a second look confirms, and never most of a
   * mount at once. `liveAtStart`: the mount's live nodes the audit read (or counted, resuming).
   */
  async apply(comparison: Comparison, liveAtStart: Promise<number>, force: boolean): Promise<void> {
    const isAudit = this.run.request.path === '' && this.run.request.recursive;
    // An audit's candidates from the ranges before its checkpoints (this run's, or earlier ones').
    const saved = isAudit ? await loadAuditCandidates(this.pool, this.run.job.id) : [];
    const fresh = new Set(comparison.missingCandidates.map((n) => n.id));
    const candidates = [...saved.filter((n) => !fresh.has(n.id)), ...comparison.missingCandidates];
    comparison.missingCandidates = [];
    if (candidates.length === 0) return;
    if (isAudit && !force) {
      // The mount's live nodes the audit read (or counted, resuming), plus what it discovered.
      const total = (await liveAtStart) + this.run.counts.discovered;
      refuseMassMissing(candidates.length, total, this.run.o.maxMissingRatio ?? 0.5);
    }
    const gone = await this.strategy.confirmGone(candidates.map((n) => n.path));
    // Still the root the run began with, after its second look: a disk unmounted meanwhile
    // leaves a directory where every candidate reads as gone.
    await this.root.beforeMissing();
    const confirmed = candidates.filter((n) => gone.has(n.path));
    for (let i = 0; i < confirmed.length; i += this.batchSize) {
      await this.writer.writeOrDefer(
        confirmed.slice(i, i + this.batchSize),
        (nodes, waitMs) => this.markMissingLocked(nodes, waitMs),
        (nodes) => nodes.length,
        (held) => held.map((n) => this.writer.followUpTarget(n.path, n.kind)),
      );
      await this.run.core.changed(this.run.mount.id);
    }
    this.run.counts.unchanged += candidates.length - confirmed.length;
  }

  /** One transaction marking `nodes` MISSING (try-locks, or waiting up to `waitMs`); returns what it could not lock. */
  private async markMissingLocked(nodes: CatalogueNode[], waitMs?: number): Promise<CatalogueNode[]> {
    const client = await this.pool.connect();
    try {
      return await inTransaction(client, async () => {
        await client.query(CUSTOM_PLANS);
        const locked = await lockPathsForWrite(client, this.run.mount.id, nodes.map((n) => n.path), waitMs);
        const mine = nodes.filter((n) => locked.has(n.path));
        const marked = await markMissing(client, this.run.guard, mine, this.run.request.reason);
        const was = new Map(mine.map((n) => [n.id, n.consistencyState]));
        for (const n of marked) this.writer.transition(was.get(n.id) ?? 'ACTIVE', 'MISSING');
        this.run.counts.missing += marked.length;
        // Changed since the scan began: its writer's record stands.
        this.run.counts.unchanged += mine.length - marked.length;
        return nodes.filter((n) => !locked.has(n.path));
      });
    } finally {
      client.release();
    }
  }
}
