import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMount } from '../shared/catalogue/mounts.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { loadConfig } from '../shared/config.ts';
import { migrate } from '../shared/db/migrate.ts';
import { commandQueueName } from '../shared/dispatch/messages.ts';
import { startAgentPresence, type AgentPresence } from '../shared/dispatch/presence.ts';
import { startCommandWorker, type CommandWorker } from '../shared/dispatch/worker.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import { BullMqReconcileQueue, bullJobId } from '../shared/queues/bullmq-queue.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import { catalogueQueuePrefix } from '../shared/queues/prefix.ts';
import { RECONCILE_QUEUE } from '../shared/reconcile/queue.ts';
import { createFilestore, type Filestore } from '../shared/runtime.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';

// Two catalogues (two databases) on ONE Redis database, with the default queue names
// (`filestore-reconcile`, `filestore-commands-<agentId>`) and no prefix given: what keeps
// them apart is the prefix each derives from its own catalogue.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(check: () => Promise<T | undefined | false>, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const stamp = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
const databases = { a: `filestore_qa_${stamp}`, b: `filestore_qb_${stamp}` };
const urlOf = (database: string) => {
  const url = new URL(TEST_DATABASE_URL);
  url.pathname = `/${database}`;
  return url.toString();
};

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

const AGENT = `shared-agent-${randomUUID().slice(0, 8)}`;
const cleanups: Array<() => Promise<unknown>> = [];
let a: Filestore;
let b: Filestore;
let idBeforeCopy: string;
const roots: string[] = [];

async function localMount(core: Filestore, agentId: string | null = null): Promise<Mount> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-prefix-'));
  roots.push(root);
  return createMount(core.pool, { key: `p-${randomUUID().slice(0, 8)}`, kind: 'local', rootPath: root, agentId });
}

const open = (database: string, consume: boolean) =>
  createFilestore({
    databaseUrl: urlOf(database),
    redisUrl: TEST_REDIS_URL,
    migrate: false,
    recover: false,
    maintenanceIntervalMs: 600_000,
    metrics: new PromMetrics({ collectDefaults: false }),
    agentId: null, // an API process: commands for an agent's mount are dispatched
    commandSecrets: [TEST_COMMAND_SECRET],
    commandWaitMs: 1_500,
    reconcile: { consume },
  });

beforeAll(async () => {
  await admin((c) => c.query(`CREATE DATABASE "${databases.a}"`));
  await migrate(urlOf(databases.a));
  const c = new pg.Client({ connectionString: urlOf(databases.a) });
  await c.connect();
  idBeforeCopy = (await c.query<{ id: string }>('SELECT filestore.catalogue_id()::text AS id')).rows[0]?.id as string;
  await c.end();
  // B is a copy of A (identity row and all), as a database made from a template or restored
  // from A's dump would be: it must still be a catalogue of its own.
  await admin((c) => c.query(`CREATE DATABASE "${databases.b}" TEMPLATE "${databases.a}"`));
  // A consumes nothing at first (its consumer is started by a test); B consumes its queue.
  a = await open(databases.a, false);
  b = await open(databases.b, true);
});

afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
  try {
    for (const core of [a, b]) {
      if (!core) continue;
      for (const name of [RECONCILE_QUEUE, commandQueueName(AGENT)]) {
        const q = new Queue(name, { connection: redis, prefix: core.queuePrefix });
        await q.obliterate({ force: true }).catch(() => {});
        await q.close();
      }
    }
  } finally {
    await redis.quit();
  }
  await a?.close();
  await b?.close();
  await admin(async (c) => {
    for (const db of Object.values(databases)) await c.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
  });
  for (const r of roots) await rm(r, { recursive: true, force: true });
});

