import type { EntryStat } from '../../shared/backends/types.ts';
import { changedSince, markInconsistentMany, recordUntrackedDrift, touchCheckedMany, type DriftSignal } from '../../shared/catalogue/drift-writes.ts';
import { findLiveByPaths } from '../../shared/catalogue/nodes.ts';
import { tryLockPaths } from '../../shared/catalogue/reconcile-writes.ts';
import type { CatalogueNode, Mount } from '../../shared/catalogue/types.ts';
import { inTransaction } from '../../shared/db/pool.ts';
import { ancestorsOf, comparePaths } from '../../shared/paths.ts';
import { forEachLimited } from '../../shared/reconcile/strategies/base.ts';
import { LocalStrategy } from '../../shared/reconcile/strategies/local.ts';
import type { Filestore } from '../../shared/runtime.ts';
import { DEFAULT_MAX_JOBS_PER_BATCH, planJobs, type JobTarget } from './job-plan.ts';
import type { CoalescedBatch } from './types.ts';

export interface DriftSinkOptions {
  /** `reason` in the drift events (default 'watcher'). */
  reason?: string | undefined;
  /** Paths judged per transaction (default 5,000). */
  chunkSize?: number | undefined;
  /** lstat calls in flight (default 32). */
  statConcurrency?: number | undefined;
  /** Reconcile jobs one batch may enqueue before targets move up the tree (default 32). */
  maxJobs?: number | undefined;
}

export interface SinkResult {
  /** Paths compared with the catalogue. */
  checked: number;
  /** Drift signals written (nodes marked INCONSISTENT + untracked paths reported). */
  drift: number;
  /** Paths a running command holds: look again in the next batch. */
  deferred: string[];
  /** Reconcile requests sent. */
  jobs: number;
}

/** Why a path needs a reconciliation, or null when the catalogue already says what the disk holds. */
type Verdict = { mark: DriftSignal | null; untracked: EntryStat | null; target: JobTarget } | null;

/**
 * Turns a coalesced batch of changed paths into catalogue effects, set-based: a burst of
 * 10,000 paths is two transactions of a few statements and a handful of reconcile jobs.
 *
 * How "Filestore's own writes never produce drift" holds across processes. A chunk takes the
 * database time T, lstats its paths (outside any transaction: no lock is held during I/O),
 * then in one short transaction try-locks the paths (the locks every command holds from
 * before it touches storage until after its catalogue commit) and reads their rows. A path
 * is *deferred*, not judged, when a command holds it now, or when a write changed its row
 * after T (a command that ran between our lstat and our read: the disk we saw may predate
 * its row). Any other row was committed before T, so what we saw on disk after T is what
 * that row must match (kind, size, mtime, mode, owner, link target: the local
 * reconciliation's `differs`); a row that matches is no drift, whoever made the change.
 * Commands and reconciliation skip nothing on our account for longer than a few statements.
 *
 * Drift: the node goes ACTIVE → INCONSISTENT with `filestore.drift.detected` (or, for an
 * untracked path, the event alone with `nodeId: null`), counted in
 * filestore_drift_detected_total, and reconcile jobs are enqueued (job-plan.ts).
 */
export class DriftSink {
  private readonly strategy: LocalStrategy;
  private readonly reason: string;
  private readonly chunkSize: number;
  private readonly statConcurrency: number;
  private readonly maxJobs: number;

  constructor(
    private readonly fs: Filestore,
    private readonly mount: Mount,
    o: DriftSinkOptions = {},
  ) {
    this.strategy = new LocalStrategy(mount.rootPath as string, () => fs.backends.forMount(mount));
    this.reason = o.reason ?? 'watcher';
    this.chunkSize = o.chunkSize ?? 5_000;
    this.statConcurrency = o.statConcurrency ?? 32;
    this.maxJobs = o.maxJobs ?? DEFAULT_MAX_JOBS_PER_BATCH;
  }

  /**
   * Judges a batch. With `final` (the watcher is closing), paths a command holds are not
   * handed back but given a reconcile job, so nothing is lost when the watcher stops.
   */
  async apply(batch: CoalescedBatch, o: { final?: boolean } = {}): Promise<SinkResult> {
    const paths = [...batch.changes.keys()].sort(comparePaths);
    const targets: JobTarget[] = batch.rescans.map((path) => ({ path, recursive: true }));
    const result: SinkResult = { checked: 0, drift: 0, deferred: [], jobs: 0 };
    // Untracked directories reported in this batch: what lies below them is theirs (one
    // event and one recursive job for `new-dir`, not one per file inside it).
    const untrackedDirs = new Set<string>();
    let wrote = false;
    for (let i = 0; i < paths.length; i += this.chunkSize) {
      const chunk = await this.judgeChunk(paths.slice(i, i + this.chunkSize), untrackedDirs);
      result.checked += chunk.checked;
      result.drift += chunk.drift;
      result.deferred.push(...chunk.deferred);
      targets.push(...chunk.targets);
      wrote ||= chunk.drift > 0;
    }
    if (o.final) {
      targets.push(...result.deferred.map((path) => ({ path, recursive: false })));
      result.deferred = [];
    }
    if (wrote) await this.fs.changed(this.mount.id);
    for (const t of planJobs(targets, this.maxJobs)) {
      await this.fs.reconcile.enqueue({ mountId: this.mount.id, path: t.path, reason: 'drift', recursive: t.recursive, hash: false });
      result.jobs++;
    }
    return result;
  }

