/**
 * The core in two steps: `wireFilestore` (what a Lambda builds once per container: nothing runs
 * by itself) and `startServices` (what long-running processes add: recovery sweep and
 * maintenance timer, the relay's loop, the reconcile consumer); `maintain` is one maintenance
 * pass as one call, `flushOutbox` what a Lambda does before it returns; `buildApiDeps` the
 * routes' dependencies for every transport.
 *
 * A catalogue of its own: other test files' processes run relays and recovery sweeps on the
 * shared one, which would publish and resolve what these tests need left alone.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createApi } from '../shared/api/app.ts';
import { Authenticator, hashToken } from '../shared/api/auth.ts';
import { buildApiDeps } from '../shared/api/deps.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { findLiveByPath } from '../shared/catalogue/nodes.ts';
import { appendEvents, type EventEnvelope } from '../shared/catalogue/outbox.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { createPool, type Pool } from '../shared/db/pool.ts';
import { migrate } from '../shared/db/migrate.ts';
import { InlineEventBus } from '../shared/events/bus.ts';
import { OutboxRelay, RELAY_LOCK } from '../shared/events/relay.ts';
import { startServices, wireFilestore, type Filestore, type FilestoreOptions } from '../shared/runtime.ts';
import { crashIn } from './support/crash.ts';
import { TEST_DATABASE_URL } from './support/env.ts';
import { sharedS3, stopS3 } from './support/filestore.ts';
import { eventually } from './support/http.ts';
import { TEST_S3_CREDENTIALS } from './support/s3.ts';

const database = `filestore_wiring_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
const url = (() => {
  const u = new URL(TEST_DATABASE_URL);
  u.pathname = `/${database}`;
  return u.toString();
})();

let pool: Pool;
const scratch: string[] = [];
const cores: Filestore[] = [];

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
});

// A core a test started keeps its relay running: closed after each test, or it would publish
// what the next test expects to find owed (and hand it to its own in-process bus, not the next one's).
afterEach(async () => {
  for (const core of cores.splice(0)) await core.close().catch(() => {});
});

afterAll(async () => {
  await pool?.end();
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

/** A core on this file's catalogue as a Lambda wires it: in-process events, a pool of 2. */
async function wired(o: Partial<FilestoreOptions> = {}): Promise<Filestore> {
  const core = await wireFilestore({ databaseUrl: url, redisUrl: 'inline', poolSize: 2, s3: { credentials: TEST_S3_CREDENTIALS }, ...o });
  cores.push(core);
  return core;
}

const key = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;

async function localMount(agentId: string | null = null): Promise<Mount> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-wiring-'));
  scratch.push(root);
  return createMount(pool, { key: key('local'), kind: 'local', rootPath: root, agentId });
}

async function s3Mount(): Promise<Mount> {
  const s3 = await sharedS3();
  return createMount(pool, { key: key('s3'), kind: 's3', bucket: await s3.createBucket(), prefix: 'p/', endpoint: s3.endpoint, region: 'us-east-1' });
}

/** A command whose process was killed after it changed storage, before its commit: a pending entry nobody owns. */
async function deadCommand(mount: Mount, at: 'before-storage' | 'after-storage', command: { name: string; input: Record<string, unknown>; content?: string }) {
  expect(await crashIn(at, mount.key, command, { TEST_DATABASE_URL: url })).toBe('SIGKILL');
  const { rows } = await pool.query<{ id: number; status: string }>('SELECT id, status FROM filestore.journal_entries WHERE mount_id = $1', [mount.id]);
  expect(rows).toEqual([{ id: expect.any(Number), status: 'pending' }]);
  return rows[0]?.id as number;
}

const statusOf = async (entryId: number) =>
  (await pool.query<{ status: string }>('SELECT status FROM filestore.journal_entries WHERE id = $1', [entryId])).rows[0]?.status;

/** The mount's outbox rows in order: published or not. */
async function outboxOf(mountId: string): Promise<Array<{ type: string; published: boolean }>> {
  const { rows } = await pool.query<{ type: string; published: boolean }>(
    'SELECT type, published_at IS NOT NULL AS published FROM filestore.outbox WHERE mount_id = $1 ORDER BY id',
    [mountId],
  );
  return rows;
}

