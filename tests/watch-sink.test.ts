import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiskStat } from '../shared/backends/local/disk-stat.ts';
import { DriftSink } from '../agent/watch/drift-sink.ts';
import type { CoalescedBatch, NetChange } from '../agent/watch/types.ts';
import { LocalExecutor } from '../shared/backends/local/local-executor.ts';
import { claimJob, type ReconcileJobRow } from '../shared/catalogue/jobs.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import { LocalStrategy } from '../shared/reconcile/strategies/local.ts';
import { lockKey } from '../shared/catalogue/locks.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, startFilestore, type TestMount } from './support/filestore.ts';
import { eventually, nodeAt, outbox, startWatchFilestore, watchedMount, watcherDrift, writeFilesOutOfProcess } from './support/watch-harness.ts';

// The drift sink after a burst: lstat directory by directory (DiskStat), untracked files of
// one directory reported by one event, and paths a directory listing already on its way
// will see left to it — on real PostgreSQL, with the real reconciler.

describe('DiskStat: many paths, directory by directory', () => {
  it('says what LocalExecutor.stat says, path by path: files, directories, symlinks never followed, nothing through a symlink or a file, no FIFOs', async () => {
    const core = await startWatchFilestore();
    const t = await createTestMount(core, 'local');
    try {
      const root = t.root as string;
      const abs = (p: string) => path.join(root, p);
      await mkdir(abs('d/sub'), { recursive: true });
      await mkdir(abs('real'), { recursive: true });
      await writeFile(abs('top.txt'), 'top');
      await writeFile(abs('d/a.txt'), 'aaa');
      await writeFile(abs('d/b.bin'), Buffer.alloc(1234));
      await writeFile(abs('real/inside.txt'), 'inside');
      await symlink('a.txt', abs('d/link-to-file'));
      await symlink('../real', abs('d/link-to-dir'));
      execFileSync('mkfifo', [abs('d/fifo')]);
      const paths = [
        'top.txt',
        'd',
        'd/a.txt',
        'd/b.bin',
        'd/sub',
        'd/link-to-file',
        'd/link-to-dir',
        'd/link-to-dir/inside.txt', // through a symlink: not part of the tree
        'd/a.txt/below-a-file',
        'd/gone.txt',
        'missing/x.txt',
        'd/fifo',
      ];
      // The sink's per-path way: the local strategy (a path through a symlink or a file is absent).
      const strategy = new LocalStrategy(root, () => new LocalExecutor({ rootPath: root }));
      const disk = new DiskStat(root, (p) => strategy.stat(p));
      const batch = await disk.statAll(paths);
      for (const p of paths) expect(batch.get(p), p).toEqual(await strategy.stat(p));
      expect(batch.get('d/link-to-dir')).toMatchObject({ kind: 'symlink', symlinkTarget: '../real' });
      expect(batch.get('d/link-to-dir/inside.txt')).toBeNull();
      expect(batch.get('d/b.bin')).toMatchObject({ kind: 'file', sizeBytes: 1234 });
    } finally {
      await t.cleanup();
      await core.close();
    }
  });
});

describe('drift events of a burst', () => {
  let core: Filestore;
  beforeAll(async () => {
    core = await startWatchFilestore();
  });
  afterAll(async () => {
    await core?.close();
  });

  it('untracked files arriving together in one directory are one filestore.drift.detected naming them all; a few are one each', async () => {
    // A long debounce: both directories' files fall into one batch.
    const m = await watchedMount(core, 'parcel', { debounceMs: 1_500 });
    try {
      await core.orchestrator.mkdir(m.mountId, { path: 'many' });
      await core.orchestrator.mkdir(m.mountId, { path: 'few' });
      const many = Array.from({ length: 40 }, (_, i) => `many/f-${String(i).padStart(2, '0')}.dat`);
      const few = ['few/1.txt', 'few/2.txt', 'few/3.txt'];
      await writeFilesOutOfProcess(m.root, [...many, ...few]);
      await eventually(async () => {
        for (const p of [...many, ...few]) if ((await nodeAt(core, m.mountId, p))?.consistencyState !== 'ACTIVE') return false;
        return true;
      }, 'every file catalogued');
      const drift = await watcherDrift(core, m.mountId);
      const ofMany = drift.filter((d) => d.data.path === 'many');
      expect(ofMany).toHaveLength(1);
      expect(ofMany[0]?.data).toMatchObject({ nodeId: null, reason: 'watcher', observed: null, count: 40 });
      expect([...(ofMany[0]?.data.paths as string[])].sort()).toEqual(many);
      expect(drift.filter((d) => String(d.data.path).startsWith('many/'))).toEqual([]);
      for (const p of few) expect((await watcherDrift(core, m.mountId, p)).map((d) => d.data.nodeId)).toEqual([null]);
      // Each file is still reconciled on its own.
      const reconciled = await outbox(core, m.mountId, 'filestore.node.reconciled');
      expect(reconciled.filter((e) => String((e.data.node as { path: string }).path).startsWith('many/'))).toHaveLength(40);
    } finally {
      await m.close();
    }
  });
});

