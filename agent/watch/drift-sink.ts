import type { Mount } from '../../shared/catalogue/index.ts';
import { detectDrift, type DriftResult, driftObserverFor, type DriftObserver } from '../../shared/reconcile/index-drift.ts';
import type { Filestore } from '../../shared/index-runtime.ts';
import type { CoalescedBatch } from './types.ts';

export interface DriftSinkOptions {
  /** `reason` in the drift events (default 'watcher'). */
  reason?: string | undefined;
  /** Paths judged per transaction, whose jobs are sent before the next chunk is judged (default 1,000). */
  chunkSize?: number | undefined;
  /** Untracked entries of one directory in one batch at or above which they are reported by one event (default 16). */
  groupUntrackedAt?: number | undefined;
  /** Reconcile jobs one batch may enqueue before targets move up the tree (default 32). */
  maxJobs?: number | undefined;
}

/** What a batch came to (shared/reconcile/drift.ts); `deferred` and `waiting` go back to the coalescer. */
export type SinkResult = DriftResult;

export interface ApplyOptions {
  /** The watcher is closing: paths a command holds get a job instead of being handed back. */
  final?: boolean | undefined;
  /**
   * Called with the directories that appeared in the batch (created or moved in, by anyone: a
   * command's too; the topmost ones) before its jobs are sent; returns those that need a
   * recursive look (mount-watcher.ts: parcel does not watch what a new directory held).
   */
  beforeJobs?: ((appeared: string[]) => Promise<string[]>) | undefined;
  /**
   * Asked after each chunk's lstats: is the mount root still the directory approved for this
   * batch? If not (removed, unmounted, replaced while the chunk was looked at), what was seen is
   * not the mount's and the chunk is dropped unjudged (`dropped`); null (the look itself
   * failed: EIO…) hands it back unjudged (`deferred`). See root-guard.ts.
   */
  rootUnchanged?: (() => Promise<boolean | null>) | undefined;
}

/**
 * The watcher's end of drift detection: a coalesced batch of one mount goes to the rules
 * every drift signal follows (shared/reconcile/drift.ts: judge against the catalogue, lock,
 * skip what Filestore changed since, mark INCONSISTENT, plan and send the jobs). What is
 * watcher-specific stays here and in mount-watcher.ts: the batches themselves, the hand-back
 * of deferred and waiting paths to the coalescer, the root guard's approval, the rewatch of
 * new directories. The disk is looked at with one DiskStat per mount (its pinned root).
 */
export class DriftSink {
  private readonly observer: DriftObserver;

  constructor(
    private readonly core: Filestore,
    private readonly mount: Mount,
    private readonly o: DriftSinkOptions = {},
  ) {
    this.observer = driftObserverFor(core.backends, mount);
  }

  /**
   * Judges a batch. With `final` (the watcher is closing), paths a command holds are not
   * handed back but given a reconcile job, so nothing is lost when the watcher stops.
   */
  async apply(batch: CoalescedBatch, o: ApplyOptions = {}): Promise<SinkResult> {
    batch = await this.withoutOwnWrites(batch);
    if (batch.changes.size === 0 && batch.rescans.length === 0) return { ...NOTHING, waiting: [], deferred: [], dropped: [], observed: new Map() };
    return detectDrift(this.core, this.mount, batch, {
      observer: this.observer,
      reason: this.o.reason ?? 'watcher',
      chunkSize: this.o.chunkSize,
      groupUntrackedAt: this.o.groupUntrackedAt,
      maxJobs: this.o.maxJobs,
      final: o.final,
      beforeJobs: o.beforeJobs,
      rootUnchanged: o.rootUnchanged,
    });
  }

  /**
   * The batch without the paths whose storage is exactly what this process's own write of them
   * committed (shared/orchestrator/own-writes.ts): judging them could only find them as
   * recorded, after a transaction that try-locks their keys (which the next writers of their
   * directory wait for) and touches their rows. Everything else is judged as before.
   */
  private async withoutOwnWrites(batch: CoalescedBatch): Promise<CoalescedBatch> {
    const own = this.core.orchestrator.ownWrites;
    const candidates = [...batch.changes].filter(([path, change]) => change !== 'deleted' && own.knows(this.mount.id, path)).map(([path]) => path);
    if (candidates.length === 0) return batch;
    // A look that fails leaves the batch whole: detectDrift looks again and says why.
    const seen = await this.observer.observe(candidates).catch(() => null);
    if (!seen) return batch;
    const mine = candidates.filter((p) => own.matches(this.mount.id, p, seen.get(p)));
    if (mine.length === 0) return batch;
    const changes = new Map(batch.changes);
    for (const p of mine) changes.delete(p);
    const seenAt = batch.seenAt ? new Map([...batch.seenAt].filter(([p]) => changes.has(p))) : undefined;
    return { ...batch, changes, seenAt };
  }
}

const NOTHING = { checked: 0, covered: 0, drift: 0, jobs: 0, since: undefined };
