import type { EntryStat } from '../../backends/types.ts';
import { addInsertedToAncestorsSql, appendEventsSql, int, lit } from '../../catalogue/inline-writes.ts';
import { newNodeFromStat, recordSequencers } from '../../catalogue/node-writes.ts';
import { NODE_COLUMNS, SNAPSHOT_COLUMN, snapshotState } from '../../catalogue/rows.ts';
import { applyChanges, setMountHealthySql, type Guard } from '../../catalogue/reconcile-writes.ts';
import type { CatalogueNode, Mount } from '../../catalogue/types.ts';
import type { Queryable } from '../../db/pool.ts';
import { ancestorsOf, baseName, parentOf } from '../../paths.ts';
import type { DriftTx, JudgedChunk, TxWork } from '../drift.ts';
import type { ReconcileCore } from '../reconciler.ts';
import { RunRoot } from '../run-root.ts';
import { strategyFor } from '../strategy.ts';
import { zeroCounts, type ReconcileCounts } from '../types.ts';

export interface Planned {
  path: string;
  seen: EntryStat;
  sequencer: string | undefined;
  node: CatalogueNode | null;
}

const SAVEPOINT = 's3_event_apply';

/**
 * The reconciliation of a batch's single S3 keys whose state detectDrift's HEAD just found,
 * done in the judgement's own transaction (detectDrift's `inTransaction`), before its COMMIT:
 * what `reconcilePath` does for each (reason `s3_event`), with a job row per key, the same
 * node writes, events, versions and counts, but without a look of its own, a run lock, or a
 * transaction per key. The judgement's path locks, its read (with the keys' ancestors) and
 * its COMMIT serve both; its drift events are written before the reconciled ones, as when the
 * judgement committed first.
 *
 * Only the plain cases are taken: a file where the catalogue has none (discovered) or has a
 * file that differs (updated), below directories it already holds, its path free and its row
 * unchanged since `since`, no job row waiting for it. Every other drifted key (a directory, a
 * deletion and its MISSING grace, a change of kind, an untracked ancestor, a path held or
 * rewritten meanwhile, a waiting row to join) is left to `reconcilePath` after the COMMIT.
 *
 * Why the look before `since` is enough: a reconciliation's own guard is its scan start, read
 * before its look at storage; here `since` was read before detectDrift's look, and a row a
 * writer changed after it is not judged (read after the path locks), so what is written is
 * what storage held after the last write the catalogue recorded.
 *
 * Its writes follow a SAVEPOINT: if one fails (or the bucket's root check does), they are
 * undone, the judgement still commits, and the keys go to `reconcilePath`.
 */
export class BatchApply implements DriftTx {
  private done: string[] = [];
  private transitions: Array<[string, string]> = [];
  private newDrift = 0;
  private seconds = 0;

  constructor(
    private readonly core: ReconcileCore,
    private readonly mount: Mount,
    private readonly sequencers: ReadonlyMap<string, string>,
    private readonly o: { s3MissingGraceMs?: number | undefined; log?: { warn(message: string, data: Record<string, unknown>): void } | undefined } = {},
  ) {}

  also(paths: string[]): string[] {
    return [...new Set(paths.flatMap((p) => ancestorsOf(p)))];
  }

