import type { EntryStat } from '../../backends/types.ts';
import { beginLockAndRead, touchCheckedAndCommitSql } from '../../catalogue/drift-writes.ts';
import { addInsertedToAncestorsSql, appendEventsSql, int, lit } from '../../catalogue/inline-writes.ts';
import { insertNodes, newNodeFromStat, recordSequencers } from '../../catalogue/node-writes.ts';
import { applyChanges, type Guard } from '../../catalogue/reconcile-writes.ts';
import type { CatalogueNode, Mount } from '../../catalogue/types.ts';
import type { Queryable } from '../../db/pool.ts';
import { ancestorsOf } from '../../paths.ts';
import type { ReconcileCore } from '../reconciler.ts';
import { RunRoot } from '../run-root.ts';
import { strategyFor } from '../strategy.ts';
import { zeroCounts, type ReconcileCounts } from '../types.ts';

/** A key detectDrift judged drifted, with what its look at storage found. */
export interface ObservedKey {
  path: string;
  seen: EntryStat;
  sequencer: string | undefined;
}

/** What `applyObserved` did: the paths it reconciled, and those left to a reconciliation of their own. */
export interface AppliedKeys {
  done: string[];
  rest: string[];
}

interface Planned {
  key: ObservedKey;
  node: CatalogueNode | null;
}

/**
 * The reconciliation of a batch of single S3 keys whose state is already known (detectDrift's
 * HEAD, taken after `since`), in one transaction: what `reconcilePath` does for each (reason
 * `s3_event`), with a job row per key, the same node writes, events, versions and counts, but
 * without a look of its own, a run lock, or a transaction per key.
 *
 * Only the plain cases are taken: a file where the catalogue has none (discovered) or has a
 * file that differs (updated), below directories it already holds, its path free now and its
 * row unchanged since `since`, no job row waiting for it. Every other key (a directory, a
 * deletion and its MISSING grace, a change of kind, an untracked ancestor, a path held or
 * rewritten meanwhile, a waiting row to join) is returned in `rest` for `reconcilePath`.
 *
 * Why the look before `since` is enough: a reconciliation's own guard is its scan start, read
 * before its look at storage; here `since` was read before detectDrift's look, and a row a
 * writer changed after it is left to `rest` (read after the path locks, in this transaction),
 * so what is written is what storage held after the last write the catalogue recorded.
 */
export async function applyObserved(core: ReconcileCore, mount: Mount, keys: ObservedKey[], since: Date, o: { s3MissingGraceMs?: number | undefined } = {}): Promise<AppliedKeys> {
  const files = keys.filter((k) => k.seen.kind === 'file');
  const rest = keys.filter((k) => k.seen.kind !== 'file').map((k) => k.path);
  if (files.length === 0) return { done: [], rest };
  const started = performance.now();
  const strategy = strategyFor(mount, () => core.backends.forMount(mount), { s3MissingGraceMs: o.s3MissingGraceMs ?? 2_000 });
  // As every run does: the bucket can be listed (else the mount is unhealthy and nothing is
  // committed), then healthy. On the pool's other connection, while the transaction's
  // statements go on the first; awaited before the COMMIT.
  const rootChecked = new RunRoot(core.pool, mount, strategy, false).begin();
  rootChecked.catch(() => {}); // awaited below

  const reason = 's3_event';
  const client = await core.pool.connect();
  let planned: Planned[] = [];
  const transitions: Array<[string, string]> = [];
  let newDrift = 0;
  const counts = new Map<string, ReconcileCounts>();
  try {
    try {
      const ancestors = [...new Set(files.flatMap((k) => ancestorsOf(k.path)))];
      const { free, live, changed } = await beginLockAndRead(
        client,
        mount.id,
        files.map((k) => k.path),
        since,
        ancestors,
      );
      for (const key of files) {
        const node = live.get(key.path) ?? null;
        const plain =
          free.has(key.path) &&
          !changed.has(key.path) &&
          ancestorsOf(key.path).every((a) => live.get(a)?.kind === 'directory') &&
          (node === null || (node.kind === 'file' && node.consistencyState !== 'MISSING' && strategy.differs(node, key.seen)));
        if (plain) planned.push({ key, node });
        else rest.push(key.path);
      }
      const jobs = await insertRunningJobs(client, mount.id, planned.map((p) => p.key));
      for (const p of planned) if (!jobs.has(p.key.path)) rest.push(p.key.path);
      planned = planned.filter((p) => jobs.has(p.key.path));

      // New files in one insert (insertNodes takes one job for the snapshots: the first; each
      // snapshot gets its own key's job below, with the job rows' update, in this transaction).
      const discovered = planned.filter((p) => p.node === null);
      const firstJob = discovered.length > 0 ? (jobs.get(discovered[0]?.key.path as string) as number) : null;
      const rows = firstJob === null ? [] : await insertNodes(client, mount.id, discovered.map((p) => newNodeFromStat(p.key.seen)), { reconciliationJobId: firstJob }, 'ignore');
      const byPath = new Map(rows.map((r) => [r.path, r]));
      const inserted: Array<{ node: CatalogueNode; jobId: number }> = [];
      const written = new Map<string, number>();
      for (const { key, node } of planned) {
        const jobId = jobs.get(key.path) as number;
        const c = zeroCounts();
        c.checked = 1;
        if (node === null) {
          const row = byPath.get(key.path);
          if (row) {
            written.set(key.path, row.id);
            inserted.push({ node: row, jobId });
            c.discovered = 1;
            transitions.push(['UNTRACKED', 'ACTIVE']);
          } else c.unchanged = 1;
        } else {
          const guard: Guard = { mountId: mount.id, jobId, scanStartedAt: since };
          const [row] = await applyChanges(client, guard, [{ node, seen: key.seen, sha256: null }], reason);
          if (row) {
            written.set(key.path, row.id);
            c.updated = 1;
            transitions.push([node.consistencyState, 'ACTIVE']);
            if (node.consistencyState !== 'INCONSISTENT') newDrift++;
          } else c.unchanged = 1;
        }
        counts.set(key.path, c);
      }
      // The key has been looked at: events up to this one are accounted for. The rest of the
      // transaction goes as one round trip of statements as text (inline-writes.ts): the
      // ancestors' rollup deltas, the reconciled events, the job rows finished (each first
      // snapshot credited to its key's job), the sequencers, COMMIT. The sequencers go by node
      // id when every key's node was written (its checked mark is this transaction's now()
      // already, so touching it again changes nothing); else by path, as reconcilePath does.
      await rootChecked;
      const sequenced = planned.flatMap((p) => (p.key.sequencer === undefined ? [] : [{ path: p.key.path, sequencer: p.key.sequencer }]));
      const allWritten = written.size === planned.length;
      if (!allWritten) await recordSequencers(client, mount.id, sequenced);
      await client.query(
        touchCheckedAndCommitSql(
          mount.id,
          allWritten ? planned.map((p) => ({ id: written.get(p.key.path) as number, sequencer: p.key.sequencer })) : [],
          [
            addInsertedToAncestorsSql(
              mount.id,
              inserted.map((i) => i.node),
            ),
            appendEventsSql(
              inserted.map(({ node, jobId }) => ({ type: 'filestore.node.reconciled' as const, mountId: mount.id, data: { node: node as unknown as Record<string, unknown>, change: 'discovered', reason, jobId } })),
            ),
            finishJobsSql(
              [...jobs].filter(([path]) => counts.has(path)).map(([path, id]) => ({ id, result: counts.get(path) as ReconcileCounts })),
              inserted.map((i) => ({ nodeId: i.node.id, jobId: i.jobId })),
            ),
          ],
        ),
      );
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      await rootChecked.catch(() => {}); // nothing of this batch left running
      throw err;
    }
  } finally {
    client.release();
  }
  if (planned.length > 0) await core.changed(mount.id);
  for (const [from, to] of transitions) core.metrics.nodeTransitions.inc({ from, to });
  if (newDrift > 0) core.metrics.driftDetected.inc({ mount: mount.key }, newDrift);
  const seconds = (performance.now() - started) / 1000 / Math.max(1, planned.length);
  for (let i = 0; i < planned.length; i++) {
    core.metrics.reconcileDuration.observe({ backend: mount.kind }, seconds);
    core.metrics.reconcileJobs.inc({ backend: mount.kind, reason, outcome: 'succeeded' });
  }
  return { done: planned.map((p) => p.key.path), rest };
}

