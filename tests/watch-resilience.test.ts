import { watch as fsWatch } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  countTree,
  createWatchBackend,
  maxQueuedEvents,
  maxUserWatches,
  MountWatcher,
  watchMounts,
  type WatchBackendFactory,
  type WatchHandlers,
} from '../agent/watch/index.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import type { PromMetrics } from '../shared/metrics/prom.ts';
import { lockKey } from '../shared/catalogue/locks.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount } from './support/filestore.ts';
import { eventually, nodeAt, outbox, settle, startWatchFilestore, watchedMount, watcherDrift } from './support/watch-harness.ts';

let core: Filestore;
beforeAll(async () => {
  core = await startWatchFilestore();
});
afterAll(async () => {
  await core?.close();
});

const rescanJobs = async (mountId: string) => {
  const { rows } = await core.pool.query<{ reason: string; options: { recursive: boolean }; coalesced: number }>(
    `SELECT reason, options, coalesced FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND path = '' ORDER BY id`,
    [mountId],
  );
  return rows;
};

const watcherMetric = async (mountKey: string, event: string) =>
  (await (core.metrics as PromMetrics).watcherEvents.get()).values.find((v) => v.labels.mount === mountKey && v.labels.event === event)?.value ?? 0;

/** The real backends, with their handlers kept so a test can report problems through them. */
function capturingFactory() {
  const handlers: Array<{ kind: string; h: WatchHandlers }> = [];
  const factory: WatchBackendFactory = (kind, root, h) => {
    handlers.push({ kind, h });
    return createWatchBackend(kind, root, h);
  };
  return { factory, handlers, last: () => handlers[handlers.length - 1] as { kind: string; h: WatchHandlers } };
}

