import type { EntryStat } from '../backends/types.ts';
import { beginLockAndRead, markInconsistentMany, touchCheckedAndCommitSql, untrackedDriftEvents, type DriftSignal } from '../catalogue/drift-writes.ts';
import { appendEventsSql } from '../catalogue/inline-writes.ts';
import type { CatalogueNode, Mount } from '../catalogue/types.ts';
import { ancestorsOf, comparePaths } from '../paths.ts';
import { coveredByListings, listingsOnTheirWay } from './drift-listings.ts';
import { driftObserverFor, type DriftObserver } from './drift-observer.ts';
import type { DriftBatch, DriftCore, DriftOptions, DriftResult, DriftTx, TxWork } from './drift-types.ts';
import { DEFAULT_MAX_JOBS_PER_BATCH, enqueuePlanned, minimalRoots, type JobTarget } from './job-plan.ts';

export type { DriftBatch, DriftChange, DriftCore, DriftOptions, DriftResult, DriftTx, JudgedChunk, TxWork } from './drift-types.ts';

/** Untracked entries of one directory in one batch from which one event reports them all (a burst). */
export const DEFAULT_GROUP_UNTRACKED_AT = 16;

/** Why a path needs a reconciliation, or null when the catalogue already says what storage holds. */
export type Verdict = { mark: DriftSignal | null; untracked: EntryStat | null; target: JobTarget } | null;

/**
 * The rule: drift when storage and the live row disagree (or one of them is absent). A node
 * already INCONSISTENT or MISSING was signalled before: it gets a job, no new event.
 */
export function judgeDrift(node: CatalogueNode | null, seen: EntryStat | null, differs: DriftObserver['differs']): Verdict {
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
  if (kindChanged || differs(node, seen)) {
    return { mark: { node, seen }, untracked: null, target: { path: node.path, recursive: kindChanged && (isDir || seen.kind === 'directory') } };
  }
  // As recorded; a node still waiting for its reconciliation gets one (the queue coalesces).
  return node.consistencyState === 'ACTIVE' ? null : { mark: null, untracked: null, target: { path: node.path, recursive: false } };
}

/**
 * Turns paths storage says changed into catalogue effects, set-based: a burst of 10,000 paths
 * is two transactions of a few statements and a handful of reconcile jobs. What the agent's
 * watcher and the S3-event Lambda both call (docs/reconciliation.md, "Drift signals").
 *
 * How "Filestore's own writes never produce drift" holds across processes. A chunk takes the
 * database time T, looks at storage (outside any transaction: no lock is held during I/O),
 * then in one short transaction try-locks the paths (the locks every command holds from
 * before it touches storage until after its catalogue commit) and reads their rows. A path
 * is *deferred*, not judged, when a command holds it now, or when a write changed its row
 * after T (a command that ran between our look and our read: what we saw may predate its
 * row). Any other row was committed before T, so what we saw after T is what that row must
 * match (the strategy's `differs`); a row that matches is no drift, whoever made the change.
 *
 * Drift: the node goes ACTIVE → INCONSISTENT with `filestore.drift.detected` (or, for an
 * untracked path, the event alone with `nodeId: null`; one event per directory for a burst of
 * them), counted in filestore_drift_detected_total, and reconciliations are requested
 * (`dispatch`). Paths a listing already on its way will see are left to it.
 */
