import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { enqueueJob, findJob, type ReconcileJobRow } from '../shared/catalogue/jobs.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import { BullMqReconcileQueue, bullJobId, type ReconcileMessage } from '../shared/queues/bullmq-queue.ts';
import type { ReconcileRequest } from '../shared/reconcile/types.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_REDIS_URL } from './support/env.ts';
import { createTestMount, startFilestore, type TestMount } from './support/filestore.ts';
import { eventually, scriptedHandler } from './support/scripted-handler.ts';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.ts';

// The BullMQ reconcile queue through Redis outages: rows recorded while Redis was unreachable
// get their queue message once it is back, however many rows wait ahead of them; and a job
// BullMQ hands out again while a run of it goes on (a lock lost in an outage) is not run
// twice at once.

const PREFIX = `fstest-${randomUUID().slice(0, 8)}`;
let core: Filestore;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  core = await startFilestore({ redisUrl: 'inline', relay: false, recover: false });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});
afterAll(async () => {
  await core?.close();
});

async function obliterate(...names: string[]): Promise<void> {
  const connection = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 3 });
  for (const name of names) {
    const queue = new Queue(name, { connection, prefix: PREFIX });
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
  }
  await connection.quit();
}

/** A TCP proxy in front of the test Redis: down() is an outage for whoever connects through it. */
async function redisProxy(): Promise<{ proxy: TcpProxy; url: string }> {
  const target = new URL(TEST_REDIS_URL);
  const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 6379) });
  cleanups.push(() => proxy.close());
  return { proxy, url: `redis://127.0.0.1:${proxy.port}${target.pathname}` };
}

async function mount(): Promise<TestMount> {
  const t = await createTestMount(core, 'local');
  cleanups.push(() => t.cleanup());
  return t;
}

const drift = (mountId: string, path: string): ReconcileRequest => ({ mountId, path, reason: 'drift', recursive: false, hash: false });

