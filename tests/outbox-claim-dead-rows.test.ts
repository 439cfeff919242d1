/**
 * The relay's claim stays cheap however many published rows wait for a VACUUM (autovacuum off,
 * or behind): it must not depend on autovacuum having run. Marking a row published leaves a
 * dead entry in the unpublished index; a bitmap scan of that index visits every such row's
 * heap page on every claim (7 ms a claim after 20k events, growing with them), while a plain
 * index scan marks the dead entries it meets as dead in the index once and skips them after.
 * Measured in buffers the claim's statement touches (EXPLAIN ANALYZE BUFFERS), not time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLAIM_SETTINGS_SQL, RELAY_LOCKED_SETTING, claimBatchSql } from '../shared/catalogue/outbox.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { createPool, type Pool } from '../shared/db/pool.ts';
import { migrate } from '../shared/db/migrate.ts';
import { InlineEventBus, type EventBus } from '../shared/events/bus.ts';
import { OutboxRelay } from '../shared/events/relay.ts';
import { ownDatabase } from './support/own-database.ts';

const EVENTS = 20_000;
const db = ownDatabase('filestore_claim');

/** Shared buffers the claim's statement touches, run as the relay runs it (its settings, the lock held). */
async function claimBuffers(pool: Pool): Promise<{ buffers: number; rows: number }> {
  const c = await pool.connect();
  try {
    await c.query(`BEGIN; SELECT set_config('${RELAY_LOCKED_SETTING}', 'true', true); ${CLAIM_SETTINGS_SQL}`);
    const { rows } = await c.query<{ 'QUERY PLAN': [{ Plan: { 'Shared Hit Blocks': number; 'Shared Read Blocks': number; 'Actual Rows': number } }] }>(
      `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${claimBatchSql(500)}`,
    );
    const plan = rows[0]!['QUERY PLAN'][0].Plan;
    return { buffers: plan['Shared Hit Blocks'] + plan['Shared Read Blocks'], rows: plan['Actual Rows'] };
  } finally {
    await c.query('ROLLBACK').catch(() => {});
    c.release();
  }
}

describe('the relay claim with many published rows not yet vacuumed', () => {
  let pool: Pool;
  let bus: EventBus;
  const published: unknown[] = [];

  beforeAll(async () => {
    await db.create();
    await migrate(db.url);
    pool = createPool(db.url, 4);
    await pool.query(`ALTER TABLE filestore.outbox SET (autovacuum_enabled = false)`);
    const mount = await createMount(pool, { key: 'claims', kind: 's3', bucket: 'claims-bucket' });
    await pool.query(
      `INSERT INTO filestore.outbox (mount_id, type, data)
       SELECT $1, 'filestore.node.reconciled', json_build_object('i', i) FROM generate_series(1, $2) AS i`,
      [mount.id, EVENTS],
    );
    bus = new InlineEventBus();
    await bus.subscribe((e) => void published.push(e));
  }, 120_000);

  afterAll(async () => {
    await pool?.end();
    await db.drop();
  });

  it('every row is published, and a claim afterwards reads a small fraction of the pages it did before', async () => {
    const relay = new OutboxRelay({ pool, bus, batchSize: 1_000 });
    expect(await relay.drain()).toBe(EVENTS);
    expect(published).toHaveLength(EVENTS);
    const first = await claimBuffers(pool);
    const second = await claimBuffers(pool);
    expect(first.rows).toBe(0);
    expect(second.rows).toBe(0);
    // 20k dead rows fill ~180 heap pages and ~55 index pages: a claim that still visits the
    // heap for each of them touches hundreds of buffers every time.
    const { rows } = await pool.query<{ pages: string }>(`SELECT pg_relation_size('filestore.outbox') / 8192 AS pages`);
    expect(Number(rows[0]!.pages)).toBeGreaterThan(150);
    expect(second.buffers).toBeLessThan(Number(rows[0]!.pages) / 2);
  });

  it('a claim of a few new rows reads them, not the whole outbox, whatever the statistics say', async () => {
    // The claim joins the rows it takes back to the outbox for their envelopes. With statistics
    // taken while many rows waited (after a burst; nothing analyzes again with autovacuum off),
    // that join was planned as a hash join reading every row of the outbox through its primary
    // key: 4-6 ms a claim of ten events with a few thousand published rows, growing with them.
    const mount = (await pool.query<{ id: string }>(`SELECT id FROM filestore.mounts WHERE key = 'claims'`)).rows[0]!.id;
    const insert = (n: number) =>
      pool.query(
        `INSERT INTO filestore.outbox (mount_id, type, data)
         SELECT $1, 'filestore.node.reconciled', json_build_object('i', i) FROM generate_series(1, $2) AS i`,
        [mount, n],
      );
    await insert(5_000);
    await pool.query('ANALYZE filestore.outbox');
    const relay = new OutboxRelay({ pool, bus, batchSize: 1_000 });
    expect(await relay.drain()).toBe(5_000);
    await insert(10);
    const claim = await claimBuffers(pool);
    expect(claim.rows).toBe(10);
    const { rows } = await pool.query<{ pages: string }>(`SELECT pg_relation_size('filestore.outbox') / 8192 AS pages`);
    expect(claim.buffers).toBeLessThan(Number(rows[0]!.pages) / 2);
    expect(await relay.drain()).toBe(10);
    expect(published).toHaveLength(EVENTS + 5_010);
  });
});
