import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cancelInto } from '../shared/catalogue/job-requeue.ts';
import { findJob, type ReconcileJobRow } from '../shared/catalogue/jobs.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import { createReconcileQueue } from '../shared/queues/create-reconcile-queue.ts';
import type { EntryStat } from '../shared/backends/types.ts';
import type { ReconcileQueue } from '../shared/reconcile/queue.ts';
import type { ReconcileHandler } from '../shared/reconcile/types.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import type { AttemptReport } from '../shared/reconcile/worker.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_REDIS_URL } from './support/env.ts';
import { createTestMount, startFilestore } from './support/filestore.ts';
import { eventually } from './support/scripted-handler.ts';

/**
 * A person's audit does not queue behind an automatic one of the same tree. After a burst of
 * changes the watcher requests a whole-mount job (reason `drift`); a user who then runs
 * `filestore reconcile MOUNT --wait` used to wait for that job to end and then for their own
 * (bench:audit's drift round: 1.8 s of a 3.1 s job in the queue). Now the automatic audit stops
 * at its next checkpoint (every 10,000 entries; 500 here) and the user's row takes its work over: the
 * automatic row is cancelled (COALESCED, naming the user's), the user's walks the whole tree
 * and its counts say so, and nothing is lost (every file catalogued once).
 */

const PREFIX = `fstest-${randomUUID().slice(0, 8)}`;
// A few checkpoints' worth (CHECKPOINT_EVERY here): the automatic run holds its walk after
// its first entries until it has been told to stop (the user's request seen), so that it is
// still walking then, however fast the machine.
const FILES = 3_000;
const CHECKPOINT_EVERY = 500;

/** The automatic run's walk, held after its first hundred entries until its signal says stop. */
function holdUntilStopped(signal: AbortSignal | undefined) {
  return async function* (walk: AsyncIterable<EntryStat>): AsyncIterable<EntryStat> {
    let n = 0;
    for await (const entry of walk) {
      yield entry;
      if (++n === 100) {
        for (let waited = 0; signal?.aborted !== true && waited < 60_000; waited += 20) await sleep(20);
      }
    }
  };
}
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

async function tree(root: string): Promise<void> {
  for (let d = 0; d < FILES / 500; d++) {
    const dir = path.join(root, `d${d}`);
    await mkdir(dir, { recursive: true });
    await Promise.all(Array.from({ length: 500 }, (_, i) => writeFile(path.join(dir, `f${i}.txt`), `${d}/${i}`)));
  }
}

describe.each(['inline', 'bullmq'] as const)("a user's audit while an automatic one of the same tree runs (%s queue)", (mode) => {
  it("stops the automatic one at its next checkpoint and does its work; nothing is lost", { timeout: 120_000 }, async () => {
    const t = await createTestMount(core, 'local');
    await tree(t.root as string);
    const name = `reconcile-preempt-${randomUUID().slice(0, 8)}`;
    const attempts: AttemptReport[] = [];
    const queue: ReconcileQueue = createReconcileQueue(mode === 'inline' ? 'inline' : TEST_REDIS_URL, {
      pool: core.pool,
      metrics: new PromMetrics({ collectDefaults: false }),
      name,
      prefix: PREFIX,
      mountIds: [t.mount.id],
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
      await t.cleanup();
    });
    const job = async (id: number) => (await findJob(core.pool, id)) as ReconcileJobRow;
    // The engine as the queues run it, with the automatic run's walk held (holdUntilStopped).
    const handler: ReconcileHandler = (job, progress, limits) =>
      createReconciler(core, { checkpointEvery: CHECKPOINT_EVERY, wrapWalk: job.reason === 'manual' ? undefined : holdUntilStopped(limits?.signal) })(job, progress, limits);
    await queue.start(handler, { concurrency: 2 });

    // The watcher's whole-mount job, discovering the tree.
    const { job: auto } = await queue.enqueue({ mountId: t.mount.id, path: '', reason: 'drift', recursive: true, hash: false });
    await eventually(async () => ((await job(auto.id)).status === 'running' ? true : undefined), 'the automatic audit to run', 60_000);
    // The user's request while it runs.
    const { job: mine } = await queue.enqueue({ mountId: t.mount.id, path: '', reason: 'manual', recursive: true, hash: false });
    expect(mine.id).not.toBe(auto.id);

    const done = await eventually(async () => {
      const row = await job(mine.id);
      return row.status === 'succeeded' || row.status === 'failed' ? row : undefined;
    }, "the user's audit to end", 90_000);
    expect(done.status).toBe('succeeded');
    const stopped = await job(auto.id);
    expect(stopped.status).toBe('cancelled');
    expect(stopped.error).toMatchObject({ code: 'COALESCED', jobId: mine.id });
    expect(attempts.find((r) => r.jobId === auto.id && r.outcome !== 'deferred')?.outcome).toBe('coalesced');
    // The user's audit walked the whole tree (files, directories and the root), and found the
    // rest of what the stopped one had not reached.
    expect(done.result?.checked).toBe(FILES + FILES / 500 + 1);
    expect(done.result?.discovered).toBeGreaterThan(0);
    expect(done.result?.missing).toBe(0);
    // Every file catalogued once: what the stopped run wrote stays, the rest was added.
    const { rows } = await core.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL`, [t.mount.id]);
    expect(rows[0]?.n).toBe(FILES + FILES / 500 + 1);
  });
});

describe('an automatic run stopped for a request of its tree (cancelInto)', () => {
  it('is cancelled into the request whether it still waits or already runs, never left queued', async () => {
    const t = await createTestMount(core, 'local');
    cleanups.push(() => t.cleanup());
    const row = async (status: string, reason: string, options = { recursive: true, hash: false }) =>
      (
        await core.pool.query<{ id: number }>(
          `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status, attempts, started_at)
           VALUES ($1, '', $2, $3::jsonb, $4, 1, now()) RETURNING id`,
          [t.mount.id, reason, JSON.stringify(options), status],
        )
      ).rows[0]?.id as number;
    const job = async (id: number) => (await findJob(core.pool, id)) as ReconcileJobRow;

    // The user's row took the audit lock the moment the automatic run let go of it: running.
    const auto1 = await row('running', 'drift', { recursive: true, hash: true });
    const mine1 = await row('running', 'manual');
    const done1 = await cancelInto(core.pool, auto1, mine1, { checked: 7 });
    expect(done1).toMatchObject({ status: 'cancelled', error: { code: 'COALESCED', jobId: mine1 }, result: { checked: 7 }, checkpoint: null });
    expect(await job(mine1)).toMatchObject({ status: 'running', reason: 'manual', coalesced: 0 }); // runs with what it runs with
    await core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'succeeded', finished_at = now() WHERE id = $1`, [mine1]);

    // Still waiting: merged into it, as a coalesced request is.
    const auto2 = await row('running', 'drift', { recursive: true, hash: true });
    const mine2 = await row('queued', 'manual');
    expect((await cancelInto(core.pool, auto2, mine2, {}))?.status).toBe('cancelled');
    expect(await job(mine2)).toMatchObject({ status: 'queued', reason: 'manual', coalesced: 1, options: { recursive: true, hash: true } });
    await core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'succeeded', finished_at = now() WHERE id = $1`, [mine2]);

    // Finished meanwhile: nothing done here (the caller stops the run as usual).
    const auto3 = await row('running', 'drift');
    expect(await cancelInto(core.pool, auto3, mine2, {})).toBeNull();
    expect((await job(auto3)).status).toBe('running');
  });
});
