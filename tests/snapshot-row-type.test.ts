/**
 * Snapshots record the node row in a column of the nodes table's row type (migration
 * 1700000000021). PostgreSQL then refuses an ALTER TABLE of nodes that fills or rewrites its
 * rows; the migration's comment (and docs/architecture.md) say how a later migration gets its
 * change through. This pins both: what is refused, what is not, and that the records moved
 * aside by the documented steps read as before through the API's reader.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMount } from '../shared/catalogue/mounts.ts';
import { listSnapshots } from '../shared/catalogue/nodes.ts';
import { SNAPSHOT_COLUMN, snapshotState } from '../shared/catalogue/rows.ts';
import { migrate } from '../shared/db/migrate.ts';
import { createPool, type Pool } from '../shared/db/pool.ts';
import { ownDatabase } from './support/own-database.ts';

const db = ownDatabase('filestore_snaprow');

describe('snapshots recorded as nodes rows, and later migrations of nodes', () => {
  let pool: Pool;
  let nodeId: number;

  beforeAll(async () => {
    await db.create();
    await migrate(db.url);
    pool = createPool(db.url, 2);
    const mount = await createMount(pool, { key: 'rows', kind: 's3', bucket: 'rows-bucket' });
    const { rows } = await pool.query<{ id: number }>(
      `WITH ins AS (
         INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind, size_bytes, etag, mtime, metadata)
         SELECT $1, 'a.txt', r.id, 'a.txt', 'file', 3, 'e1', '2024-05-01T10:00:00.007Z', '{}'::jsonb
           FROM filestore.nodes r WHERE r.mount_id = $1 AND r.path = ''
         RETURNING *
       ), snap AS (
         INSERT INTO filestore.snapshots (node_id, version, ${SNAPSHOT_COLUMN}) SELECT ins.id, ins.version, ${snapshotState('ins')} FROM ins
       )
       SELECT id FROM ins`,
      [mount.id],
    );
    nodeId = Number(rows[0]?.id);
  }, 60_000);

  afterAll(async () => {
    await pool?.end();
    await db.drop();
  });

  const documentNow = async () =>
    (await pool.query<{ doc: Record<string, unknown> }>('SELECT filestore.node_state(n) AS doc FROM filestore.nodes n WHERE id = $1', [nodeId])).rows[0]?.doc;

  it('reads the recorded row as the node document', async () => {
    const [snap] = await listSnapshots(pool, nodeId, 10);
    expect(snap?.state).toEqual(await documentNow());
    expect(snap?.state).toMatchObject({ path: 'a.txt', sizeBytes: 3, etag: 'e1', version: 1 });
  });

  it('refuses a column with a default or a type change of nodes while the records are there, not a column without a default', async () => {
    await expect(pool.query('ALTER TABLE filestore.nodes ADD COLUMN probe int DEFAULT 1')).rejects.toThrow(/uses its row type/);
    await expect(pool.query('ALTER TABLE filestore.nodes ALTER COLUMN mode TYPE bigint')).rejects.toThrow(/uses its row type/);
    await pool.query('ALTER TABLE filestore.nodes ADD COLUMN probe int');
    await pool.query('ALTER TABLE filestore.nodes DROP COLUMN probe');
    const [snap] = await listSnapshots(pool, nodeId, 10);
    expect(snap?.state).toEqual(await documentNow());
  });

  it('the documented steps get such a change through, and the records read as before', async () => {
    const before = await documentNow();
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('UPDATE filestore.snapshots SET state = to_jsonb(node_row) WHERE state IS NULL');
      await c.query('ALTER TABLE filestore.snapshots DROP COLUMN node_row');
      await c.query('ALTER TABLE filestore.nodes ADD COLUMN probe int NOT NULL DEFAULT 1');
      await c.query('ALTER TABLE filestore.snapshots ADD COLUMN node_row filestore.nodes');
      await c.query('ALTER TABLE filestore.snapshots ADD CONSTRAINT snapshots_recorded CHECK (state IS NOT NULL OR (node_row).id IS NOT NULL) NOT VALID');
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK');
      throw err;
    } finally {
      c.release();
    }
    const [snap] = await listSnapshots(pool, nodeId, 10);
    expect(snap?.state).toEqual(before);
    // New records are rows again, of the new row type.
    await pool.query(
      `WITH up AS (UPDATE filestore.nodes SET size_bytes = 4, version = version + 1 WHERE id = $1 RETURNING *)
       INSERT INTO filestore.snapshots (node_id, version, ${SNAPSHOT_COLUMN}) SELECT up.id, up.version, ${snapshotState('up')} FROM up`,
      [nodeId],
    );
    const snaps = await listSnapshots(pool, nodeId, 10);
    expect(snaps.map((s) => [s.version, s.state.sizeBytes])).toEqual([
      [1, 3],
      [2, 4],
    ]);
    // Neither column holding the record is refused.
    await expect(pool.query('INSERT INTO filestore.snapshots (node_id, version) VALUES ($1, 3)', [nodeId])).rejects.toThrow(/snapshots_recorded/);
  });
});
