import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findJob } from '../shared/catalogue/jobs.ts';
import { findLiveByPath } from '../shared/catalogue/nodes.ts';
import { createReconcileQueue } from '../shared/queues/create-reconcile-queue.ts';
import type { ReconcileQueue } from '../shared/reconcile/queue.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import type { Filestore } from '../shared/runtime.ts';
import { expectExactRollups } from './support/assertions.ts';
import { collectEvents, createTestMount, sharedS3, startFilestore, stopS3 } from './support/filestore.ts';
import { TEST_REDIS_URL } from './support/env.ts';
import { putRawKey } from './support/s3.ts';
import { mkdir, writeFile, rm } from 'node:fs/promises';
import path from 'node:path';

// The real engine behind both queue implementations, on both backends: a change made around
// Filestore, a request through the queue, the catalogue converged, the events on Redis.

const PREFIX = `fs-modes-${randomUUID().slice(0, 8)}`;

describe.each(['inline', 'bullmq'] as const)('reconciliation through the %s queue', (mode) => {
  let core: Filestore;
  const queues: Array<{ queue: ReconcileQueue; name: string }> = [];

  beforeAll(async () => {
    core = await startFilestore();
  });
  afterAll(async () => {
    for (const { queue, name } of queues) {
      await queue.close();
      if (mode === 'bullmq') {
        const connection = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
        const q = new Queue(name, { connection, prefix: PREFIX });
        await q.obliterate({ force: true }).catch(() => {});
        await q.close();
        await connection.quit();
      }
    }
    await core.close();
    await stopS3();
  });

  async function queueFor(mountId: string): Promise<ReconcileQueue> {
    const name = `modes-${randomUUID().slice(0, 8)}`;
    const queue = createReconcileQueue(mode === 'inline' ? 'inline' : TEST_REDIS_URL, {
      pool: core.pool,
      name,
      prefix: PREFIX,
      mountIds: [mountId],
      backoffMs: 50,
    });
    await queue.start(createReconciler(core, { s3MissingGraceMs: 10 }), { concurrency: 2 });
    queues.push({ queue, name });
    return queue;
  }

  async function settled(id: number) {
    for (;;) {
      const job = await findJob(core.pool, id);
      if (job && ['succeeded', 'failed', 'cancelled'].includes(job.status)) return job;
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  it.each(['local', 's3'] as const)('on %s: drift is reconciled, rollups stay exact, events arrive on Redis', async (kind) => {
    const t = await createTestMount(core, kind);
    const m = t.mount.id;
    await core.orchestrator.writeFile(m, { path: 'dir/kept.txt' }, Readable.from([Buffer.from('kept')]));
    await core.orchestrator.writeFile(m, { path: 'dir/gone.txt' }, Readable.from([Buffer.from('gone')]));
    if (kind === 'local') {
      const root = t.root as string;
      await mkdir(path.join(root, 'new'), { recursive: true });
      await writeFile(path.join(root, 'new', 'file.txt'), 'appeared');
      await rm(path.join(root, 'dir', 'gone.txt'));
    } else {
      const s3 = await sharedS3();
      await putRawKey(s3.client, t.mount.bucket as string, `${t.mount.prefix}new/file.txt`, 'appeared');
      await core.backends.forMount(t.mount).delete('dir/gone.txt', { recursive: false });
    }
    const events = await collectEvents(core, m);
    const queue = await queueFor(m);
    const { job } = await queue.enqueue({ mountId: m, path: '', reason: 'manual', recursive: true, hash: false });
    const done = await settled(job.id);
    expect(done.status).toBe('succeeded');
    expect(done.result).toMatchObject({ discovered: 2, missing: 1, updated: 0 });
    expect(await findLiveByPath(core.pool, m, 'dir/gone.txt')).toMatchObject({ consistencyState: 'MISSING' });
    expect(await findLiveByPath(core.pool, m, 'new/file.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 8 });
    await events.waitFor((e) => e.type === 'filestore.node.missing');
    await events.waitFor((e) => e.type === 'filestore.node.reconciled' && (e.data.node as { path: string }).path === 'new/file.txt');
    events.unsubscribe();
    await expectExactRollups(core, m);
    await t.cleanup();
  });
});
