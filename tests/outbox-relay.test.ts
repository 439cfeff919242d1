import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendEvents, type EventEnvelope } from '../shared/catalogue/outbox.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import type { Pool } from '../shared/db/pool.ts';
import { migrate } from '../shared/db/migrate.ts';
import { EVENTS_CHANNEL, InlineEventBus } from '../shared/events/bus.ts';
import { OutboxTail } from '../shared/events/outbox-tail.ts';
import { OutboxRelay, RELAY_LOCK } from '../shared/events/relay.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import { createFilestore, type Filestore } from '../shared/runtime.ts';
import { createTestMount, startFilestore } from './support/filestore.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns true; fails the test (with `what`) after a generous timeout. */
async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const urlOf = (database: string) => {
  const url = new URL(TEST_DATABASE_URL);
  url.pathname = `/${database}`;
  return url.toString();
};

/** A connection to another database of the server, inside a transaction that holds a transaction id. */
async function openTransactionWithXid(database: string, write: (c: pg.Client) => Promise<void>): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: urlOf(database) });
  await c.connect();
  await c.query('BEGIN');
  await write(c);
  const { rows } = await c.query<{ xid: string | null }>('SELECT pg_current_xact_id_if_assigned()::text AS xid');
  expect(rows[0]?.xid).not.toBeNull();
  return c;
}

/** The Redis channel, as any subscriber sees it. */
async function subscribeToEvents() {
  const sub = new Redis(TEST_REDIS_URL);
  const got: EventEnvelope[] = [];
  sub.on('message', (_c: string, msg: string) => got.push(JSON.parse(msg) as EventEnvelope));
  await sub.subscribe(EVENTS_CHANNEL);
  return { got, close: () => sub.quit() };
}

describe('publication does not wait for transactions that wrote no events', () => {
  let core: Filestore;
  beforeAll(async () => {
    core = await startFilestore();
  });
  afterAll(async () => {
    await core?.close();
  });

  it('an event is published while a transaction holding an xid in another database (postgres) is still open', async () => {
    const t = await createTestMount(core, 'local');
    const sub = await subscribeToEvents();
    // Began (and took its xid) before the command: the old claim (txid < snapshot xmin) held
    // every event back until this transaction ended.
    const other = await openTransactionWithXid('postgres', async (c) => {
      await c.query('CREATE TEMP TABLE held (i int)');
      await c.query('INSERT INTO held VALUES (1)');
    });
    try {
      const r = await core.orchestrator.mkdir(t.mount.key, { path: 'while-open' });
      await until(
        () => sub.got.some((e) => e.mountId === t.mount.id && e.type === 'filestore.command.completed' && e.data.journalEntryId === r.journalEntryId),
        'the event of a command committed while another database holds an open transaction',
      );
      // Still the same open transaction: the event did not wait for it.
      const { rows } = await other.query<{ xid: string | null }>('SELECT pg_current_xact_id_if_assigned()::text AS xid');
      expect(rows[0]?.xid).not.toBeNull();
      expect(sub.got.filter((e) => e.mountId === t.mount.id).map((e) => e.type)).toEqual(['filestore.node.created', 'filestore.command.completed']);
    } finally {
      await other.query('ROLLBACK').catch(() => {});
      await other.end();
      await sub.close();
      await t.cleanup();
    }
  });

  it("an event is published while a catalogue write that appends no event (the catalogue's own database) is still open", async () => {
    const t = await createTestMount(core, 'local');
    const bystander = await createTestMount(core, 'local');
    const sub = await subscribeToEvents();
    const catalogue = new URL(TEST_DATABASE_URL).pathname.slice(1);
    // A long catalogue write on another mount's row (no outbox row), and a scratch table.
    const other = await openTransactionWithXid(catalogue, async (c) => {
      await c.query(`UPDATE filestore.mounts SET health_reason = 'held open by a test' WHERE id = $1`, [bystander.mount.id]);
      await c.query('CREATE TEMP TABLE scratch (i int)');
      await c.query('INSERT INTO scratch SELECT generate_series(1, 10)');
    });
    try {
      await core.orchestrator.writeFile(t.mount.key, { path: 'a.txt' }, Readable.from([Buffer.from('a')]));
      await until(
        () => sub.got.some((e) => e.mountId === t.mount.id && e.type === 'filestore.command.completed'),
        'the event of a command committed while a catalogue transaction without events is open',
      );
      const { rows } = await other.query<{ xid: string | null }>('SELECT pg_current_xact_id_if_assigned()::text AS xid');
      expect(rows[0]?.xid).not.toBeNull();
    } finally {
      await other.query('ROLLBACK').catch(() => {});
      await other.end();
      await sub.close();
      await t.cleanup();
      await bystander.cleanup();
    }
  });
});

