import type { Queryable } from '../db/pool.ts';
import type { EntryStat, NodeKind } from '../backends/types.ts';
import { ancestorsOf, baseName, parentOf } from '../paths.ts';
import { NODE_COLUMNS, SNAPSHOT_COLUMN, snapshotState } from './rows.ts';
import { subtreeCondition } from './subtree.ts';
import type { CatalogueNode } from './types.ts';

/**
 * Writes to the nodes table. Every change to a node writes its snapshot in the same
 * statement, so a node's history can never miss a version.
 */

export interface NewNode {
  path: string;
  kind: NodeKind;
  sizeBytes: number;
  sha256: string | null;
  etag: string | null;
  mode: number | null;
  uid: number | null;
  gid: number | null;
  mtime: Date | null;
  metadata?: Record<string, unknown> | undefined;
}

export function newNodeFromStat(stat: EntryStat, sha256: string | null = null): NewNode {
  const metadata = stat.symlinkTarget !== null ? { symlinkTarget: stat.symlinkTarget } : undefined;
  return {
    path: stat.path,
    kind: stat.kind,
    sizeBytes: stat.kind === 'file' ? stat.sizeBytes : 0,
    sha256: stat.kind === 'file' ? sha256 : null,
    etag: stat.etag,
    mode: stat.mode,
    uid: stat.uid,
    gid: stat.gid,
    mtime: stat.mtime,
    metadata,
  };
}

export interface Provenance {
  journalEntryId?: number | null;
  reconciliationJobId?: number | null;
}

const depth = (p: string) => (p === '' ? 0 : p.split('/').length);

/** `nodes` grouped by depth, shallowest first: a level's parents are inserted before it. */
export function levelsByDepth<T extends { path: string }>(nodes: readonly T[]): T[][] {
  const byDepth = new Map<number, T[]>();
  for (const n of nodes) {
    const d = depth(n.path);
    let list = byDepth.get(d);
    if (!list) byDepth.set(d, (list = []));
    list.push(n);
  }
  return [...byDepth.keys()].sort((a, b) => a - b).map((d) => byDepth.get(d) as T[]);
}

/**
 * A level's new rows as the parameters $1–$13 of an insert that unnests them (mount, then
 * path, parent path, name, kind, size, sha256, etag, mode, uid, gid, mtime, metadata). The
 * mtimes go as ISO text: the driver's own conversion of a Date (to local time with an offset)
 * cost more than the rest of the row's parameters together.
 */
export function newNodeParams(mountId: string, level: readonly NewNode[]): unknown[] {
  return [
    mountId,
    level.map((n) => n.path),
    level.map((n) => parentOf(n.path)),
    level.map((n) => baseName(n.path)),
    level.map((n) => n.kind),
    level.map((n) => n.sizeBytes),
    level.map((n) => n.sha256),
    level.map((n) => n.etag),
    level.map((n) => n.mode),
    level.map((n) => n.uid),
    level.map((n) => n.gid),
    level.map((n) => n.mtime?.toISOString() ?? null),
    level.map((n) => (n.metadata ? JSON.stringify(n.metadata) : null)),
  ];
}

/** (row number, ancestor path) pairs of a batch, flattened for unnest. */
/** (1-based row number, ancestor path) pairs of the rows' ancestors, for unnest in set-based rollup deltas. */
export function ancestorPairs(level: readonly { path: string }[]): [number[], string[]] {
  const rows: number[] = [];
  const paths: string[] = [];
  level.forEach((n, i) => {
    for (const a of ancestorsOf(n.path)) {
      rows.push(i + 1);
      paths.push(a);
    }
  });
  return [rows, paths];
}

/**
 * Inserts nodes (any mix of depths, parents before or among them) with their snapshots and
 * an empty rollup row per directory. Parent ids are resolved by path, one statement per depth
 * level so a parent inserted here is visible to its children. onConflict 'ignore' skips
 * paths that already have a live row (a concurrent command created the same parent) and nodes
 * whose parent is not live (nothing is ever inserted without a parent).
 * The parent and the ancestors are found by one index lookup each (LATERAL … LIMIT 1 on
 * nodes_live_path), whatever the table's statistics say: a join let the planner, on a nodes
 * table never analyzed, read every live node of the mount per statement.
 */