/** Runs tests/support/wired-core-child.ts on this catalogue; resolves with how it ended and what it printed. */
function runWiredChild(mount: Mount): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'tests/support/wired-core-child.ts'], {
      env: { ...process.env, TEST_DATABASE_URL: url, MOUNT: mount.key, FILESTORE_ALLOW_INLINE: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    // Only a guard so that a child held alive fails this test with its output rather than hanging it.
    const guard = setTimeout(() => child.kill('SIGKILL'), 25_000);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(guard);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

describe('wireFilestore: the core of a Lambda container, nothing started', () => {
  it(
    'a dead command’s entry stays pending and owed events unpublished, its own commits included, and once its pool is closed the process ends by itself; startServices then recovers and publishes',
    { timeout: 90_000 },
    async () => {
      const s3 = await s3Mount();
      const entry = await deadCommand(s3, 'after-storage', { name: 'writeFile', input: { path: 'left-behind.txt' }, content: 'on storage, not catalogued' });
      const owedMount = randomUUID();
      await appendEvents(pool, [{ type: 'filestore.node.updated', mountId: owedMount, data: { tag: 'left by a frozen container' } }]);
      const local = await localMount();

      const child = await runWiredChild(local);
      // Ended by itself (a relay loop, a maintenance timer or a consumer would have held it; the guard kills with SIGKILL).
      expect({ code: child.code, signal: child.signal, stderr: child.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
      const report = JSON.parse(child.stdout) as { result: { journalEntryId: number } };
      expect(await statusOf(report.result.journalEntryId)).toBe('succeeded');

      // Nothing ran that a long-running process runs: no recovery sweep, no publication.
      expect(await statusOf(entry)).toBe('pending');
      expect(await findLiveByPath(pool, s3.id, 'left-behind.txt')).toBeNull();
      expect(await outboxOf(owedMount)).toEqual([{ type: 'filestore.node.updated', published: false }]);
      const own = await outboxOf(local.id);
      expect(own.length).toBeGreaterThan(0);
      expect(own.every((r) => !r.published)).toBe(true);

      // The start step: its first maintenance pass (recovery) is done when it returns; the relay's loop publishes.
      const core = await wired();
      const got: EventEnvelope[] = [];
      await core.bus.subscribe((e) => void got.push(e));
      expect(await statusOf(entry)).toBe('pending');
      await startServices(core, { redisUrl: 'inline', maintenanceIntervalMs: 600_000 });
      expect(await statusOf(entry)).toBe('succeeded');
      expect(await findLiveByPath(pool, s3.id, 'left-behind.txt')).toMatchObject({ kind: 'file', consistencyState: 'ACTIVE' });
      await eventually(async () => ((await outboxOf(owedMount))[0]?.published ? true : undefined), 'the relay loop to publish the owed event');
      await eventually(async () => ((await outboxOf(local.id)).every((r) => r.published) ? true : undefined), 'the relay loop to publish the child’s events');
      expect(got.filter((e) => e.mountId === owedMount).map((e) => e.data)).toEqual([{ tag: 'left by a frozen container' }]);
    },
  );

  it('flushOutbox publishes what the core committed before it returns, waiting out another relay’s pass that holds the lock', async () => {
    const core = await wired();
    const got: EventEnvelope[] = [];
    await core.bus.subscribe((e) => void got.push(e));
    const local = await localMount();
    await core.orchestrator.mkdir(local.key, { path: 'a' });
    const written = await outboxOf(local.id);
    expect(written.length).toBeGreaterThan(0);
    expect(written.every((r) => !r.published)).toBe(true);

    // Another process's relay is mid-pass (it holds the lock, its claim may predate our commit).
    const other = await pool.connect();
    await other.query('BEGIN');
    await other.query('SELECT pg_advisory_xact_lock($1)', [RELAY_LOCK]);
    const flushing = core.flushOutbox();
    await new Promise((r) => setTimeout(r, 100));
    expect((await outboxOf(local.id)).every((r) => !r.published)).toBe(true);
    await other.query('COMMIT');
    other.release();

    expect(await flushing).toBeGreaterThanOrEqual(written.length);
    expect((await outboxOf(local.id)).every((r) => r.published)).toBe(true);
    expect(got.filter((e) => e.mountId === local.id)).toHaveLength(written.length);
  });

  it('without a relay (relay: false) flushOutbox publishes nothing and says 0', async () => {
    const core = await wired({ relay: false });
    const local = await localMount();
    await core.orchestrator.mkdir(local.key, { path: 'quiet' });
    expect(await core.flushOutbox()).toBe(0);
    expect((await outboxOf(local.id)).every((r) => !r.published)).toBe(true);
  });
});

describe('maintain: one maintenance pass as one call (the maintenance Lambda)', () => {
  it(
    'publishes owed events, resolves the dead command of an S3 mount (not another agent’s local mount), compacts rollups and prunes old events',
    { timeout: 90_000 },
    async () => {
      const s3 = await s3Mount();
      const entry = await deadCommand(s3, 'after-storage', { name: 'writeFile', input: { path: 'survived.txt' }, content: 'kept' });
      const elsewhere = await localMount('agent-elsewhere');
      const theirs = await deadCommand(elsewhere, 'before-storage', { name: 'mkdir', input: { path: 'theirs' } });

      // An event published 8 days ago (beyond the 7-day retention), and one no relay published.
      const oldMount = randomUUID();
      await appendEvents(pool, [{ type: 'filestore.node.updated', mountId: oldMount, data: { tag: 'old' } }]);
      await new OutboxRelay({ pool, bus: new InlineEventBus(), intervalMs: 3_600_000 }).drain();
      const { rows: oldRows } = await pool.query<{ seq: number }>('SELECT seq FROM filestore.outbox WHERE mount_id = $1', [oldMount]);
      const oldSeq = oldRows[0]?.seq as number;
      // Everything published so far is as old (pruning takes a prefix of the seq order).
      await pool.query(`UPDATE filestore.outbox SET published_at = published_at - interval '8 days' WHERE seq <= $1`, [oldSeq]);
      const owedMount = randomUUID();
      await appendEvents(pool, [{ type: 'filestore.node.updated', mountId: owedMount, data: { tag: 'owed' } }]);

      // The maintenance Lambda's core: API-only identity (no local disks), nothing started.
      const core = await wired({ agentId: null });
      const got: EventEnvelope[] = [];
      await core.bus.subscribe((e) => void got.push(e));
      // A commit of its own leaves rollup deltas to fold.
      await core.orchestrator.mkdir(s3.key, { path: 'dir' });
      const deltas = async () => (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM filestore.rollup_deltas')).rows[0]?.n;
      expect(await deltas()).toBeGreaterThan(0);

      const report = await core.maintain();

      expect(await statusOf(entry)).toBe('succeeded');
      expect(await findLiveByPath(pool, s3.id, 'survived.txt')).toMatchObject({ kind: 'file', consistencyState: 'ACTIVE' });
      expect(await statusOf(theirs)).toBe('pending'); // host paths are judged by their agent alone
      expect(report.recovery?.succeeded).toBeGreaterThanOrEqual(1);
      expect(report.recovery?.elsewhere).toBeGreaterThanOrEqual(1);

      expect(await outboxOf(owedMount)).toEqual([{ type: 'filestore.node.updated', published: true }]);
      expect(got.filter((e) => e.mountId === owedMount).map((e) => e.data)).toEqual([{ tag: 'owed' }]);
      // The recovered command's events went out in the same pass.
      expect((await outboxOf(s3.id)).every((r) => r.published)).toBe(true);
      expect(got.some((e) => e.mountId === s3.id && e.type === 'filestore.command.completed')).toBe(true);

      expect(await deltas()).toBe(0);
      expect(report.compacted).toBeGreaterThan(0);
      expect(await outboxOf(oldMount)).toEqual([]);
      const { rows: pruned } = await pool.query<{ seq: number }>('SELECT through_seq AS seq FROM filestore.outbox_pruned');
      expect(pruned[0]?.seq).toBeGreaterThanOrEqual(oldSeq);
      expect(report.pruned).toBeGreaterThanOrEqual(1);
      expect(report.published).toBeGreaterThanOrEqual(2);
    },
  );
});

describe('buildApiDeps: the routes’ dependencies for every transport', () => {
  const token = `fs_${randomBytes(16).toString('hex')}`;
  const auth = new Authenticator({ tokens: [{ name: 'reader', sha256: hashToken(token), scopes: ['filestore:read'] }] });
  const get = (p: string) => ({ method: 'GET', path: p, query: {}, headers: { authorization: `Bearer ${token}` }, body: null });

  it('without the event stream (a Lambda) GET /v1/events/stream answers 501 NOT_IMPLEMENTED; the other routes answer from the core', async () => {
    const core = await wired();
    const built = await buildApiDeps(core, { log: () => {}, metrics: null });
    expect(built.deps.events).toBeUndefined();
    const api = createApi(built.deps, auth);
    const stream = await api.handle(get('/v1/events/stream'));
    expect(stream.status).toBe(501);
    expect(stream).toMatchObject({ json: { error: { code: 'NOT_IMPLEMENTED' } } });
    const metrics = await api.handle(get('/metrics'));
    expect(metrics.status).toBe(501);
    const ready = await api.handle(get('/readyz'));
    expect(ready).toMatchObject({ status: 200, json: { status: 'ok', checks: { postgres: 'ok', redis: 'inline' } } }); // REDIS_URL=inline: no Redis to report ok
    const mounts = await api.handle(get('/v1/mounts'));
    expect(mounts.status).toBe(200);
    built.close();
  });

  it('with the event stream (node:http, the agent) the tail follows the outbox; close stops it', async () => {
    const core = await wired();
    const built = await buildApiDeps(core, { log: () => {}, eventStream: true });
    const tail = built.deps.events;
    expect(tail).toBeDefined();
    const seen: EventEnvelope[] = [];
    await tail?.subscribe((e) => void seen.push(e));
    const local = await localMount();
    await core.orchestrator.mkdir(local.key, { path: 'streamed' });
    await core.flushOutbox();
    await eventually(async () => (seen.some((e) => e.mountId === local.id) ? true : undefined), 'the tail to hand out the event');
    built.close();
    await expect(tail?.subscribe(() => {})).rejects.toThrow('not running');
  });
});
