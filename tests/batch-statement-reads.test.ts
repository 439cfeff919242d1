/**
 * A small batch's statements read the batch's rows, not the mount's or the history's, even on
 * tables PostgreSQL has never analysed (autovacuum off or behind, as on the machines here: the
 * product must not depend on it). Without statistics the planner once took the mount's live
 * path index to find ten nodes by id (hashing every live node of the mount: a batch of S3
 * events cost as much as the bucket's size) and the open-jobs index to find ten job rows by id
 * (every job that was ever open and not yet vacuumed). What a user sees is the cost of an S3
 * event or a watcher batch growing with the bucket and with time; what is measured here is
 * the heap blocks a statement fetched in its transaction (pg_stat_get_xact_blocks_fetched).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { markInconsistentMany, touchCheckedSql } from '../shared/catalogue/drift-writes.ts';
import { applyChanges, insertDiscovered, markMissing, reactivate, touchChecked } from '../shared/catalogue/reconcile-writes.ts';
import { NODE_COLUMNS } from '../shared/catalogue/rows.ts';
import type { CatalogueNode } from '../shared/catalogue/types.ts';
import { migrate } from '../shared/db/migrate.ts';
import { addInsertedToAncestorsSql } from '../shared/catalogue/inline-writes.ts';
import { finishJobsSql, insertJobsAndNodes } from '../shared/reconcile/s3-events/apply.ts';
import { mountsAndSequencers } from '../shared/reconcile/s3-events/newest.ts';
import { zeroCounts } from '../shared/reconcile/types.ts';
import { ownDatabase } from './support/own-database.ts';

const db = ownDatabase('filestore_batch_reads');
const NODES = 30_000;
const JOBS = 40_000;
const BATCH = 10;
// Heap blocks: a batch's own rows with their new versions and index entries (~100), where a
// scan of the mount or of the jobs' history fetches thousands.
const READ_AT_MOST = 300;

describe('a small batch on big tables without statistics', () => {
  let client: pg.Client;
  let mountId: string;
  let bucketMount: string;

  beforeAll(async () => {
    await db.create();
    await migrate(db.url);
    client = new pg.Client({ connectionString: db.url });
    await client.connect();
    for (const t of ['nodes', 'reconciliation_jobs', 'outbox', 'snapshots']) await client.query(`ALTER TABLE filestore.${t} SET (autovacuum_enabled = false)`);
    const { rows } = await client.query<{ id: string }>(`INSERT INTO filestore.mounts (key, kind, root_path) VALUES ('big', 'local', '/srv/big') RETURNING id`);
    mountId = (rows[0] as { id: string }).id;
    const root = await client.query<{ id: number }>(`INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind) VALUES ($1, '', NULL, '', 'directory') RETURNING id`, [mountId]);
    await client.query(
      `INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind, size_bytes)
       SELECT $1, 'f' || i, $2, 'f' || i, 'file', i FROM generate_series(1, $3::int) AS i`,
      [mountId, root.rows[0]?.id, NODES],
    );
    // A bucket's mount as big.
    const s3 = await client.query<{ id: string }>(`INSERT INTO filestore.mounts (key, kind, bucket, prefix, region) VALUES ('bucket', 's3', 'big-bucket', 'tenant/', 'us-east-1') RETURNING id`);
    bucketMount = (s3.rows[0] as { id: string }).id;
    const s3root = await client.query<{ id: number }>(`INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind) VALUES ($1, '', NULL, '', 'directory') RETURNING id`, [bucketMount]);
    await client.query(
      `INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind, size_bytes, etag, sequencer)
       SELECT $1, 'k' || i, $2, 'k' || i, 'file', i, md5(i::text), '0A' FROM generate_series(1, $3::int) AS i`,
      [bucketMount, s3root.rows[0]?.id, NODES],
    );
    // Jobs that were open once and are finished now (their open-index entries stay until a vacuum).
    await client.query(
      `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status, attempts, started_at)
       SELECT $1, 'f' || i, 'drift', '{}'::jsonb, 'running', 1, now() FROM generate_series(1, $2::int) AS i`,
      [mountId, JOBS],
    );
    await client.query(`UPDATE filestore.reconciliation_jobs SET status = 'succeeded', finished_at = now()`);
    // Statistics taken at a quiet moment (no job open): the open-jobs index looks empty to the
    // planner, and still holds an entry for every one of them.
    await client.query('ANALYZE filestore.reconciliation_jobs');
  }, 120_000);

  afterAll(async () => {
    await client?.end();
    await db.drop();
  });

  /** Heap blocks of `table` fetched by `run` (in a transaction of its own, rolled back). */
  async function blocksFetched(table: string, run: () => Promise<unknown>): Promise<number> {
    // The counter is the backend's, pending since its last flush of statistics: a difference.
    const read = async () => Number((await client.query<{ n: string }>(`SELECT pg_stat_get_xact_blocks_fetched('filestore.${table}'::regclass) AS n`)).rows[0]?.n);
    await client.query('BEGIN');
    try {
      const before = await read();
      await run();
      return (await read()) - before;
    } finally {
      await client.query('ROLLBACK');
    }
  }

  const someNodes = async (): Promise<CatalogueNode[]> =>
    (await client.query<CatalogueNode>(`SELECT ${NODE_COLUMNS} FROM filestore.nodes WHERE mount_id = $1 AND path = ANY($2::text[])`, [mountId, Array.from({ length: BATCH }, (_, i) => `f${1 + i * 997}`)])).rows;

  it('the checked marks and sequencers of ten nodes read about ten rows, not the mount', async () => {
    const nodes = await someNodes();
    expect(nodes).toHaveLength(BATCH);
    const sql = touchCheckedSql(mountId, nodes.map((n, i) => ({ id: n.id, sequencer: `0A${i}` }))) as string;
    const fetched = await blocksFetched('nodes', () => client.query(sql));
    expect(fetched).toBeLessThan(READ_AT_MOST);
  });

  it('marking ten nodes INCONSISTENT reads about ten rows, not the mount', async () => {
    const nodes = await someNodes();
    let marked: CatalogueNode[] = [];
    const fetched = await blocksFetched('nodes', async () => {
      marked = await markInconsistentMany(client, mountId, nodes.map((node) => ({ node, seen: null })), 'watcher');
    });
    expect(marked).toHaveLength(BATCH);
    expect(fetched).toBeLessThan(READ_AT_MOST);
  });

  it("an audit's writes of ten nodes (checked marks, changed files, MISSING, back from MISSING) read about ten rows, not the mount", async () => {
    const nodes = await someNodes();
    const guard = { mountId, jobId: 0, scanStartedAt: new Date(Date.now() + 60_000) };
    expect(await blocksFetched('nodes', () => touchChecked(client, guard, nodes.map((n) => n.id))), 'checked marks').toBeLessThan(READ_AT_MOST);
    let missing: CatalogueNode[] = [];
    expect(await blocksFetched('nodes', async () => void (missing = await markMissing(client, guard, nodes, 'audit'))), 'MISSING').toBeLessThan(READ_AT_MOST);
    expect(missing).toHaveLength(BATCH);
    let changed: CatalogueNode[] = [];
    const seen = (n: CatalogueNode) => ({ path: n.path, kind: 'file' as const, sizeBytes: Number(n.sizeBytes) + 1, mode: 0o644, uid: 0, gid: 0, mtime: new Date(), etag: null, symlinkTarget: null });
    const updating = blocksFetched('nodes', async () => void (changed = await applyChanges(client, guard, nodes.map((node) => ({ node, seen: seen(node), sha256: null })), 'audit')));
    expect(await updating, 'changed files').toBeLessThan(READ_AT_MOST);
    expect(changed).toHaveLength(BATCH);
    await client.query('BEGIN');
    try {
      const gone = await markMissing(client, guard, nodes, 'audit');
      const before = Number((await client.query<{ n: string }>(`SELECT pg_stat_get_xact_blocks_fetched('filestore.nodes'::regclass) AS n`)).rows[0]?.n);
      expect(await reactivate(client, guard, gone, 'audit')).toHaveLength(BATCH);
      const after = Number((await client.query<{ n: string }>(`SELECT pg_stat_get_xact_blocks_fetched('filestore.nodes'::regclass) AS n`)).rows[0]?.n);
      expect(after - before, 'back from MISSING').toBeLessThan(READ_AT_MOST);
    } finally {
      await client.query('ROLLBACK');
    }
  });

  it('a discovery of ten new files under the root finds their parent by index, not by reading the mount', async () => {
    const fresh = Array.from({ length: BATCH }, (_, i) => ({ path: `new-${i}`, kind: 'file' as const, sizeBytes: i, sha256: null, etag: null, mode: 0o644, uid: 0, gid: 0, mtime: new Date() }));
    let inserted = 0;
    const fetched = await blocksFetched('nodes', async () => {
      inserted = (await insertDiscovered(client, mountId, fresh, { jobId: 0, reason: 'audit' })).length;
    });
    expect(inserted).toBe(BATCH);
    expect(fetched).toBeLessThan(READ_AT_MOST);
  });

  it("an S3-event batch's first read (its mounts, its keys' nodes and their sequencers) reads about ten rows, not the bucket", async () => {
    const keys = Array.from({ length: BATCH }, (_, i) => ({ bucket: 'big-bucket', key: `tenant/k${1 + i * 997}` }));
    let found = 0;
    const fetched = await blocksFetched('nodes', async () => {
      const { prefetched } = await mountsAndSequencers(client, keys);
      found = prefetched?.byMount.get(bucketMount)?.size ?? 0;
    });
    expect(found).toBe(BATCH);
    expect(fetched).toBeLessThan(READ_AT_MOST);
  });

  it("an S3-event batch's new files (job rows, nodes below their parent, the parents' rollups) read about ten rows, not the bucket", async () => {
    const at = new Date();
    const planned = Array.from({ length: BATCH }, (_, i) => ({
      path: `new${i}.txt`,
      seen: { path: `new${i}.txt`, kind: 'file' as const, sizeBytes: 10 + i, mode: null, uid: null, gid: null, mtime: at, etag: `e${i}`, symlinkTarget: null },
      sequencer: `0B${i}`,
      node: null,
    }));
    let inserted = 0;
    const fetched = await blocksFetched('nodes', async () => {
      await client.query('SAVEPOINT before_apply');
      const out = await insertJobsAndNodes(client, bucketMount, planned, () => {});
      inserted = out.inserted.length;
      await client.query(addInsertedToAncestorsSql(bucketMount, out.inserted) as string);
    });
    expect(inserted).toBe(BATCH);
    expect(fetched).toBeLessThan(READ_AT_MOST);
  });

  it("finishing an S3-event batch's ten job rows reads about ten rows, not every job once open", async () => {
    const fetched = await blocksFetched('reconciliation_jobs', async () => {
      const { rows } = await client.query<{ id: number }>(
        `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status, attempts, started_at)
         SELECT $1, 'new' || i, 's3_event', '{}'::jsonb, 'running', 1, now() FROM generate_series(1, $2::int) AS i RETURNING id`,
        [mountId, BATCH],
      );
      const done = await client.query(finishJobsSql(rows.map((r) => ({ id: r.id, result: { ...zeroCounts(), checked: 1 } }))) as string);
      expect(done.rowCount).toBe(BATCH);
    });
    expect(fetched).toBeLessThan(READ_AT_MOST);
  });
});
