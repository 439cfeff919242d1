/**
 * Fault: the PostgreSQL or the Redis a Filestore process uses (their own instances here) is
 * killed while an upload streams or an audit runs, then comes back. Nothing is lost or left
 * half done: the catalogue is what the disk holds, no journal entry stays pending, staging is
 * empty, every event is published and the audit finishes.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveApi, type ApiServer } from '../../shared/api/serve.ts';
import { createMount } from '../../shared/catalogue/mounts.ts';
import { ensureDatabase } from '../../shared/db/ensure-database.ts';
import { PromMetrics } from '../../shared/metrics/prom.ts';
import { createFilestore, type Filestore } from '../../shared/runtime.ts';
import { eventually } from '../support/agent-process.ts';
import { startPostgresServer, type TestPostgresServer } from '../support/postgres-server.ts';
import { startRedisServer, type TestRedisServer } from '../support/redis-server.ts';
import { expectSettled, faultCases } from './support.ts';

let pgServer: TestPostgresServer;
let redis: TestRedisServer;
let core: Filestore;
let server: ApiServer;
let probe: pg.Pool;
const logs: string[] = [];

beforeAll(async () => {
  [pgServer, redis] = await Promise.all([startPostgresServer(), startRedisServer()]);
  await ensureDatabase(pgServer.url);
  core = await createFilestore({
    databaseUrl: pgServer.url,
    redisUrl: redis.url,
    poolSize: 8,
    maintenanceIntervalMs: 500,
    metrics: new PromMetrics({ collectDefaults: false }),
    reconcile: { consume: true, concurrency: 1 },
    log: (l) => logs.push(l),
  });
  server = await serveApi({ core, host: '127.0.0.1', port: 0, tokens: [], authDisabled: true, log: (l) => logs.push(l) });
  probe = new pg.Pool({ connectionString: pgServer.url, max: 2 });
  probe.on('error', () => {});
}, 120_000);

afterAll(async () => {
  await server?.close();
  await core?.close().catch(() => {});
  await probe?.end().catch(() => {});
  await redis?.stop();
  await pgServer?.destroy();
});

async function localMount() {
  const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-services-'));
  const mount = await eventually(() => createMount(core.pool, { key: `svc-${randomUUID().slice(0, 8)}`, kind: 'local', rootPath: root }).catch(() => undefined), 'the mount to be created');
  return { mount, root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

const url = (p: string) => `${server.url}${p}`;
const q = (o: Record<string, string>) => new URLSearchParams(o).toString();

/** A PUT whose body arrives in two halves; `between` runs after the first half is journaled. */
async function uploadAcross(mountKey: string, file: string, between: () => Promise<void>): Promise<Response | Error> {
  let release = () => {};
  const held = new Promise<void>((r) => (release = r));
  const half = Buffer.alloc(4 * 1024 * 1024, 'a');
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(new Uint8Array(half));
      await held;
      controller.enqueue(new Uint8Array(half));
      controller.close();
    },
  });
  const res = fetch(url(`/v1/files?${q({ mountId: mountKey, path: file })}`), { method: 'PUT', body, duplex: 'half' } as RequestInit).catch((e: Error) => e);
  await eventually(async () => {
    const { rows } = await probe.query(`SELECT 1 FROM filestore.journal_entries WHERE command = 'writeFile' AND status = 'pending' AND request->>'path' = $1`, [file]);
    return rows.length > 0 ? true : undefined;
  }, 'the upload to be journaled');
  await between();
  release();
  return res;
}

const unpublished = async () => {
  const { rows } = await probe.query<{ n: number }>('SELECT count(*)::int AS n FROM filestore.outbox WHERE published_at IS NULL');
  return rows[0]?.n === 0 ? true : undefined;
};

async function auditAcross(mountId: string, root: string, between: () => Promise<void>): Promise<void> {
  for (let i = 0; i < 4_000; i++) {
    if (i % 200 === 0) await mkdir(path.join(root, `t${i / 200}`), { recursive: true });
    await writeFile(path.join(root, `t${Math.floor(i / 200)}`, `f${i}`), `${i}`);
  }
  const res = await fetch(url('/v1/reconcile'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ mountId }) });
  expect(res.status).toBe(202);
  const { id } = (await res.json()) as { id: number };
  await eventually(async () => {
    const { rows } = await probe.query<{ status: string }>('SELECT status FROM filestore.reconciliation_jobs WHERE id = $1', [id]);
    return rows[0]?.status === 'running' ? true : undefined;
  }, 'the audit to run', 60_000);
  await between();
  await eventually(async () => {
    const { rows } = await probe.query<{ status: string }>('SELECT status FROM filestore.reconciliation_jobs WHERE id = $1', [id]);
    if (rows[0]?.status === 'failed') throw new Error('the audit failed');
    return rows[0]?.status === 'succeeded' ? true : undefined;
  }, 'the audit to finish', 120_000);
}

interface Case {
  name: string;
  run(m: Awaited<ReturnType<typeof localMount>>): Promise<void>;
}

const cases: Case[] = [
  {
    name: 'PostgreSQL killed and restarted while an upload streams',
    async run(m) {
      const res = await uploadAcross(m.mount.key, 'big.bin', async () => {
        await pgServer.kill();
        await pgServer.start();
      });
      // The upload could not be recorded: an error that says so, and the same request later succeeds.
      if (!(res instanceof Error)) expect(res.status).toBe(503);
      await eventually(async () => {
        const again = await fetch(url(`/v1/files?${q({ mountId: m.mount.key, path: 'big.bin' })}`), { method: 'PUT', body: 'second try' });
        return again.status === 200 ? true : undefined;
      }, 'the upload to succeed once PostgreSQL is back');
    },
  },
  {
    name: 'Redis killed and restarted while an upload streams',
    async run(m) {
      const res = await uploadAcross(m.mount.key, 'big.bin', async () => {
        await redis.stop();
      });
      // Redis carries events and the cache, not commands: the upload is recorded.
      expect(res instanceof Error ? res.message : res.status).toBe(200);
      await redis.start();
      await eventually(unpublished, 'every event to be published once Redis is back');
    },
  },
  {
    name: 'PostgreSQL killed and restarted while an audit runs',
    async run(m) {
      await auditAcross(m.mount.id, m.root, async () => {
        await pgServer.kill();
        await pgServer.start();
      });
    },
  },
  {
    name: 'Redis killed and restarted (empty) while an audit runs',
    async run(m) {
      await auditAcross(m.mount.id, m.root, async () => {
        await redis.stop();
        await redis.start();
      });
      await eventually(unpublished, 'every event to be published once Redis is back');
    },
  },
];

describe('PostgreSQL and Redis restarts', () => {
  it.each(faultCases(cases))('$name: catalogue = disk, nothing pending, staging empty', { timeout: 240_000 }, async (c) => {
    const m = await localMount();
    try {
      await c.run(m);
      await eventually(async () => {
        const { rows } = await probe.query(`SELECT 1 FROM filestore.journal_entries WHERE mount_id = $1 AND status = 'pending'`, [m.mount.id]);
        return rows.length === 0 ? true : undefined;
      }, 'the sweep to resolve what the outage left pending', 60_000);
      await expectSettled(probe, m.mount.id, m.root);
    } finally {
      await m.cleanup();
    }
  });
});