// First in the file: what it checks depends on which inotify fds this process opened before.
describe('inotify accounting', () => {
  it("counts each backend's watches, whoever opened the process's shared inotify fd first and whatever fd numbers get reused", async () => {
    if (process.platform !== 'linux') return;
    // libuv's one inotify fd (fs.watch, under chokidar) opened by someone else first: as by
    // an earlier test file in this worker process, or any fs.watch of the agent's.
    const dir = await mkdtemp(path.join(os.tmpdir(), 'filestore-fswatch-'));
    const other = fsWatch(dir);
    try {
      for (const backend of ['chokidar', 'parcel', 'chokidar', 'parcel'] as const) {
        const m = await watchedMount(core, backend);
        try {
          expect((await m.watcher.stats()).watches, backend).toBeGreaterThan(0);
        } finally {
          await m.close();
        }
      }
    } finally {
      other.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('never silent loss', () => {
  it('an overflow reported by the backend counts in the metric and requests a full rescan of the mount', async () => {
    const cap = capturingFactory();
    const m = await watchedMount(core, 'parcel', { backendFactory: cap.factory });
    try {
      expect(await rescanJobs(m.mountId)).toEqual([]);
      cap.last().h.onProblem({ kind: 'overflow', message: 'Events were dropped by the FSEvents client. File system must be re-scanned.' });
      const jobs = await eventually(async () => {
        const j = await rescanJobs(m.mountId);
        return j.length > 0 ? j : null;
      }, 'the rescan job');
      expect(jobs[0]).toMatchObject({ reason: 'audit', options: { recursive: true } });
      expect(await watcherMetric(m.t.mount.key, 'overflow')).toBe(1);
    } finally {
      await m.close();
    }
  });

  it('a burst that could overflow the kernel queue unannounced counts in the metric and requests a full rescan, once per batch', async () => {
    const lines: string[] = [];
    const m = await watchedMount(core, 'parcel', { overflowRiskEvents: 40, log: (l: string) => lines.push(l) });
    try {
      await mkdir(m.abs('burst'));
      await settle(core, m);
      expect(await rescanJobs(m.mountId)).toEqual([]);
      await Promise.all(Array.from({ length: 60 }, (_, i) => writeFile(m.abs(`burst/f${i}.txt`), String(i))));
      const jobs = await eventually(async () => {
        const j = await rescanJobs(m.mountId);
        return j.length > 0 ? j : null;
      }, 'the rescan job');
      expect(jobs).toEqual([{ reason: 'audit', options: { recursive: true, hash: false }, coalesced: 0 }]);
      expect(await watcherMetric(m.t.mount.key, 'overflow_risk')).toBe(1);
      expect(lines.some((l) => l.includes('max_queued_events') && l.includes('full rescan requested'))).toBe(true);
      // The burst itself is still catalogued by the batch's own jobs.
      await eventually(async () => (await nodeAt(core, m.mountId, 'burst/f59.txt')) !== null, 'the burst catalogued');
    } finally {
      await m.close();
    }
  });

  it('a batch below the risk requests no rescan; the default risk is half the kernel queue', async () => {
    expect(await maxQueuedEvents()).toBeGreaterThan(0);
    const m = await watchedMount(core, 'parcel', { overflowRiskEvents: 1_000 });
    try {
      await mkdir(m.abs('calm'));
      await Promise.all(Array.from({ length: 30 }, (_, i) => writeFile(m.abs(`calm/f${i}.txt`), String(i))));
      await settle(core, m);
      expect(await rescanJobs(m.mountId)).toEqual([]);
      expect(await watcherMetric(m.t.mount.key, 'overflow_risk')).toBe(0);
    } finally {
      await m.close();
    }
  });

  it('watcher errors request rescans too; a storm of them within the cooldown costs one more request, at its end', async () => {
    const cap = capturingFactory();
    const lines: string[] = [];
    const m = await watchedMount(core, 'chokidar', { backendFactory: cap.factory, rescanCooldownMs: 500, log: (l: string) => lines.push(l) });
    try {
      for (let i = 0; i < 20; i++) cap.last().h.onProblem({ kind: 'error', message: 'EACCES: permission denied, scandir', code: 'EACCES' });
      expect(await watcherMetric(m.t.mount.key, 'error')).toBe(20);
      // Counted twenty times, logged once (a tree beyond the watch budget reports every file).
      expect(lines.filter((l) => l.includes('EACCES'))).toHaveLength(1);
      await eventually(async () => (await m.watcher.stats()).rescans === 2, 'the second rescan request after the cooldown');
      await new Promise((r) => setTimeout(r, 700));
      expect((await m.watcher.stats()).rescans).toBe(2);
    } finally {
      await m.close();
    }
  });

  it('under auto, chokidar running out of inotify watches moves the mount to parcel and rescans it', async () => {
    const cap = capturingFactory();
    const m = await watchedMount(core, 'auto', { backendFactory: cap.factory, autoThreshold: 1_000 });
    try {
      expect((await m.watcher.stats()).backend).toBe('chokidar');
      cap.last().h.onProblem({ kind: 'overflow', message: 'ENOSPC: System limit for number of file watchers reached', code: 'ENOSPC' });
      await eventually(async () => (await m.watcher.stats()).backend === 'parcel', 'the switch to parcel');
      expect(await rescanJobs(m.mountId)).toHaveLength(1);
      // And the new backend watches.
      await m.writeOutOfBand('after-switch.txt', 'x');
      await eventually(async () => (await nodeAt(core, m.mountId, 'after-switch.txt'))?.consistencyState === 'ACTIVE', 'after-switch.txt catalogued');
    } finally {
      await m.close();
    }
  });

  it('start requests a catch-up rescan: what changed while nothing watched is catalogued', async () => {
    const t = await createTestMount(core, 'local');
    const root = t.root as string;
    await mkdir(path.join(root, 'while-down'));
    await writeFile(path.join(root, 'while-down/a.txt'), 'a');
    const watcher = new MountWatcher(core, t.mount, { backend: 'parcel', debounceMs: 100 });
    try {
      await watcher.start();
      expect(await rescanJobs(t.mount.id)).toHaveLength(1);
      await eventually(async () => (await nodeAt(core, t.mount.id, 'while-down/a.txt'))?.consistencyState === 'ACTIVE', 'while-down/a.txt catalogued');
    } finally {
      await watcher.close();
      await t.cleanup();
    }
  });

  it('close() judges what is still pending instead of dropping it', async () => {
    const m = await watchedMount(core, 'chokidar', { debounceMs: 60_000 });
    try {
      await m.writeOutOfBand('late.txt', 'late');
      await eventually(async () => (await m.watcher.stats()).pending > 0, 'the event pending');
      await m.watcher.close();
      expect(await watcherDrift(core, m.mountId, 'late.txt')).toHaveLength(1);
      await eventually(async () => (await nodeAt(core, m.mountId, 'late.txt'))?.consistencyState === 'ACTIVE', 'late.txt catalogued');
    } finally {
      await m.close();
    }
  });
});

describe.each(['chokidar', 'parcel', 'dirs'] as const)('judging paths (%s)', (backend) => {
  it('a path a command holds is not judged but looked at again once the command is done', async () => {
    const m = await watchedMount(core, backend);
    const holder = await core.pool.connect();
    try {
      await m.writeThrough('held.txt', 'v1');
      await settle(core, m);
      // What a running command holds: an exclusive session lock on the path.
      await holder.query('SELECT pg_advisory_lock($1::bigint)', [lockKey('path', m.mountId, 'held.txt').toString()]);
      await writeFile(m.abs('held.txt'), 'changed meanwhile');
      await settle(core, m, 'sentinel-held');
      expect(await watcherDrift(core, m.mountId, 'held.txt')).toHaveLength(0);
      expect((await nodeAt(core, m.mountId, 'held.txt'))?.consistencyState).toBe('ACTIVE');
      await holder.query('SELECT pg_advisory_unlock_all()');
      await eventually(async () => (await watcherDrift(core, m.mountId, 'held.txt')).length === 1, 'the deferred drift');
      await eventually(async () => (await nodeAt(core, m.mountId, 'held.txt'))?.sizeBytes === 17, 'held.txt reconciled');
    } finally {
      holder.release();
      await m.close();
    }
  });

  it('symlinks are reported as entries, never followed out of the mount', async () => {
    const outside = await mkdtemp(path.join(os.tmpdir(), 'filestore-outside-'));
    const m = await watchedMount(core, backend);
    try {
      await symlink(outside, m.abs('escape'));
      await eventually(async () => (await nodeAt(core, m.mountId, 'escape'))?.kind === 'symlink', 'the symlink catalogued');
      await writeFile(path.join(outside, 'secret.txt'), 'not ours');
      await settle(core, m);
      const paths = (await outbox(core, m.mountId)).map((e) => String(e.data.path ?? (e.data.node as { path?: string } | undefined)?.path ?? ''));
      expect(paths.filter((p) => p.startsWith('escape/'))).toEqual([]);
      expect(await nodeAt(core, m.mountId, 'escape/secret.txt')).toBeNull();
    } finally {
      await m.close();
      await rm(outside, { recursive: true, force: true });
    }
  });

  it('stats report the backend, its inotify watches and what is pending', async () => {
    const m = await watchedMount(core, backend);
    try {
      const s = await m.watcher.stats();
      expect(s).toMatchObject({ backend, choice: backend, pending: 0, mountId: m.mountId });
      if (process.platform === 'linux') expect(s.watches).toBeGreaterThan(0);
    } finally {
      await m.close();
    }
  });
});

describe('choosing a backend and starting watchers', () => {
  it('auto picks parcel for a small tree', async () => {
    const small = await createTestMount(core, 'local');
    await writeFile(path.join(small.root as string, 'only'), '');
    const w = new MountWatcher(core, small.mount, { backend: 'auto', catchUp: false });
    try {
      expect(await w.start()).toMatchObject({ kind: 'parcel', choice: 'auto', entries: 1, directories: 0, threshold: null });
      expect((await w.stats()).backend).toBe('parcel');
    } finally {
      await w.close();
      await small.cleanup();
    }
  });

  it('with a threshold, auto picks chokidar below it and parcel at or above it', async () => {
    const small = await createTestMount(core, 'local');
    const large = await createTestMount(core, 'local');
    for (let i = 0; i < 12; i++) await writeFile(path.join(large.root as string, `f${i}`), '');
    await writeFile(path.join(small.root as string, 'only'), '');
    const a = new MountWatcher(core, small.mount, { backend: 'auto', autoThreshold: 10, catchUp: false });
    const b = new MountWatcher(core, large.mount, { backend: 'auto', autoThreshold: 10, catchUp: false });
    try {
      expect(await a.start()).toMatchObject({ kind: 'chokidar', choice: 'auto', entries: 1, threshold: 10 });
      expect(await b.start()).toMatchObject({ kind: 'parcel', choice: 'auto', entries: 12, threshold: 10 });
    } finally {
      await a.close();
      await b.close();
      await small.cleanup();
      await large.cleanup();
    }
  });

  it('auto picks dirs for a large tree of big directories (parcel would keep every file in memory), parcel for one of many small directories', async () => {
    const big = await createTestMount(core, 'local');
    const many = await createTestMount(core, 'local');
    for (let d = 0; d < 2; d++) {
      await mkdir(path.join(big.root as string, `d${d}`));
      for (let i = 0; i < 60; i++) await writeFile(path.join(big.root as string, `d${d}/f${i}`), '');
    }
    for (let d = 0; d < 30; d++) {
      await mkdir(path.join(many.root as string, `d${d}`));
      await writeFile(path.join(many.root as string, `d${d}/f`), '');
    }
    // Bounds scaled down (the defaults: 100,000 entries, 20 files a directory). The count stops
    // at the bound: 2 directories and 98 files met, 32 files a directory (the root counted);
    // 30 directories and 30 files, 0.
    const a = new MountWatcher(core, big.mount, { backend: 'auto', autoDirsFrom: 100, catchUp: false });
    const b = new MountWatcher(core, many.mount, { backend: 'auto', autoDirsFrom: 50, catchUp: false });
    try {
      expect(await a.start()).toMatchObject({ kind: 'dirs', choice: 'auto', entries: 100, directories: 2 });
      expect(await b.start()).toMatchObject({ kind: 'parcel', choice: 'auto', entries: 50 });
      expect((await a.stats()).backend).toBe('dirs');
      // And it watches: a file written outside Filestore is catalogued.
      await writeFile(path.join(big.root as string, 'd1/new.txt'), 'new');
      await eventually(async () => (await nodeAt(core, big.mount.id, 'd1/new.txt'))?.consistencyState === 'ACTIVE', 'd1/new.txt catalogued');
    } finally {
      await a.close();
      await b.close();
      await big.cleanup();
      await many.cleanup();
    }
  });

  it('the tree count stops at its cap and skips the staging area; the inotify budget is read from /proc', async () => {
    const t = await createTestMount(core, 'local');
    try {
      const root = t.root as string;
      await mkdir(path.join(root, '.filestore-staging/x'), { recursive: true });
      await mkdir(path.join(root, 'd/e'), { recursive: true });
      await writeFile(path.join(root, 'd/e/f'), '');
      expect((await countTree(root, 100)).entries).toBe(3);
      expect((await countTree(root, 2)).entries).toBe(2);
      if (process.platform === 'linux') expect(await maxUserWatches()).toBeGreaterThan(0);
    } finally {
      await t.cleanup();
    }
  });

  it('watchMounts starts one watcher per local mount it owns and reports the ones that cannot start', async () => {
    const ok = await createTestMount(core, 'local');
    const gone = await createTestMount(core, 'local');
    await gone.cleanup();
    const s3Like: Mount = { ...ok.mount, id: '00000000-0000-4000-8000-000000000000', key: 'bucket', kind: 's3', rootPath: null };
    const foreign: Mount = { ...ok.mount, id: '00000000-0000-4000-8000-000000000001', key: 'elsewhere', agentId: 'other-host' };
    const handle = await watchMounts(core, [ok.mount, gone.mount, s3Like, foreign], { backend: 'parcel', catchUp: false, agentId: 'this-host' });
    try {
      expect(handle.watchers.map((w) => w.mount.key)).toEqual([ok.mount.key]);
      expect(handle.failed.map((f) => [f.mount.key, f.error.code])).toEqual([[gone.mount.key, 'STORAGE_ERROR']]);
      expect(await handle.stats()).toMatchObject([{ mountKey: ok.mount.key, backend: 'parcel', pending: 0 }]);
    } finally {
      await handle.close();
      await ok.cleanup();
    }
  });

  it('refuses unknown backends and S3 mounts with stable codes', async () => {
    const t = await createTestMount(core, 'local');
    try {
      expect(() => new MountWatcher(core, t.mount, { backend: 'inotifywait' as never })).toThrow(expect.objectContaining({ code: 'CONFIG_ERROR' }));
      expect(() => new MountWatcher(core, { ...t.mount, kind: 's3', rootPath: null })).toThrow(
        expect.objectContaining({ code: 'CONFIG_ERROR', details: expect.objectContaining({ watchError: 'NOT_A_LOCAL_MOUNT' }) }),
      );
    } finally {
      await t.cleanup();
    }
  });
});
