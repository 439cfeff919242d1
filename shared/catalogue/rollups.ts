import type { Queryable } from '../db/pool.ts';
import { ancestorsOf, parentOf } from '../paths.ts';
import { descendantsCondition } from './subtree.ts';
import type { CatalogueNode, Rollup, RollupDelta } from './types.ts';

/**
 * Directory rollups. Commands append deltas (rollup_deltas) instead of updating the rollup
 * rows, so concurrent writes under one directory never queue on its row (or the root's);
 * a rollup is its row plus the sum of its deltas, read in one statement, so it is exact in
 * every snapshot. compactRollups folds deltas into the rows in the background.
 *
 * A rollup counts what is present on storage: the live descendants that are not MISSING
 * (ACTIVE and INCONSISTENT ones count; an INCONSISTENT node is there, only not as recorded).
 * Each node counts on its own (a MISSING directory's present descendants still count in the
 * directories above it), so every change of state moves the totals by that node's own part:
 * → MISSING subtracts it, MISSING → ACTIVE adds it back, deleting a MISSING node changes nothing.
 */

/** Whether a node counts in its directories' rollups: present on storage (not MISSING). */
export const isCounted = (n: Pick<CatalogueNode, 'consistencyState'>): boolean => n.consistencyState !== 'MISSING';

/** 1 when the node counts in its parent's direct child count, else 0. */
export const childPart = (n: Pick<CatalogueNode, 'consistencyState'>): number => (isCounted(n) ? 1 : 0);

/** What a node itself (not its contents) adds to its ancestors' totals. */
export function ownTotals(n: Pick<CatalogueNode, 'kind' | 'sizeBytes' | 'consistencyState'>): RollupDelta {
  if (!isCounted(n)) return { sizeBytes: 0, fileCount: 0, dirCount: 0 };
  if (n.kind === 'file') return { sizeBytes: n.sizeBytes, fileCount: 1, dirCount: 0 };
  return { sizeBytes: 0, fileCount: 0, dirCount: n.kind === 'directory' ? 1 : 0 };
}

const ROLLUP_SELECT = `
  SELECT r.node_id AS "nodeId",
         (r.size_bytes + coalesce(sum(d.size_bytes), 0))::bigint AS "sizeBytes",
         (r.file_count + coalesce(sum(d.file_count), 0))::bigint AS "fileCount",
         (r.dir_count + coalesce(sum(d.dir_count), 0))::bigint AS "dirCount",
         (r.child_count + coalesce(sum(d.child_count), 0))::bigint AS "childCount",
         r.last_calculated_at AS "lastCalculatedAt"
    FROM filestore.rollups r LEFT JOIN filestore.rollup_deltas d ON d.node_id = r.node_id`;

export async function readRollups(q: Queryable, nodeIds: number[]): Promise<Map<number, Rollup>> {
  if (nodeIds.length === 0) return new Map();
  const { rows } = await q.query<Rollup & { nodeId: number }>({
    name: 'filestore.rollups.read',
    text: `${ROLLUP_SELECT} WHERE r.node_id = ANY($1::bigint[]) GROUP BY r.node_id`,
    values: [nodeIds],
  });
  return new Map(rows.map(({ nodeId, ...rollup }) => [nodeId, rollup]));
}

export async function readRollup(q: Queryable, nodeId: number): Promise<Rollup | null> {
  return (await readRollups(q, [nodeId])).get(nodeId) ?? null;
}

/**
 * What a node contributes to its ancestors' totals: itself (unless MISSING) plus, for a
 * directory, its contents (its rollup: the present ones).
 */
export async function subtreeTotals(q: Queryable, node: CatalogueNode): Promise<RollupDelta> {
  const own = ownTotals(node);
  if (node.kind !== 'directory') return own;
  const r = await readRollup(q, node.id);
  return { sizeBytes: r?.sizeBytes ?? 0, fileCount: r?.fileCount ?? 0, dirCount: (r?.dirCount ?? 0) + own.dirCount };
}

export const negate = (d: RollupDelta): RollupDelta => ({
  sizeBytes: -d.sizeBytes,
  fileCount: -d.fileCount,
  dirCount: -d.dirCount,
});

/**
 * Adds `delta` to every ancestor directory of `path` and `childDelta` to its parent's direct
 * child count. One set-based INSERT.
 */