export async function detectDrift(core: DriftCore, mount: Mount, batch: DriftBatch, o: DriftOptions = {}): Promise<DriftResult> {
  const ctx: Chunking = {
    core,
    mount,
    observer: o.observer ?? driftObserverFor(core.backends, mount),
    reason: o.reason ?? 'watcher',
    groupUntrackedAt: o.groupUntrackedAt ?? DEFAULT_GROUP_UNTRACKED_AT,
    seenAt: batch.seenAt,
    sequencers: batch.sequencers,
    rootUnchanged: o.rootUnchanged,
    untrackedDirs: new Set(),
    listings: new Map(),
    since: batch.since ? [batch.since] : [],
    inTransaction: o.inTransaction,
  };
  const chunkSize = o.chunkSize ?? 1_000;
  const maxJobs = o.maxJobs ?? DEFAULT_MAX_JOBS_PER_BATCH;
  const result: DriftResult = { checked: 0, covered: 0, waiting: [], drift: 0, deferred: [], dropped: [], jobs: 0, observed: new Map(), since: undefined };
  const dispatch =
    o.dispatch ??
    ((targets: JobTarget[]) => enqueuePlanned(core.reconcile, targets, { mountId: mount.id, reason: 'drift', hash: false }, Math.max(1, maxJobs - result.jobs)));
  const send = async (targets: JobTarget[]) => {
    if (targets.length > 0) result.jobs += await dispatch(targets);
  };

  const paths = [...batch.changes.keys()].sort(comparePaths);
  if (o.skipCoveredByListings !== false) ctx.listings = await listingsOnTheirWay(core.pool, mount.id, paths);
  // A chunk's jobs are sent as soon as it is judged: under a burst, the first directories'
  // listings run while the rest of the batch is still being judged (the queue joins a request
  // to a job of the same path still waiting). The batch's budget of jobs is shared by its
  // chunks; directories that appeared are looked at once, after the whole batch.
  let targets: JobTarget[] = (batch.rescans ?? []).map((path) => ({ path, recursive: true }));
  const appeared: string[] = [];
  for (let i = 0; i < paths.length; i += chunkSize) {
    const chunk = await judgeChunk(ctx, paths.slice(i, i + chunkSize));
    result.since ??= chunk.since;
    result.checked += chunk.checked;
    result.covered += chunk.covered;
    result.waiting.push(...chunk.waiting);
    result.drift += chunk.drift;
    result.deferred.push(...chunk.deferred);
    result.dropped.push(...chunk.dropped);
    targets.push(...chunk.targets);
    for (const t of chunk.targets) {
      const seenAt = chunk.observed.get(t.path);
      if (seenAt !== undefined) result.observed.set(t.path, seenAt);
    }
    if (chunk.drift > 0 || chunk.applied) await core.changed(mount.id);
    appeared.push(...chunk.appeared.filter((p) => batch.changes.get(p) === 'created'));
    await send(targets);
    targets = [];
  }
  if (o.final) {
    targets.push(...[...result.deferred, ...result.waiting].map((path) => ({ path, recursive: false })));
    result.deferred = [];
    result.waiting = [];
  }
  // After the batch's other jobs: a new directory's recursive job must start after the watch
  // that covers what it holds (the agent's mount-watcher.ts), and that is done once.
  if (o.beforeJobs && appeared.length > 0) targets.push(...(await o.beforeJobs(minimalRoots(appeared))).map((path) => ({ path, recursive: true })));
  await send(targets);
  return result;
}

/** What the chunks of one batch share. */
interface Chunking {
  core: DriftCore;
  mount: Mount;
  observer: DriftObserver;
  reason: string;
  groupUntrackedAt: number;
  seenAt: ReadonlyMap<string, number> | undefined;
  sequencers: ReadonlyMap<string, string> | undefined;
  rootUnchanged: (() => Promise<boolean | null>) | undefined;
  /** Untracked directories reported in this batch: what lies below them is theirs (one event and one recursive job). */
  untrackedDirs: Set<string>;
  /** For each directory with a non-recursive job on its way: after when (our clock) its listing began; +∞ when queued. */
  listings: ReadonlyMap<string, number>;
  /** The batch's `since`, for its first chunk (taken once used). */
  since: Date[];
  inTransaction: DriftTx | undefined;
}

async function databaseNow(core: DriftCore): Promise<Date> {
  const { rows } = await core.pool.query<{ now: Date }>('SELECT now() AS now');
  return (rows[0] as { now: Date }).now;
}

