import { Readable } from 'node:stream';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Filestore } from '../shared/runtime.ts';
import { eventsAfter, type EventEnvelope } from '../shared/catalogue/outbox.ts';
import { EVENTS_CHANNEL } from '../shared/events/bus.ts';
import { readdir } from 'node:fs/promises';
import { migrate, migrationsDir } from '../shared/db/migrate.ts';
import { createTestMount, startFilestore } from './support/filestore.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';

let core: Filestore;
beforeAll(async () => {
  core = await startFilestore();
});
afterAll(async () => {
  await core.close();
});

describe('events', () => {
  it('are published on the Redis channel filestore:events after commit, in sequence order', async () => {
    const t = await createTestMount(core, 'local');
    const sub = new Redis(TEST_REDIS_URL);
    const got: EventEnvelope[] = [];
    sub.on('message', (_c: string, msg: string) => {
      const e = JSON.parse(msg) as EventEnvelope;
      if (e.mountId === t.mount.id) got.push(e);
    });
    await sub.subscribe(EVENTS_CHANNEL);
    await core.orchestrator.writeFile(t.mount.key, { path: 'a.txt' }, Readable.from([Buffer.from('a')]));
    await core.orchestrator.move(t.mount.key, { path: 'a.txt', targetPath: 'b.txt' });
    await core.orchestrator.delete(t.mount.key, { path: 'b.txt' });
    for (let i = 0; i < 200 && got.filter((e) => e.type === 'filestore.command.completed').length < 3; i++) {
      await new Promise((r) => setTimeout(r, 25));
    }
    await sub.quit();
    expect(got.map((e) => e.type)).toEqual([
      'filestore.node.created',
      'filestore.command.completed',
      'filestore.node.moved',
      'filestore.command.completed',
      'filestore.node.deleted',
      'filestore.command.completed',
    ]);
    expect(got[2]?.data).toMatchObject({ from: 'a.txt', to: 'b.txt' });
    for (const e of got) expect(e).toMatchObject({ id: expect.any(String), occurredAt: expect.any(String), mountId: t.mount.id });
    // What Redis carried is the outbox's record of each event, field for field (the event stream reads that).
    expect(got).toEqual(await eventsAfter(core.pool, (got[0]?.seq ?? 1) - 1, 100, t.mount.id));
    await t.cleanup();
  });

  it('an event committed by a process that died before publishing is still published', async () => {
    const t = await createTestMount(core, 'local');
    const received: EventEnvelope[] = [];
    const unsubscribe = await core.bus.subscribe((e) => e.mountId === t.mount.id && received.push(e));
    // A process without a relay commits the change and goes away; only this process's relay
    // can publish its events.
    const silent = await startFilestore({ relay: false, migrate: false, recover: false });
    await silent.orchestrator.mkdir(t.mount.key, { path: 'orphan' });
    await silent.close();
    await core.relay?.drain();
    for (let i = 0; i < 200 && received.length < 2; i++) await new Promise((r) => setTimeout(r, 25));
    unsubscribe();
    expect(received.map((e) => e.type)).toEqual(['filestore.node.created', 'filestore.command.completed']);
    await t.cleanup();
  });
});

describe('read-through cache', () => {
  it('serves node reads from Redis and never serves a value older than the last command', async () => {
    const t = await createTestMount(core, 'local');
    await core.orchestrator.writeFile(t.mount.key, { path: 'c.txt' }, Readable.from([Buffer.from('1')]));
    const a = await core.reader.nodeByPath(t.mount.key, 'c.txt');
    // Change the row behind the cache's back: a cached read must not see it...
    await core.pool.query(`UPDATE filestore.nodes SET metadata = '{"sneaky":true}' WHERE id = $1`, [a.id]);
    expect((await core.reader.nodeByPath(t.mount.key, 'c.txt')).metadata).toEqual({});
    // ...and a command invalidates it.
    await core.orchestrator.writeFile(t.mount.key, { path: 'c.txt' }, Readable.from([Buffer.from('22')]));
    const b = await core.reader.nodeByPath(t.mount.key, 'c.txt');
    expect(b).toMatchObject({ version: 2, sizeBytes: 2, metadata: { sneaky: true } });
    expect((await core.reader.nodeByPath(t.mount.key, '')).rollup).toMatchObject({ sizeBytes: 2 });
    await t.cleanup();
  });
});

describe('migrations', () => {
  it('are safe when several processes start at once', async () => {
    const db = `filestore_migrate_${process.pid}`;
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${db}`);
    await admin.query(`CREATE DATABASE ${db}`);
    const url = new URL(TEST_DATABASE_URL);
    url.pathname = `/${db}`;
    const results = await Promise.all([1, 2, 3, 4].map(() => migrate(url.toString())));
    const files = (await readdir(migrationsDir())).filter((f) => f.endsWith('.sql'));
    expect(results.flat().sort()).toEqual(files.map((f) => f.replace(/\.sql$/, '')).sort());
    expect(await migrate(url.toString())).toEqual([]);
    await admin.query(`DROP DATABASE ${db} WITH (FORCE)`);
    await admin.end();
  });
});
