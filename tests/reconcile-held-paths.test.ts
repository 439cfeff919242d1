import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimJob, enqueueJob, findJob, type ReconcileJobRow } from '../shared/catalogue/jobs.ts';
import { findLiveByPath } from '../shared/catalogue/nodes.ts';
import { isLockTimeout, lockPathsForWrite } from '../shared/catalogue/reconcile-writes.ts';
import type { PoolClient } from '../shared/db/pool.ts';
import { acquire, pathLocks, release } from '../shared/catalogue/locks.ts';
import { createReconciler, type ReconcilerOptions } from '../shared/reconcile/reconciler.ts';
import type { ReconcileCounts } from '../shared/reconcile/types.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, startFilestore, type TestMount } from './support/filestore.ts';

/**
 * A path another writer holds when a run writes it: a command (session locks from its journal
 * entry to its catalogue commit) or another run's batch. The run waits for it a little, then
 * leaves it to a follow-up job; nothing it saw is dropped without a job that will look again.
 */
describe('reconciliation of paths another writer holds', () => {
  let core: Filestore;
  beforeAll(async () => {
    // Requests are recorded (rows) but nothing consumes them: the tests run each job themselves.
    core = await startFilestore({ reconcile: { queueRedisUrl: 'inline', consume: false } });
  });
  afterAll(() => core.close());

  async function newJob(t: TestMount, p: string, options: Record<string, unknown>): Promise<ReconcileJobRow> {
    const { job } = await enqueueJob(core.pool, { mountId: t.mount.id, path: p, reason: 'manual', options: { recursive: true, hash: false, ...options } });
    return (await claimJob(core.pool, job.id)) as ReconcileJobRow;
  }

  /** Every path compared is accounted for exactly once. */
  const run = async (job: ReconcileJobRow, o: ReconcilerOptions = {}): Promise<ReconcileCounts> => {
    const c = await createReconciler(core, o)(job, async () => {});
    expect(c.unchanged + c.updated + c.discovered + c.missing + c.deferred, JSON.stringify(c)).toBe(c.checked);
    return c;
  };

  /** Holds the locks a command on `paths` holds, on a connection of its own, until `release`d. */
  async function holdAsCommand(t: TestMount, paths: string[]) {
    const client: PoolClient = await core.pool.connect();
    const locks = pathLocks(t.mount.id, paths);
    await acquire(client, locks);
    return {
      pid: (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid as number,
      async release() {
        await release(client, locks);
        client.release();
      },
    };
  }

  /** Resolves once some backend waits for an advisory lock held by `holderPid`. */
  async function someoneWaitsOn(holderPid: number): Promise<void> {
    for (;;) {
      const { rows } = await core.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_locks w
           JOIN pg_locks h ON h.locktype = 'advisory' AND h.granted AND h.pid = $1
                          AND h.classid = w.classid AND h.objid = w.objid AND h.objsubid = w.objsubid
          WHERE w.locktype = 'advisory' AND NOT w.granted`,
        [holderPid],
      );
      if ((rows[0]?.n ?? 0) > 0) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Resolves once a session holds the path lock of `p` (a command is working on it). */
  async function someoneHolds(t: TestMount, p: string): Promise<void> {
    const key = pathLocks(t.mount.id, [p]).find((l) => l.mode === 'exclusive')?.key as bigint;
    for (;;) {
      // A bigint advisory key shows in pg_locks as its high and low 32 bits, unsigned, objsubid 1.
      const { rows } = await core.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
            AND classid::text::bigint = $1::bigint AND objid::text::bigint = $2::bigint`,
        [((key >> 32n) & 0xffffffffn).toString(), (key & 0xffffffffn).toString()],
      );
      if ((rows[0]?.n ?? 0) > 0) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Resolves once some session of this database waits for an advisory lock. */
  async function someoneWaits(): Promise<void> {
    for (;;) {
      const { rows } = await core.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      );
      if ((rows[0]?.n ?? 0) > 0) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  const followUps = async (t: TestMount) =>
    (
      await core.pool.query<{ id: number; path: string; options: Record<string, unknown>; status: string }>(
        `SELECT id, path, options, status FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND options ? 'followUp' ORDER BY id`,
        [t.mount.id],
      )
    ).rows;

  it('waits for a path held for a moment and writes it in the same run', async () => {
    const t = await createTestMount(core, 'local');
    await mkdir(path.join(t.root as string, 'inbox'));
    await writeFile(path.join(t.root as string, 'inbox', 'new.txt'), 'hello');
    await writeFile(path.join(t.root as string, 'other.txt'), 'free');
    const holder = await holdAsCommand(t, ['inbox/new.txt']);
    const job = await newJob(t, '', {});
    const running = run(job);
    // The run reached the held path and waits for it; the holder finishes.
    await someoneWaitsOn(holder.pid);
    await holder.release();
    const counts = await running;
    expect(counts).toMatchObject({ discovered: 3, deferred: 0 });
    expect(await findLiveByPath(core.pool, t.mount.id, 'inbox/new.txt')).toMatchObject({ kind: 'file', sizeBytes: 5 });
    expect(await followUps(t)).toEqual([]);
    await t.cleanup();
  });

  it('a path a command creates while the run waits for it is left as the command recorded it, and counted', async () => {
    const t = await createTestMount(core, 'local');
    const root = t.root as string;
    await writeFile(path.join(root, 'upload.bin'), 'left by someone else');
    // An upload through Filestore over that untracked file, still streaming: it holds the path.
    const body = new PassThrough();
    body.write('uploaded ');
    const upload = core.orchestrator.writeFile(t.mount.id, { path: 'upload.bin' }, body);
    await someoneHolds(t, 'upload.bin');
    const running = run(await newJob(t, '', {}));
    await someoneWaits();
    body.end('through Filestore');
    await upload;
    expect(await running).toMatchObject({ discovered: 0, deferred: 0 });
    expect(await findLiveByPath(core.pool, t.mount.id, 'upload.bin')).toMatchObject({ sizeBytes: 'uploaded through Filestore'.length });
    expect(await followUps(t)).toEqual([]);
    await t.cleanup();
  });

  it('leaves what stays held to a follow-up job, which catalogues it once the holder is done', async () => {
    const t = await createTestMount(core, 'local');
    const root = t.root as string;
    await mkdir(path.join(root, 'docs', 'deep'), { recursive: true });
    await writeFile(path.join(root, 'docs', 'a.txt'), 'a');
    await writeFile(path.join(root, 'docs', 'b.txt'), 'b');
    await writeFile(path.join(root, 'docs', 'deep', 'c.txt'), 'c');
    await writeFile(path.join(root, 'free.txt'), 'free');
    // A command works on docs/a.txt and docs/deep: it holds them, and docs shared. Cataloguing
    // docs (a new directory) needs docs exclusively, and everything below it needs docs.
    const holder = await holdAsCommand(t, ['docs/a.txt', 'docs/deep']);
    const counts = await run(await newJob(t, '', {}), { lockWaitMs: 50 });
    expect(counts).toMatchObject({ discovered: 1, deferred: 5 });
    expect(await findLiveByPath(core.pool, t.mount.id, 'free.txt')).not.toBeNull();
    for (const p of ['docs', 'docs/a.txt', 'docs/b.txt', 'docs/deep', 'docs/deep/c.txt']) expect(await findLiveByPath(core.pool, t.mount.id, p)).toBeNull();
    // One follow-up covers them all: the directory's subtree.
    const queued = await followUps(t);
    expect(queued).toEqual([{ id: expect.any(Number), path: 'docs', options: { recursive: true, hash: false, followUp: 1 }, status: 'queued' }]);

    await holder.release();
    const followUp = (await claimJob(core.pool, queued[0]?.id as number)) as ReconcileJobRow;
    expect(await run(followUp, { lockWaitMs: 50 })).toMatchObject({ discovered: 5, deferred: 0 });
    for (const p of ['docs', 'docs/a.txt', 'docs/b.txt', 'docs/deep', 'docs/deep/c.txt']) expect(await findLiveByPath(core.pool, t.mount.id, p)).not.toBeNull();
    expect(await followUps(t)).toHaveLength(1); // nothing was held this time: no further follow-up
    await t.cleanup();
  });

  it('a held change to a catalogued file and a held MISSING are deferred, then applied by the follow-up', async () => {
    const t = await createTestMount(core, 'local');
    const root = t.root as string;
    await core.orchestrator.writeFile(t.mount.id, { path: 'keep.txt' }, Readable.from([Buffer.from('v1')]));
    await core.orchestrator.writeFile(t.mount.id, { path: 'gone.txt' }, Readable.from([Buffer.from('bye')]));
    await writeFile(path.join(root, 'keep.txt'), 'version two');
    await rm(path.join(root, 'gone.txt'));
    const holder = await holdAsCommand(t, ['keep.txt', 'gone.txt']);
    expect(await run(await newJob(t, '', {}), { lockWaitMs: 50 })).toMatchObject({ updated: 0, missing: 0, deferred: 2 });
    expect(await findLiveByPath(core.pool, t.mount.id, 'keep.txt')).toMatchObject({ sizeBytes: 2, consistencyState: 'ACTIVE' });
    expect(await findLiveByPath(core.pool, t.mount.id, 'gone.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
    const queued = await followUps(t);
    // Two paths of the root: one non-recursive job for the root (the path and its children).
    expect(queued.map((j) => [j.path, j.options.recursive])).toEqual([['', false]]);

    await holder.release();
    const followUp = (await claimJob(core.pool, queued[0]?.id as number)) as ReconcileJobRow;
    expect(await run(followUp)).toMatchObject({ updated: 1, missing: 1, deferred: 0 });
    expect(await findLiveByPath(core.pool, t.mount.id, 'keep.txt')).toMatchObject({ sizeBytes: 11, consistencyState: 'ACTIVE' });
    expect(await findLiveByPath(core.pool, t.mount.id, 'gone.txt')).toMatchObject({ consistencyState: 'MISSING' });
    await t.cleanup();
  });

  it('the chain of follow-ups is bounded: the last generation leaves what is still held to the next audit', async () => {
    const t = await createTestMount(core, 'local');
    await writeFile(path.join(t.root as string, 'busy.txt'), 'x');
    const holder = await holdAsCommand(t, ['busy.txt']);
    let job = await newJob(t, 'busy.txt', { recursive: false });
    const generations: number[] = [];
    for (;;) {
      const counts = await run(job, { lockWaitMs: 20 });
      expect(counts).toMatchObject({ discovered: 0, deferred: 1 });
      const next = (await followUps(t)).find((j) => j.status === 'queued');
      if (!next) break;
      generations.push(next.options.followUp as number);
      job = (await claimJob(core.pool, next.id)) as ReconcileJobRow;
    }
    expect(generations).toEqual([1, 2, 3]);
    await holder.release();
    expect(await findLiveByPath(core.pool, t.mount.id, 'busy.txt')).toBeNull();
    await t.cleanup();
  });

  it('waiting for locks leaves the transaction\'s statement_timeout as it was; a wait that runs out is a lock timeout', async () => {
    const t = await createTestMount(core, 'local');
    const client = await core.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(`SET LOCAL statement_timeout = '7s'`);
      expect(await lockPathsForWrite(client, t.mount.id, ['free.txt'], 100)).toEqual(new Set(['free.txt']));
      expect((await client.query<{ statement_timeout: string }>('SHOW statement_timeout')).rows[0]?.statement_timeout).toBe('7s');
      await client.query('COMMIT');
      const holder = await holdAsCommand(t, ['held.txt']);
      await client.query('BEGIN');
      const err = await lockPathsForWrite(client, t.mount.id, ['held.txt'], 50).catch((e: unknown) => e);
      expect(isLockTimeout(err)).toBe(true);
      await client.query('ROLLBACK');
      await holder.release();
    } finally {
      client.release();
    }
    await t.cleanup();
  });

  it('a request keeps force (an audit past the mass-missing rule) and follow-up generation in its row', async () => {
    const t = await createTestMount(core, 'local');
    const { job } = await core.reconcile.enqueue({ mountId: t.mount.id, path: '', reason: 'manual', recursive: true, hash: false, force: true });
    expect((await findJob(core.pool, job.id))?.options).toEqual({ recursive: true, hash: false, force: true });
    await t.cleanup();
  });
});
