import type { Queryable } from '../db/pool.ts';
import type { EntryStat } from '../backends/types.ts';
import { appendEvents, type NewEvent } from './outbox.ts';
import { ancestorPairs } from './node-writes.ts';
import { NODE_COLUMNS, SNAPSHOT_COLUMN, snapshotState } from './rows.ts';
import { descendantsCondition } from './subtree.ts';
import type { CatalogueNode } from './types.ts';

export { analyzeIfStale } from './catalogue-analyze.ts';
export { setMountHealth, setMountHealthySql } from './mount-health.ts';
export { DISCOVERED_BATCH_EVENT_AT, insertDiscovered } from './reconcile-discovered.ts';
export { isLockTimeout, lockPathsForWrite } from './reconcile-locks.ts';

/**
 * Catalogue writes of reconciliation, set-based (one statement per kind of change per batch).
 *
 * Reconciliation never holds the path locks commands take. Instead, every write is guarded:
 * - the batch's paths are try-locked for the transaction (exclusive on the path, shared on
 *   its ancestors); what another writer holds right now is written in a second transaction
 *   that waits for it a little, and what is still held then is left to a follow-up job
 *   (shared/reconcile/run/batch-writer.ts) — the locks in reconcile-locks.ts;
 * - a row is changed only if it still has the version the scan compared and was not changed
 *   since the scan began (`updated_at <= scanStartedAt`): a command that finished meanwhile
 *   wins, and the next reconciliation looks again.
 */

export interface Guard {
  mountId: string;
  jobId: number;
  /** Database time at which the scan began. */
  scanStartedAt: Date;
}

export interface Observation {
  node: CatalogueNode;
  seen: EntryStat;
  /** sha256 of the bytes now on storage, when hashed; null = unknown. */
  sha256: string | null;
}

const event = (type: NewEvent['type'], mountId: string, data: Record<string, unknown>): NewEvent => ({ type, mountId, data });
// Event data as is: appendEvents serialises it once (Dates as ISO strings).
const json = (v: object) => v as Record<string, unknown>;

/**
 * Records what storage holds for nodes that changed behind Filestore's back (metadata,
 * content or kind): version + 1, snapshot, ACTIVE, drift and reconciliation timestamps,
 * `filestore.drift.detected` + `filestore.node.reconciled`. Returns the nodes written.
 */
