import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createAuditHandler } from '../lambdas/audit.ts';
import { closeLambdaCore } from '../lambdas/support/core.ts';
import { claimJob, findJob } from '../shared/catalogue/jobs.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { markInconsistent } from '../shared/catalogue/reconcile-writes.ts';
import type { AuditRunReport } from '../shared/reconcile/lambda-run.ts';
import type { Filestore } from '../shared/runtime.ts';
import { expectExactRollups } from './support/assertions.ts';
import { TEST_DATABASE_URL } from './support/env.ts';
import { sharedS3, startFilestore, stopS3, uniqueKey } from './support/filestore.ts';
import { lambdaContext } from './support/lambda-context.ts';
import { startS3Proxy, type S3Proxy } from './support/s3-proxy.ts';
import { putRawKey, rawKeys, TEST_S3_CREDENTIALS, TEST_S3_REGION } from './support/s3.ts';

/**
 * lambdas/audit.ts (SPEC §10): an EventBridge Scheduler event `{mountId?}` claims or resumes
 * the mount's audit job, works until fewer than the margin remain, checkpoints and returns; the
 * next invocation continues. Called as Lambda calls it: the exported handler, a fixture event, a
 * Context whose remaining time is what the test says, the container's core built from the
 * environment (lambdas/support/core.ts).
 */

const fixture = (name: string) => JSON.parse(readFileSync(new URL(`./fixtures/lambda/${name}.json`, import.meta.url), 'utf8')) as Record<string, unknown>;
const scheduled = (mountId: string) => ({ ...fixture('scheduler-audit'), mountId });
/** Less than the 60 s margin left: each invocation stops at its first checkpoint. */
const almostOut = () => lambdaContext({ remainingMs: 1_000 });
const plenty = () => lambdaContext({ remainingMs: 15 * 60_000 });

/**
 * The mounts this file made. An event without mountId audits every active S3 mount, and the
 * catalogue is shared with every other test file: in a full run it holds hundreds of S3 mounts,
 * most on S3 endpoints long stopped (each audit waiting out its connection retries). Auditing
 * them all took minutes — the timeouts of those tests, and of the next ones, whose invocations
 * waited for the pool the timed-out one still held. These handlers audit this file's mounts.
 */
const mine = new Set<string>();
const scope = (mountId: string) => mine.has(mountId);
// Tiny pages: a checkpoint every 3 entries, writes in batches of 2.
const tiny = createAuditHandler({ scope, reconciler: { checkpointEvery: 3, batchSize: 2, s3MissingGraceMs: 5 } });
const whole = createAuditHandler({ scope, reconciler: { s3MissingGraceMs: 5 } });

let core: Filestore;
let proxy: S3Proxy;

beforeAll(async () => {
  const s3 = await sharedS3();
  proxy = await startS3Proxy(s3.endpoint);
  Object.assign(process.env, {
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: 'inline',
    AWS_REGION: TEST_S3_REGION,
    AWS_ACCESS_KEY_ID: TEST_S3_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_S3_CREDENTIALS.secretAccessKey,
    POWERTOOLS_LOG_LEVEL: 'ERROR',
  });
  // The test's own core: it registers mounts and writes through Filestore; the handler has its own.
  core = await startFilestore({ redisUrl: 'inline', recover: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } });
});

afterAll(async () => {
  await closeLambdaCore();
  await core?.close();
  await proxy?.stop();
  await stopS3();
});

