/**
 * The maintenance pass does what autovacuum would where it does not (off, as on these
 * machines, or far behind): the queue-like tables' dead rows are vacuumed and the catalogue's
 * statistics kept current, so the cost of finding a few rows stays the cost of those rows.
 * Seen before: after thousands of finished jobs and an ANALYZE at a quiet moment, looking for
 * the open jobs of one path walked an entry for every job ever open; an S3-event batch took
 * 49 ms before an ANALYZE of its database and 27 ms after.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UPKEEP_LOCK, upkeepCatalogue } from '../shared/catalogue/catalogue-upkeep.ts';
import { openListings } from '../shared/catalogue/drift-writes.ts';
import { createPool, type Pool } from '../shared/db/pool.ts';
import { migrate } from '../shared/db/migrate.ts';
import type { Filestore } from '../shared/runtime.ts';
import { wireTestFilestore } from './support/filestore.ts';
import { ownDatabase } from './support/own-database.ts';

const db = ownDatabase('filestore_upkeep');
const JOBS = 40_000;
const NODES = 30_000;

describe('catalogue upkeep in the maintenance pass (autovacuum off)', () => {
  let pool: Pool;
  let mountId: string;

  beforeAll(async () => {
    await db.create();
    await migrate(db.url);
    pool = createPool(db.url, 3);
    // One session, its statistics flushed at the end (they are flushed at most once a second).
    const setup = await pool.connect();
    for (const t of ['nodes', 'snapshots', 'reconciliation_jobs', 'journal_entries', 'outbox', 'rollup_deltas', 'rollups']) {
      await setup.query(`ALTER TABLE filestore.${t} SET (autovacuum_enabled = false)`);
    }
    const { rows } = await setup.query<{ id: string }>(`INSERT INTO filestore.mounts (key, kind, root_path) VALUES ('kept', 'local', '/srv/kept') RETURNING id`);
    mountId = (rows[0] as { id: string }).id;
    // A day of drift: jobs queued, run and finished.
    await setup.query(
      `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status, attempts, started_at)
       SELECT $1, 'd' || i, 'drift', '{"recursive":false}'::jsonb, 'running', 1, now() FROM generate_series(1, $2::int) AS i`,
      [mountId, JOBS],
    );
    await setup.query(`UPDATE filestore.reconciliation_jobs SET status = 'succeeded', finished_at = now()`);
    // Statistics from a quiet moment (no job open): to the planner the open-jobs index is empty.
    await setup.query('ANALYZE filestore.reconciliation_jobs');
    // A mount discovered since: rows no statistics know of.
    const root = await setup.query<{ id: number }>(`INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind) VALUES ($1, '', NULL, '', 'directory') RETURNING id`, [mountId]);
    await setup.query(
      `INSERT INTO filestore.nodes (mount_id, path, parent_id, name, kind, size_bytes)
       SELECT $1, 'f' || i, $2, 'f' || i, 'file', i FROM generate_series(1, $3::int) AS i`,
      [mountId, root.rows[0]?.id, NODES],
    );
    await setup.query('SELECT pg_stat_force_next_flush()');
    setup.release();
  }, 120_000);

  afterAll(async () => {
    await pool?.end();
    await db.drop();
  });

  /** Every job row updated, its dead versions reported to the statistics now (they are flushed at most once a second). */
  async function churnJobs(): Promise<void> {
    const client = await pool.connect();
    try {
      await client.query(`UPDATE filestore.reconciliation_jobs SET updated_at = now()`);
      await client.query('SELECT pg_stat_force_next_flush()');
    } finally {
      client.release();
    }
  }

  /** Heap blocks of the jobs table fetched to find one directory's open listings (the watcher asks this of every burst). */
  async function openListingsCost(): Promise<number> {
    const client = await pool.connect();
    try {
      const read = async () => Number((await client.query<{ n: string }>(`SELECT pg_stat_get_xact_blocks_fetched('filestore.reconciliation_jobs'::regclass) AS n`)).rows[0]?.n);
      await client.query('BEGIN');
      const before = await read();
      expect(await openListings(client, mountId, ['d7'])).toEqual([]);
      const cost = (await read()) - before;
      await client.query('ROLLBACK');
      return cost;
    } finally {
      client.release();
    }
  }

  it('vacuums the jobs table and analyses the new nodes once, then finds nothing to do', async () => {
    const before = await openListingsCost();
    expect(before).toBeGreaterThan(200);

    const report = await upkeepCatalogue(pool);
    expect(report.vacuumed.map((v) => v.table)).toContain('reconciliation_jobs');
    expect(report.vacuumed.find((v) => v.table === 'reconciliation_jobs')?.deadRows).toBeGreaterThanOrEqual(JOBS);
    expect(report.analyzed.map((a) => a.table)).toContain('nodes');
    expect(report.skipped).toEqual([]);

    const after = await openListingsCost();
    expect(after).toBeLessThan(20);
    const { rows } = await pool.query<{ analyzed: boolean }>(`SELECT last_analyze IS NOT NULL AS analyzed FROM pg_stat_user_tables WHERE schemaname = 'filestore' AND relname = 'nodes'`);
    expect(rows[0]?.analyzed).toBe(true);

    expect(await upkeepCatalogue(pool)).toEqual({ vacuumed: [], analyzed: [], skipped: [] });
  });

  it('leaves it to the process already doing it', async () => {
    await churnJobs(); // dead rows again
    const other = new pg.Client({ connectionString: db.url });
    await other.connect();
    try {
      await other.query('SELECT pg_advisory_lock($1)', [UPKEEP_LOCK]);
      expect(await upkeepCatalogue(pool)).toEqual({ vacuumed: [], analyzed: [], skipped: [] });
      await other.query('SELECT pg_advisory_unlock($1)', [UPKEEP_LOCK]);
      expect((await upkeepCatalogue(pool)).vacuumed.map((v) => v.table)).toEqual(['reconciliation_jobs']);
    } finally {
      await other.end();
    }
  });

  it('waits for no migration and runs past no deadline: a migration running, or no time left, is skipped', async () => {
    await churnJobs();
    const migration = new pg.Client({ connectionString: db.url });
    await migration.connect();
    try {
      await migration.query('SELECT pg_advisory_lock(4242001)'); // shared/db/migrate.ts's lock
      expect(await upkeepCatalogue(pool)).toEqual({ vacuumed: [], analyzed: [], skipped: [] });
    } finally {
      await migration.end();
    }
    // A Lambda with less than a second left for it: named as skipped, tried by the next pass.
    expect(await upkeepCatalogue(pool, { deadline: Date.now() + 500 })).toEqual({ vacuumed: [], analyzed: [], skipped: ['reconciliation_jobs'] });
    expect((await upkeepCatalogue(pool, { deadline: Date.now() + 60_000 })).vacuumed.map((v) => v.table)).toEqual(['reconciliation_jobs']);
  });

  it("is part of every maintenance pass (the long-running processes' timer, the maintenance Lambda)", async () => {
    await churnJobs();
    let core: Filestore | undefined;
    const lines: string[] = [];
    try {
      core = await wireTestFilestore({ databaseUrl: db.url, log: (line: string) => lines.push(line) });
      const report = await core.maintain();
      expect(report.upkeep?.vacuumed.map((v) => v.table)).toEqual(['reconciliation_jobs']);
      expect(lines.join('\n')).toMatch(/catalogue upkeep \(autovacuum off or behind\): VACUUM \(ANALYZE\) filestore\.reconciliation_jobs \(40,000 dead rows\)/);
    } finally {
      await core?.close();
    }
  });
});
