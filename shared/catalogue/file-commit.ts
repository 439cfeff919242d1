import type { PoolClient } from '../db/pool.ts';
import { ancestorsOf, baseName, parentOf } from '../paths.ts';
import { lit } from './inline-writes.ts';
import { SNAPSHOT_COLUMN, snapshotState } from './rows.ts';

/*
 * The commit of a writeFile that created a file under catalogued parents — the common write —
 * as ONE round trip: `BEGIN; EXECUTE …; COMMIT; <after>` in one simple query. The statement
 * (prepared once per connection) does what insertNodes, finishEntry and the pipeline's events
 * do for it, in one transaction: the node row, its snapshot, its ancestors' rollup deltas, the
 * journal entry `succeeded` with its result, and the two events (filestore.node.created, then
 * filestore.command.completed). Four round trips before (BEGIN, insert, finish, COMMIT).
 *
 * The node's JSON (result and event) is built in SQL in the API's shape, as the pipeline's
 * asJson(node) writes it: the keys in NODE_COLUMNS order, timestamps as Date.toISOString()
 * writes them (milliseconds, truncated as a pg Date is), the mtime exactly as given, compact.
 *
 * All or nothing: the entry is locked and must be pending, the node must be inserted (its
 * parent live, its path free), else the statement changes nothing and returns no row, and the
 * caller leaves the entry pending for recovery, as when a commit fails.
 */

const STATEMENT = 'filestore_commit_new_file_2';
const ISO = `'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'`;
const iso = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', ${ISO})`;

const PREPARE = `PREPARE ${STATEMENT} (bigint, uuid, text, text, text, bigint, text, text, integer, bigint, bigint, timestamptz, text, text[], boolean, text) AS
WITH e AS (
  SELECT id FROM filestore.journal_entries WHERE id = $1 AND status = 'pending' FOR UPDATE
), ins AS (
  INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind, size_bytes, sha256, etag,
                               mode, uid, gid, mtime, metadata, consistency_checked_at)
  SELECT $2, $3, p.id, $5, 'file', $6, $7, $8, $9, $10, $11, $12, '{}'::jsonb, now()
    FROM e CROSS JOIN LATERAL (
      SELECT x.id FROM filestore.nodes x
       WHERE x.mount_id = $2 AND x.path = $4 AND x.deleted_at IS NULL LIMIT 1
    ) p
  ON CONFLICT (mount_id, path) WHERE deleted_at IS NULL DO NOTHING
  RETURNING *
), snap AS (
  INSERT INTO filestore.snapshots (node_id, version, journal_entry_id, reconciliation_job_id, ${SNAPSHOT_COLUMN})
  SELECT ins.id, ins.version, $1, NULL, ${snapshotState('ins')} FROM ins
), deltas AS (
  INSERT INTO filestore.rollup_deltas (node_id, size_bytes, file_count, dir_count, child_count)
  SELECT a.id, ins.size_bytes, 1, 0, CASE WHEN a.path = $4 THEN 1 ELSE 0 END
    FROM ins
    CROSS JOIN unnest($14::text[]) AS anc(path)
    CROSS JOIN LATERAL (
      SELECT x.id, x.path FROM filestore.nodes x
       WHERE x.mount_id = $2 AND x.path = anc.path AND x.deleted_at IS NULL AND x.kind = 'directory' LIMIT 1
    ) a
), node AS (
  SELECT row_to_json(v)::text AS json FROM ins CROSS JOIN LATERAL (
    SELECT ins.id, ins.mount_id AS "mountId", ins.path, ins.parent_id AS "parentId", ins.name, ins.kind,
           ins.size_bytes AS "sizeBytes", ins.sha256, ins.etag, ins.sequencer, ins.mode, ins.uid, ins.gid,
           $13::text AS mtime, ins.version, ins.consistency_state AS "consistencyState",
           ${iso(`GREATEST(ins.consistency_checked_at, (SELECT m.audited_at FROM filestore.mounts m WHERE m.id = ins.mount_id))`)} AS "consistencyCheckedAt",
           ${iso('ins.last_drift_detected_at')} AS "lastDriftDetectedAt", ${iso('ins.last_reconciled_at')} AS "lastReconciledAt",
           ${iso('ins.deleted_at')} AS "deletedAt", ins.metadata, ${iso('ins.created_at')} AS "createdAt", ${iso('ins.updated_at')} AS "updatedAt"
  ) v
), fin AS (
  UPDATE filestore.journal_entries j
     SET status = 'succeeded', result = ('{"journalEntryId":' || $1 || ',"node":' || node.json || '}')::jsonb,
         error = NULL, finished_at = now(), recovered = $15
    FROM node WHERE j.id = $1
  RETURNING j.id
), ev AS (
  INSERT INTO filestore.outbox (mount_id, type, data)
  SELECT $2, t.type, t.data::json
    FROM fin CROSS JOIN node
    CROSS JOIN LATERAL (VALUES (1, 'filestore.node.created', '{"node":' || node.json || ',"journalEntryId":' || $1 || '}'),
                               (2, 'filestore.command.completed', $16)) AS t(n, type, data)
   ORDER BY t.n
)
SELECT '{"journalEntryId":' || $1 || ',"node":' || node.json || '}' AS json FROM node CROSS JOIN fin`;