describe('publication order (a catalogue of its own, so sequence numbers start at 1)', () => {
  const database = `filestore_relay_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  let core: Filestore;
  let tail: OutboxTail;
  const streamed: EventEnvelope[] = [];
  const onBus: EventEnvelope[] = [];

  beforeAll(async () => {
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE "${database}"`);
    } finally {
      await admin.end();
    }
    await migrate(urlOf(database));
    core = await createFilestore({ databaseUrl: urlOf(database), redisUrl: 'inline', migrate: false, maintenanceIntervalMs: 600_000, metrics: new PromMetrics({ collectDefaults: false }) });
    await core.bus.subscribe((e) => onBus.push(e));
    tail = new OutboxTail({ q: core.pool, bus: core.bus, pollMs: 200 });
    await tail.start();
    await tail.subscribe((e) => streamed.push(e));
  });
  afterAll(async () => {
    tail?.stop();
    await core?.close();
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
    } finally {
      await admin.end();
    }
  });

  /** One transaction appending `count` events one statement at a time (ids interleave with other writers'). */
  async function transaction(pool: Pool, mountId: string, tag: string, count: number) {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      for (let i = 0; i < count; i++) {
        await appendEvents(c, [{ type: 'filestore.node.updated', mountId, data: { tag, i } }]);
        await sleep(Math.random() * 8);
      }
      await sleep(Math.random() * 15);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
    core.relay?.nudge();
  }

  it('under 20 concurrent writers: seq 1..N with no gap or repeat, each transaction in insertion order, chained transactions in commit order', async () => {
    const mountId = randomUUID();
    const chains = 4;
    const perChain = 5;
    const perTx = 3;
    // Four chains run side by side; within a chain each transaction begins after the previous committed.
    await Promise.all(
      Array.from({ length: chains }, async (_, k) => {
        for (let j = 0; j < perChain; j++) await transaction(core.pool, mountId, `c${k}.${j}`, perTx);
      }),
    );
    const n = chains * perChain * perTx;
    await until(() => streamed.length >= n, `${n} events on the stream`);
    await sleep(100); // anything extra (a repeat) would show up now
    expect(streamed.map((e) => e.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(new Set(streamed.map((e) => e.id)).size).toBe(n);
    // The bus saw them in the same order (at-least-once: nothing missing).
    const busSeqs = onBus.filter((e) => e.mountId === mountId).map((e) => e.seq);
    expect(busSeqs).toEqual(Array.from({ length: n }, (_, i) => i + 1));

    const position = new Map<string, number[]>();
    for (const [i, e] of streamed.entries()) {
      const tag = e.data.tag as string;
      position.set(tag, [...(position.get(tag) ?? []), i]);
      // within a transaction: insertion order
      expect(e.data.i).toBe((position.get(tag) as number[]).length - 1);
    }
    for (let k = 0; k < chains; k++) {
      for (let j = 1; j < perChain; j++) {
        const before = position.get(`c${k}.${j - 1}`) as number[];
        const after = position.get(`c${k}.${j}`) as number[];
        expect(before).toHaveLength(perTx);
        // causal order: a transaction that committed before another began is published first
        expect(Math.max(...before)).toBeLessThan(Math.min(...after));
      }
    }
  });

  it('an open transaction that appended events holds back only its own: a later writer is published first, the slow one after it', async () => {
    const mountId = randomUUID();
    const from = streamed.length;
    // Appends first (the smaller outbox id), then stays open.
    const slow = await core.pool.connect();
    try {
      await slow.query('BEGIN');
      await appendEvents(slow, [{ type: 'filestore.node.updated', mountId, data: { tag: 'slow', i: 0 } }]);
      await transaction(core.pool, mountId, 'fast', 1);
      await until(() => streamed.slice(from).some((e) => e.data.tag === 'fast'), 'the fast writer to be published while the slow one is open');
      expect(streamed.slice(from).map((e) => e.data.tag)).toEqual(['fast']);
      await slow.query('COMMIT');
    } finally {
      await slow.query('ROLLBACK').catch(() => {});
      slow.release();
    }
    core.relay?.nudge();
    await until(() => streamed.slice(from).length >= 2, 'the slow writer to be published after its commit');
    const mine = streamed.slice(from);
    expect(mine.map((e) => e.data.tag)).toEqual(['fast', 'slow']);
    expect((mine[1] as EventEnvelope).seq).toBe((mine[0] as EventEnvelope).seq + 1);
  });

  it('eight concurrent writes of one path are published in commit order (each waits for the path lock of the one before)', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-relay-'));
    try {
      const mount = await createMount(core.pool, { key: `relay-${randomUUID().slice(0, 8)}`, kind: 'local', rootPath: root });
      const writes = await Promise.all(
        Array.from({ length: 8 }, (_, i) => core.orchestrator.writeFile(mount.key, { path: 'same.txt' }, Readable.from([Buffer.from(`v${i}`)]))),
      );
      await until(() => streamed.filter((e) => e.mountId === mount.id && e.type === 'filestore.command.completed').length >= 8, 'the eight commands to be published');
      const versions = streamed
        .filter((e) => e.mountId === mount.id && (e.type === 'filestore.node.created' || e.type === 'filestore.node.updated'))
        .map((e) => (e.data.node as { version: number }).version);
      expect(versions).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(writes.map((w) => (w.node as { version: number }).version).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('a pass refused the relay lock tries again soon, without waiting for a nudge or the poll', async () => {
    // A relay whose poll never comes again (an hour) and that is nudged once: only its retry
    // after a refused pass can publish the event.
    const bus = new InlineEventBus();
    const got: EventEnvelope[] = [];
    await bus.subscribe((e) => got.push(e));
    let passes = 0;
    const counting = { connect: () => (passes++, core.pool.connect()) } as unknown as Pool;
    const relay = new OutboxRelay({ pool: counting, bus, intervalMs: 3_600_000, metrics: new PromMetrics({ collectDefaults: false }) });
    await core.relay?.stop(); // this catalogue's own relay would publish the row itself
    const holder = await core.pool.connect();
    const mountId = randomUUID();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT pg_advisory_xact_lock($1)', [RELAY_LOCK]);
      relay.start(); // its first pass: refused
      await until(() => passes >= 1, 'the first pass');
      await appendEvents(core.pool, [{ type: 'filestore.node.updated', mountId, data: { tag: 'retried' } }]);
      const appendedAt = passes;
      relay.nudge();
      // The nudged pass and at least one retry after it are refused while the lock is held elsewhere.
      await until(() => passes >= appendedAt + 2, 'a retry of a refused pass');
      expect(got).toEqual([]);
      await holder.query('COMMIT');
      await until(() => got.some((e) => e.mountId === mountId), 'the retried pass to publish the event');
    } finally {
      await holder.query('ROLLBACK').catch(() => {});
      holder.release();
      await relay.stop();
      await bus.close();
      core.relay?.start();
    }
  });
});