export async function insertNodes(
  q: Queryable,
  mountId: string,
  nodes: NewNode[],
  provenance: Provenance,
  onConflict: 'error' | 'ignore' = 'error',
  /** Also add each inserted node to its ancestors' rollups (in the same statement). */
  rollupDeltas = false,
): Promise<CatalogueNode[]> {
  const inserted: CatalogueNode[] = [];
  for (const level of levelsByDepth(nodes)) {
    const { rows } = await q.query<CatalogueNode>({
    name: `filestore.nodes.insert.${onConflict}`,
    text: `WITH input AS (
         SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[],
                              $8::text[], $9::int[], $10::bigint[], $11::bigint[], $12::timestamptz[], $13::jsonb[])
           WITH ORDINALITY AS t(path, parent_path, name, kind, size_bytes, sha256, etag, mode, uid, gid, mtime, metadata, n)
       ), ins AS (
         INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind, size_bytes, sha256, etag,
                                      mode, uid, gid, mtime, metadata, consistency_checked_at)
         SELECT $1, i.path, p.id, i.name, i.kind, i.size_bytes, i.sha256, i.etag, i.mode, i.uid, i.gid,
                i.mtime, coalesce(i.metadata, '{}'::jsonb), now()
           FROM input i
           ${onConflict === 'ignore' ? 'JOIN' : 'LEFT JOIN'} LATERAL (
             SELECT x.id FROM filestore.nodes x
              WHERE x.mount_id = $1 AND x.path = i.parent_path AND x.deleted_at IS NULL LIMIT 1
           ) p ON true
         ${onConflict === 'ignore' ? "ON CONFLICT (mount_id, path) WHERE deleted_at IS NULL DO NOTHING" : ''}
         RETURNING *
       ), snap AS (
         INSERT INTO filestore.snapshots (node_id, version, journal_entry_id, reconciliation_job_id, ${SNAPSHOT_COLUMN})
         SELECT ins.id, ins.version, $14, $15, ${snapshotState('ins')} FROM ins
       ), roll AS (
         INSERT INTO filestore.rollups (node_id, mount_id) SELECT id, mount_id FROM ins WHERE kind = 'directory'
       ), deltas AS (
         INSERT INTO filestore.rollup_deltas (node_id, size_bytes, file_count, dir_count, child_count)
         SELECT a.id,
                coalesce(sum(ins.size_bytes) FILTER (WHERE ins.kind = 'file'), 0),
                count(*) FILTER (WHERE ins.kind = 'file'),
                count(*) FILTER (WHERE ins.kind = 'directory'),
                count(*) FILTER (WHERE a.path = i.parent_path)
           FROM ins
           JOIN input i ON i.path = ins.path
           JOIN unnest($16::int[], $17::text[]) AS anc(n, path) ON anc.n = i.n
           CROSS JOIN LATERAL (
             SELECT x.id, x.path FROM filestore.nodes x
              WHERE x.mount_id = $1 AND x.path = anc.path AND x.deleted_at IS NULL AND x.kind = 'directory' LIMIT 1
           ) a
          WHERE $18::boolean
          GROUP BY a.id
       )
       SELECT ${NODE_COLUMNS} FROM ins`,
    values: [
        ...newNodeParams(mountId, level),
        provenance.journalEntryId ?? null,
        provenance.reconciliationJobId ?? null,
        ...ancestorPairs(level),
        rollupDeltas,
      ],
  });
    inserted.push(...rows);
  }
  return inserted;
}