/** A look at storage first (no transaction open), then one short transaction: try-lock, read rows, compare, mark, report. */
async function judgeChunk(ctx: Chunking, chunk: string[]) {
  const { core, mount } = ctx;
  const none = { applied: false, covered: 0, waiting: [] as string[], appeared: [] as string[], checked: 0, drift: 0, deferred: [] as string[], dropped: [] as string[], targets: [] as JobTarget[], observed: new Map<string, EntryStat | null>(), since: undefined as Date | undefined };
  const since = ctx.since.shift() ?? (await databaseNow(core));
  none.since = since;
  const seen = await ctx.observer.observe(chunk);
  // A root gone while we looked reads as every path deleted: nothing of it is judged.
  const same = ctx.rootUnchanged ? await ctx.rootUnchanged() : true;
  if (same === false) return { ...none, dropped: chunk };
  if (same === null) return { ...none, deferred: chunk };
  const appeared = chunk.filter((p) => seen.get(p)?.kind === 'directory');
  const { covered, waiting } = await coveredByListings(core.pool, mount.id, ctx.listings, ctx.seenAt, chunk, seen);
  const paths = covered.size + waiting.size === 0 ? chunk : chunk.filter((p) => !covered.has(p) && !waiting.has(p));
  const left = { covered: covered.size, waiting: [...waiting], appeared };
  if (paths.length === 0) return { ...none, ...left };
  const client = await core.pool.connect();
  try {
    // Two round trips (drift-writes.ts): BEGIN with the try-locks and the read; the rows found
    // as recorded with the COMMIT. Drift adds its own statements in between.
    try {
      const { free, live, changed } = await beginLockAndRead(client, mount.id, paths, since, ctx.inTransaction?.also(paths) ?? []);
      const deferred = paths.filter((p) => !free.has(p) || changed.has(p));
      const mine = paths.filter((p) => free.has(p) && !changed.has(p));

      const marks: DriftSignal[] = [];
      const untracked: EntryStat[] = [];
      const targets: JobTarget[] = [];
      const matched: CatalogueNode[] = [];
      for (const path of mine) {
        const node = live.get(path) ?? null;
        const observed = seen.get(path);
        if (observed === undefined) {
          // Storage could not be read at this path: no judgement, the reconciler looks.
          targets.push({ path, recursive: false });
          continue;
        }
        const verdict = judgeDrift(node, observed, ctx.observer.differs);
        if (verdict === null) {
          if (node) matched.push(node);
          continue;
        }
        if (verdict.untracked) {
          if (coveredBy(path, ctx.untrackedDirs)) continue;
          if (verdict.untracked.kind === 'directory') ctx.untrackedDirs.add(path);
          untracked.push(verdict.untracked);
        }
        if (verdict.mark) marks.push(verdict.mark);
        targets.push(verdict.target);
      }
      const marked = await markInconsistentMany(client, mount.id, marks, ctx.reason);
      // The untracked paths' events, then the rows checked and as recorded (Filestore's own
      // write, a duplicate event: its event is accounted for), with the COMMIT: one round trip.
      const events = untrackedDriftEvents(mount.id, untracked, ctx.reason, ctx.groupUntrackedAt);
      let work: TxWork = { sql: [], touched: [] };
      if (ctx.inTransaction && targets.length > 0) {
        for (const n of marked) live.set(n.path, n);
        work = await ctx.inTransaction.run({ client, targets, observed: seen, live, free, changed, since });
      }
      await client.query(
        touchCheckedAndCommitSql(
          mount.id,
          [...matched.map((n) => ({ id: n.id, sequencer: ctx.sequencers?.get(n.path) })), ...work.touched],
          [appendEventsSql(events), ...work.sql],
          work.last,
          // Nothing marked and no batch apply ran on this transaction: only checks and sequencers.
          { wroteNothingElse: marked.length === 0 && !(ctx.inTransaction && targets.length > 0) },
        ),
      );

      const drift = marked.length + untracked.length;
      if (drift > 0) core.metrics.driftDetected.inc({ mount: mount.key }, drift);
      if (marked.length > 0) core.metrics.nodeTransitions.inc({ from: 'ACTIVE', to: 'INCONSISTENT' }, marked.length);
      return { ...none, ...left, checked: mine.length, drift, deferred, targets, observed: seen, applied: work.changed === true };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    }
  } finally {
    client.release();
  }
}

function coveredBy(path: string, dirs: ReadonlySet<string>): boolean {
  if (dirs.size === 0) return false;
  for (const a of ancestorsOf(path)) if (dirs.has(a)) return true;
  return false;
}
