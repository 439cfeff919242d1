import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { claimJob, enqueueJob, findJob, type ReconcileJobRow } from '../shared/catalogue/jobs.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import { createReconcileQueue } from '../shared/queues/create-reconcile-queue.ts';
import type { ReconcileQueue } from '../shared/reconcile/queue.ts';
import { enqueueAudits, startAuditScheduler } from '../shared/reconcile/audit-scheduler.ts';
import type { ReconcileRequest } from '../shared/reconcile/types.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_REDIS_URL } from './support/env.ts';
import { createTestMount, startFilestore, type TestMount } from './support/filestore.ts';
import { eventually, scriptedHandler } from './support/scripted-handler.ts';

type Mode = 'inline' | 'bullmq';

// Every queue of this file lives under its own Redis prefix, and every test has its own queue
// and mounts, so files running side by side against the same Redis and database never meet.
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

async function obliterate(name: string): Promise<void> {
  const connection = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 3 });
  const queue = new Queue(name, { connection, prefix: PREFIX });
  await queue.obliterate({ force: true });
  await queue.close();
  await connection.quit();
}

async function setup(mode: Mode, o: { mounts?: number; attempts?: number } = {}) {
  const metrics = new PromMetrics({ collectDefaults: false });
  const testMounts: TestMount[] = [];
  for (let i = 0; i < (o.mounts ?? 1); i++) testMounts.push(await createTestMount(core, 'local'));
  const mounts = testMounts.map((t) => t.mount);
  const mount = mounts[0] as Mount;
  const name = `reconcile-test-${randomUUID().slice(0, 8)}`;
  const h = scriptedHandler();
  const queue: ReconcileQueue = createReconcileQueue(mode === 'inline' ? 'inline' : TEST_REDIS_URL, {
    pool: core.pool,
    metrics,
    name,
    prefix: PREFIX,
    attempts: o.attempts ?? 3,
    backoffMs: 5,
    mountIds: mounts.map((m) => m.id),
  });
  cleanups.push(async () => {
    h.releaseAll();
    await queue.close();
    if (mode === 'bullmq') await obliterate(name);
    for (const t of testMounts) await t.cleanup();
  });
  const request = (path: string, extra: Partial<ReconcileRequest> = {}): ReconcileRequest => ({
    mountId: mount.id,
    path,
    reason: 'drift',
    recursive: false,
    hash: false,
    ...extra,
  });
  const job = async (id: number) => (await findJob(core.pool, id)) as ReconcileJobRow;
  const settled = (id: number, status: ReconcileJobRow['status'] = 'succeeded') =>
    eventually(async () => {
      const row = await job(id);
      return row.status === status ? row : undefined;
    }, `job ${id} to be ${status}`);
  const counted = async (outcome: string) => {
    const { values } = await metrics.reconcileJobs.get();
    return values.filter((v) => v.labels.outcome === outcome && v.labels.backend === 'local').reduce((n, v) => n + v.value, 0);
  };
  return { mount, mounts, queue, h, metrics, request, job, settled, counted, name };
}

