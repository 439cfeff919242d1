import { Readable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Filestore } from '../shared/runtime.ts';
import { createPool, type Pool } from '../shared/db/pool.ts';
import { ensureDatabase } from '../shared/db/ensure-database.ts';
import { migrate } from '../shared/db/migrate.ts';
import { deleteMount } from '../shared/catalogue/mounts.ts';
import { listChildren } from '../shared/catalogue/nodes.ts';
import { appendEvents } from '../shared/catalogue/outbox.ts';
import { OutboxRelay } from '../shared/events/relay.ts';
import { InlineEventBus } from '../shared/events/bus.ts';
import { createTestMount, startFilestore, stopS3 } from './support/filestore.ts';
import { TEST_DATABASE_URL } from './support/env.ts';

const body = (s: string) => Readable.from([Buffer.from(s)]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A private database for tests that must not see (or be disturbed by) the outbox relays of
 * the test files running in parallel against the shared test database.
 */
async function scratchDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const url = new URL(TEST_DATABASE_URL);
  const name = `filestore_review_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
  url.pathname = `/${name}`;
  await ensureDatabase(url.toString());
  await migrate(url.toString());
  return {
    url: url.toString(),
    async drop() {
      const admin = new URL(url);
      admin.pathname = '/postgres';
      const c = new pg.Client({ connectionString: admin.toString() });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

let core: Filestore;
beforeAll(async () => {
  core = await startFilestore();
});
afterAll(async () => {
  await core.close();
  await stopS3();
});

describe('command fast path', () => {
  it('pipeline mount cache: a command on a mount that was just deleted is refused, not journaled against a missing mount', async () => {
    const t = await createTestMount(core, 'local');
    try {
      // Warms the orchestrator's mount cache (10 s TTL) with this mount's id.
      await core.orchestrator.writeFile(t.mount.id, { path: 'a.txt' }, body('x'));
      await deleteMount(core.pool, t.mount.id);

      // The stale cached mount reaches begin_command, which finds the mount gone and journals
      // nothing; the pipeline looks the mount up again and reports MOUNT_NOT_FOUND.
      const err = await core.orchestrator.writeFile(t.mount.id, { path: 'b.txt' }, body('y')).then(() => null, (e: unknown) => e);
      const { rows } = await core.pool.query<{ id: number; status: string }>(
        `SELECT id, status FROM filestore.journal_entries WHERE mount_id = $1`,
        [t.mount.id],
      );
      expect({ error: String(err), code: (err as { code?: string } | null)?.code, journal: rows }).toEqual({
        error: expect.not.stringMatching(/TypeError/),
        code: 'MOUNT_NOT_FOUND',
        journal: [],
      });
    } finally {
      await core.pool.query(`DELETE FROM filestore.journal_entries WHERE mount_id = $1`, [t.mount.id]);
      await core.pool.query(`DELETE FROM filestore.outbox WHERE mount_id = $1`, [t.mount.id]);
      await t.cleanup();
    }
  });

  it('pool force_generic_plan: listChildren paging uses the (parent_id, name) index for the cursor', async () => {
    // Capture the exact statement listChildren sends.
    let text = '';
    const capture = { query: async (q: string | { text: string }) => ((text = typeof q === 'string' ? q : q.text), { rows: [] }) };
    await listChildren(capture as never, 1, 100, 'm');

    const client = await core.pool.connect(); // a pool connection: plan_cache_mode=force_generic_plan
    try {
      await client.query(`PREPARE review_lc(bigint, text, int) AS ${text}`);
      const { rows } = await client.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) EXECUTE review_lc(1, 'm', 100)`);
      const plan = JSON.stringify(rows[0]?.['QUERY PLAN']);
      // A page must start where the cursor is ("Index Cond: … name > $2"), not re-read the
      // directory from its first child, which would make paging a directory quadratic.
      expect(plan).toMatch(/"Index Cond":"[^"]*name > /);
    } finally {
      await client.query('DEALLOCATE ALL').catch(() => {});
      client.release();
    }
  });
});

describe('outbox relay (private database)', () => {
  let db: Awaited<ReturnType<typeof scratchDatabase>>;
  let pool: Pool;
  beforeAll(async () => {
    db = await scratchDatabase();
    pool = createPool(db.url, 5);
  }, 120_000);
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('relay: a nudge after stop() and start() still publishes promptly', async () => {
    const bus = new InlineEventBus();
    const seen: string[] = [];
    await bus.subscribe((e) => seen.push(e.type));
    const relay = new OutboxRelay({ pool, bus, intervalMs: 60_000 });
    const mountId = randomUUID();
    relay.start();
    relay.nudge(); // leaves pendingNudge set...
    await relay.stop(); // ...cleared as a timer but never reset to null
    relay.start();
    await sleep(200); // the start pass is over
    await appendEvents(pool, [{ type: 'filestore.node.created', mountId, data: {} }]);
    relay.nudge(); // returns early: `if (this.stopped || this.pendingNudge) return`
    // Published on the nudge, long before the 60 s fallback poll.
    for (let i = 0; i < 100 && seen.length === 0; i++) await sleep(50);
    await relay.stop();
    expect(seen).toEqual(['filestore.node.created']);
  });

  it('two relays draining one outbox publish every event exactly once, in commit order', async () => {
    const bus = new InlineEventBus();
    const seen: number[] = [];
    await bus.subscribe((e) => seen.push(e.data.n as number));
    const relays = [new OutboxRelay({ pool, bus }), new OutboxRelay({ pool, bus })];
    const mountId = randomUUID();
    let stop = false;
    const draining = relays.map(async (r) => {
      while (!stop) await r.drain();
    });
    for (let batch = 0; batch < 40; batch++) {
      await appendEvents(pool, [0, 1, 2, 3, 4].map((i) => ({ type: 'filestore.node.created' as const, mountId, data: { n: batch * 5 + i } })));
    }
    stop = true;
    await Promise.all(draining);
    for (const r of relays) await r.drain();
    expect(seen).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });
});
