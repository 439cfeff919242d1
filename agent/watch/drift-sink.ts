import type { EntryStat } from '../../shared/backends/types.ts';
import {
  changedSince,
  liveDirectoriesAmong,
  markInconsistentMany,
  openListings,
  recordUntrackedDrift,
  touchCheckedMany,
  type DriftSignal,
} from '../../shared/catalogue/drift-writes.ts';
import { findLiveByPaths } from '../../shared/catalogue/nodes.ts';
import { lockPathsForWrite } from '../../shared/catalogue/reconcile-writes.ts';
import type { CatalogueNode, Mount } from '../../shared/catalogue/types.ts';
import { inTransaction } from '../../shared/db/pool.ts';
import { ancestorsOf, comparePaths, parentOf } from '../../shared/paths.ts';
import { LocalStrategy } from '../../shared/reconcile/strategies/local.ts';
import type { Filestore } from '../../shared/runtime.ts';
import { DiskStat, type Observed } from '../../shared/backends/local/disk-stat.ts';
import { DEFAULT_MAX_JOBS_PER_BATCH, enqueuePlanned, minimalRoots, type JobTarget } from '../../shared/reconcile/job-plan.ts';
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

export interface SinkResult {
  /** Paths compared with the catalogue. */
  checked: number;
  /** Paths left to a queued listing of their directory (not judged, no job of their own). */
  covered: number;
  /**
   * Paths a running listing of their directory will see: not judged now, looked at again
   * once it is over (`seenAt` kept): by then they match the catalogue, or, if that listing
   * could not record one (someone else held it), they are judged as usual.
   */
  waiting: string[];
  /** Drift signals written (nodes marked INCONSISTENT + untracked paths reported). */
  drift: number;
  /** Paths a running command holds (or looked at while the root could not be looked at): look again in the next batch. */
  deferred: string[];
  /**
   * Paths looked at while the mount root changed (`rootUnchanged` said false): not judged,
   * and not to be looked at again either — they are a gone root's; the rescan on its return
   * covers them (see agent/watch/root-guard.ts).
   */
  dropped: string[];
  /** Reconcile requests sent. */
  jobs: number;
}

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
   * failed: EIO…) hands it back unjudged (`deferred`). See agent/watch/root-guard.ts.
   */
  rootUnchanged?: (() => Promise<boolean | null>) | undefined;
}

// Slack when a job's start (database clock) is compared with an event's arrival (ours).
const CLOCK_MARGIN_MS = 10;

/** Untracked entries of one directory in one batch from which one event reports them all (a burst). */
export const DEFAULT_GROUP_UNTRACKED_AT = 16;

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
 * untracked path, the event alone with `nodeId: null`; one event per directory for a burst
 * of them, see recordUntrackedDrift), counted in filestore_drift_detected_total, and
 * reconcile jobs are enqueued (shared/reconcile/job-plan.ts).
 *
 * Paths a listing already on its way will see are left to it (see `coveredByListings`):
 * while a burst is still arriving, a batch does not judge, lock, or enqueue again what the
 * job of an earlier batch is about to find; those of a running listing are looked at again
 * once it is over.
 */
export class DriftSink {
  private readonly strategy: LocalStrategy;
  private readonly reason: string;
  private readonly chunkSize: number;
  private readonly groupUntrackedAt: number;
  private readonly disk: DiskStat;
  private readonly maxJobs: number;

  constructor(
    private readonly fs: Filestore,
    private readonly mount: Mount,
    o: DriftSinkOptions = {},
  ) {
    this.strategy = new LocalStrategy(mount.rootPath as string, () => fs.backends.forMount(mount));
    this.reason = o.reason ?? 'watcher';
    this.chunkSize = o.chunkSize ?? 1_000;
    this.groupUntrackedAt = o.groupUntrackedAt ?? DEFAULT_GROUP_UNTRACKED_AT;
    this.disk = new DiskStat(mount.rootPath as string, (path) => this.strategy.stat(path));
    this.maxJobs = o.maxJobs ?? DEFAULT_MAX_JOBS_PER_BATCH;
  }

