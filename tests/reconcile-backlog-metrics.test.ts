import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { createApi } from '../shared/api/app.ts';
import { Authenticator } from '../shared/api/auth.ts';
import { buildApiDeps } from '../shared/api/deps.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import { createFilestore, wireFilestore, type Filestore } from '../shared/runtime.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { eventually } from './support/watch-harness.ts';

/**
 * Issue 16 item 9: filestore_reconcile_backlog{queue} counts every reconcile queue of the
 * catalogue — an agent's own `filestore-reconcile-<agentId>` under its own label — so jobs
 * waiting for an agent that is down show on /metrics of the processes that do run.
 */

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

it("jobs waiting in an agent's queue (its agent not running) show on /metrics as filestore_reconcile_backlog{queue=\"filestore-reconcile-<agentId>\"}", async () => {
  const queuePrefix = `fstest-backlog:${randomUUID()}`; // this test's queues only
  const agentId = `agent-${randomUUID().slice(0, 8)}`;
  const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-backlog-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));

  // A producer (an API process): three jobs for a local mount of an agent that is not running.
  const producer = await wireFilestore({ databaseUrl: TEST_DATABASE_URL, redisUrl: TEST_REDIS_URL, queuePrefix, reconcile: { consume: false } });
  cleanups.push(() => producer.close());
  const mount = await createMount(producer.pool, { key: `backlog-${randomUUID().slice(0, 8)}`, kind: 'local', rootPath: root, agentId });
  for (const p of ['a', 'b', 'c']) {
    const r = await producer.reconcile.enqueue({ mountId: mount.id, path: p, reason: 'manual', recursive: false, hash: false });
    expect(r.coalesced).toBe(false);
  }

  // A consumer that is not that agent (`npm start` with Redis): it does not run those jobs, and its /metrics shows them waiting.
  const consumer: Filestore = await createFilestore({
    databaseUrl: TEST_DATABASE_URL,
    redisUrl: TEST_REDIS_URL,
    queuePrefix,
    maintenanceIntervalMs: 600_000,
    recover: false,
    metrics: new PromMetrics({ collectDefaults: false }),
    reconcile: { consume: true, mountIds: [mount.id] },
  });
  cleanups.push(() => consumer.close());
  const built = await buildApiDeps(consumer, { log: () => {} });
  cleanups.push(async () => built.close());
  const api = createApi(built.deps, new Authenticator({ tokens: [] }));
  const metrics = async () => {
    const res = await api.handle({ method: 'GET', path: '/metrics', query: {}, headers: {}, body: null });
    expect(res.status).toBe(200);
    return String((res as { text?: string }).text ?? '');
  };
  const text = await eventually(async () => {
    const t = await metrics();
    return t.includes(`filestore_reconcile_backlog{queue="filestore-reconcile-${agentId}"} 3`) ? t : null;
  }, "the agent's queue in filestore_reconcile_backlog", 15_000);
  expect(text).toContain('filestore_reconcile_backlog{queue="filestore-reconcile"} 0');
  // Still waiting: this process does not consume another agent's queue.
  const { rows } = await consumer.pool.query(`SELECT status FROM filestore.reconciliation_jobs WHERE mount_id = $1`, [mount.id]);
  expect(rows.map((r: { status: string }) => r.status)).toEqual(['queued', 'queued', 'queued']);
});
