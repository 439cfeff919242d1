import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { createMount } from '../../shared/catalogue/mounts.ts';
import type { ReconcileJobRow } from '../../shared/catalogue/jobs.ts';
import type { Mount } from '../../shared/catalogue/types.ts';
import type { EventEnvelope } from '../../shared/catalogue/outbox.ts';
import { createFilestore, wireFilestore, type Filestore, type FilestoreOptions } from '../../shared/runtime.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './env.ts';
import { startS3, TEST_S3_CREDENTIALS } from './s3.ts';

export type BackendKind = 'local' | 's3';

export async function startFilestore(options: Partial<FilestoreOptions> = {}): Promise<Filestore> {
  return createFilestore({
    databaseUrl: TEST_DATABASE_URL,
    redisUrl: TEST_REDIS_URL,
    maintenanceIntervalMs: 600_000,
    s3: { credentials: TEST_S3_CREDENTIALS },
    ...options,
  });
}

/**
 * The core as a Lambda builds it (wireFilestore): a pool of 2, nothing started (no recovery,
 * no relay loop, no consumer, no migrations). Publish with `flushOutbox`, maintain with `maintain`.
 */
export async function wireTestFilestore(options: Partial<FilestoreOptions> = {}): Promise<Filestore> {
  return wireFilestore({
    databaseUrl: TEST_DATABASE_URL,
    redisUrl: TEST_REDIS_URL,
    poolSize: 2,
    s3: { credentials: TEST_S3_CREDENTIALS },
    ...options,
  });
}

export const uniqueKey = (prefix = 't') => `${prefix}-${randomUUID().slice(0, 12)}`;

let s3: Awaited<ReturnType<typeof startS3>> | null = null;

/** The S3 emulator of this test file (started once, stopped with stopS3). */
export async function sharedS3() {
  s3 ??= await startS3();
  return s3;
}

export async function stopS3(): Promise<void> {
  await s3?.stop();
  s3 = null;
}

export interface TestMount {
  mount: Mount;
  /** Local: the mount's root directory. */
  root: string | null;
  cleanup(): Promise<void>;
}

/** A fresh mount of the given kind with a unique key: a temp directory or a new bucket. */
export async function createTestMount(core: Filestore, kind: BackendKind): Promise<TestMount> {
  if (kind === 'local') {
    const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-test-'));
    const mount = await createMount(core.pool, { key: uniqueKey('local'), kind: 'local', rootPath: root });
    return { mount, root, cleanup: () => rm(root, { recursive: true, force: true }) };
  }
  const server = await sharedS3();
  const bucket = await server.createBucket();
  const mount = await createMount(core.pool, { key: uniqueKey('s3'), kind: 's3', bucket, prefix: 'tenant/', endpoint: server.endpoint, region: 'us-east-1' });
  return { mount, root: null, cleanup: async () => {} };
}

/** Collects bus events of one mount; `waitFor` resolves when a matching event arrives. */
export async function collectEvents(core: Filestore, mountId: string) {
  const events: EventEnvelope[] = [];
  const waiters: Array<{ match: (e: EventEnvelope) => boolean; resolve: (e: EventEnvelope) => void }> = [];
  const unsubscribe = await core.bus.subscribe((e) => {
    if (e.mountId !== mountId) return;
    events.push(e);
    for (const w of [...waiters]) {
      if (w.match(e)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(e);
      }
    }
  });
  return {
    events,
    unsubscribe,
    waitFor(match: (e: EventEnvelope) => boolean, timeoutMs = 10_000): Promise<EventEnvelope> {
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('event did not arrive')), timeoutMs);
        waiters.push({ match, resolve: (e) => { clearTimeout(timer); resolve(e); } });
      });
    },
  };
}

/** A job row of a manual reconciliation of the mount's root, already `running`: what a worker hands the reconciler. */
export async function runningRootJob(core: Filestore, mountId: string, options: Record<string, unknown> = { recursive: true }): Promise<ReconcileJobRow> {
  const { rows } = await core.pool.query<ReconcileJobRow>(
    `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status) VALUES ($1, '', 'manual', $2, 'running')
     RETURNING id, mount_id AS "mountId", path, reason, options, status, attempts, coalesced, result, error,
               created_at AS "createdAt", started_at AS "startedAt", finished_at AS "finishedAt", updated_at AS "updatedAt"`,
    [mountId, JSON.stringify(options)],
  );
  return rows[0] as ReconcileJobRow;
}