describe('reconcile queue (bullmq) through a Redis outage', () => {
  it('rows recorded while Redis was down all get their queue message once it is back, even behind 1,200 rows waiting for an offline agent', async () => {
    const name = `reconcile-outage-${randomUUID().slice(0, 8)}`;
    const agentId = `offline-${randomUUID().slice(0, 8)}`;
    cleanups.push(() => obliterate(name, `${name}-${agentId}`));
    const owned = await mount(); // a local mount of an agent that is not running: its jobs wait
    await core.pool.query('UPDATE filestore.mounts SET agent_id = $2 WHERE id = $1', [owned.mount.id, agentId]);
    const shared = await mount();
    const mountIds = [owned.mount.id, shared.mount.id];
    const a = await redisProxy(); // everyone's way to Redis
    const b = await redisProxy(); // the way of a producer that never reaches Redis again
    const open = (url: string) => {
      const q = new BullMqReconcileQueue(url, { pool: core.pool, metrics: new PromMetrics({ collectDefaults: false }), name, prefix: PREFIX, mountIds, sweepIntervalMs: 200, backoffMs: 5 });
      cleanups.push(() => q.close());
      return q;
    };
    const producer = open(a.url);
    const lost = open(b.url);
    const consumer = open(a.url);
    cleanups.push(() => b.proxy.up()); // before `lost` closes (cleanups run in reverse)
    const h = scriptedHandler();
    cleanups.push(async () => h.releaseAll());

    // 1,200 rows waiting on the offline agent's queue: the oldest open rows, all on their way.
    const waiting: number[] = [];
    for (let i = 0; i < 1_200; i++) {
      const r = await producer.enqueue(drift(owned.mount.id, `w${i}`));
      expect(r.queuePending).toBeUndefined();
      waiting.push(r.job.id);
    }
    // A producer cut off from Redis records rows, and never comes back.
    await b.proxy.down();
    const owed: number[] = [];
    for (let i = 0; i < 30; i++) {
      const r = await lost.enqueue(drift(shared.mount.id, `lost-${i}`));
      expect(r.queuePending).toBe(true);
      owed.push(r.job.id);
    }
    // Redis goes for everyone; more rows than any in-memory list of unsent rows held (1,000).
    await a.proxy.down();
    for (let i = 0; i < 1_050; i++) {
      const r = await producer.enqueue(drift(shared.mount.id, `down-${i}`));
      expect(r.queuePending).toBe(true);
      owed.push(r.job.id);
    }
    await a.proxy.up();
    // A consumer starts (started earlier, a connection cut while it fetches a job leaves that
    // job to BullMQ's stalled check, 30-60 s: not what this test is about). Its sweeps see the
    // 1,200 agent rows first.
    await consumer.start(h.handler, { concurrency: 8 });

    // Every owed row gets its message and runs, once.
    await eventually(
      async () => {
        const { rows } = await core.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.reconciliation_jobs WHERE id = ANY ($1) AND status = 'succeeded'`, [owed]);
        return rows[0]?.n === owed.length ? true : undefined;
      },
      `all ${owed.length} rows recorded during the outage to run`,
      120_000,
    );
    const runs = new Map<number, number>();
    for (const c of h.calls) runs.set(c.jobId, (runs.get(c.jobId) ?? 0) + 1);
    expect([...runs.keys()].sort((x, y) => x - y)).toEqual([...owed].sort((x, y) => x - y));
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    // The agent's rows still wait, each once on its queue: nothing was added twice.
    const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 3 });
    const agentQueue = new Queue<ReconcileMessage>(`${name}-${agentId}`, { connection: redis, prefix: PREFIX });
    try {
      expect(await agentQueue.getJobCountByTypes('waiting', 'prioritized', 'delayed', 'active')).toBe(1_200);
    } finally {
      await agentQueue.close();
      await redis.quit();
    }
  }, 240_000);

  it('rows left without a message (a crash between insert and add) are found by the sweep behind 1,200 rows on their way', async () => {
    const name = `reconcile-sweep-${randomUUID().slice(0, 8)}`;
    const agentId = `offline-${randomUUID().slice(0, 8)}`;
    cleanups.push(() => obliterate(name, `${name}-${agentId}`));
    const owned = await mount();
    await core.pool.query('UPDATE filestore.mounts SET agent_id = $2 WHERE id = $1', [owned.mount.id, agentId]);
    const shared = await mount();
    const open = () => {
      const q = new BullMqReconcileQueue(TEST_REDIS_URL, {
        pool: core.pool,
        metrics: new PromMetrics({ collectDefaults: false }),
        name,
        prefix: PREFIX,
        mountIds: [owned.mount.id, shared.mount.id],
        sweepIntervalMs: 100,
        backoffMs: 5,
      });
      cleanups.push(() => q.close());
      return q;
    };
    const producer = open();
    for (let i = 0; i < 1_200; i++) await producer.enqueue(drift(owned.mount.id, `w${i}`));
    // The row is all there is: its process died before the add (nothing marks it owed).
    const orphans: number[] = [];
    for (let i = 0; i < 5; i++) orphans.push((await enqueueJob(core.pool, { mountId: shared.mount.id, path: `orphan-${i}`, reason: 'drift', options: { recursive: false, hash: false } })).job.id);
    // Every row has sat still longer than a periodic sweep waits (30 s).
    await core.pool.query(`UPDATE filestore.reconciliation_jobs SET updated_at = now() - interval '1 minute' WHERE mount_id = ANY ($1::uuid[])`, [[owned.mount.id, shared.mount.id]]);
    const h = scriptedHandler();
    const consumer = open();
    await consumer.start(h.handler, { concurrency: 4 });
    await eventually(
      async () => {
        const { rows } = await core.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.reconciliation_jobs WHERE id = ANY ($1) AND status = 'succeeded'`, [orphans]);
        return rows[0]?.n === orphans.length ? true : undefined;
      },
      'the rows without a message to run',
      60_000,
    );
    expect(h.calls.map((c) => c.jobId).sort((x, y) => x - y)).toEqual(orphans);
  }, 120_000);

  it('a job delivered again while a run of it goes on (a stalled job) waits for that run instead of running beside it', async () => {
    const name = `reconcile-dup-${randomUUID().slice(0, 8)}`;
    cleanups.push(() => obliterate(name));
    const t = await mount();
    const queue = new BullMqReconcileQueue(TEST_REDIS_URL, {
      pool: core.pool,
      metrics: new PromMetrics({ collectDefaults: false }),
      name,
      prefix: PREFIX,
      mountIds: [t.mount.id],
      backoffMs: 5,
      busyRetryMs: 50,
    });
    cleanups.push(() => queue.close());
    const h = scriptedHandler();
    cleanups.push(async () => h.releaseAll());
    h.script('slow', { block: true });
    await queue.start(h.handler, { concurrency: 4 });
    const { job } = await queue.enqueue(drift(t.mount.id, 'slow'));
    await h.waitForCalls(1);

    // What BullMQ does when the worker running a job lost its lock: the row's job is handed
    // out again. A second message for the same row is the same thing to a consumer.
    const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 3 });
    const raw = new Queue<ReconcileMessage>(name, { connection: redis, prefix: PREFIX });
    cleanups.push(async () => {
      await raw.close();
      await redis.quit();
    });
    const again = `again-${job.id}`;
    await raw.add('reconcile', { rowId: job.id, mountId: t.mount.id, path: 'slow', reason: 'drift' }, { jobId: again });
    // Either it ran beside the first run (the harm) or it was put off for later.
    await eventually(async () => (h.calls.length > 1 || (await raw.getJobState(again)) === 'delayed' ? true : undefined), 'the second delivery to be handled');
    expect(h.calls).toHaveLength(1);
    expect(h.running).toBe(1);
    expect((await findJob(core.pool, job.id))?.attempts).toBe(1);

    h.release('slow');
    const done = await eventually(async () => {
      const row = (await findJob(core.pool, job.id)) as ReconcileJobRow;
      return row.status === 'succeeded' ? row : undefined;
    }, 'the job to succeed');
    // The second delivery, once the first run is over, finds the row settled and leaves it.
    await eventually(async () => ((await raw.getJobState(again)) === 'completed' ? true : undefined), 'the second delivery to complete');
    expect(h.calls).toHaveLength(1);
    expect(h.maxRunning).toBe(1);
    expect(await findJob(core.pool, job.id)).toMatchObject({ status: 'succeeded', attempts: 1, result: done.result });
    expect(await raw.getJobState(bullJobId(job))).toBe('completed');
  });
});
