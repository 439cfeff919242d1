import { randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { findJob, type ReconcileJobRow } from '../shared/catalogue/jobs.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import { createReconcileQueue } from '../shared/queues/create-reconcile-queue.ts';
import type { ReconcileQueue } from '../shared/reconcile/queue.ts';
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
 * at its next checkpoint (every 10,000 entries) and the user's row takes its work over: the
 * automatic row is cancelled (COALESCED, naming the user's), the user's walks the whole tree
 * and its counts say so, and nothing is lost (every file catalogued once).
 */

const PREFIX = `fstest-${randomUUID().slice(0, 8)}`;
// Enough entries for a few checkpoints: the automatic discovery is still walking when the
// user's request arrives.
const FILES = 25_000;
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
  it("stops the automatic one at its next checkpoint and does its work; nothing is lost", { timeout: 180_000 }, async () => {
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
    await queue.start(createReconciler(core), { concurrency: 2 });

    // The watcher's whole-mount job, discovering the tree.
    const { job: auto } = await queue.enqueue({ mountId: t.mount.id, path: '', reason: 'drift', recursive: true, hash: false });
    await eventually(async () => ((await job(auto.id)).status === 'running' ? true : undefined), 'the automatic audit to run', 60_000);
    // The user's request while it runs.
    const { job: mine } = await queue.enqueue({ mountId: t.mount.id, path: '', reason: 'manual', recursive: true, hash: false });
    expect(mine.id).not.toBe(auto.id);

    const done = await eventually(async () => {
      const row = await job(mine.id);
      return row.status === 'succeeded' || row.status === 'failed' ? row : undefined;
    }, "the user's audit to end", 150_000);
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