export async function applyChanges(q: Queryable, g: Guard, changes: Observation[], reason: string): Promise<CatalogueNode[]> {
  if (changes.length === 0) return [];
  // A node that changed moves its ancestors' totals by the difference between what it counts
  // now (ACTIVE: in full) and what it counted before (nothing if it was MISSING: it came back
  // changed; rollups.ts); a change of kind is left to the caller, which recomputes the
  // parent's rollups after the run.
  const [ancRows, ancPaths] = ancestorPairs(changes.map((c) => c.node));
  const { rows } = await q.query<CatalogueNode>(
    `WITH v AS (
       SELECT * FROM unnest($2::bigint[], $3::int[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::int[],
                            $9::bigint[], $10::bigint[], $11::timestamptz[], $12::text[], $15::text[], $16::bigint[], $19::text[])
         WITH ORDINALITY AS t(id, version, kind, size_bytes, sha256, etag, mode, uid, gid, mtime, symlink_target, old_kind, old_size, old_state, ord)
     ), up AS (
       UPDATE filestore.nodes n
          SET kind = v.kind, size_bytes = v.size_bytes, sha256 = v.sha256, etag = v.etag, mode = v.mode, uid = v.uid,
              gid = v.gid, mtime = v.mtime,
              metadata = CASE WHEN v.kind = 'symlink' THEN n.metadata || jsonb_build_object('symlinkTarget', v.symlink_target)
                              ELSE n.metadata - 'symlinkTarget' END,
              version = n.version + 1, consistency_state = 'ACTIVE', consistency_checked_at = now(),
              last_drift_detected_at = now(), last_reconciled_at = now(), updated_at = now()
         FROM v
        WHERE n.id = v.id AND n.mount_id::text = $1::uuid::text AND n.version = v.version AND n.deleted_at IS NULL AND n.updated_at <= $13
        RETURNING n.*
     ), snap AS (
       INSERT INTO filestore.snapshots (node_id, version, reconciliation_job_id, ${SNAPSHOT_COLUMN})
       SELECT up.id, up.version, $14, ${snapshotState('up')} FROM up
     ), unroll AS (
       DELETE FROM filestore.rollups WHERE node_id IN (SELECT id FROM up WHERE kind <> 'directory')
     ), roll AS (
       INSERT INTO filestore.rollups (node_id, mount_id) SELECT id, mount_id FROM up WHERE kind = 'directory'
       ON CONFLICT (node_id) DO NOTHING
     ), deltas AS (
       INSERT INTO filestore.rollup_deltas (node_id, size_bytes, file_count, dir_count, child_count)
       SELECT a.id, sum(o.size_bytes), sum(o.file_count), sum(o.dir_count), sum(o.child_count)
         FROM up
         JOIN v ON v.id = up.id
         JOIN unnest($17::int[], $18::text[]) AS anc(ord, path) ON anc.ord = v.ord
         CROSS JOIN LATERAL (SELECT a.id FROM filestore.nodes a WHERE a.mount_id = $1 AND a.path = anc.path AND a.deleted_at IS NULL AND a.kind = 'directory' LIMIT 1) a
         CROSS JOIN LATERAL (
           SELECT CASE WHEN v.old_state = 'MISSING' THEN up.size_bytes ELSE up.size_bytes - v.old_size END AS size_bytes,
                  CASE WHEN v.old_state = 'MISSING' AND up.kind = 'file' THEN 1 ELSE 0 END AS file_count,
                  CASE WHEN v.old_state = 'MISSING' AND up.kind = 'directory' THEN 1 ELSE 0 END AS dir_count,
                  CASE WHEN v.old_state = 'MISSING' AND a.id = up.parent_id THEN 1 ELSE 0 END AS child_count
         ) AS o
        WHERE up.kind = v.old_kind
        GROUP BY a.id
       HAVING (sum(o.size_bytes), sum(o.file_count), sum(o.dir_count), sum(o.child_count)) <> (0, 0, 0, 0)
     )
     SELECT ${NODE_COLUMNS} FROM up`,
    [
      g.mountId,
      changes.map((c) => c.node.id),
      changes.map((c) => c.node.version),
      changes.map((c) => c.seen.kind),
      changes.map((c) => (c.seen.kind === 'file' ? c.seen.sizeBytes : 0)),
      changes.map((c) => (c.seen.kind === 'file' ? c.sha256 : null)),
      changes.map((c) => c.seen.etag),
      changes.map((c) => c.seen.mode),
      changes.map((c) => c.seen.uid),
      changes.map((c) => c.seen.gid),
      changes.map((c) => c.seen.mtime),
      changes.map((c) => c.seen.symlinkTarget),
      g.scanStartedAt,
      g.jobId,
      changes.map((c) => c.node.kind),
      changes.map((c) => (c.node.kind === 'file' ? c.node.sizeBytes : 0)),
      ancRows,
      ancPaths,
      changes.map((c) => c.node.consistencyState),
    ],
  );
  const before = new Map(changes.map((c) => [c.node.id, c]));
  await appendEvents(
    q,
    rows.flatMap((node) => {
      const c = before.get(node.id) as Observation;
      // A node a watcher or an S3 event already marked INCONSISTENT had its drift announced then.
      const announced = c.node.consistencyState === 'INCONSISTENT';
      return [
        ...(announced ? [] : [event('filestore.drift.detected', g.mountId, { nodeId: node.id, path: node.path, reason, jobId: g.jobId, recorded: json(c.node), observed: json(c.seen) })]),
        event('filestore.node.reconciled', g.mountId, { node: json(node), change: c.node.kind === node.kind ? 'updated' : 'kindChanged', reason, jobId: g.jobId }),
      ];
    }),
  );
  return rows;
}

/**
 * The rollup deltas of nodes whose own part starts (sign 1) or stops (sign -1) counting: the
 * rows of `up` (UPDATE … FROM v RETURNING n.*, v having `id` and `ord`) for which `when`
 * holds, added to every ancestor directory given by the (ord, path) pairs in the parameters
 * `ords` and `paths` (ancestorPairs), one delta per ancestor. A file's size and 1 file, a
 * directory's 1 directory, 1 direct child of its parent; never its contents (rollups.ts).
 */