/** Records new content/stat for an existing node: version + 1 and a snapshot. */
export async function updateNodeFromStat(
  q: Queryable,
  nodeId: number,
  stat: EntryStat,
  sha256: string | null,
  provenance: Provenance,
): Promise<CatalogueNode> {
  const { rows } = await q.query<CatalogueNode>({
    name: 'filestore.nodes.updateFromStat',
    text: `WITH up AS (
       UPDATE filestore.nodes SET kind = $2, size_bytes = $3, sha256 = $4, etag = $5, mode = $6, uid = $7,
              gid = $8, mtime = $9, version = version + 1, consistency_state = 'ACTIVE',
              consistency_checked_at = now(), updated_at = now()
        WHERE id = $1 RETURNING *
     ), snap AS (
       INSERT INTO filestore.snapshots (node_id, version, journal_entry_id, reconciliation_job_id, ${SNAPSHOT_COLUMN})
       SELECT up.id, up.version, $10, $11, ${snapshotState('up')} FROM up
     )
     SELECT ${NODE_COLUMNS} FROM up`,
    values: [
      nodeId,
      stat.kind,
      stat.kind === 'file' ? stat.sizeBytes : 0,
      sha256,
      stat.etag,
      stat.mode,
      stat.uid,
      stat.gid,
      stat.mtime,
      provenance.journalEntryId ?? null,
      provenance.reconciliationJobId ?? null,
    ],
  });
  return rows[0] as CatalogueNode;
}

/** Replaces a node's metadata jsonb (set keys merged, unset keys removed): version + 1 and a snapshot. */
export async function updateNodeMetadata(
  q: Queryable,
  nodeId: number,
  set: Record<string, unknown>,
  unset: string[],
  provenance: Provenance,
): Promise<CatalogueNode> {
  const { rows } = await q.query<CatalogueNode>(
    `WITH up AS (
       UPDATE filestore.nodes SET metadata = (metadata || $2::jsonb) - $3::text[], version = version + 1,
              updated_at = now()
        WHERE id = $1 RETURNING *
     ), snap AS (
       INSERT INTO filestore.snapshots (node_id, version, journal_entry_id, ${SNAPSHOT_COLUMN})
       SELECT up.id, up.version, $4, ${snapshotState('up')} FROM up
     )
     SELECT ${NODE_COLUMNS} FROM up`,
    [nodeId, JSON.stringify(set), unset, provenance.journalEntryId ?? null],
  );
  return rows[0] as CatalogueNode;
}

export interface SubtreeSummary {
  count: number;
  top: CatalogueNode | null;
}

/** Tombstones a node and all its live descendants (one statement), with snapshots; drops their rollups. */
export async function tombstoneSubtree(
  q: Queryable,
  mountId: string,
  path: string,
  provenance: Provenance,
): Promise<SubtreeSummary> {
  const cond = subtreeCondition(path, 2);
  const { rows } = await q.query<CatalogueNode & { total: number }>(
    `WITH del AS (
       UPDATE filestore.nodes SET deleted_at = now(), updated_at = now(), version = version + 1
        WHERE mount_id = $1 AND deleted_at IS NULL AND ${cond.sql} RETURNING *
     ), snap AS (
       INSERT INTO filestore.snapshots (node_id, version, journal_entry_id, reconciliation_job_id, ${SNAPSHOT_COLUMN})
       SELECT del.id, del.version, $${cond.params.length + 2}, $${cond.params.length + 3}, ${snapshotState('del')} FROM del
     ), roll AS (
       DELETE FROM filestore.rollups WHERE node_id IN (SELECT id FROM del WHERE kind = 'directory')
     )
     SELECT ${NODE_COLUMNS}, (SELECT count(*) FROM del)::int AS total FROM del ORDER BY path LIMIT 1`,
    [mountId, ...cond.params, provenance.journalEntryId ?? null, provenance.reconciliationJobId ?? null],
  );
  const first = rows[0];
  if (!first) return { count: 0, top: null };
  const { total, ...top } = first;
  return { count: total, top: top.path === path ? top : null };
}

/**
 * Re-paths a node and its descendants from `from` to `to` inside one mount (one statement):
 * ids, history and rollups of the subtree are kept; each moved row gets a new version and snapshot.
 * Their S3 event sequencers are cleared: a sequencer orders the events of one key, and the
 * moved rows stand for other keys now.
 */
