import { randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { findJob, type ReconcileJobRow } from '../shared/catalogue/jobs.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import { lockKey } from '../shared/catalogue/locks.ts';
import { createReconcileQueue } from '../shared/queues/create-reconcile-queue.ts';
import type { ReconcileQueue } from '../shared/reconcile/queue.ts';
import { reconcilePath } from '../shared/reconcile/reconcile-path.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import type { AttemptReport } from '../shared/reconcile/worker.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { createTestMount, startFilestore, type TestMount } from './support/filestore.ts';
import { eventually } from './support/scripted-handler.ts';

/**
 * A full audit that finds another audit of its mount running (the mount's audit lock held
 * elsewhere) does not wait in its worker slot: it goes back to queued, its attempt given back,
 * and runs once the other audit ends. Meanwhile other mounts' jobs run (review of ca9ace4: two
 * audits of one mount waiting for its lock held both slots of the default concurrency of 2, and a
 * one-path job of another mount stayed queued until the lock was released).
 */

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

async function tree(root: string, files: string[]): Promise<void> {
  for (const f of files) {
    await mkdir(path.dirname(path.join(root, f)), { recursive: true });
    await writeFile(path.join(root, f), `bytes of ${f}`);
  }
}

/** Holds mount `mountId`'s audit lock from a session of its own, as another process's audit would. */
async function holdAuditLock(mountId: string): Promise<() => Promise<void>> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [lockKey('audit', mountId).toString()]);
  expect(rows[0]?.ok).toBe(true);
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    await client.end();
  };
  cleanups.push(release);
  return release;
}

async function setup(mode: 'inline' | 'bullmq') {
  const a: TestMount = await createTestMount(core, 'local');
  const b: TestMount = await createTestMount(core, 'local');
  await tree(a.root as string, ['one.txt', 'dir/two.txt']);
  await tree(b.root as string, ['hello.txt']);
  const name = `reconcile-busy-${randomUUID().slice(0, 8)}`;
  const metrics = new PromMetrics({ collectDefaults: false });
  const attempts: AttemptReport[] = [];
  const queue: ReconcileQueue = createReconcileQueue(mode === 'inline' ? 'inline' : TEST_REDIS_URL, {
    pool: core.pool,
    metrics,
    name,
    prefix: PREFIX,
    attempts: 3,
    backoffMs: 5,
    mountIds: [a.mount.id, b.mount.id],
    onAttempt: (r) => attempts.push(r),
  });
  cleanups.push(async () => {
    await queue.close();
    if (mode === 'bullmq') {
      const connection = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 3 });
      const q = new Queue(name, { connection, prefix: PREFIX });
      await q.obliterate({ force: true });
      await q.close();
      await connection.quit();
    }
    await a.cleanup();
    await b.cleanup();
  });
  const job = async (id: number) => (await findJob(core.pool, id)) as ReconcileJobRow;
  return { a: a.mount, b: b.mount, queue, metrics, attempts, job };
}

