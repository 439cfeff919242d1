/**
 * The maintenance Lambda (lambdas/maintenance.ts): one pass per invocation, through the
 * handler as Lambda calls it (a scheduled event, the container's core), against real
 * PostgreSQL, Redis and the S3 emulator.
 *
 * A catalogue of its own: the relays of other test files' cores would publish what these
 * tests need left owed.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { handler } from '../lambdas/maintenance.ts';
import { closeLambdaCore } from '../lambdas/support/core.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { findLiveByPath } from '../shared/catalogue/nodes.ts';
import { appendEvents } from '../shared/catalogue/outbox.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { createPool, type Pool } from '../shared/db/pool.ts';
import { migrate } from '../shared/db/migrate.ts';
import { EVENTS_CHANNEL } from '../shared/events/bus.ts';
import type { MaintenanceReport } from '../shared/maintenance.ts';
import { crashIn } from './support/crash.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { sharedS3, stopS3 } from './support/filestore.ts';
import { eventually } from './support/http.ts';
import { lambdaContext } from './support/lambda-context.ts';
import { TEST_S3_CREDENTIALS } from './support/s3.ts';

const database = `filestore_maint_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
const url = (() => {
  const u = new URL(TEST_DATABASE_URL);
  u.pathname = `/${database}`;
  return u.toString();
})();

let pool: Pool;
let subscriber: Redis;
const received: string[] = [];
const scratch: string[] = [];
const saved = { ...process.env };

/** A Lambda's environment: its role's credentials are the emulator's here. */
const lambdaEnv = (redisUrl: string) =>
  Object.assign(process.env, {
    DATABASE_URL: url,
    REDIS_URL: redisUrl,
    // No command secret: only the API function dispatches commands (the stack gives it no other).
    AWS_ACCESS_KEY_ID: TEST_S3_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_S3_CREDENTIALS.secretAccessKey,
  });
const scheduled = async () => JSON.parse(await readFile(new URL('./fixtures/lambda/scheduled-maintenance.json', import.meta.url), 'utf8')) as Record<string, unknown>;

beforeAll(async () => {
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${database}"`);
  } finally {
    await admin.end();
  }
  await migrate(url);
  pool = createPool(url, 4);
  subscriber = new Redis(TEST_REDIS_URL);
  subscriber.on('message', (_channel: string, message: string) => void received.push(message));
  await subscriber.subscribe(EVENTS_CHANNEL);
});

afterEach(async () => {
  await closeLambdaCore();
  process.env = { ...saved };
});

afterAll(async () => {
  await subscriber.quit();
  await pool.end();
  await stopS3();
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
  } finally {
    await admin.end();
  }
});

const key = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;

async function s3Mount(): Promise<Mount> {
  const s3 = await sharedS3();
  return createMount(pool, { key: key('s3'), kind: 's3', bucket: await s3.createBucket(), prefix: 'p/', endpoint: s3.endpoint, region: 'us-east-1' });
}

async function localMount(agentId: string): Promise<Mount> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-maint-'));
  scratch.push(root);
  return createMount(pool, { key: key('local'), kind: 'local', rootPath: root, agentId });
}

/** A command whose process was killed mid-way: a pending journal entry nobody owns. */
async function deadCommand(mount: Mount, at: 'before-storage' | 'after-storage', command: { name: string; input: Record<string, unknown>; content?: string }) {
  expect(await crashIn(at, mount.key, command, { TEST_DATABASE_URL: url })).toBe('SIGKILL');
  const { rows } = await pool.query<{ id: number; status: string }>('SELECT id, status FROM filestore.journal_entries WHERE mount_id = $1', [mount.id]);
  expect(rows).toEqual([{ id: expect.any(Number), status: 'pending' }]);
  return rows[0]?.id as number;
}

const statusOf = async (entryId: number) => (await pool.query<{ status: string }>('SELECT status FROM filestore.journal_entries WHERE id = $1', [entryId])).rows[0]?.status;

/** Stdout's EMF documents written while `run` ran (the Powertools logger writes JSON lines there too). */
async function emfDuring<T>(run: () => Promise<T>): Promise<{ out: T; documents: Record<string, unknown>[] }> {
  const lines: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array, ...rest: unknown[]) => {
    lines.push(String(chunk));
    return (write as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
  });
  try {
    const out = await run();
    const documents = lines
      .join('')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((d) => '_aws' in d);
    return { out, documents };
  } finally {
    spy.mockRestore();
  }
}