/** An S3 mount (through the proxy when asked) with a catalogued tree, then changed behind Filestore's back. */
async function drifted(o: { viaProxy?: boolean } = {}) {
  const s3 = await sharedS3();
  const bucket = await s3.createBucket();
  const mount = await createMount(core.pool, { key: uniqueKey('s3'), kind: 's3', bucket, prefix: 'tenant/', endpoint: o.viaProxy ? proxy.endpoint : s3.endpoint, region: TEST_S3_REGION });
  const m = mount.id;
  mine.add(m);
  const put = (p: string, bytes: string) => core.orchestrator.writeFile(m, { path: p }, Readable.from([Buffer.from(bytes)]));
  const two = (i: number) => String(i).padStart(2, '0');
  for (let i = 0; i < 10; i++) await put(`a/f${two(i)}.txt`, `a${i}`);
  for (let i = 0; i < 10; i++) await put(`b/g${two(i)}.txt`, `b${i}`);
  for (let i = 0; i < 5; i++) await put(`c/deep/h${two(i)}.txt`, `c${i}`);
  for (let i = 0; i < 5; i++) await put(`top${i}.txt`, `t${i}`);
  const key = (p: string) => `tenant/${p}`;
  const write = (p: string, bytes: string) => putRawKey(s3.client, bucket, key(p), bytes);
  const remove = async (p: string) => {
    const keys = (await rawKeys(s3.client, bucket, key(p))).filter((k) => k === key(p) || k.startsWith(`${key(p)}/`));
    if (keys.length > 0) await s3.client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.map((Key) => ({ Key })) } }));
  };
  for (const p of ['a/f01.txt', 'b/g05.txt', 'top3.txt']) await write(p, 'rewritten, longer than before');
  for (const p of ['a/f07.txt', 'b/g02.txt', 'c/deep/h04.txt', 'top1.txt']) await remove(p);
  for (const p of ['a/new1.txt', 'b/new2.txt', 'n/x1.txt', 'n/x2.txt', 'zz.txt']) await write(p, 'new');
  await remove('top4.txt');
  await write('top4.txt/inner.txt', 'a directory now');
  await markInconsistent(core.pool, m, 'top2.txt', 'watcher');
  return mount;
}

const nodesOf = async (mountId: string) =>
  (
    await core.pool.query(
      `SELECT path, kind, size_bytes::int AS size, consistency_state AS state, version FROM filestore.nodes
        WHERE mount_id = $1 AND deleted_at IS NULL ORDER BY path COLLATE "C"`,
      [mountId],
    )
  ).rows;
const jobsOf = async (mountId: string) =>
  (await core.pool.query<{ id: number; status: string }>('SELECT id, status FROM filestore.reconciliation_jobs WHERE mount_id = $1 ORDER BY id', [mountId])).rows;
const countsOf = (result: Record<string, unknown> | null | undefined) => ({ ...result, skipped: 0, skippedByReason: undefined, skippedSample: undefined });