describe.each(['inline', 'bullmq'] as const)('a full audit while another audit of its mount runs (%s queue)', (mode) => {
  it('is put back queued without spending an attempt, lets other mounts run meanwhile, and runs once the other audit ends', async () => {
    const { a, b, queue, metrics, attempts, job } = await setup(mode);
    const release = await holdAuditLock(a.id);
    await queue.start(createReconciler(core), { concurrency: 2 });

    // The probe: two audits of A, then a one-path reconcile of B (the default concurrency of 2).
    const audit = { mountId: a.id, path: '', reason: 'manual' as const, recursive: true, hash: false };
    const a1 = await queue.enqueue(audit);
    const a2 = await queue.enqueue(audit);
    const one = await queue.enqueue({ mountId: b.id, path: 'hello.txt', reason: 'drift', recursive: false, hash: false });
    const auditIds = [...new Set([a1.job.id, a2.job.id])];

    // B's job runs while A's audit lock is still held.
    const bDone = await eventually(async () => {
      const row = await job(one.job.id);
      return row.status === 'succeeded' ? row : undefined;
    }, "B's one-path job to succeed while A's audit lock is held", 60_000);
    expect(bDone.result?.discovered).toBe(1);

    // A's audits were tried and put back: queued (not running, not failed), no attempt spent;
    // an audit that found the other one waiting handed its work over to it (COALESCED).
    await eventually(async () => (attempts.some((r) => auditIds.includes(r.jobId) && r.outcome === 'deferred') ? true : undefined), "an audit of A to be deferred", 60_000);
    const rows = await eventually(async () => {
      const now = await Promise.all(auditIds.map(job));
      return now.every((r) => r.status === 'queued' || (r.status === 'cancelled' && r.error?.code === 'COALESCED')) ? now : undefined;
    }, "A's audits to be queued, not running", 60_000);
    const waiting = rows.filter((r) => r.status === 'queued');
    expect(waiting).toHaveLength(1);
    expect(waiting[0]?.attempts).toBe(0);
    expect(waiting[0]?.result).toBeNull();
    // A deferral is no outcome of a run: filestore_reconcile_jobs_total keeps SPEC §7's labels.
    expect(await metrics.text()).not.toMatch(/outcome="deferred"/);

    // The other audit ends: A's audit runs (never failed for having waited).
    await release();
    const settledA = await eventually(async () => {
      const now = await Promise.all(auditIds.map(job));
      return now.every((r) => r.status === 'succeeded' || r.status === 'cancelled' || r.status === 'failed') ? now : undefined;
    }, "A's audits to end", 90_000);
    for (const r of settledA) {
      if (r.status === 'cancelled') {
        expect(r.error?.code).toBe('COALESCED');
        expect(auditIds).toContain(r.error?.jobId);
      } else {
        expect(r.status).toBe('succeeded');
        expect(r.attempts).toBe(1);
        expect(r.result?.discovered).toBe(3); // one.txt, dir, dir/two.txt
      }
    }
    expect(settledA.filter((r) => r.status === 'succeeded')).toHaveLength(1);
  }, 180_000);
});

it('a queue closing while an audit is deferred does not wait for the other audit; the row stays queued for the next start', async () => {
  const { a, queue, attempts, job } = await setup('inline');
  const release = await holdAuditLock(a.id);
  await queue.start(createReconciler(core), { concurrency: 2 });
  const { job: row } = await queue.enqueue({ mountId: a.id, path: '', reason: 'manual', recursive: true, hash: false });
  await eventually(async () => (attempts.some((r) => r.jobId === row.id && r.outcome === 'deferred') ? true : undefined), 'the audit to be deferred', 60_000);
  await queue.close(); // the lock is still held: a waiting audit would keep this from returning
  const left = await job(row.id);
  expect(left.status).toBe('queued');
  expect(left.attempts).toBe(0);

  await release();
  const next = createReconcileQueue('inline', { pool: core.pool, name: `reconcile-busy-${randomUUID().slice(0, 8)}`, attempts: 3, backoffMs: 5, mountIds: [a.id] });
  cleanups.push(() => next.close());
  await next.start(createReconciler(core));
  const done = await eventually(async () => {
    const r = await job(row.id);
    return r.status === 'succeeded' ? r : undefined;
  }, 'the audit to succeed after the next start', 60_000);
  expect(done.attempts).toBe(1);
}, 180_000);

it('reconcilePath (a run here and now, as the Lambdas make) of a full audit while another audit of its mount runs: deferred, the row queued with no attempt spent; the next call runs it', async () => {
  const { a, job } = await setup('inline');
  const release = await holdAuditLock(a.id);
  const request = { mountId: a.id, path: '', reason: 'audit' as const, recursive: true, hash: false };
  const first = await reconcilePath(core, request, { deadline: Date.now() + 60_000 });
  expect(first.outcome).toBe('deferred');
  expect(first.job.status).toBe('queued');
  expect(first.job.attempts).toBe(0);
  expect((await job(first.job.id)).attempts).toBe(0);

  await release();
  const second = await reconcilePath(core, request, { deadline: Date.now() + 60_000 });
  expect(second.coalesced).toBe(true);
  expect(second.job.id).toBe(first.job.id);
  expect(second.outcome).toBe('succeeded');
  expect(second.job.attempts).toBe(1);
  expect(second.result?.discovered).toBe(3);
}, 120_000);
