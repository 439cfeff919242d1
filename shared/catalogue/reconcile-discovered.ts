/**
 * The insert of what a reconciliation discovered untracked on storage: rows, snapshots, rollup
 * rows and their announcement, built in SQL, one statement per depth level.
 */
import type pg from 'pg';
import { levelsByDepth, newNodeParams, type NewNode } from './node-writes.ts';
import { SNAPSHOT_COLUMN, snapshotState } from './rows.ts';

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
 * The live parent's id of each distinct parent path of the input (`parents.parent_path`: a
 * level of a batch has a few parents for thousands of rows), looked up one by one: a scalar
 * subquery stays a lookup in the unique (mount_id, path) index whatever the planner believes
 * of the table. Joined to the table instead, a plan made from no statistics (a catalogue no
 * ANALYZE has seen: a discovery fills it from empty, autovacuum may be off or behind) took
 * the mount for one row: it hashed, or looped over, all of the mount's nodes for each batch,
 * so every batch cost more than the one before (a 100k discovery: over 100 ms of 500 per batch
 * at its end, and a nested loop of 200 million comparisons when hash joins were off). The
 * rows then meet their parent in a join of two small CTEs, which no plan can turn into a scan
 * of the table; looked up row by row, the lookups were ~15 % of the statement.
 */
const PARENT_ID_SQL = `(SELECT p.id FROM filestore.nodes p WHERE p.mount_id = $1 AND p.path = parents.parent_path AND p.deleted_at IS NULL)`;

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

/**
 * A node of a `filestore.nodes.discovered` event, built in SQL from the inserted row `ins`: the
 * JSON written as text (values through to_json, which escapes as json_build_object does), the
 * level's entries joined and read as one json value. json_build_object and json_agg took ~4 µs a
 * node, the text ~2 (a tenth of what PostgreSQL spends on a discovered node).
 */
const jsonOrNull = (sql: string) => `coalesce(to_json(${sql})::text, 'null')`;
const DISCOVERED_ENTRY_SQL = `concat('{"id":', ins.id, ',"path":', to_json(ins.path), ',"parentId":', ${jsonOrNull('ins.parent_id')},
  ',"kind":', to_json(ins.kind), ',"sizeBytes":', ${jsonOrNull('ins.size_bytes')}, ',"sha256":', ${jsonOrNull('ins.sha256')},
  ',"etag":', ${jsonOrNull('ins.etag')}, ',"mtime":', ${jsonOrNull(isoSql('ins.mtime'))}, ',"version":', ins.version, '}')`;

/**
 * Catalogues what a reconciliation found untracked on storage: for each node, its row, its
 * snapshot, an empty rollup row for a directory, and its announcement, all in one statement
 * per depth level (a parent inserted here is seen by its children's level): a
 * `filestore.node.reconciled` event (change `discovered`) per node, or, for a level of
 * DISCOVERED_BATCH_EVENT_AT nodes or more, one `filestore.nodes.discovered` event listing
 * them. Paths that already have a live row, or whose parent is not live, are left alone
 * (nothing is inserted without a parent). Returns the nodes inserted, as given.
 *
 * Runs in the caller's transaction (the batch's, holding the paths' locks). A level of
 * PLAIN_INSERT_AT rows or more is inserted without ON CONFLICT, after a SAVEPOINT: the
 * speculative insertion of ON CONFLICT … DO NOTHING cost PostgreSQL a quarter of a discovered
 * row's time (100k rows, 1,000 a statement: ~3.3 s of its backend's CPU with it, ~2.4–2.8 s
 * without), and a path taken since the scan (a command created it before the batch took its
 * lock) is rare. When one is, the statement fails on nodes_live_path, is rolled back to the
 * savepoint and runs again leaving taken paths alone, as a smaller level's always does (a
 * savepoint costs a round trip and a subtransaction: kept to levels where it pays, at most
 * batchSize / PLAIN_INSERT_AT per transaction — 20 with the default 2,000, under the 64 a
 * backend tracks before other sessions' snapshots slow down). Where taken paths were common
 * (two runs discovering the same new files at once) each such level would run twice:
 * correct, only slower.
 *
 * Unlike insertNodes + appendEvents, nothing of the rows comes back but their paths, and the
 * events are built from the inserted rows in SQL (a per-node event's data is the node as the
 * API shows it): a discovery of 100k files sent ~70 MB of event JSON to PostgreSQL and parsed
 * 100k rows of 22 columns back, most of the agent's CPU time in the audit. The events are drawn
 * in insertion order (the rows' ids), after the batch's path locks (outbox.ts: order of one
 * path's events).
 */