export async function moveSubtree(
  q: Queryable,
  mountId: string,
  from: string,
  to: string,
  newParentId: number,
  provenance: Provenance,
): Promise<{ node: CatalogueNode; count: number }> {
  const cond = subtreeCondition(from, 2);
  const n = cond.params.length;
  const { rows } = await q.query<CatalogueNode & { total: number }>(
    `WITH mv AS (
       UPDATE filestore.nodes
          SET path = $${n + 2}::text || substr(path, length($2::text) + 1),
              name = CASE WHEN path = $2 THEN $${n + 3} ELSE name END,
              parent_id = CASE WHEN path = $2 THEN $${n + 4}::bigint ELSE parent_id END,
              sequencer = NULL, version = version + 1, updated_at = now()
        WHERE mount_id = $1 AND deleted_at IS NULL AND ${cond.sql} RETURNING *
     ), snap AS (
       INSERT INTO filestore.snapshots (node_id, version, journal_entry_id, ${SNAPSHOT_COLUMN})
       SELECT mv.id, mv.version, $${n + 5}, ${snapshotState('mv')} FROM mv
     )
     SELECT ${NODE_COLUMNS}, (SELECT count(*) FROM mv)::int AS total FROM mv WHERE path = $${n + 2}`,
    [mountId, ...cond.params, to, baseName(to), newParentId, provenance.journalEntryId ?? null],
  );
  const first = rows[0];
  if (!first) throw new Error(`moveSubtree: no live node at ${from}`);
  const { total, ...node } = first;
  return { node, count: total };
}

/**
 * Records the ETag and mtime storage gave live nodes (by path) without a new version: for
 * objects S3 rewrote as part of the same change (a move is a copy there).
 */
export async function setStorageStamps(
  q: Queryable,
  mountId: string,
  stamps: Array<{ path: string; etag: string | null; mtime: Date | null }>,
): Promise<void> {
  if (stamps.length === 0) return;
  await q.query(
    `UPDATE filestore.nodes n SET etag = s.etag, mtime = s.mtime
       FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS s(path, etag, mtime)
      WHERE n.mount_id = $1 AND n.deleted_at IS NULL AND n.path = s.path`,
    [mountId, stamps.map((s) => s.path), stamps.map((s) => s.etag), stamps.map((s) => s.mtime)],
  );
}

/**
 * The S3 event sequencer per key, SQL's side of shared/reconcile/sequencer.ts: upper-cased and
 * right-padded with '0' to the longer one, compared in byte order.
 */
/** The sequencer rule in SQL (sequencer.ts): `s.sequencer` is newer than the node `n`'s, or `n` has none. */
export const NEWER_SEQUENCER = `(n.sequencer IS NULL OR
   rpad(upper(s.sequencer), greatest(length(s.sequencer), length(n.sequencer)), '0') COLLATE "C"
   > rpad(upper(n.sequencer), greatest(length(s.sequencer), length(n.sequencer)), '0') COLLATE "C")`;

/**
 * Records the S3 event sequencer last applied to live nodes (by path), only where it is newer
 * than the one stored: an event that was reconciled, or found to describe what the catalogue
 * already holds (Filestore's own write). No new version, no event, `updated_at` untouched (it
 * is not a change of what the node records; the guards of reconciliation and drift detection
 * read `updated_at` as "a command wrote this"). One entry per path (the newest of a batch).
 */
export async function recordSequencers(q: Queryable, mountId: string, entries: ReadonlyArray<{ path: string; sequencer: string }>): Promise<number> {
  if (entries.length === 0) return 0;
  const { rowCount } = await q.query(
    `UPDATE filestore.nodes n SET sequencer = s.sequencer
       FROM unnest($2::text[], $3::text[]) AS s(path, sequencer)
      WHERE n.mount_id = $1 AND n.path = s.path AND n.deleted_at IS NULL AND ${NEWER_SEQUENCER}`,
    [mountId, entries.map((e) => e.path), entries.map((e) => e.sequencer)],
  );
  return rowCount ?? 0;
}