describe.each<Mode>(['inline', 'bullmq'])('reconcile queue (%s)', (mode) => {
  it('two requests for a path while its job waits make one row, run once with the options merged', async () => {
    const t = await setup(mode);
    const first = await t.queue.enqueue(t.request('docs'));
    const second = await t.queue.enqueue(t.request('docs', { recursive: true, hash: true, reason: 'manual' }));
    expect(first.coalesced).toBe(false);
    expect(second.coalesced).toBe(true);
    expect(second.job.id).toBe(first.job.id);
    expect(second.job).toMatchObject({ status: 'queued', coalesced: 1, reason: 'manual', options: { recursive: true, hash: true } });
    expect(await t.queue.backlog()).toBe(1); // the joined request added nothing to the queue

    await t.queue.start(t.h.handler, { concurrency: 2 });
    const done = await t.settled(first.job.id);
    expect(done).toMatchObject({ attempts: 1, coalesced: 1, result: { checked: 1, unchanged: 1 }, error: null });
    expect(t.h.calls).toEqual([expect.objectContaining({ jobId: first.job.id, reason: 'manual', options: { recursive: true, hash: true } })]);
    expect(await t.counted('coalesced')).toBe(1);
    expect(await t.counted('succeeded')).toBe(1);
  });

  it('a request for a path whose job is running starts a new job instead of joining it', async () => {
    const t = await setup(mode);
    t.h.script('docs', { block: true });
    const first = await t.queue.enqueue(t.request('docs'));
    await t.queue.start(t.h.handler, { concurrency: 2 });
    await t.h.waitForCalls(1);
    expect((await t.job(first.job.id)).status).toBe('running');

    const second = await t.queue.enqueue(t.request('docs'));
    expect(second.coalesced).toBe(false);
    expect(second.job.id).not.toBe(first.job.id);
    t.h.release('docs');
    await t.settled(first.job.id);
    await t.settled(second.job.id);
    expect(t.h.callsFor('docs').map((c) => c.jobId)).toEqual([first.job.id, second.job.id]);
  });

  it('a job that fails retryably runs again and succeeds', async () => {
    const t = await setup(mode);
    t.h.script('flaky', { failTimes: 1 });
    const { job } = await t.queue.enqueue(t.request('flaky'));
    await t.queue.start(t.h.handler);
    const done = await t.settled(job.id);
    expect(done).toMatchObject({ attempts: 2, error: null, result: { checked: 1 } });
    expect(t.h.callsFor('flaky').map((c) => c.attempts)).toEqual([1, 2]);
    expect(await t.counted('retried')).toBe(1);
    expect(await t.counted('succeeded')).toBe(1);
  });

  it('a job that keeps failing retryably fails after its last attempt', async () => {
    const t = await setup(mode, { attempts: 3 });
    t.h.script('broken', { failTimes: 100 });
    const { job } = await t.queue.enqueue(t.request('broken'));
    await t.queue.start(t.h.handler);
    const failed = await t.settled(job.id, 'failed');
    expect(failed.attempts).toBe(3);
    expect(failed.error).toMatchObject({ code: 'STORAGE_ERROR', message: 'scripted failure 3', retryable: true, attempts: 3 });
    expect(t.h.callsFor('broken')).toHaveLength(3);
    expect(await t.counted('retried')).toBe(2);
    expect(await t.counted('failed')).toBe(1);
  });

  it('a non-retryable error fails the job at once and records the error', async () => {
    const t = await setup(mode);
    t.h.script('unhealthy', { fatalTimes: 1 });
    const { job } = await t.queue.enqueue(t.request('unhealthy'));
    await t.queue.start(t.h.handler);
    const failed = await t.settled(job.id, 'failed');
    expect(failed).toMatchObject({ attempts: 1, finishedAt: expect.any(Date) });
    expect(failed.error).toMatchObject({ code: 'STORAGE_ERROR', message: 'scripted fatal failure 1', retryable: false, details: { nth: 1 } });
    expect(t.h.callsFor('unhealthy')).toHaveLength(1);
    expect(await t.counted('failed')).toBe(1);
    expect(await t.counted('retried')).toBe(0);
  });

  it('a failed job does not block a later job for the same path', async () => {
    const t = await setup(mode);
    t.h.script('docs', { fatalTimes: 1 });
    await t.queue.start(t.h.handler);
    const first = await t.queue.enqueue(t.request('docs'));
    await t.settled(first.job.id, 'failed');
    const second = await t.queue.enqueue(t.request('docs'));
    expect(second.coalesced).toBe(false);
    await t.settled(second.job.id);
  });

  it('a job that fails while another for its path waits hands its work over to the waiting one', async () => {
    const t = await setup(mode);
    t.h.script('docs', { block: true, failTimes: 1 });
    const first = await t.queue.enqueue(t.request('docs', { recursive: true }));
    await t.queue.start(t.h.handler, { concurrency: 1 });
    await t.h.waitForCalls(1);
    const second = await t.queue.enqueue(t.request('docs', { hash: true }));
    expect(second.coalesced).toBe(false);

    t.h.release('docs'); // the first fails (retryably) while the second waits
    const cancelled = await t.settled(first.job.id, 'cancelled');
    expect(cancelled.error).toMatchObject({ code: 'COALESCED', jobId: second.job.id, lastError: { message: 'scripted failure 1' } });
    const done = await t.settled(second.job.id);
    // the waiting job took over the failed one's options too
    expect(done).toMatchObject({ coalesced: 1, options: { recursive: true, hash: true } });
    expect(t.h.callsFor('docs').map((c) => c.jobId)).toEqual([first.job.id, second.job.id]);
    expect(await t.counted('coalesced')).toBe(1);
  });

  it('runs no more jobs at once than its concurrency, and counts the rest as backlog', async () => {
    const t = await setup(mode);
    const paths = ['a', 'b', 'c', 'd', 'e'];
    for (const p of paths) t.h.script(p, { block: true });
    const ids: number[] = [];
    for (const p of paths) ids.push((await t.queue.enqueue(t.request(p))).job.id);
    expect(await t.queue.backlog()).toBe(5);

    await t.queue.start(t.h.handler, { concurrency: 2 });
    await t.h.waitForCalls(2);
    const statuses = await eventually(async () => {
      const rows = await Promise.all(ids.map((id) => t.job(id)));
      const running = rows.filter((r) => r.status === 'running').length;
      return running === 2 ? rows.map((r) => r.status) : undefined;
    }, 'two running jobs');
    expect(statuses.filter((s) => s === 'queued')).toHaveLength(3);
    expect(await t.queue.backlog()).toBe(3);
    expect(t.h.running).toBe(2);

    for (const p of paths) t.h.release(p);
    for (const id of ids) await t.settled(id);
    expect(t.h.maxRunning).toBe(2);
    expect(t.h.calls).toHaveLength(5);
    expect(await t.queue.backlog()).toBe(0);
  });

  it('picks up at start rows left queued or running by a process that died', async () => {
    const t = await setup(mode);
    // A crash between the row insert and the queue add: the row is all there is.
    const orphan = await enqueueJob(core.pool, { mountId: t.mount.id, path: 'lost', reason: 'drift', options: { recursive: false, hash: false } });
    // A crash mid-run: the row says running, nobody runs it.
    const interrupted = await enqueueJob(core.pool, { mountId: t.mount.id, path: 'cut', reason: 'audit', options: { recursive: true, hash: false } });
    await claimJob(core.pool, interrupted.job.id);

    await t.queue.start(t.h.handler);
    expect(await t.settled(orphan.job.id)).toMatchObject({ attempts: 1 });
    expect(await t.settled(interrupted.job.id)).toMatchObject({ attempts: 2 });
    expect(t.h.calls.map((c) => c.path).sort()).toEqual(['cut', 'lost']);
  });

  it('an audit tick queues one audit per mount, joins a waiting one and skips a mount whose audit runs', async () => {
    const t = await setup(mode, { mounts: 2 });
    const [m1, m2] = t.mounts as [Mount, Mount];
    const select = { mountIds: [m1.id, m2.id] };

    const first = await enqueueAudits(core.pool, t.queue, select);
    expect(first.enqueued.map((j) => j.mountId).sort()).toEqual([m1.id, m2.id].sort());
    expect(first.enqueued.every((j) => j.reason === 'audit' && j.path === '' && j.options.recursive === true)).toBe(true);
    expect(first.joined).toEqual([]);

    const again = await enqueueAudits(core.pool, t.queue, select);
    expect(again.enqueued).toEqual([]);
    expect(again.joined.sort()).toEqual([m1.key, m2.key].sort());

    // m1's audit starts running (in some process): the next tick leaves m1 alone.
    await claimJob(core.pool, first.enqueued.find((j) => j.mountId === m1.id)!.id);
    const third = await enqueueAudits(core.pool, t.queue, select);
    expect(third.enqueued).toEqual([]);
    expect(third.joined).toEqual([m2.key]);
    expect(await t.queue.backlog()).toBe(2); // two audit messages, however many ticks
  });

  it('the audit scheduler queues audits when its cron pattern fires', async () => {
    const t = await setup(mode);
    const name = `${t.name}-audits`;
    const scheduler = await startAuditScheduler({
      pool: core.pool,
      queue: t.queue,
      cron: '* * * * * *', // every second
      redisUrl: mode === 'inline' ? 'inline' : TEST_REDIS_URL,
      prefix: PREFIX,
      name,
      select: { mountIds: [t.mount.id] },
    });
    cleanups.push(async () => {
      await scheduler.close();
      if (mode === 'bullmq') await obliterate(name);
    });
    await t.queue.start(t.h.handler);
    await eventually(async () => (t.h.calls.find((c) => c.reason === 'audit' && c.path === '') ? true : undefined), 'an audit to run');
  });
});

