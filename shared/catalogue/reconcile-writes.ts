import type { Queryable } from '../db/pool.ts';
import type { EntryStat } from '../backends/types.ts';
import { pathLockSet } from './locks.ts';
import { lit } from './inline-writes.ts';
import { appendEvents, type NewEvent } from './outbox.ts';
import { ancestorPairs, levelsByDepth, newNodeParams, type NewNode } from './node-writes.ts';
import { NODE_COLUMNS } from './rows.ts';
import { descendantsCondition } from './subtree.ts';
import type { CatalogueNode } from './types.ts';

/**
 * Catalogue writes of reconciliation, set-based (one statement per kind of change per batch).
 *
 * Reconciliation never holds the path locks commands take. Instead, every write is guarded:
 * - the batch's paths are try-locked for the transaction (exclusive on the path, shared on
 *   its ancestors); what another writer holds right now is written in a second transaction
 *   that waits for it a little, and what is still held then is left to a follow-up job
 *   (shared/reconcile/reconciler.ts, `Run.write`);
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

/**
 * Locks, for the transaction, what writing `paths` needs: exclusive on each path, shared on
 * its ancestors, in key order (the order commands take theirs, so neither can deadlock the other).
 * - Without `waitMs`: try-locks. Returns the paths all of whose locks were free.
 * - With `waitMs`: waits up to `waitMs` for all the locks together. Returns every path, or
 *   throws (`isLockTimeout`: 55P03 or 57014), which aborts the transaction.
 */
export async function lockPathsForWrite(q: Queryable, mountId: string, paths: string[], waitMs?: number): Promise<Set<string>> {
  const { locks, keysOf } = pathLockSet(mountId, paths);
  if (locks.length === 0) return new Set();
  // In key order already; the SQL keeps that order (ORDER BY key).
  const params = [locks.map((l) => l.key.toString()), locks.map((l) => l.mode === 'exclusive')];
  if (waitMs !== undefined) {
    // lock_timeout bounds each lock's wait, statement_timeout all of them together; the
    // latter is put back as it was for the rest of the transaction.
    const ms = `${Math.max(1, Math.round(waitMs))}ms`;
    const { rows } = await q.query<{ prev: string }>(
      `SELECT current_setting('statement_timeout') AS prev, set_config('lock_timeout', $1, true), set_config('statement_timeout', $1, true)`,
      [ms],
    );
    await q.query(
      `SELECT CASE WHEN ex THEN pg_advisory_xact_lock(key) ELSE pg_advisory_xact_lock_shared(key) END
         FROM (SELECT key, ex FROM unnest($1::bigint[], $2::boolean[]) AS t(key, ex) ORDER BY key) AS ordered`,
      params,
    );
    await q.query(`SELECT set_config('statement_timeout', $1, true)`, [rows[0]?.prev ?? '0']);
    return new Set(paths);
  }
  // Every lock is tried (the CTE runs to completion); only the refused keys come back, usually none.
  const { rows } = await q.query<{ key: string }>(
    `WITH tried AS MATERIALIZED (
       SELECT key, CASE WHEN ex THEN pg_try_advisory_xact_lock(key) ELSE pg_try_advisory_xact_lock_shared(key) END AS ok
         FROM unnest($1::bigint[], $2::boolean[]) AS t(key, ex) ORDER BY key
     )
     SELECT key::text FROM tried WHERE NOT ok`,
    params,
  );
  if (rows.length === 0) return new Set(paths);
  const refused = new Set(rows.map((r) => BigInt(r.key)));
  return new Set(paths.filter((p) => !(keysOf.get(p) as bigint[]).some((k) => refused.has(k))));
}

/**
 * The error lockPathsForWrite throws when its locks were not free within the wait: one lock
 * past lock_timeout (55P03, lock_not_available) or all of them past statement_timeout (57014).
 */