describe('directories that appear with subdirectories in them (parcel watches the new directory alone)', () => {
  let core: Filestore;
  beforeAll(async () => {
    core = await startWatchFilestore();
  });
  afterAll(async () => {
    await core?.close();
  });

  it('a tree moved into the mount is watched whole: a file written deep in it later is seen and catalogued', async () => {
    const m = await watchedMount(core, 'parcel');
    const outside = await mkdtemp(path.join(path.dirname(m.root), 'filestore-tree-'));
    try {
      await mkdir(path.join(outside, 'b/c'), { recursive: true });
      await writeFile(path.join(outside, 'b/c/old.txt'), 'old');
      await rename(outside, m.abs('a'));
      await eventually(async () => (await nodeAt(core, m.mountId, 'a/b/c/old.txt'))?.consistencyState === 'ACTIVE', 'the moved-in tree catalogued');
      await eventually(async () => (await m.watcher.stats()).rewatches > 0, 'the tree watched anew');
      await writeFile(m.abs('a/b/c/new.txt'), 'new!');
      await eventually(async () => (await nodeAt(core, m.mountId, 'a/b/c/new.txt'))?.sizeBytes === 4, 'a file written deep in the moved-in tree catalogued');
    } finally {
      await m.close();
      await rm(outside, { recursive: true, force: true });
    }
  });

  it('mkdir -p and files written at once: every file is catalogued', async () => {
    const m = await watchedMount(core, 'parcel');
    try {
      const names: string[] = [];
      for (let i = 0; i < 600; i++) names.push(`src/d${i % 3}/f-${String(i).padStart(3, '0')}.txt`);
      for (let d = 0; d < 3; d++) mkdirSync(m.abs(`src/d${d}`), { recursive: true });
      for (const n of names) writeFileSync(m.abs(n), n);
      await eventually(async () => {
        for (const n of names) if ((await nodeAt(core, m.mountId, n))?.consistencyState !== 'ACTIVE') return false;
        return true;
      }, 'every file catalogued');
    } finally {
      await m.close();
    }
  });
});