function ownPartDeltasSql(up: string, ords: string, paths: string, sign: 1 | -1, when: string): string {
  return `       INSERT INTO filestore.rollup_deltas (node_id, size_bytes, file_count, dir_count, child_count)
       SELECT a.id, ${sign} * sum(CASE WHEN ${up}.kind = 'file' THEN ${up}.size_bytes ELSE 0 END),
              ${sign} * count(*) FILTER (WHERE ${up}.kind = 'file'), ${sign} * count(*) FILTER (WHERE ${up}.kind = 'directory'),
              ${sign} * count(*) FILTER (WHERE a.id = ${up}.parent_id)
         FROM ${up}
         JOIN v ON v.id = ${up}.id
         JOIN unnest(${ords}::int[], ${paths}::text[]) AS anc(ord, path) ON anc.ord = v.ord
         CROSS JOIN LATERAL (SELECT a.id FROM filestore.nodes a WHERE a.mount_id = $1 AND a.path = anc.path AND a.deleted_at IS NULL AND a.kind = 'directory' LIMIT 1) a
        WHERE ${when}
        GROUP BY a.id`;
}

/**
 * Nodes storage confirms as they are recorded but whose state was not ACTIVE (INCONSISTENT
 * after a drift signal, MISSING that reappeared): ACTIVE again, no new version.
 */
export async function reactivate(q: Queryable, g: Guard, nodes: CatalogueNode[], reason: string): Promise<CatalogueNode[]> {
  if (nodes.length === 0) return [];
  // A MISSING node that reappeared counts again in its ancestors' rollups (rollups.ts).
  const [ancRows, ancPaths] = ancestorPairs(nodes);
  const { rows } = await q.query<CatalogueNode>(
    `WITH v AS (
       SELECT * FROM unnest($2::bigint[], $3::int[], $5::text[]) WITH ORDINALITY AS t(id, version, old_state, ord)
     ), up AS (
       UPDATE filestore.nodes n SET consistency_state = 'ACTIVE', consistency_checked_at = now(), last_reconciled_at = now(),
              updated_at = now()
         FROM v
        WHERE n.id = v.id AND n.version = v.version AND n.mount_id::text = $1::uuid::text AND n.deleted_at IS NULL AND n.updated_at <= $4
          AND n.consistency_state <> 'ACTIVE'
        RETURNING n.*
     ), deltas AS (
${ownPartDeltasSql('up', '$6', '$7', 1, "v.old_state = 'MISSING'")}
     )
     SELECT ${NODE_COLUMNS} FROM up`,
    [g.mountId, nodes.map((n) => n.id), nodes.map((n) => n.version), g.scanStartedAt, nodes.map((n) => n.consistencyState), ancRows, ancPaths],
  );
  const was = new Map(nodes.map((n) => [n.id, n.consistencyState]));
  await appendEvents(
    q,
    rows.map((node) =>
      event('filestore.node.reconciled', g.mountId, { node: json(node), change: was.get(node.id) === 'MISSING' ? 'reappeared' : 'confirmed', reason, jobId: g.jobId }),
    ),
  );
  return rows;
}

/** Nodes storage no longer holds (confirmed by a second look): MISSING, `filestore.node.missing`. */
export async function markMissing(q: Queryable, g: Guard, nodes: CatalogueNode[], reason: string): Promise<CatalogueNode[]> {
  if (nodes.length === 0) return [];
  // No longer counted in its ancestors' rollups (rollups.ts): its own part is subtracted.
  const [ancRows, ancPaths] = ancestorPairs(nodes);
  const { rows } = await q.query<CatalogueNode>(
    `WITH v AS (
       SELECT * FROM unnest($2::bigint[], $3::int[]) WITH ORDINALITY AS t(id, version, ord)
     ), up AS (
       UPDATE filestore.nodes n SET consistency_state = 'MISSING', consistency_checked_at = now(), updated_at = now()
         FROM v
        WHERE n.id = v.id AND n.version = v.version AND n.mount_id::text = $1::uuid::text AND n.deleted_at IS NULL AND n.updated_at <= $4
          AND n.consistency_state <> 'MISSING'
        RETURNING n.*
     ), deltas AS (
${ownPartDeltasSql('up', '$5', '$6', -1, 'TRUE')}
     )
     SELECT ${NODE_COLUMNS} FROM up`,
    [g.mountId, nodes.map((n) => n.id), nodes.map((n) => n.version), g.scanStartedAt, ancRows, ancPaths],
  );
  await appendEvents(q, rows.map((node) => event('filestore.node.missing', g.mountId, { node: json(node), reason, jobId: g.jobId })));
  return rows;
}