/**
 * A job row per key, as `reconcilePath` records its request and claims it (running, attempt
 * 1, started now), in one statement; a path with a row already waiting is left out (its
 * request would join that row: `reconcilePath` does that).
 */
async function insertRunningJobs(q: Queryable, mountId: string, keys: ObservedKey[]): Promise<Map<string, number>> {
  if (keys.length === 0) return new Map();
  const { rows } = await q.query<{ id: number; path: string }>(
    `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status, attempts, started_at, queue_owed, transport)
     SELECT $1, t.path, 's3_event', t.options::jsonb, 'running', 1, now(), false, 'redis'
       FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(path, options, n)
      WHERE NOT EXISTS (SELECT 1 FROM filestore.reconciliation_jobs w WHERE w.mount_id = $1 AND w.path = t.path AND w.status = 'queued')
      ORDER BY t.n
     RETURNING id, path`,
    [mountId, keys.map((k) => k.path), keys.map((k) => JSON.stringify({ recursive: false, hash: false, ...(k.sequencer ? { sequencer: k.sequencer } : {}) }))],
  );
  return new Map(rows.map((r) => [r.path, r.id]));
}

/**
 * running → succeeded with each row's counts (finishJob, for many rows), and the first
 * snapshot of each node discovered credited to its own key's job: one statement, as text.
 */
function finishJobsSql(rows: Array<{ id: number; result: ReconcileCounts }>, snapshots: Array<{ nodeId: number; jobId: number }>): string | null {
  if (rows.length === 0) return null;
  const ids = (values: number[]) => `ARRAY[${values.map(int).join(',')}]::bigint[]`;
  const snap =
    snapshots.length === 0
      ? ''
      : `WITH snap AS (
       UPDATE filestore.snapshots s SET reconciliation_job_id = v.job_id
         FROM unnest(${ids(snapshots.map((x) => x.nodeId))}, ${ids(snapshots.map((x) => x.jobId))}) AS v(node_id, job_id)
        WHERE s.node_id = v.node_id AND s.version = 1
     )
     `;
  return `${snap}UPDATE filestore.reconciliation_jobs j
        SET status = 'succeeded', result = r.result::jsonb, error = NULL, finished_at = now(), updated_at = now()
       FROM unnest(${ids(rows.map((r) => r.id))}, ARRAY[${rows.map((r) => lit(JSON.stringify(r.result))).join(',')}]::text[]) AS r(id, result)
      WHERE j.id = r.id AND j.status = 'running'`;
}