  async run(tx: JudgedChunk): Promise<TxWork> {
    const { mount } = this;
    const strategy = strategyFor(mount, () => this.core.backends.forMount(mount), { s3MissingGraceMs: this.o.s3MissingGraceMs ?? 2_000 });
    const planned: Planned[] = [];
    for (const t of tx.targets) {
      const seen = tx.observed.get(t.path);
      if (t.recursive || !seen || seen.kind !== 'file') continue;
      const node = tx.live.get(t.path) ?? null;
      const plain =
        tx.free.has(t.path) &&
        !tx.changed.has(t.path) &&
        ancestorsOf(t.path).every((a) => tx.live.get(a)?.kind === 'directory') &&
        (node === null || (node.kind === 'file' && node.consistencyState !== 'MISSING' && strategy.differs(node, seen)));
      if (plain) planned.push({ path: t.path, seen, sequencer: this.sequencers.get(t.path), node });
    }
    if (planned.length === 0) return { sql: [], touched: [] };
    const started = performance.now();
    // As every run does: the bucket can be listed (else the mount is unhealthy and nothing is
    // applied), then healthy. The LIST while the statements go on the judgement's connection,
    // awaited before they end; the healthy mark goes with the COMMIT (last, so that the mount's
    // row lock is held for no wait), an unhealthy one on the pool at once (RunRoot). Not when
    // the mount was found healthy less than ROOT_CHECK_FRESH_MS before this batch's look.
    const rootChecked = rootCheckIsFresh(mount, tx.since) ? Promise.resolve(false) : new RunRoot(this.core.pool, mount, strategy, false).checked();
    rootChecked.catch(() => {}); // awaited below
    let saved = false;
    try {
      const { jobs, inserted } = await insertJobsAndNodes(tx.client, mount.id, planned, () => (saved = true));
      const taken = planned.filter((p) => jobs.has(p.path));
      const work = await this.write(tx, taken, jobs, inserted);
      if (await rootChecked) work.last = [setMountHealthySql(mount.id)];
      // detectDrift calls core.changed() after this COMMIT (committed() does not).
      work.changed = taken.length > 0;
      this.done.push(...taken.map((p) => p.path));
      this.seconds += (performance.now() - started) / 1000;
      return work;
    } catch (err) {
      await rootChecked.catch(() => {}); // nothing of this batch left running
      if (!saved) throw err;
      // Undone; the judgement goes on and the keys are reconciled one by one.
      await tx.client.query(`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`);
      this.transitions = [];
      this.newDrift = 0;
      this.o.log?.warn('S3 event keys not applied together; reconciled one by one', { mount: mount.key, error: (err as Error).message });
      return { sql: [], touched: [] };
    }
  }

  /** The changed files' writes (statements of their own), then the rest as text for the COMMIT's round trip. */
  private async write(tx: JudgedChunk, planned: Planned[], jobs: Map<string, number>, rows: CatalogueNode[]): Promise<TxWork> {
    const { mount } = this;
    const reason = 's3_event';
    // The new files were inserted with their job rows (insertJobsAndNodes).
    const byPath = new Map(rows.map((r) => [r.path, r]));
    const inserted: Array<{ node: CatalogueNode; jobId: number }> = [];
    const written = new Map<string, number>();
    const counts = new Map<string, ReconcileCounts>();
    for (const { path, seen, node } of planned) {
      const jobId = jobs.get(path) as number;
      const c = zeroCounts();
      c.checked = 1;
      if (node === null) {
        const row = byPath.get(path);
        if (row) {
          written.set(path, row.id);
          inserted.push({ node: row, jobId });
          c.discovered = 1;
          this.transitions.push(['UNTRACKED', 'ACTIVE']);
        } else c.unchanged = 1;
      } else {
        const guard: Guard = { mountId: mount.id, jobId, scanStartedAt: tx.since };
        const [row] = await applyChanges(tx.client, guard, [{ node, seen, sha256: null }], reason);
        if (row) {
          written.set(path, row.id);
          c.updated = 1;
          this.transitions.push([node.consistencyState, 'ACTIVE']);
          if (node.consistencyState !== 'INCONSISTENT') this.newDrift++;
        } else c.unchanged = 1;
      }
      counts.set(path, c);
    }
    // The key has been looked at: events up to this one are accounted for. By node id when
    // every key's node was written (its checked mark is this transaction's now() already, so
    // touching it again changes nothing); else by path, as reconcilePath does.
    const allWritten = written.size === planned.length;
    if (!allWritten) await recordSequencers(tx.client, mount.id, planned.flatMap((p) => (p.sequencer === undefined ? [] : [{ path: p.path, sequencer: p.sequencer }])));
    return {
      sql: [
        addInsertedToAncestorsSql(
          mount.id,
          inserted.map((i) => i.node),
        ),
        appendEventsSql(
          inserted.map(({ node, jobId }) => ({ type: 'filestore.node.reconciled' as const, mountId: mount.id, data: { node: node as unknown as Record<string, unknown>, change: 'discovered', reason, jobId } })),
        ),
        finishJobsSql([...jobs].filter(([path]) => counts.has(path)).map(([path, id]) => ({ id, result: counts.get(path) as ReconcileCounts }))),
      ],
      touched: allWritten ? planned.map((p) => ({ id: written.get(p.path) as number, sequencer: p.sequencer })) : [],
    };
  }