export async function addToAncestors(
  q: Queryable,
  mountId: string,
  path: string,
  delta: RollupDelta,
  childDelta: number,
): Promise<void> {
  if (path === '') return;
  if (delta.sizeBytes === 0 && delta.fileCount === 0 && delta.dirCount === 0 && childDelta === 0) return;
  await q.query({
    name: 'filestore.rollups.addToAncestors',
    text: `INSERT INTO filestore.rollup_deltas (node_id, size_bytes, file_count, dir_count, child_count)
     SELECT n.id, $3, $4, $5, CASE WHEN n.path = $6 THEN $7 ELSE 0 END
       FROM filestore.nodes n
      WHERE n.mount_id = $1 AND n.path = ANY($2::text[]) AND n.deleted_at IS NULL AND n.kind = 'directory'`,
    values: [mountId, ancestorsOf(path), delta.sizeBytes, delta.fileCount, delta.dirCount, parentOf(path), childDelta],
  });
}

/** What inserting `nodes` adds to each ancestor directory (by path): bytes, files, directories, direct children. */
export function insertedDeltas(
  nodes: ReadonlyArray<Pick<CatalogueNode, 'path' | 'kind' | 'sizeBytes'>>,
): Map<string, { size: number; files: number; dirs: number; children: number }> {
  const acc = new Map<string, { size: number; files: number; dirs: number; children: number }>();
  for (const n of nodes) {
    const parent = parentOf(n.path);
    for (const a of ancestorsOf(n.path)) {
      let d = acc.get(a);
      if (!d) acc.set(a, (d = { size: 0, files: 0, dirs: 0, children: 0 }));
      if (n.kind === 'file') {
        d.size += n.sizeBytes;
        d.files++;
      } else if (n.kind === 'directory') d.dirs++;
      if (a === parent) d.children++;
    }
  }
  return acc;
}

/**
 * Adds freshly inserted nodes to their ancestors' rollups: totals summed per ancestor here,
 * then one INSERT of a delta per ancestor directory. (Summing in SQL across a join of the
 * inserted rows with their ancestor pairs planned badly for batches of thousands.) Each
 * ancestor's id is a lookup of its own (a scalar subquery): a join planned without statistics
 * scanned every node of the mount (reconcile-writes.ts, insertDiscovered).
 */
export async function addInsertedToAncestors(
  q: Queryable,
  mountId: string,
  nodes: ReadonlyArray<Pick<CatalogueNode, 'path' | 'kind' | 'sizeBytes'>>,
): Promise<void> {
  const acc = insertedDeltas(nodes);
  if (acc.size === 0) return;
  const paths = [...acc.keys()];
  const totals = [...acc.values()];
  await q.query({
    name: 'filestore.rollups.addInsertedToAncestors.2',
    text: `INSERT INTO filestore.rollup_deltas (node_id, size_bytes, file_count, dir_count, child_count)
     SELECT id, size_bytes, file_count, dir_count, child_count FROM (
       SELECT (SELECT a.id FROM filestore.nodes a WHERE a.mount_id = $1 AND a.path = d.path AND a.deleted_at IS NULL AND a.kind = 'directory') AS id,
              d.size_bytes, d.file_count, d.dir_count, d.child_count
         FROM unnest($2::text[], $3::bigint[], $4::int[], $5::int[], $6::int[]) AS d(path, size_bytes, file_count, dir_count, child_count)
     ) found WHERE id IS NOT NULL`,
    values: [mountId, paths, totals.map((t) => t.size), totals.map((t) => t.files), totals.map((t) => t.dirs), totals.map((t) => t.children)],
  });
}

/**
 * Recomputes, from the live rows that count (not MISSING), the rollups of `dir` and every
 * directory below it (one statement), dropping their pending deltas. Used after bulk inserts
 * and by tests as the ground truth.
 */
export async function recomputeRollups(q: Queryable, mountId: string, dir: string): Promise<void> {
  const below = descendantsCondition(dir, 2, 'd.path');
  const self = dir === '' ? '' : ` OR d.path = $${below.params.length + 2}`;
  const dirsCond = dir === '' ? 'TRUE' : `(${below.sql}${self})`;
  const params: unknown[] = [mountId, ...below.params];
  if (dir !== '') params.push(dir);
  await q.query(
    `WITH dirs AS (
       SELECT d.id, d.path FROM filestore.nodes d
        WHERE d.mount_id = $1 AND d.deleted_at IS NULL AND d.kind = 'directory' AND ${dirsCond}
     ), totals AS (
       SELECT dirs.id,
              coalesce(sum(c.size_bytes) FILTER (WHERE c.kind = 'file'), 0) AS size_bytes,
              count(c.id) FILTER (WHERE c.kind = 'file') AS file_count,
              count(c.id) FILTER (WHERE c.kind = 'directory') AS dir_count,
              count(c.id) FILTER (WHERE c.parent_id = dirs.id) AS child_count
         FROM dirs
         LEFT JOIN filestore.nodes c
           ON c.mount_id = $1 AND c.deleted_at IS NULL AND c.consistency_state <> 'MISSING'
          AND CASE WHEN dirs.path = '' THEN c.path <> ''
                   ELSE c.path >= dirs.path || '/' AND c.path < dirs.path || '0' END
        GROUP BY dirs.id
     ), gone AS (
       DELETE FROM filestore.rollup_deltas WHERE node_id IN (SELECT id FROM dirs)
     )
     INSERT INTO filestore.rollups (node_id, mount_id, size_bytes, file_count, dir_count, child_count, last_calculated_at)
     SELECT id, $1, size_bytes, file_count, dir_count, child_count, now() FROM totals
     ON CONFLICT (node_id) DO UPDATE SET size_bytes = EXCLUDED.size_bytes, file_count = EXCLUDED.file_count,
       dir_count = EXCLUDED.dir_count, child_count = EXCLUDED.child_count, last_calculated_at = now()`,
    params,
  );
}