  /**
   * Judges a batch. With `final` (the watcher is closing), paths a command holds are not
   * handed back but given a reconcile job, so nothing is lost when the watcher stops.
   */
  async apply(batch: CoalescedBatch, o: ApplyOptions = {}): Promise<SinkResult> {
    const paths = [...batch.changes.keys()].sort(comparePaths);
    const result: SinkResult = { checked: 0, covered: 0, waiting: [], drift: 0, deferred: [], dropped: [], jobs: 0 };
    const listings = await this.listingsOnTheirWay(paths);
    // Untracked directories reported in this batch: what lies below them is theirs (one
    // event and one recursive job for `new-dir`, not one per file inside it).
    const untrackedDirs = new Set<string>();
    // A chunk's jobs are sent as soon as it is judged: under a burst, the first directories'
    // listings run while the rest of the batch is still being judged (the queue joins a
    // request to a job of the same path still waiting). The batch's budget of jobs is shared
    // by its chunks; directories that appeared are looked at once, after the whole batch.
    let targets: JobTarget[] = batch.rescans.map((path) => ({ path, recursive: true }));
    const appeared: string[] = [];
    for (let i = 0; i < paths.length; i += this.chunkSize) {
      const chunk = await this.judgeChunk(paths.slice(i, i + this.chunkSize), untrackedDirs, listings, batch.seenAt, o.rootUnchanged);
      result.checked += chunk.checked;
      result.covered += chunk.covered;
      result.waiting.push(...chunk.waiting);
      result.drift += chunk.drift;
      result.deferred.push(...chunk.deferred);
      result.dropped.push(...chunk.dropped);
      targets.push(...chunk.targets);
      if (chunk.drift > 0) await this.fs.changed(this.mount.id);
      appeared.push(...chunk.appeared.filter((p) => batch.changes.get(p) === 'created'));
      result.jobs += await this.enqueue(targets, result.jobs);
      targets = [];
    }
    if (o.final) {
      targets.push(...[...result.deferred, ...result.waiting].map((path) => ({ path, recursive: false })));
      result.deferred = [];
      result.waiting = [];
    }
    // After the batch's other jobs: a new directory's recursive job must start after the watch
    // that covers what it holds (mount-watcher.ts, `watchNewDirs`), and that is done once.
    if (o.beforeJobs && appeared.length > 0) targets.push(...(await o.beforeJobs(minimalRoots(appeared))).map((path) => ({ path, recursive: true })));
    result.jobs += await this.enqueue(targets, result.jobs);
    return result;
  }

  /** Plans and sends the jobs for `targets` within what is left of the batch's budget; returns how many requests were sent. */
  private async enqueue(targets: JobTarget[], sentBefore: number): Promise<number> {
    return enqueuePlanned(this.fs.reconcile, targets, { mountId: this.mount.id, reason: 'drift', hash: false }, Math.max(1, this.maxJobs - sentBefore));
  }

  /**
   * The non-recursive reconcile jobs queued or running on the directories of `paths`: for
   * each directory, the moment (our clock) after which its listing began — +∞ for a queued
   * one (it starts after now). Ages, not timestamps, cross between the clocks.
   */
  private async listingsOnTheirWay(paths: readonly string[]): Promise<Map<string, number>> {
    const dirs = new Set<string>();
    for (const p of paths) {
      const dir = parentOf(p);
      if (dir !== null) dirs.add(dir);
    }
    const asked = performance.now();
    const open = await openListings(this.fs.pool, this.mount.id, [...dirs]);
    const startedAfter = new Map<string, number>();
    for (const l of open) {
      const since = l.startedAgoMs === null ? Number.POSITIVE_INFINITY : asked - l.startedAgoMs;
      startedAfter.set(l.path, Math.max(startedAfter.get(l.path) ?? Number.NEGATIVE_INFINITY, since));
    }
    return startedAfter;
  }