  /** After the judgement's COMMIT (and its core.changed(), detectDrift's): the paths applied (no reconciliation of their own) and their metrics. */
  async committed(): Promise<string[]> {
    const done = this.done;
    this.done = [];
    if (done.length === 0) return done;
    const { core, mount } = this;
    for (const [from, to] of this.transitions) core.metrics.nodeTransitions.inc({ from, to });
    if (this.newDrift > 0) core.metrics.driftDetected.inc({ mount: mount.key }, this.newDrift);
    const seconds = this.seconds / done.length;
    for (let i = 0; i < done.length; i++) {
      core.metrics.reconcileDuration.observe({ backend: mount.kind }, seconds);
      core.metrics.reconcileJobs.inc({ backend: mount.kind, reason: 's3_event', outcome: 'succeeded' });
    }
    this.transitions = [];
    this.newDrift = 0;
    this.seconds = 0;
    return done;
  }

  /** The judgement did not commit: nothing was applied. */
  discard(): void {
    this.done = [];
    this.transitions = [];
    this.newDrift = 0;
    this.seconds = 0;
  }
}

/**
 * How long a look at a bucket's root that found it healthy spares the S3-event batches after
 * it theirs: the LIST of the bucket (a LIST request costs S3's customers 12.5 times a HEAD: one
 * per batch of ten new objects cost more than their ten HEADs) and the write of the mount's row
 * with the COMMIT (one row every concurrent invocation of the mount wrote, each waiting for the
 * one before it to commit). The mount read with the batch says when (`healthCheckedAt`); the
 * batch's HEADs found its objects meanwhile. A bucket gone or refused since then fails those
 * HEADs: nothing is applied, and the next look marks the mount unhealthy.
 */
export const ROOT_CHECK_FRESH_MS = 60_000;

function rootCheckIsFresh(mount: Mount, lookedAt: Date): boolean {
  if (mount.health !== 'healthy' || mount.healthCheckedAt === null) return false;
  const age = lookedAt.getTime() - new Date(mount.healthCheckedAt).getTime();
  return age >= 0 && age < ROOT_CHECK_FRESH_MS;
}

/**
 * A job row per key, as `reconcilePath` records its request and claims it (running, attempt
 * 1, started now), and the new files (a key without a live node) inserted as `insertNodes`
 * inserts them (onConflict 'ignore': a path taken meanwhile, or a parent no longer live, is
 * skipped), each with its first snapshot credited to its own key's job: ONE statement, sent
 * with the SAVEPOINT the apply's writes follow (one round trip, simple protocol; every value
 * through escapeLiteral or as a checked integer). A path with a row already waiting is left
 * out, job and node (its request would join that row: `reconcilePath` does that). Each parent
 * is found by mount and path in a LATERAL subquery with LIMIT 1, which PostgreSQL cannot
 * flatten into a join: joined, a plan made without statistics read every live node of the mount
 * by mount alone and filtered them by path (tests/batch-statement-reads.test.ts). The parents
 * are live directories (BatchApply's plain cases) and no new file is another's parent: one
 * level, where insertNodes goes depth by depth. Returns the job ids by path and the rows
 * inserted.
 */