export async function insertDiscovered(
  /** A connection in a transaction (not a pool: its savepoints and statements must share one). */
  q: pg.ClientBase,
  mountId: string,
  nodes: readonly NewNode[],
  o: { jobId: number; reason: string },
): Promise<Array<NewNode>> {
  const inserted: Array<NewNode> = [];
  for (const level of levelsByDepth(nodes)) {
    const together = level.length >= DISCOVERED_BATCH_EVENT_AT;
    const values = [...newNodeParams(mountId, level), o.jobId, o.reason];
    const insert = (leaveTaken: boolean) =>
      q.query<{ path: string }>({
        name: `filestore.reconcile.insertDiscovered${together ? 'Together' : ''}${leaveTaken ? '' : '.plain'}`,
        text: insertDiscoveredSql(together, leaveTaken),
        values,
      });
    let rows: Array<{ path: string }>;
    if (level.length < PLAIN_INSERT_AT) ({ rows } = await insert(true));
    else {
      await q.query(`SAVEPOINT ${PLAIN_INSERT_SAVEPOINT}`);
      try {
        ({ rows } = await insert(false));
      } catch (err) {
        if (!isTakenPath(err)) throw err;
        await q.query(`ROLLBACK TO SAVEPOINT ${PLAIN_INSERT_SAVEPOINT}`);
        ({ rows } = await insert(true));
      }
    }
    if (rows.length === level.length) inserted.push(...level);
    else {
      const done = new Set(rows.map((r) => r.path));
      inserted.push(...level.filter((n) => done.has(n.path)));
    }
  }
  return inserted;
}

/** From how many rows a level is inserted without ON CONFLICT, after a savepoint (insertDiscovered). */
export const PLAIN_INSERT_AT = 100;
const PLAIN_INSERT_SAVEPOINT = 'filestore_discovered';

/** The insert failed on a path that has a live row already (nodes_live_path). */
function isTakenPath(err: unknown): boolean {
  const e = err as { code?: string; constraint?: string };
  return e.code === '23505' && e.constraint === 'nodes_live_path';
}

/**
 * One level's statement ($1 the mount, $2–$13 the rows, $14 the job, $15 the reason). With
 * `leaveTaken`, a path that has a live row already is left out (ON CONFLICT DO NOTHING);
 * without, it fails the statement.
 */
function insertDiscoveredSql(together: boolean, leaveTaken: boolean): string {
  return `WITH input AS (
         SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[],
                              $8::text[], $9::int[], $10::bigint[], $11::bigint[], $12::timestamptz[], $13::jsonb[])
           WITH ORDINALITY AS t(path, parent_path, name, kind, size_bytes, sha256, etag, mode, uid, gid, mtime, metadata, ord)
       ), parents AS MATERIALIZED (
         SELECT parents.parent_path, ${PARENT_ID_SQL} AS parent_id FROM (SELECT DISTINCT parent_path FROM input) parents
       ), resolved AS MATERIALIZED (
         SELECT input.*, parents.parent_id FROM input JOIN parents ON parents.parent_path = input.parent_path ORDER BY input.ord
       ), ins AS (
         INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind, size_bytes, sha256, etag,
                                      mode, uid, gid, mtime, metadata, consistency_checked_at)
         SELECT $1, i.path, i.parent_id, i.name, i.kind, i.size_bytes, i.sha256, i.etag, i.mode, i.uid, i.gid,
                i.mtime, coalesce(i.metadata, '{}'::jsonb), now()
           FROM resolved i
          WHERE i.parent_id IS NOT NULL
         ${leaveTaken ? 'ON CONFLICT (mount_id, path) WHERE deleted_at IS NULL DO NOTHING' : ''}
         RETURNING *
       ), snap AS (
         INSERT INTO filestore.snapshots (node_id, version, reconciliation_job_id, ${SNAPSHOT_COLUMN})
         SELECT ins.id, ins.version, $14, ${snapshotState('ins')} FROM ins
       ), roll AS (
         INSERT INTO filestore.rollups (node_id, mount_id) SELECT id, mount_id FROM ins WHERE kind = 'directory'
       ), events AS (${together ? DISCOVERED_TOGETHER_SQL : DISCOVERED_EACH_SQL})
       SELECT path FROM ins`;
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
                                  'nodes', ('[' || string_agg(${DISCOVERED_ENTRY_SQL}, ',' ORDER BY ins.id) || ']')::json)
           FROM ins
         HAVING count(*) > 0`;