describe('audit scheduler configuration', () => {
  it('refuses a pattern that is not cron with a CONFIG_ERROR naming the variable', async () => {
    const queue = createReconcileQueue('inline', { pool: core.pool, mountIds: [] });
    await expect(startAuditScheduler({ pool: core.pool, queue, cron: 'every day', redisUrl: 'inline' })).rejects.toMatchObject({
      code: 'CONFIG_ERROR',
      message: expect.stringContaining('FILESTORE_AUDIT_CRON'),
    });
    await queue.close();
  });
});

describe('reconcile queue routing (bullmq)', () => {
  it("jobs for an agent's local mount run on that agent's consumer only; other mounts on any consumer", async () => {
    const t = await setup('bullmq', { mounts: 2 });
    const [owned, shared] = t.mounts as [Mount, Mount];
    await core.pool.query(`UPDATE filestore.mounts SET agent_id = 'agent-b' WHERE id = $1`, [owned.id]);
    const consumer = (agentId: string) => {
      const h = scriptedHandler();
      const queue = createReconcileQueue(TEST_REDIS_URL, {
        pool: core.pool,
        metrics: new PromMetrics({ collectDefaults: false }),
        name: t.name,
        prefix: PREFIX,
        backoffMs: 5,
        mountIds: t.mounts.map((m) => m.id),
        agentId,
      });
      cleanups.push(async () => {
        h.releaseAll();
        await queue.close();
        await obliterate(`${t.name}-${agentId}`);
      });
      return { h, queue };
    };
    const a = consumer('agent-a');
    const b = consumer('agent-b');
    // Requests come from a process that is neither (t.queue, no agent): routing is the producer's job.
    const jobs: ReconcileJobRow[] = [];
    for (let i = 0; i < 6; i++) jobs.push((await t.queue.enqueue({ mountId: owned.id, path: `f${i}`, reason: 'drift', recursive: false, hash: false })).job);
    const sharedJob = (await t.queue.enqueue({ mountId: shared.id, path: 'x', reason: 'drift', recursive: false, hash: false })).job;
    expect(await b.queue.backlog()).toBe(6 + 1); // its own queue plus the shared one
    await a.queue.start(a.h.handler, { concurrency: 2 });
    await b.queue.start(b.h.handler, { concurrency: 2 });
    for (const j of [...jobs, sharedJob]) await t.settled(j.id);
    const ranOn = (h: ReturnType<typeof scriptedHandler>) => h.calls.map((c) => c.jobId);
    expect(ranOn(a.h).filter((id) => jobs.some((j) => j.id === id))).toEqual([]);
    expect(ranOn(b.h).filter((id) => jobs.some((j) => j.id === id)).sort()).toEqual(jobs.map((j) => j.id).sort());
    expect([...ranOn(a.h), ...ranOn(b.h)].filter((id) => id === sharedJob.id)).toHaveLength(1);
  });
});