export async function insertJobsAndNodes(q: Queryable, mountId: string, keys: Planned[], saved: () => void): Promise<{ jobs: Map<string, number>; inserted: CatalogueNode[] }> {
  const m = lit(mountId);
  const col = <T>(type: string, f: (k: Planned) => T | null, sql: (v: T) => string) => `ARRAY[${keys.map((k) => { const v = f(k); return v === null || v === undefined ? 'NULL' : sql(v); }).join(',')}]::${type}[]`;
  const nodes = new Map(keys.map((k) => [k, k.node === null ? newNodeFromStat(k.seen) : null]));
  const at = (k: Planned) => nodes.get(k) ?? null;
  const columns = [
    col('text', (k) => k.path, lit),
    col('text', (k) => JSON.stringify({ recursive: false, hash: false, ...(k.sequencer ? { sequencer: k.sequencer } : {}) }), lit),
    col('boolean', (k) => k.node === null, (v) => (v ? 'true' : 'false')),
    col('text', (k) => parentOf(k.path) ?? '', lit),
    col('text', (k) => baseName(k.path), lit),
    col('text', (k) => at(k)?.kind ?? null, lit),
    col('bigint', (k) => at(k)?.sizeBytes ?? null, int),
    col('text', (k) => at(k)?.sha256 ?? null, lit),
    col('text', (k) => at(k)?.etag ?? null, lit),
    col('int', (k) => at(k)?.mode ?? null, int),
    col('int', (k) => at(k)?.uid ?? null, int),
    col('int', (k) => at(k)?.gid ?? null, int),
    col('timestamptz', (k) => at(k)?.mtime ?? null, (d) => lit(d.toISOString())),
    col('jsonb', (k) => (at(k)?.metadata ? JSON.stringify(at(k)?.metadata) : null), lit),
  ].join(', ');
  saved(); // if this round trip fails, a rollback to the savepoint undoes whatever of it ran
  const results = (await q.query(
    `SAVEPOINT ${SAVEPOINT};
     WITH input AS (
       SELECT * FROM unnest(${columns})
         WITH ORDINALITY AS t(path, options, discover, parent_path, name, kind, size_bytes, sha256, etag, mode, uid, gid, mtime, metadata, n)
     ), jobs AS (
       INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status, attempts, started_at, queue_owed, transport)
       SELECT ${m}, t.path, 's3_event', t.options::jsonb, 'running', 1, now(), false, 'redis'
         FROM input t
        WHERE NOT EXISTS (SELECT 1 FROM filestore.reconciliation_jobs w WHERE w.mount_id = ${m} AND w.path = t.path AND w.status = 'queued')
        ORDER BY t.n
       RETURNING id, path
     ), ins AS (
       INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind, size_bytes, sha256, etag,
                                    mode, uid, gid, mtime, metadata, consistency_checked_at)
       SELECT ${m}, i.path, p.id, i.name, i.kind, i.size_bytes, i.sha256, i.etag, i.mode, i.uid, i.gid,
              i.mtime, coalesce(i.metadata, '{}'::jsonb), now()
         FROM input i
         JOIN jobs j ON j.path = i.path
         CROSS JOIN LATERAL (SELECT p.id FROM filestore.nodes p WHERE p.mount_id = ${m} AND p.path = i.parent_path AND p.deleted_at IS NULL LIMIT 1) p
        WHERE i.discover
        ORDER BY i.n
       ON CONFLICT (mount_id, path) WHERE deleted_at IS NULL DO NOTHING
       RETURNING *
     ), snap AS (
       INSERT INTO filestore.snapshots (node_id, version, journal_entry_id, reconciliation_job_id, ${SNAPSHOT_COLUMN})
       SELECT ins.id, ins.version, NULL, j.id, ${snapshotState('ins')} FROM ins JOIN jobs j ON j.path = ins.path
     ), inserted AS (
       SELECT ${NODE_COLUMNS} FROM ins
     )
     SELECT j.id AS "jobId", j.path AS "jobPath", r.* FROM jobs j LEFT JOIN inserted r ON r.path = j.path`,
  )) as unknown as Array<{ rows: Array<{ jobId: number; jobPath: string; id: number | null } & CatalogueNode> }>;
  const jobs = new Map<string, number>();
  const inserted: CatalogueNode[] = [];
  for (const { jobId, jobPath, ...row } of results[1]?.rows ?? []) {
    jobs.set(jobPath, jobId);
    if (row.id !== null) inserted.push(row);
  }
  return { jobs, inserted };
}

/**
 * running → succeeded with each row's counts (finishJob, for many rows): one statement, as text.
 * The rows are this transaction's own (insertJobsAndNodes), running and seen by no one else
 * until its COMMIT: found by id alone. A status condition would match the open-jobs partial
 * index, which PostgreSQL without statistics took to find ten rows among every job ever open
 * and not yet vacuumed (tests/batch-statement-reads.test.ts).
 */
export function finishJobsSql(rows: Array<{ id: number; result: ReconcileCounts }>): string | null {
  if (rows.length === 0) return null;
  const ids = (values: number[]) => `ARRAY[${values.map(int).join(',')}]::bigint[]`;
  return `UPDATE filestore.reconciliation_jobs j
        SET status = 'succeeded', result = r.result::jsonb, error = NULL, finished_at = now(), updated_at = now()
       FROM unnest(${ids(rows.map((r) => r.id))}, ARRAY[${rows.map((r) => lit(JSON.stringify(r.result))).join(',')}]::text[]) AS r(id, result)
      WHERE j.id = r.id`;
}