  /**
   * The paths of a chunk that a listing of their directory already on its way will see, so
   * judging them now would only repeat its work: a non-recursive job of the directory that is
   * queued (`covered`: it starts after now, so after the change; the request a judgement
   * would make joins that very job anyway), or running since after the watcher reported the
   * path (`waiting`: its listing began after the change; they are looked at again when it is
   * over, since a reconciliation skips what someone else holds at that moment). Their locks
   * are not taken, so that listing is not made to skip them. Only files and symlinks, on disk
   * and in the catalogue: a new, vanished or replaced directory needs a recursive look that a
   * listing of its parent does not give. The drift they are shows in the listing's own events
   * (`filestore.node.reconciled`, and `filestore.drift.detected` for a changed node).
   */
  private async coveredByListings(
    paths: readonly string[],
    seen: ReadonlyMap<string, Observed>,
    listings: ReadonlyMap<string, number>,
    seenAt: ReadonlyMap<string, number> | undefined,
  ): Promise<{ covered: Set<string>; waiting: Set<string> }> {
    const none = { covered: new Set<string>(), waiting: new Set<string>() };
    if (listings.size === 0) return none;
    const queued: string[] = [];
    const running: string[] = [];
    for (const p of paths) {
      const observed = seen.get(p);
      if (!observed || observed.kind === 'directory') continue;
      const startedAfter = listings.get(parentOf(p) ?? '');
      if (startedAfter === undefined) continue;
      if (startedAfter === Number.POSITIVE_INFINITY) queued.push(p);
      else {
        const at = seenAt?.get(p);
        if (at !== undefined && startedAfter > at + CLOCK_MARGIN_MS) running.push(p);
      }
    }
    if (queued.length + running.length === 0) return none;
    const dirs = await liveDirectoriesAmong(this.fs.pool, this.mount.id, [...queued, ...running]);
    return { covered: new Set(queued.filter((p) => !dirs.has(p))), waiting: new Set(running.filter((p) => !dirs.has(p))) };
  }

  /** lstat first (no transaction open), then one short transaction: try-lock, read rows, compare, mark, report. */
  private async judgeChunk(
    chunk: string[],
    untrackedDirs: Set<string>,
    listings: ReadonlyMap<string, number>,
    seenAt: ReadonlyMap<string, number> | undefined,
    rootUnchanged: (() => Promise<boolean | null>) | undefined,
  ) {
    const none = { covered: 0, waiting: [] as string[], appeared: [] as string[], checked: 0, drift: 0, deferred: [] as string[], dropped: [] as string[], targets: [] as JobTarget[] };
    const { rows: clock } = await this.fs.pool.query<{ now: Date }>('SELECT now() AS now');
    const since = (clock[0] as { now: Date }).now;
    const seen = await this.disk.statAll(chunk);
    // A root gone while we looked reads as every path deleted: nothing of it is judged.
    const same = rootUnchanged ? await rootUnchanged() : true;
    if (same === false) return { ...none, dropped: chunk };
    if (same === null) return { ...none, deferred: chunk };
    const appeared = chunk.filter((p) => seen.get(p)?.kind === 'directory');
    const { covered, waiting } = await this.coveredByListings(chunk, seen, listings, seenAt);
    const paths = covered.size + waiting.size === 0 ? chunk : chunk.filter((p) => !covered.has(p) && !waiting.has(p));
    const left = { covered: covered.size, waiting: [...waiting], appeared };
    if (paths.length === 0) return { ...none, ...left };
    const client = await this.fs.pool.connect();
    try {
      return await inTransaction(client, async () => {
        const free = await lockPathsForWrite(client, this.mount.id, paths);
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
        await recordUntrackedDrift(client, this.mount.id, untracked, this.reason, this.groupUntrackedAt);
        await touchCheckedMany(client, this.mount.id, matched);

        const drift = marked.length + untracked.length;
        if (drift > 0) this.fs.metrics.driftDetected.inc({ mount: this.mount.key }, drift);
        if (marked.length > 0) this.fs.metrics.nodeTransitions.inc({ from: 'ACTIVE', to: 'INCONSISTENT' }, marked.length);
        return { ...none, ...left, checked: mine.length, drift, deferred, targets };
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
}

function coveredBy(path: string, dirs: ReadonlySet<string>): boolean {
  if (dirs.size === 0) return false;
  for (const a of ancestorsOf(path)) if (dirs.has(a)) return true;
  return false;
}