describe('one Redis database, two catalogues', () => {
  it('each catalogue has its own prefix, stable, and a copied database gets a new one', async () => {
    expect(a.queuePrefix).toBe(`filestore:${idBeforeCopy}`);
    expect(b.queuePrefix).toMatch(/^filestore:[0-9a-f-]{36}$/);
    expect(b.queuePrefix).not.toBe(a.queuePrefix);
    // Every process of a catalogue derives the same one.
    expect(await catalogueQueuePrefix(a.pool)).toBe(a.queuePrefix);
    expect(await catalogueQueuePrefix(b.pool)).toBe(b.queuePrefix);
    expect(a.reconcile.prefix).toBe(a.queuePrefix);
    expect(a.commands.queuePrefix).toBe(a.queuePrefix);
  });

  it('a reconcile job for row id 1 in each runs in each, once, on its own consumer', async () => {
    const ma = await localMount(a);
    const mb = await localMount(b);
    const ja = await a.reconcile.enqueue({ mountId: ma.id, path: '', reason: 'manual', recursive: true, hash: false });
    const jb = await b.reconcile.enqueue({ mountId: mb.id, path: '', reason: 'manual', recursive: true, hash: false });
    // The collision the prefix prevents: same row id, same queue name, same Redis database.
    expect([ja.job.id, jb.job.id]).toEqual([1, 1]);

    // Nothing else adds these jobs for 30 s (the sweep re-adds only rows idle that long):
    // each must run from its own add, by its own catalogue's consumer.
    const settled = (core: Filestore, id: number) =>
      until(async () => {
        const { rows } = await core.pool.query<{ status: string; attempts: number }>('SELECT status, attempts FROM filestore.reconciliation_jobs WHERE id = $1', [id]);
        const r = rows[0];
        return r && (r.status === 'succeeded' || r.status === 'failed') ? r : undefined;
      }, `job ${id} to finish`);
    expect(await settled(b, jb.job.id)).toEqual({ status: 'succeeded', attempts: 1 });

    const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
    const queueOf = (core: Filestore) => new Queue(RECONCILE_QUEUE, { connection: redis, prefix: core.queuePrefix });
    try {
      // B's consumer is done with B's job, added after A's: in one shared queue it would have
      // taken A's (first in line) already. A's still waits, untouched, in A's queue.
      const qa = queueOf(a);
      expect(await (await qa.getJob(bullJobId(ja.job)))?.getState()).toBe('waiting');
      expect((await a.pool.query('SELECT status, attempts FROM filestore.reconciliation_jobs WHERE id = $1', [ja.job.id])).rows).toEqual([{ status: 'queued', attempts: 0 }]);
      await qa.close();

      // A's consumer (a reconcile worker process of catalogue A, as `filestore reconcile-worker` makes it).
      const consumer = new BullMqReconcileQueue(TEST_REDIS_URL, { pool: a.pool, prefix: a.queuePrefix, metrics: new PromMetrics({ collectDefaults: false }) });
      cleanups.push(() => consumer.close());
      await consumer.start(createReconciler(a));
      expect(await settled(a, ja.job.id)).toEqual({ status: 'succeeded', attempts: 1 });

      // In Redis: one completed job per catalogue, under its prefix, carrying its own mount.
      for (const [core, job, mount] of [[a, ja.job, ma], [b, jb.job, mb]] as const) {
        const q = queueOf(core);
        const bull = await q.getJob(bullJobId(job));
        expect(bull?.data).toMatchObject({ rowId: 1, mountId: mount.id });
        expect(await bull?.getState()).toBe('completed');
        await q.close();
      }
    } finally {
      await redis.quit();
    }
  });

  it('a row id that comes back (the id sequence went back, as after a restore) is not taken for the finished job of the same id', async () => {
    const m = await localMount(b);
    const first = await b.reconcile.enqueue({ mountId: m.id, path: '', reason: 'manual', recursive: true, hash: false });
    await until(async () => (await b.pool.query(`SELECT 1 FROM filestore.reconciliation_jobs WHERE id = $1 AND status = 'succeeded'`, [first.job.id])).rowCount === 1, 'the first job');
    // What a restore from an older backup does to this table: the rows and the id sequence go back.
    await b.pool.query('DELETE FROM filestore.reconciliation_jobs WHERE id >= $1', [first.job.id]);
    await b.pool.query(`SELECT setval(pg_get_serial_sequence('filestore.reconciliation_jobs', 'id'), $1, false)`, [first.job.id]);
    await sleep(5); // a later creation time than the first row's (it is what tells the two apart)
    const again = await b.reconcile.enqueue({ mountId: m.id, path: '', reason: 'manual', recursive: true, hash: false });
    expect(again.job.id).toBe(first.job.id);
    await until(async () => (await b.pool.query(`SELECT 1 FROM filestore.reconciliation_jobs WHERE id = $1 AND status = 'succeeded'`, [again.job.id])).rowCount === 1, 'the job with the reused id');
  });

  it("a command for agent X of one catalogue is never taken by agent X of the other (same agent id, same Redis)", async () => {
    const workers: CommandWorker[] = [];
    const presences: AgentPresence[] = [];
    cleanups.push(async () => {
      for (const w of workers) await w.close();
      for (const p of presences) await p.stop();
    });
    for (const core of [a, b]) presences.push(await startAgentPresence(core.pool, { id: AGENT, version: 'test', url: null, intervalMs: 1_000 }));
    const mine = await localMount(a, AGENT);
    // Only catalogue B's agent X is consuming: if the queues were shared it would take A's
    // command and answer MOUNT_NOT_FOUND (the mount is not in its catalogue).
    workers.push(await startCommandWorker(b, AGENT));
    const key = `prefix-test-${randomUUID()}`;
    const routed = await a.commands.mkdir(mine.id, { path: 'dispatched' }, { idempotencyKey: key });
    expect(routed.status).toBe(202);
    await expect(stat(path.join(mine.rootPath as string, 'dispatched'))).rejects.toThrow();

    // Catalogue A's agent X comes: it takes the waiting command and runs it.
    workers.push(await startCommandWorker(a, AGENT));
    await until(async () => (await stat(path.join(mine.rootPath as string, 'dispatched')).catch(() => null))?.isDirectory(), 'the command to run on its own agent');
    const replayed = await a.commands.mkdir(mine.id, { path: 'dispatched' }, { idempotencyKey: key });
    expect(replayed).toMatchObject({ status: 200, result: { node: { path: 'dispatched', kind: 'directory' } } });

    const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
    try {
      const q = new Queue(commandQueueName(AGENT), { connection: redis, prefix: b.queuePrefix });
      expect(await q.getJobCounts('wait', 'active', 'completed', 'failed')).toEqual({ wait: 0, active: 0, completed: 0, failed: 0 });
      await q.close();
    } finally {
      await redis.quit();
    }
  });
});