describe('paths a listing of their directory already on its way will see', () => {
  let core: Filestore;
  let t: TestMount;
  let sink: DriftSink;
  beforeAll(async () => {
    // Requests are recorded but not run: the test decides when jobs start.
    core = await startFilestore({
      redisUrl: 'inline',
      recover: false,
      metrics: new PromMetrics({ collectDefaults: false }),
      reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] },
    });
    t = await createTestMount(core, 'local');
    sink = new DriftSink(core, t.mount);
    await core.orchestrator.mkdir(t.mount.id, { path: 'd' });
  });
  afterAll(async () => {
    await t?.cleanup();
    await core?.close();
  });

  const abs = (p: string) => path.join(t.root as string, p);
  const batchOf = (changes: Record<string, NetChange>, seenAt: Record<string, number>): CoalescedBatch => ({
    changes: new Map(Object.entries(changes)),
    rescans: [],
    seenAt: new Map(Object.entries(seenAt)),
  });
  const jobsOf = async (status: string) => {
    const { rows } = await core.pool.query<ReconcileJobRow & { options: { recursive: boolean } }>(
      `SELECT id, path, options, status FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND status = $2 ORDER BY id`,
      [t.mount.id, status],
    );
    return rows;
  };
  const reconcile = (job: ReconcileJobRow) => createReconciler(core)(job, async () => {});
  /** Runs every queued job of the mount, oldest first (what the queue's consumer would do). */
  const runQueued = async () => {
    for (const { id } of await jobsOf('queued')) {
      const job = await claimJob(core.pool, id);
      if (job) await reconcile(job);
      await core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'succeeded', finished_at = now() WHERE id = $1`, [id]);
    }
  };

  it('a queued listing of the directory: its files are left to it (not judged, no job of their own); a new directory in it is still judged', async () => {
    await writeFile(abs('d/a.txt'), 'a');
    await writeFile(abs('d/b.txt'), 'bb');
    await mkdir(abs('d/sub'));
    await writeFile(abs('d/sub/x.txt'), 'x');
    await core.reconcile.enqueue({ mountId: t.mount.id, path: 'd', reason: 'drift', recursive: false, hash: false });
    const now = performance.now();
    const r = await sink.apply(
      batchOf({ 'd/a.txt': 'created', 'd/b.txt': 'created', 'd/sub': 'created', 'd/sub/x.txt': 'created' }, { 'd/a.txt': now, 'd/b.txt': now, 'd/sub': now, 'd/sub/x.txt': now }),
    );
    expect(r).toMatchObject({ covered: 2, deferred: [] });
    // The new directory: its own event and a recursive job (a listing of d does not look inside it).
    const drift = await watcherDrift(core, t.mount.id);
    expect(drift.map((d) => d.data.path)).toEqual(['d/sub']);
    expect((await jobsOf('queued')).map((j) => [j.path, j.options.recursive])).toEqual([
      ['d', false],
      ['d/sub', true],
    ]);
    await runQueued();
    for (const [p, size] of [['d/a.txt', 1], ['d/b.txt', 2], ['d/sub/x.txt', 1]] as const) {
      expect(await nodeAt(core, t.mount.id, p), p).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: size });
    }
  });

  it('a running listing: what the watcher reported before it started waits for it and is looked at again after it; what came after is judged', async () => {
    await writeFile(abs('d/early.txt'), 'early');
    const early = performance.now() - 5_000;
    const { job } = await core.reconcile.enqueue({ mountId: t.mount.id, path: 'd', reason: 'drift', recursive: false, hash: false });
    const running = (await claimJob(core.pool, job.id)) as ReconcileJobRow;
    await new Promise((r) => setTimeout(r, 50));
    await writeFile(abs('d/late.txt'), 'late');
    const late = performance.now();
    const seenAt = { 'd/early.txt': early, 'd/late.txt': late };
    const r = await sink.apply(batchOf({ 'd/early.txt': 'created', 'd/late.txt': 'created' }, seenAt));
    expect(r).toMatchObject({ covered: 0, waiting: ['d/early.txt'], drift: 1 });
    const ofTheseTwo = async () => (await watcherDrift(core, t.mount.id)).filter((d) => ['d/early.txt', 'd/late.txt'].includes(String(d.data.path))).map((d) => d.data.path);
    expect(await ofTheseTwo()).toEqual(['d/late.txt']);
    expect((await jobsOf('queued')).map((j) => j.path)).toEqual(['d/late.txt']);
    // Still running: still waiting.
    expect((await sink.apply(batchOf({ 'd/early.txt': 'changed' }, { 'd/early.txt': early }))).waiting).toEqual(['d/early.txt']);
    // The listing catalogues the early file; looked at again, it matches: no drift, no job.
    await reconcile(running);
    await core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'succeeded', finished_at = now() WHERE id = $1`, [running.id]);
    expect(await sink.apply(batchOf({ 'd/early.txt': 'changed' }, { 'd/early.txt': early }))).toMatchObject({ waiting: [], drift: 0, jobs: 0 });
    expect(await ofTheseTwo()).toEqual(['d/late.txt']);
    await runQueued();
    expect(await nodeAt(core, t.mount.id, 'd/early.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 5 });
    expect(await nodeAt(core, t.mount.id, 'd/late.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 4 });
  });

  it('a waiting path the running listing could not record (someone held it) is judged after it, and gets its own job', async () => {
    await writeFile(abs('d/held.txt'), 'held');
    const seen = performance.now() - 5_000;
    const { job } = await core.reconcile.enqueue({ mountId: t.mount.id, path: 'd', reason: 'drift', recursive: false, hash: false });
    const running = (await claimJob(core.pool, job.id)) as ReconcileJobRow;
    expect((await sink.apply(batchOf({ 'd/held.txt': 'created' }, { 'd/held.txt': seen }))).waiting).toEqual(['d/held.txt']);
    // A command holds the path while the listing writes: the listing skips it.
    const holder = await core.pool.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1::bigint)', [lockKey('path', t.mount.id, 'd/held.txt').toString()]);
      await reconcile(running);
      await core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'succeeded', finished_at = now() WHERE id = $1`, [running.id]);
    } finally {
      await holder.query('SELECT pg_advisory_unlock_all()');
      holder.release();
    }
    expect(await nodeAt(core, t.mount.id, 'd/held.txt')).toBeNull();
    const r = await sink.apply(batchOf({ 'd/held.txt': 'changed' }, { 'd/held.txt': seen }));
    expect(r).toMatchObject({ waiting: [], drift: 1, jobs: 1 });
    await runQueued();
    expect(await nodeAt(core, t.mount.id, 'd/held.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 4 });
  });

  it('a catalogued directory replaced by a file is judged even under a queued listing: its subtree needs a recursive look', async () => {
    await core.orchestrator.mkdir(t.mount.id, { path: 'd/k/inner', parents: true });
    await rm(abs('d/k'), { recursive: true });
    await writeFile(abs('d/k'), 'now a file');
    await core.reconcile.enqueue({ mountId: t.mount.id, path: 'd', reason: 'drift', recursive: false, hash: false });
    const r = await sink.apply(batchOf({ 'd/k': 'changed' }, { 'd/k': performance.now() }));
    expect(r).toMatchObject({ covered: 0, drift: 1 });
    expect((await jobsOf('queued')).map((j) => [j.path, j.options.recursive])).toEqual([
      ['d', false],
      ['d/k', true],
    ]);
    await runQueued();
    expect(await nodeAt(core, t.mount.id, 'd/k')).toMatchObject({ kind: 'file', consistencyState: 'ACTIVE' });
    expect(await nodeAt(core, t.mount.id, 'd/k/inner')).toMatchObject({ consistencyState: 'MISSING' });
  });
});