export const isLockTimeout = (err: unknown): boolean => {
  const code = (err as { code?: string } | null)?.code;
  return code === '55P03' || code === '57014';
};

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
                            $9::int[], $10::int[], $11::timestamptz[], $12::text[], $15::text[], $16::bigint[], $19::text[])
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
        WHERE n.id = v.id AND n.mount_id = $1 AND n.version = v.version AND n.deleted_at IS NULL AND n.updated_at <= $13
        RETURNING n.*
     ), snap AS (
       INSERT INTO filestore.snapshots (node_id, version, reconciliation_job_id, state)
       SELECT up.id, up.version, $14, filestore.node_state(up) FROM up
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
         JOIN filestore.nodes a ON a.mount_id = $1 AND a.path = anc.path AND a.deleted_at IS NULL AND a.kind = 'directory'
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
         JOIN filestore.nodes a ON a.mount_id = $1 AND a.path = anc.path AND a.deleted_at IS NULL AND a.kind = 'directory'
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
        WHERE n.id = v.id AND n.version = v.version AND n.mount_id = $1 AND n.deleted_at IS NULL AND n.updated_at <= $4
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
        WHERE n.id = v.id AND n.version = v.version AND n.mount_id = $1 AND n.deleted_at IS NULL AND n.updated_at <= $4
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

/** Every check sets consistency_checked_at (SPEC §3); rows changed since the scan began are left alone. */
export async function touchChecked(q: Queryable, g: Guard, ids: number[], sha256ByNode?: Map<number, string>): Promise<void> {
  if (ids.length === 0) return;
  await q.query(
    `UPDATE filestore.nodes n SET consistency_checked_at = now(), sha256 = coalesce(n.sha256, v.sha256)
       FROM unnest($2::bigint[], $3::text[]) AS v(id, sha256)
      WHERE n.id = v.id AND n.mount_id = $1 AND n.updated_at <= $4`,
    [g.mountId, ids, ids.map((id) => sha256ByNode?.get(id) ?? null), g.scanStartedAt],
  );
}

/** Paths that a command created, changed or deleted since the scan began: discovery must not resurrect or duplicate them. */
export async function touchedSince(q: Queryable, g: Guard, paths: string[]): Promise<Set<string>> {
  if (paths.length === 0) return new Set();
  // Live rows by the live-path index (a lookup per path: a scalar subquery, whose plan cannot
  // turn into a scan of the mount as a join planned without statistics did), tombstones by the
  // recent-tombstones one.
  const { rows } = await q.query<{ path: string }>(
    `SELECT p.path FROM unnest($2::text[]) AS p(path)
      WHERE (SELECT n.updated_at FROM filestore.nodes n WHERE n.mount_id = $1 AND n.path = p.path AND n.deleted_at IS NULL) > $3
     UNION
     SELECT path FROM filestore.nodes WHERE mount_id = $1 AND deleted_at > $3 AND path = ANY($2::text[])`,
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

/** Records what the last look at the mount's root found. */
/** setMountHealth(…, 'healthy', null) as text, to send with other statements (simple protocol). */
export function setMountHealthySql(mountId: string): string {
  return `UPDATE filestore.mounts SET health = 'healthy', health_reason = NULL, health_checked_at = now() WHERE id = ${lit(mountId)}`;
}

export async function setMountHealth(q: Queryable, mountId: string, health: 'healthy' | 'unhealthy', reason: string | null): Promise<void> {
  await q.query(
    `UPDATE filestore.mounts SET health = $2, health_reason = $3, health_checked_at = now() WHERE id = $1`,
    [mountId, health, reason],
  );
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

/** A timestamptz as JSON.stringify writes a Date read from PostgreSQL (milliseconds, truncated, UTC). */
const isoSql = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/**
 * The API's node (rows.ts' NODE_COLUMNS, as the relay would carry a row JSON.stringify'd)
 * built from the columns of a nodes row in SQL: what a discovery's event says of its node.
 * `mount.audited_at` is its mount's (rows.ts' CHECKED_AT), read once per statement: looked up
 * per row, as NODE_COLUMNS does, it was half of the JSON's cost.
 */
const NODE_JSON_SQL = `json_build_object(
  'id', id, 'mountId', mount_id, 'path', path, 'parentId', parent_id, 'name', name, 'kind', kind,
  'sizeBytes', size_bytes, 'sha256', sha256, 'etag', etag, 'sequencer', sequencer, 'mode', mode, 'uid', uid, 'gid', gid,
  'mtime', ${isoSql('mtime')}, 'version', version, 'consistencyState', consistency_state,
  'consistencyCheckedAt', ${isoSql('GREATEST(consistency_checked_at, mount.audited_at)')},
  'lastDriftDetectedAt', ${isoSql('last_drift_detected_at')}, 'lastReconciledAt', ${isoSql('last_reconciled_at')},
  'deletedAt', ${isoSql('deleted_at')}, 'metadata', metadata, 'createdAt', ${isoSql('created_at')}, 'updatedAt', ${isoSql('updated_at')})`;

/**
 * The live parent's id of each input row (`input.parent_path`), looked up row by row: a
 * scalar subquery stays a lookup in the unique (mount_id, path) index whatever the planner
 * believes of the table. Joined instead, a plan made from no statistics (a catalogue no
 * ANALYZE has seen: a discovery fills it from empty, autovacuum may be off or behind) took
 * the mount for one row: it hashed, or looped over, all of the mount's nodes for each batch,
 * so every batch cost more than the one before (a 100k discovery: over 100 ms of 500 per batch
 * at its end, and a nested loop of 200 million comparisons when hash joins were off).
 */
const PARENT_ID_SQL = `(SELECT p.id FROM filestore.nodes p WHERE p.mount_id = $1 AND p.path = input.parent_path AND p.deleted_at IS NULL)`;

/**
 * From how many nodes a statement of insertDiscovered discovers (a depth level of a batch)
 * they are announced together, in one `filestore.nodes.discovered` event, rather than one
 * `filestore.node.reconciled` each (docs/api.md, "Events"). A discovery of an existing tree
 * spent half its time on the per-node events (a 100k-file tree: 5.6 s of 10.4 s, most of it
 * PostgreSQL building and writing 100k node documents of ~1.5 KB, then rewriting each as the
 * relay marked it published); the batch of brief entries costs next to nothing. Fewer nodes
 * at once (the watcher's new file, a few keys) keep the full per-node event live consumers
 * follow.
 */
export const DISCOVERED_BATCH_EVENT_AT = 100;

/** A node of a `filestore.nodes.discovered` event, built in SQL from the inserted row `ins`. */
const DISCOVERED_ENTRY_SQL = `json_build_object('id', ins.id, 'path', ins.path, 'parentId', ins.parent_id, 'kind', ins.kind,
  'sizeBytes', ins.size_bytes, 'sha256', ins.sha256, 'etag', ins.etag, 'mtime', ${isoSql('ins.mtime')}, 'version', ins.version)`;

/**
 * Catalogues what a reconciliation found untracked on storage: for each node, its row, its
 * snapshot, an empty rollup row for a directory, and its announcement, all in one statement
 * per depth level (a parent inserted here is seen by its children's level): a
 * `filestore.node.reconciled` event (change `discovered`) per node, or, for a level of
 * DISCOVERED_BATCH_EVENT_AT nodes or more, one `filestore.nodes.discovered` event listing
 * them. Paths that already have a live row, or whose parent is not live, are left alone
 * (nothing is inserted without a parent). Returns the nodes inserted, as given.
 *
 * Unlike insertNodes + appendEvents, nothing of the rows comes back but their paths, and the
 * events are built from the inserted rows in SQL (a per-node event's data is the node as the
 * API shows it): a discovery of 100k files sent ~70 MB of event JSON to PostgreSQL and parsed
 * 100k rows of 22 columns back, most of the agent's CPU time in the audit. The events are drawn
 * in insertion order (the rows' ids), after the batch's path locks (outbox.ts: order of one
 * path's events).
 */
export async function insertDiscovered(
  q: Queryable,
  mountId: string,
  nodes: readonly NewNode[],
  o: { jobId: number; reason: string },
): Promise<Array<NewNode>> {
  const inserted: Array<NewNode> = [];
  for (const level of levelsByDepth(nodes)) {
    const together = level.length >= DISCOVERED_BATCH_EVENT_AT;
    const { rows } = await q.query<{ path: string }>({
      name: together ? 'filestore.reconcile.insertDiscoveredTogether' : 'filestore.reconcile.insertDiscovered',
      text: `WITH input AS (
         SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[],
                              $8::text[], $9::int[], $10::int[], $11::int[], $12::timestamptz[], $13::jsonb[])
           AS t(path, parent_path, name, kind, size_bytes, sha256, etag, mode, uid, gid, mtime, metadata)
       ), resolved AS MATERIALIZED (
         SELECT input.*, ${PARENT_ID_SQL} AS parent_id FROM input
       ), ins AS (
         INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind, size_bytes, sha256, etag,
                                      mode, uid, gid, mtime, metadata, consistency_checked_at)
         SELECT $1, i.path, i.parent_id, i.name, i.kind, i.size_bytes, i.sha256, i.etag, i.mode, i.uid, i.gid,
                i.mtime, coalesce(i.metadata, '{}'::jsonb), now()
           FROM resolved i
          WHERE i.parent_id IS NOT NULL
         ON CONFLICT (mount_id, path) WHERE deleted_at IS NULL DO NOTHING
         RETURNING *
       ), snap AS (
         INSERT INTO filestore.snapshots (node_id, version, reconciliation_job_id, state)
         SELECT ins.id, ins.version, $14, filestore.node_state(ins) FROM ins
       ), roll AS (
         INSERT INTO filestore.rollups (node_id, mount_id) SELECT id, mount_id FROM ins WHERE kind = 'directory'
       ), events AS (${together ? DISCOVERED_TOGETHER_SQL : DISCOVERED_EACH_SQL})
       SELECT path FROM ins`,
      values: [
        ...newNodeParams(mountId, level),
        o.jobId,
        o.reason,
      ],
    });
    if (rows.length === level.length) inserted.push(...level);
    else {
      const done = new Set(rows.map((r) => r.path));
      inserted.push(...level.filter((n) => done.has(n.path)));
    }
  }
  return inserted;
}

/** insertDiscovered's events, one per node ($1 the mount, $14 the job, $15 the reason). */
const DISCOVERED_EACH_SQL = `
         INSERT INTO filestore.outbox (mount_id, type, data)
         SELECT ins.mount_id, 'filestore.node.reconciled',
                json_build_object('node', ${NODE_JSON_SQL}, 'change', 'discovered', 'reason', $15::text, 'jobId', $14::bigint)
           FROM ins CROSS JOIN (SELECT (SELECT m.audited_at FROM filestore.mounts m WHERE m.id = $1) AS audited_at) mount
          ORDER BY ins.id`;

/** insertDiscovered's event for the nodes of a level together (none when nothing was inserted). */
const DISCOVERED_TOGETHER_SQL = `
         INSERT INTO filestore.outbox (mount_id, type, data)
         SELECT $1, 'filestore.nodes.discovered',
                json_build_object('change', 'discovered', 'reason', $15::text, 'jobId', $14::bigint, 'count', count(*),
                                  'nodes', json_agg(${DISCOVERED_ENTRY_SQL} ORDER BY ins.id))
           FROM ins
         HAVING count(*) > 0`;

/** The tables whose statistics the catalogue's plans lean on (nodes above all). */
const ANALYZED_TABLES = ['nodes', 'rollups', 'rollup_deltas', 'outbox'];

/**
 * ANALYZEs the catalogue's tables that changed by at least `share` of their rows (and at
 * least `minChanged` rows) since their last ANALYZE, one by one; returns the ones it analysed.
 * Reconciliation calls it as it fills or changes the catalogue in bulk (a discovery): the
 * product's plans must not wait for autovacuum, which may be off or far behind, and a plan
 * made when a mount had no rows (its catalogue seen as empty) stays bad as the mount fills.
 * ANALYZE reads a sample (30,000 rows by default) whatever a table's size, and takes a lock
 * that writers do not wait for (SHARE UPDATE EXCLUSIVE).
 */
export async function analyzeIfStale(q: Queryable, o: { share: number; minChanged: number }): Promise<string[]> {
  const { rows } = await q.query<{ name: string }>(
    `SELECT s.relname AS name FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
      WHERE s.schemaname = 'filestore' AND s.relname = ANY($1::text[])
        AND s.n_mod_since_analyze >= greatest($2::float8, $3::float8 * greatest(c.reltuples, 0))`,
    [ANALYZED_TABLES, o.minChanged, o.share],
  );
  for (const { name } of rows) await q.query(`ANALYZE filestore.${name}`);
  return rows.map((r) => r.name);
}