/**
 * Folds accumulated deltas into the rollup rows in one statement (readers see the totals
 * before or after, never a mix). Returns the number of deltas folded.
 */
export async function compactRollups(q: Queryable, maxDeltas = 50_000): Promise<number> {
  const { rows } = await q.query<{ folded: number }>(
    `WITH picked AS (
       SELECT id FROM filestore.rollup_deltas ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
     ), gone AS (
       DELETE FROM filestore.rollup_deltas d USING picked WHERE d.id = picked.id RETURNING d.*
     ), sums AS (
       SELECT node_id, sum(size_bytes) s, sum(file_count) f, sum(dir_count) dc, sum(child_count) c
         FROM gone GROUP BY node_id
     ), up AS (
       UPDATE filestore.rollups r SET size_bytes = r.size_bytes + sums.s, file_count = r.file_count + sums.f,
              dir_count = r.dir_count + sums.dc, child_count = r.child_count + sums.c, last_calculated_at = now()
         FROM sums WHERE r.node_id = sums.node_id
     )
     SELECT count(*)::int AS folded FROM gone`,
    [maxDeltas],
  );
  return rows[0]?.folded ?? 0;
}

/**
 * recomputeRollups for `dir`, plus the correction for the directories above it: the
 * difference between dir's totals recomputed from the rows and its totals as recorded (row +
 * deltas) is what writes that added no deltas (reconciliation) changed, and it is added to
 * every ancestor. Both are read in one statement, so a command committing meanwhile (which
 * adds its own deltas everywhere) is counted once, not twice.
 */
export async function recomputeRollupsCorrectingAncestors(q: Queryable, mountId: string, dir: string): Promise<void> {
  if (dir !== '') {
    await q.query(
      `WITH d AS (
         SELECT id FROM filestore.nodes WHERE mount_id = $1 AND path = $2 AND deleted_at IS NULL AND kind = 'directory'
       ), recorded AS (
         SELECT r.size_bytes + coalesce(sum(x.size_bytes), 0) AS size_bytes,
                r.file_count + coalesce(sum(x.file_count), 0) AS file_count,
                r.dir_count + coalesce(sum(x.dir_count), 0) AS dir_count
           FROM filestore.rollups r JOIN d ON r.node_id = d.id
           LEFT JOIN filestore.rollup_deltas x ON x.node_id = r.node_id
          GROUP BY r.node_id, r.size_bytes, r.file_count, r.dir_count
       ), actual AS (
         SELECT coalesce(sum(c.size_bytes) FILTER (WHERE c.kind = 'file'), 0) AS size_bytes,
                count(*) FILTER (WHERE c.kind = 'file') AS file_count,
                count(*) FILTER (WHERE c.kind = 'directory') AS dir_count
           FROM filestore.nodes c
          WHERE c.mount_id = $1 AND c.deleted_at IS NULL AND c.consistency_state <> 'MISSING' AND c.path >= $3 AND c.path < $4
       )
       INSERT INTO filestore.rollup_deltas (node_id, size_bytes, file_count, dir_count, child_count)
       SELECT a.id, actual.size_bytes - recorded.size_bytes, actual.file_count - recorded.file_count,
              actual.dir_count - recorded.dir_count, 0
         FROM actual, recorded, filestore.nodes a
        WHERE a.mount_id = $1 AND a.path = ANY($5::text[]) AND a.deleted_at IS NULL AND a.kind = 'directory'
          AND (actual.size_bytes, actual.file_count, actual.dir_count) IS DISTINCT FROM
              (recorded.size_bytes, recorded.file_count, recorded.dir_count)`,
      [mountId, dir, `${dir}/`, `${dir}0`, ancestorsOf(dir)],
    );
  }
  await recomputeRollups(q, mountId, dir);
}