describe('FILESTORE_QUEUE_PREFIX', () => {
  it('overrides the derived prefix for every queue of the process; a bad value is a CONFIG_ERROR', async () => {
    const base = { FILESTORE_ALLOW_INLINE: 'true' };
    expect(loadConfig(base).FILESTORE_QUEUE_PREFIX).toBeUndefined();
    expect(loadConfig({ ...base, FILESTORE_QUEUE_PREFIX: '{blue}:filestore' }).FILESTORE_QUEUE_PREFIX).toBe('{blue}:filestore');
    expect(() => loadConfig({ ...base, FILESTORE_QUEUE_PREFIX: 'two words' })).toThrow(
      expect.objectContaining({ code: 'CONFIG_ERROR', message: expect.stringMatching(/FILESTORE_QUEUE_PREFIX/) }),
    );
    const core = await createFilestore({
      databaseUrl: urlOf(databases.a),
      redisUrl: TEST_REDIS_URL,
      migrate: false,
      recover: false,
      relay: false,
      maintenanceIntervalMs: 600_000,
      metrics: new PromMetrics({ collectDefaults: false }),
      queuePrefix: 'fstest-override',
    });
    try {
      expect([core.queuePrefix, core.reconcile.prefix, core.commands.queuePrefix]).toEqual(['fstest-override', 'fstest-override', 'fstest-override']);
    } finally {
      await core.close();
    }
  });
});