describe('the audit Lambda', () => {
  it('split across many invocations (tiny budget, tiny pages) ends exactly as one uninterrupted audit: catalogue, MISSING marks, job row', async () => {
    const once = await drifted();
    const split = await drifted();

    const r1 = await whole(scheduled(once.id), plenty());
    expect(r1.mounts).toEqual([expect.objectContaining({ mountId: once.id, outcome: 'succeeded' })]);

    const runs: AuditRunReport[] = [];
    for (let i = 0; i < 100; i++) {
      const r = await tiny(scheduled(split.id), almostOut());
      runs.push(r);
      const m = r.mounts[0];
      if (m?.outcome !== 'stopped') break;
      // Stopped at a checkpoint: the row waits to continue after it, no attempt spent, nothing MISSING yet.
      expect(await findJob(core.pool, m.jobId as number)).toMatchObject({ status: 'queued', attempts: 0, error: null, checkpoint: { after: m.after } });
      expect((await nodesOf(split.id)).filter((n) => n.state === 'MISSING')).toEqual([]);
    }
    expect(runs.length).toBeGreaterThan(8);
    expect(runs.at(-1)?.mounts[0]?.outcome).toBe('succeeded');
    // One job, resumed by every invocation.
    expect(new Set(runs.map((r) => r.mounts[0]?.jobId)).size).toBe(1);
    expect(await jobsOf(split.id)).toEqual([{ id: runs[0]?.mounts[0]?.jobId, status: 'succeeded' }]);

    expect(await nodesOf(split.id)).toEqual(await nodesOf(once.id));
    expect((await nodesOf(split.id)).filter((n) => n.state === 'MISSING').map((n) => n.path)).toEqual(['a/f07.txt', 'b/g02.txt', 'c/deep/h04.txt', 'top1.txt']);
    const splitRow = await findJob(core.pool, runs[0]?.mounts[0]?.jobId as number);
    const onceRow = await findJob(core.pool, r1.mounts[0]?.jobId as number);
    expect(splitRow).toMatchObject({ status: 'succeeded', checkpoint: null, reason: 'audit', attempts: 1 });
    expect(countsOf(splitRow?.result)).toEqual(countsOf(onceRow?.result));
    expect(splitRow?.result).toMatchObject({ missing: 4, discovered: expect.any(Number) });
    await expectExactRollups(core, split.id);
  });

  it('two concurrent invocations for one mount: one audits, the other returns at once without a second job', async () => {
    const mount = await drifted({ viaProxy: true });
    // Hold the first invocation's first S3 request until the second has returned.
    let held!: () => void;
    const holding = new Promise<void>((resolve) => (held = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let armed = true;
    proxy.beforeForward(async () => {
      if (!armed) return;
      armed = false;
      held();
      await gate;
    });
    try {
      const first = whole(scheduled(mount.id), plenty());
      await holding;
      const second = await whole(scheduled(mount.id), plenty());
      expect(second.mounts).toEqual([{ mountId: mount.id, key: mount.key, outcome: 'busy', jobId: null }]);
      const open = await jobsOf(mount.id);
      expect(open).toEqual([{ id: expect.any(Number), status: 'running' }]);
      release();
      const done = await first;
      expect(done.mounts[0]).toMatchObject({ outcome: 'succeeded', jobId: open[0]?.id });
      expect(await jobsOf(mount.id)).toEqual([{ id: open[0]?.id, status: 'succeeded' }]);
    } finally {
      release();
      proxy.beforeForward(null);
    }
  });

  it('resumes the audit a killed invocation left running (its run lock gone with it) instead of starting another', async () => {
    const mount = await drifted();
    const first = await tiny(scheduled(mount.id), almostOut());
    const jobId = first.mounts[0]?.jobId as number;
    expect(first.mounts[0]?.outcome).toBe('stopped');
    // An invocation killed mid-run: the row claimed (running, an attempt spent), nobody holding it.
    await claimJob(core.pool, jobId);
    const after = (await findJob(core.pool, jobId))?.checkpoint?.after;
    const next = await tiny(scheduled(mount.id), almostOut());
    expect(next.mounts[0]).toMatchObject({ jobId, outcome: 'stopped' });
    expect(Buffer.compare(Buffer.from(next.mounts[0]?.after as string), Buffer.from(after as string))).toBeGreaterThan(0);
    const done = await whole(scheduled(mount.id), plenty());
    expect(done.mounts[0]).toMatchObject({ jobId, outcome: 'succeeded' });
    expect(await jobsOf(mount.id)).toEqual([{ id: jobId, status: 'succeeded' }]);
    // The killed run's attempt stays counted; stops spend none.
    expect(await findJob(core.pool, jobId)).toMatchObject({ attempts: 2 });
  });

  it('an event without mountId audits every active S3 mount; a paused one is left alone', async () => {
    const a = await drifted();
    const b = await drifted();
    await core.pool.query(`UPDATE filestore.mounts SET state = 'paused' WHERE id = $1`, [b.id]);
    const r = await whole(fixture('scheduler-audit-all'), plenty());
    expect(r.mounts.find((m) => m.mountId === a.id)).toMatchObject({ outcome: 'succeeded' });
    expect(r.mounts.find((m) => m.mountId === b.id)).toBeUndefined();
    expect(await jobsOf(b.id)).toEqual([]);
    await core.pool.query(`UPDATE filestore.mounts SET state = 'active' WHERE id = $1`, [b.id]);
  });

  it('without mountId and no time left: the longest unaudited mount gets its run, the others are deferred without a job', async () => {
    const mount = await drifted();
    await core.pool.query(`UPDATE filestore.mounts SET created_at = now() - interval '10 years' WHERE id = $1`, [mount.id]);
    // This file's other mounts (another test file may add its own meanwhile).
    const others = [...mine].filter((id) => id !== mount.id);
    const before = await Promise.all(others.map(jobsOf));
    const r = await tiny(fixture('scheduler-audit-all'), almostOut());
    expect(r.mounts[0]).toMatchObject({ mountId: mount.id, outcome: 'stopped' });
    expect(r.mounts.length).toBeGreaterThan(others.length);
    expect(new Set(r.mounts.slice(1).map((m) => m.outcome))).toEqual(new Set(['deferred']));
    expect(await Promise.all(others.map(jobsOf))).toEqual(before);
  });

  it("reads the engine's settings from the environment: FILESTORE_MAX_MISSING_RATIO holds back an audit that would mark more MISSING; a bad value is CONFIG_ERROR", async () => {
    const mount = await drifted();
    try {
      process.env.FILESTORE_MAX_MISSING_RATIO = '0.01';
      const r = await whole(scheduled(mount.id), plenty());
      expect(r.mounts[0]).toMatchObject({ outcome: 'failed' });
      expect(await findJob(core.pool, r.mounts[0]?.jobId as number)).toMatchObject({ status: 'failed', error: expect.objectContaining({ details: expect.objectContaining({ maxRatio: 0.01 }) }) });
      expect((await nodesOf(mount.id)).filter((n) => n.state === 'MISSING')).toEqual([]);
      process.env.FILESTORE_MAX_MISSING_RATIO = 'half';
      await expect(whole(scheduled(mount.id), plenty())).rejects.toMatchObject({ code: 'CONFIG_ERROR' });
    } finally {
      delete process.env.FILESTORE_MAX_MISSING_RATIO;
    }
  });

  it('an audit a killed invocation left running with every attempt spent (killed after its last checkpoint, marking MISSING) is failed INTERRUPTED, not run again; the next invocation starts a new one', async () => {
    const mount = await drifted();
    const first = await tiny(scheduled(mount.id), almostOut());
    const jobId = first.mounts[0]?.jobId as number;
    expect(first.mounts[0]?.outcome).toBe('stopped');
    // Five invocations each claimed it and were killed: running, attempts 5 (the default maximum).
    await core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'running', attempts = 5 WHERE id = $1`, [jobId]);
    const before = await nodesOf(mount.id);
    const r = await whole(scheduled(mount.id), plenty());
    expect(r.mounts[0]).toMatchObject({ jobId, outcome: 'failed' });
    expect(await findJob(core.pool, jobId)).toMatchObject({ status: 'failed', attempts: 5, error: expect.objectContaining({ code: 'INTERRUPTED', retryable: false }) });
    expect(await nodesOf(mount.id)).toEqual(before);
    const next = await whole(scheduled(mount.id), plenty());
    expect(next.mounts[0]).toMatchObject({ outcome: 'succeeded' });
    expect(next.mounts[0]?.jobId).not.toBe(jobId);
    expect((await nodesOf(mount.id)).filter((n) => n.state === 'MISSING').map((n) => n.path)).toEqual(['a/f07.txt', 'b/g02.txt', 'c/deep/h04.txt', 'top1.txt']);
  });

  it('a pool of one connection is refused with CONFIG_ERROR naming FILESTORE_DB_POOL_SIZE (an audit holds one for its lock and queries on another), without a job', async () => {
    const mount = await drifted();
    process.env.FILESTORE_DB_POOL_SIZE = '1';
    await closeLambdaCore();
    try {
      await expect(whole(scheduled(mount.id), plenty())).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_DB_POOL_SIZE') });
      expect(await jobsOf(mount.id)).toEqual([]);
    } finally {
      delete process.env.FILESTORE_DB_POOL_SIZE;
      await closeLambdaCore();
    }
  });

  it('a local mount is refused: its agent audits it', async () => {
    const mount = await createMount(core.pool, { key: uniqueKey('local'), kind: 'local', rootPath: `/tmp/${uniqueKey('never-made')}` }); // a root of its own: the catalogue is shared with other test files, and /tmp would hold their roots
    await expect(whole(scheduled(mount.id), plenty())).rejects.toMatchObject({ code: 'VALIDATION_ERROR' });
    expect(await jobsOf(mount.id)).toEqual([]);
  });

  it('publishes filestore_audit_age_seconds{mount} as EMF with the invocation: from registration before the first complete audit, from that audit after', async () => {
    const mount = await drifted();
    // Registered "an hour ago": the age before any audit counts from then.
    await core.pool.query(`UPDATE filestore.mounts SET created_at = now() - interval '1 hour' WHERE id = $1`, [mount.id]);
    const ageAfter = async (invoke: () => Promise<unknown>) => {
      const out: string[] = [];
      const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
        out.push(String(chunk));
        return true;
      });
      try {
        await invoke();
      } finally {
        spy.mockRestore();
      }
      const docs = out
        .join('')
        .split('\n')
        .filter((l) => l.includes('"_aws"'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const doc = docs.find((d) => d.mount === mount.key && typeof d.filestore_audit_age_seconds === 'number');
      return doc?.filestore_audit_age_seconds as number | undefined;
    };
    const before = await ageAfter(() => tiny(scheduled(mount.id), almostOut()));
    expect(before).toBeGreaterThanOrEqual(3600);
    const after = await ageAfter(() => whole(scheduled(mount.id), plenty()));
    expect(after).toBeGreaterThanOrEqual(0);
    expect(after).toBeLessThan(3600);
  });
});