/*
 * The writes below find a batch's rows by id. The mount is checked as text (`mount_id::text`):
 * a filter on the rows the primary key found, never an index condition. As `mount_id = $1`,
 * PostgreSQL without statistics (autovacuum off or behind) took the mount's live-path index and
 * went through every live node of the mount for ten ids (tests/batch-statement-reads.test.ts);
 * drift-writes.ts sameMount. Their ancestors are found by path in a LATERAL subquery with a
 * LIMIT (unique anyway), which PostgreSQL cannot flatten into a join: one lookup per ancestor on
 * the live-path index by mount and path. Joined, the plan scanned the mount's live nodes by
 * mount alone for each ancestor (61,180 heap blocks to mark ten nodes MISSING on a 30k-node mount).
 */

/** Every check sets consistency_checked_at (SPEC §3); rows changed since the scan began are left alone. */
export async function touchChecked(q: Queryable, g: Guard, ids: number[], sha256ByNode?: Map<number, string>): Promise<void> {
  if (ids.length === 0) return;
  await q.query(
    `UPDATE filestore.nodes n SET consistency_checked_at = now(), sha256 = coalesce(n.sha256, v.sha256)
       FROM unnest($2::bigint[], $3::text[]) AS v(id, sha256)
      WHERE n.id = v.id AND n.mount_id::text = $1::uuid::text AND n.updated_at <= $4`,
    [g.mountId, ids, ids.map((id) => sha256ByNode?.get(id) ?? null), g.scanStartedAt],
  );
}

/**
 * Paths a command deleted since the scan began: discovery must not resurrect them. (One a
 * command created or changed since has a live row, which the discovery's insert leaves alone:
 * ON CONFLICT DO NOTHING. Looked up here too, a lookup per path, it cost a tenth of a
 * discovery's statements for nothing.) Tombstones by the recent-tombstones index.
 */
export async function deletedSince(q: Queryable, g: Guard, paths: string[]): Promise<Set<string>> {
  if (paths.length === 0) return new Set();
  const { rows } = await q.query<{ path: string }>(
    `SELECT path FROM filestore.nodes WHERE mount_id = $1 AND deleted_at > $3 AND path = ANY($2::text[])`,
    [g.mountId, paths, g.scanStartedAt],
  );
  return new Set(rows.map((r) => r.path));
}

/** A complete audit of the mount began at `startedAt`: every node is checked as of then (rows.ts reads it). */
export async function recordAudit(q: Queryable, mountId: string, startedAt: Date): Promise<void> {
  await q.query(`UPDATE filestore.mounts SET audited_at = GREATEST(audited_at, $2) WHERE id = $1`, [mountId, startedAt]);
}

/** Live nodes of a mount (the denominator of the mass-missing rule), the root excluded. */
export async function countLiveNodes(q: Queryable, mountId: string): Promise<number> {
  const below = descendantsCondition('', 2);
  const { rows } = await q.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND ${below.sql}`,
    [mountId],
  );
  return rows[0]?.n ?? 0;
}

/** Live nodes of a mount, the root excluded, and how many of them are directories (the watcher's choice, agent/watch/backends/choose.ts). */
export async function countLiveTree(q: Queryable, mountId: string): Promise<{ entries: number; directories: number }> {
  const below = descendantsCondition('', 2);
  const { rows } = await q.query<{ n: number; d: number }>(
    `SELECT count(*)::int AS n, (count(*) FILTER (WHERE kind = 'directory'))::int AS d
       FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND ${below.sql}`,
    [mountId],
  );
  return { entries: rows[0]?.n ?? 0, directories: rows[0]?.d ?? 0 };
}

/**
 * Drift observed (a watcher event, an S3 event not caused by Filestore): ACTIVE → INCONSISTENT,
 * `last_drift_detected_at`, `filestore.drift.detected`. Returns the node, or null when no live
 * ACTIVE node is at the path (an untracked path: the reconcile job will discover it).
 */
export async function markInconsistent(q: Queryable, mountId: string, path: string, reason: string): Promise<CatalogueNode | null> {
  const { rows } = await q.query<CatalogueNode>(
    `WITH up AS (
       UPDATE filestore.nodes SET consistency_state = 'INCONSISTENT', last_drift_detected_at = now(), consistency_checked_at = now()
        WHERE mount_id = $1 AND path = $2 AND deleted_at IS NULL AND consistency_state = 'ACTIVE'
        RETURNING *
     )
     SELECT ${NODE_COLUMNS} FROM up`,
    [mountId, path],
  );
  const node = rows[0] ?? null;
  if (node) await appendEvents(q, [event('filestore.drift.detected', mountId, { nodeId: node.id, path, reason, node: json(node) })]);
  return node;
}