  /** lstat first (no transaction open), then one short transaction: try-lock, read rows, compare, mark, report. */
  private async judgeChunk(paths: string[], untrackedDirs: Set<string>) {
    const { rows: clock } = await this.fs.pool.query<{ now: Date }>('SELECT now() AS now');
    const since = (clock[0] as { now: Date }).now;
    const seen = await this.statAll(paths);
    const client = await this.fs.pool.connect();
    try {
      return await inTransaction(client, async () => {
        const free = await tryLockPaths(client, this.mount.id, paths);
        const touched = await changedSince(client, this.mount.id, paths.filter((p) => free.has(p)), since);
        const deferred = paths.filter((p) => !free.has(p) || touched.has(p));
        const mine = paths.filter((p) => free.has(p) && !touched.has(p));
        const rows = await findLiveByPaths(client, this.mount.id, mine);

        const marks: DriftSignal[] = [];
        const untracked: EntryStat[] = [];
        const targets: JobTarget[] = [];
        const matched: number[] = [];
        for (const path of mine) {
          const node = rows.get(path) ?? null;
          const observed = seen.get(path);
          if (observed === undefined) {
            // The disk could not be read at this path: no judgement, the reconciler looks.
            targets.push({ path, recursive: false });
            continue;
          }
          const verdict = this.judge(node, observed);
          if (verdict === null) {
            if (node) matched.push(node.id);
            continue;
          }
          if (verdict.untracked) {
            if (coveredBy(path, untrackedDirs)) continue;
            if (verdict.untracked.kind === 'directory') untrackedDirs.add(path);
            untracked.push(verdict.untracked);
          }
          if (verdict.mark) marks.push(verdict.mark);
          targets.push(verdict.target);
        }
        const marked = await markInconsistentMany(client, this.mount.id, marks, this.reason);
        await recordUntrackedDrift(client, this.mount.id, untracked, this.reason);
        await touchCheckedMany(client, this.mount.id, matched);

        const drift = marked.length + untracked.length;
        if (drift > 0) this.fs.metrics.driftDetected.inc({ mount: this.mount.key }, drift);
        if (marked.length > 0) this.fs.metrics.nodeTransitions.inc({ from: 'ACTIVE', to: 'INCONSISTENT' }, marked.length);
        return { checked: mine.length, drift, deferred, targets };
      });
    } finally {
      client.release();
    }
  }

  /**
   * The rule: drift when the disk and the live row disagree (or one of them is absent).
   * A node already INCONSISTENT or MISSING was signalled before: it gets a job, no new event.
   */
  private judge(node: CatalogueNode | null, seen: EntryStat | null): Verdict {
    if (node === null) {
      if (seen === null) return null; // gone and untracked: a temp file that outlived the window
      return { mark: null, untracked: seen, target: { path: seen.path, recursive: seen.kind === 'directory' } };
    }
    const isDir = node.kind === 'directory';
    if (seen === null) {
      if (node.consistencyState === 'MISSING') return null;
      return { mark: { node, seen }, untracked: null, target: { path: node.path, recursive: isDir } };
    }
    const kindChanged = seen.kind !== node.kind;
    if (kindChanged || this.strategy.differs(node, seen)) {
      return { mark: { node, seen }, untracked: null, target: { path: node.path, recursive: kindChanged && (isDir || seen.kind === 'directory') } };
    }
    // As recorded; a node still waiting for its reconciliation gets one (the queue coalesces).
    return node.consistencyState === 'ACTIVE' ? null : { mark: null, untracked: null, target: { path: node.path, recursive: false } };
  }

  /** lstat of each path through the local backend (inside the root, never following symlinks); undefined = unreadable. */
  private async statAll(paths: string[]): Promise<Map<string, EntryStat | null | undefined>> {
    const out = new Map<string, EntryStat | null | undefined>();
    await forEachLimited(paths, this.statConcurrency, async (path) => {
      try {
        out.set(path, await this.strategy.stat(path));
      } catch {
        out.set(path, undefined);
      }
    });
    return out;
  }
}

function coveredBy(path: string, dirs: ReadonlySet<string>): boolean {
  if (dirs.size === 0) return false;
  for (const a of ancestorsOf(path)) if (dirs.has(a)) return true;
  return false;
}