describe('the maintenance Lambda', () => {
  it(
    'one invocation publishes what a frozen container left owed, resolves an S3 mount’s dead command, leaves a local mount’s to its agent, and reports it',
    { timeout: 90_000 },
    async () => {
      const s3 = await s3Mount();
      const entry = await deadCommand(s3, 'after-storage', { name: 'writeFile', input: { path: 'survived.txt' }, content: 'kept' });
      const local = await localMount('agent-elsewhere');
      const theirs = await deadCommand(local, 'before-storage', { name: 'mkdir', input: { path: 'theirs' } });
      // Committed by a container that froze before publishing: an outbox row nobody published.
      const owedMount = randomUUID();
      const tag = randomUUID();
      await appendEvents(pool, [{ type: 'filestore.node.updated', mountId: owedMount, data: { tag } }]);

      lambdaEnv(TEST_REDIS_URL);
      const { out, documents } = await emfDuring(async () => handler(await scheduled(), lambdaContext({ functionName: 'filestore-maintenance' })));
      const report = out as MaintenanceReport;

      const { rows } = await pool.query<{ published: boolean }>('SELECT published_at IS NOT NULL AS published FROM filestore.outbox WHERE mount_id = $1', [owedMount]);
      expect(rows).toEqual([{ published: true }]);
      await eventually(async () => received.find((m) => m.includes(tag)), 'the owed event on Redis');

      expect(await statusOf(entry)).toBe('succeeded');
      expect(await findLiveByPath(pool, s3.id, 'survived.txt')).toMatchObject({ kind: 'file', consistencyState: 'ACTIVE' });
      expect(await statusOf(theirs)).toBe('pending');

      expect(report.published).toBeGreaterThanOrEqual(1);
      expect(report.recovery).toMatchObject({ succeeded: 1, elsewhere: 1 });
      const figures = documents.find((d) => 'filestore_maintenance_events_published' in d);
      expect(figures).toMatchObject({ filestore_maintenance_entries_succeeded: 1, filestore_maintenance_entries_elsewhere: 1 });
      expect(figures?.filestore_maintenance_events_published).toBeGreaterThanOrEqual(1);
    },
  );

  it('every invocation publishes filestore_audit_age_seconds of each S3 mount: an active one its age (since registration when never audited), a paused one 0', { timeout: 60_000 }, async () => {
    const audited = await s3Mount();
    const never = await s3Mount();
    const paused = await s3Mount();
    await pool.query(`UPDATE filestore.mounts SET audited_at = now() - interval '2 hours' WHERE id = $1`, [audited.id]);
    await pool.query(`UPDATE filestore.mounts SET created_at = now() - interval '3 hours', audited_at = NULL WHERE id = $1`, [never.id]);
    await pool.query(`UPDATE filestore.mounts SET state = 'paused', audited_at = now() - interval '30 days' WHERE id = $1`, [paused.id]);
    const local = await localMount('agent-elsewhere');

    lambdaEnv(TEST_REDIS_URL);
    const { documents } = await emfDuring(async () => handler(await scheduled(), lambdaContext({ functionName: 'filestore-maintenance' })));
    const age = (m: Mount) => documents.filter((d) => d.mount === m.key && 'filestore_audit_age_seconds' in d);
    for (const m of [audited, never, paused]) {
      expect(age(m), m.key).toHaveLength(1);
      // The dimensions the stack's AuditAge-<key> alarm reads.
      expect(age(m)[0]).toMatchObject({ service: 'filestore', _aws: { CloudWatchMetrics: [{ Namespace: 'Filestore', Dimensions: [expect.arrayContaining(['service', 'mount'])] }] } });
    }
    const seconds = (m: Mount) => age(m)[0]!.filestore_audit_age_seconds as number;
    expect(seconds(audited)).toBeGreaterThanOrEqual(7200);
    expect(seconds(audited)).toBeLessThan(7200 + 600);
    expect(seconds(never)).toBeGreaterThanOrEqual(3 * 3600);
    expect(seconds(paused)).toBe(0);
    expect(age(local)).toEqual([]);
  });

  it('a pass that cannot publish (Redis away) still resolves, then fails the invocation with the step named', { timeout: 60_000 }, async () => {
    const s3 = await s3Mount();
    const entry = await deadCommand(s3, 'after-storage', { name: 'writeFile', input: { path: 'while-redis-away.txt' }, content: 'kept' });
    lambdaEnv('redis://127.0.0.1:1/0');
    await expect(handler(await scheduled(), lambdaContext())).rejects.toThrow(/publishing the outbox/);
    expect(await statusOf(entry)).toBe('succeeded');
  });
});