/** Connections that have the statement prepared (a connection dropped takes its entry with it). */
const prepared = new WeakSet<object>();

export interface NewFile {
  path: string;
  sizeBytes: number;
  sha256: string;
  etag: string | null;
  mode: number | null;
  uid: number | null;
  gid: number | null;
  mtime: Date | null;
}

const sqlInt = (n: number | null): string => {
  if (n === null) return 'NULL';
  if (!Number.isSafeInteger(n)) throw new TypeError(`not an integer: ${String(n)}`);
  return String(n);
};
const sqlText = (s: string | null): string => (s === null ? 'NULL' : lit(s));

/**
 * Commits a new file's node, journal entry `succeeded` and events in one round trip (see
 * above); `after` is what ends the transaction (`COMMIT`, plus the pipeline's lock release).
 * Returns the command's result, or null when nothing was committed (the entry is no longer
 * pending, or the node could not be inserted): the caller treats that as a failed commit.
 * On an error the transaction is rolled back if the connection still answers.
 */
export async function commitNewFile(
  client: PoolClient,
  entryId: number,
  mountId: string,
  file: NewFile,
  completed: Record<string, unknown>,
  recovered: boolean,
  after = 'COMMIT',
): Promise<Record<string, unknown> | null> {
  const parent = parentOf(file.path);
  if (parent === null) throw new Error('the mount root is not a file');
  const mtime = file.mtime === null ? null : file.mtime.toISOString();
  const args = [
    sqlInt(entryId),
    lit(mountId),
    lit(file.path),
    lit(parent),
    lit(baseName(file.path)),
    sqlInt(file.sizeBytes),
    lit(file.sha256),
    sqlText(file.etag),
    sqlInt(file.mode),
    sqlInt(file.uid),
    sqlInt(file.gid),
    sqlText(mtime),
    sqlText(mtime),
    `ARRAY[${ancestorsOf(file.path).map(lit).join(',')}]::text[]`,
    recovered ? 'true' : 'false',
    lit(JSON.stringify(completed)),
  ];
  if (!prepared.has(client)) {
    // 42P05: prepared on this connection already (by a copy of this module, say): as good.
    await client.query(PREPARE).catch((err: { code?: string }) => {
      if (err.code !== '42P05') throw err;
    });
    prepared.add(client);
  }
  let results: Array<{ rows: Array<{ json: string }> }>;
  try {
    results = (await client.query(`BEGIN; EXECUTE ${STATEMENT}(${args.join(', ')}); ${after}`)) as unknown as typeof results;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
  const json = results[1]?.rows[0]?.json;
  return json === undefined ? null : (JSON.parse(json) as Record<string, unknown>);
}
