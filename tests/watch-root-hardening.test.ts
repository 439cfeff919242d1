import { appendFile, mkdir, mkdtemp, rename, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWatchBackend, MountWatcher, type WatchBackendFactory } from '../agent/watch/index.ts';
import type { RootLookPurpose } from '../agent/watch/root-guard.ts';
import { lookAtRoot, type RootLook } from '../shared/backends/local/root-check.ts';
import { getMount } from '../shared/catalogue/mounts.ts';
import { lockPathsForWrite } from '../shared/catalogue/reconcile-writes.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, startFilestore } from './support/filestore.ts';
import { eventually, nodeAt, settle, startWatchFilestore, watchedMount, watcherDrift } from './support/watch-harness.ts';

// The watcher's handling of a mount root that vanishes, seen from outside: a batch in flight
// while the root is swapped is never judged against another directory; a network
// filesystem's passing error neither restarts the watcher nor costs an audit; health
// written by the watcher agrees with the shared look (staging area included); a root back but
// not watchable is rescanned anyway; a start racing close() requests nothing.

let core: Filestore;
/** A second Filestore on the same catalogue whose reconcile queue runs nothing: jobs stay queued. */
let idle: Filestore;
beforeAll(async () => {
  core = await startWatchFilestore();
  idle = await startFilestore({
    redisUrl: 'inline',
    recover: false,
    metrics: new PromMetrics({ collectDefaults: false }),
    reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] },
  });
});
afterAll(async () => {
  await idle?.close();
  await core?.close();
});

const FAST = { rootCheckMs: 100, rescanCooldownMs: 200 };

const healthOf = async (mountId: string) =>
  (
    await core.pool.query<{ health: string; reason: string | null; checkedAt: Date | null }>(
      'SELECT health, health_reason AS reason, health_checked_at AS "checkedAt" FROM filestore.mounts WHERE id = $1',
      [mountId],
    )
  ).rows[0] as { health: string; reason: string | null; checkedAt: Date | null };
const healthBecomes = (mountId: string, health: string, reason?: RegExp) =>
  eventually(async () => {
    const h = await healthOf(mountId);
    return h.health === health && (reason === undefined || reason.test(h.reason ?? '')) ? h : null;
  }, `the mount ${health}${reason ? ` (${String(reason)})` : ''}`);
const auditsOf = async (mountId: string) =>
  (await core.pool.query<{ status: string }>(`SELECT status FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND path = '' AND reason = 'audit'`, [mountId])).rows;

describe('a batch in flight while the root changes', () => {
  it('a chunk whose lstats ran while the root went away and came back (the same directory) is dropped, not judged as deletions', async () => {
    const lines: string[] = [];
    let trap: 'off' | 'armed' | 'chunk' | 'done' = 'off';
    let ticksSawItGone = false;
    let away = '';
    const look = async (root: string, why: RootLookPurpose): Promise<RootLook> => {
      if (trap === 'armed' && why === 'batch') {
        trap = 'chunk';
        const r = await lookAtRoot(root);
        await rename(root, away); // the chunk's lstats, next, see nothing
        return r;
      }
      if (trap === 'chunk' && why === 'chunk') {
        // Before the chunk's own question is answered, the guard sees the root gone, then back.
        await eventually(async () => ticksSawItGone, 'the guard saw the root gone');
        await rename(away, root);
        await eventually(async () => lines.some((l) => /the mount root .* is back/.test(l)), 'the same root watched again');
        trap = 'done';
        return lookAtRoot(root);
      }
      const r = await lookAtRoot(root);
      if (!r.ok && why === 'tick') ticksSawItGone = true;
      return r;
    };
    const m = await watchedMount(idle, 'parcel', { ...FAST, rootLook: look, log: (l) => lines.push(l) });
    away = `${m.root}.away`;
    try {
      for (const p of ['a.txt', 'b.txt']) await m.writeThrough(p, p);
      await settle(idle, m);
      trap = 'armed';
      await appendFile(m.abs('a.txt'), '+');
      await eventually(async () => trap === 'done', 'the trap sprung');
      await settle(idle, m, 'after.txt');
      expect(await watcherDrift(idle, m.mountId, 'a.txt')).toEqual([]);
      expect((await nodeAt(idle, m.mountId, 'a.txt'))?.consistencyState).toBe('ACTIVE');
    } finally {
      await rename(away, m.root).catch(() => {});
      await m.close();
    }
  });

  it('paths a command held while the root was replaced by another directory are not judged against the new one', async () => {
    const lines: string[] = [];
    let trap: 'off' | 'armed' | 'done' = 'off';
    let release: (() => Promise<void>) | null = null;
    let away = '';
    let mountId = '';
    const look = async (root: string, why: RootLookPurpose): Promise<RootLook> => {
      const r = await lookAtRoot(root);
      if (trap === 'armed' && why === 'chunk') {
        trap = 'done';
        // The chunk is approved; now its transaction waits (the nodes table held), and meanwhile
        // the disk is replaced by an empty directory, which the guard watches instead.
        const table = await idle.pool.connect();
        await table.query('BEGIN');
        await table.query('LOCK TABLE filestore.nodes IN ACCESS EXCLUSIVE MODE');
        release = async () => {
          await table.query('COMMIT');
          table.release();
        };
        void (async () => {
          await rename(root, away);
          await mkdir(root);
          await eventually(async () => lines.some((l) => /replaced by another directory; watching that one/.test(l)), 'the new root watched');
          await release?.();
          release = null;
        })();
      }
      return r;
    };
    const m = await watchedMount(idle, 'parcel', { ...FAST, rootLook: look, log: (l) => lines.push(l) });
    mountId = m.mountId;
    away = `${m.root}.away`;
    // a.txt is held as a running command holds it: the sink hands it back.
    const command = await idle.pool.connect();
    try {
      for (const p of ['a.txt', 'b.txt']) await m.writeThrough(p, p);
      await settle(idle, m);
      await command.query('BEGIN');
      await lockPathsForWrite(command, mountId, ['a.txt']);
      trap = 'armed';
      await appendFile(m.abs('a.txt'), '+');
      await appendFile(m.abs('b.txt'), '+');
      // b.txt (free) is judged once the table is released: the batch is over.
      await eventually(async () => (await watcherDrift(idle, mountId, 'b.txt')).length > 0, 'the batch judged');
      await command.query('COMMIT');
      await settle(idle, m, 'after.txt');
      expect(await watcherDrift(idle, mountId, 'a.txt')).toEqual([]);
      expect((await nodeAt(idle, mountId, 'a.txt'))?.consistencyState).toBe('ACTIVE');
    } finally {
      await command.query('ROLLBACK').catch(() => {});
      command.release();
      await (release as (() => Promise<void>) | null)?.();
      await m.close();
      await rm(away, { recursive: true, force: true });
    }
  });
});

describe('a root that fails a look now and then (a network filesystem)', () => {
  it('one EIO: still watched, no audit, health untouched', async () => {
    const lines: string[] = [];
    let failNext = 0;
    let ticks = 0;
    const look = async (root: string, why: RootLookPurpose): Promise<RootLook> => {
      if (why === 'tick') ticks++;
      if (why === 'tick' && failNext > 0) {
        failNext--;
        return { ok: false, gone: false, code: 'EIO', reason: `${root}: EIO` };
      }
      return lookAtRoot(root);
    };
    const m = await watchedMount(idle, 'parcel', { ...FAST, rootLook: look, log: (l) => lines.push(l) });
    try {
      const before = await healthOf(m.mountId);
      failNext = 1;
      const at = ticks;
      await eventually(async () => failNext === 0 && ticks >= at + 4, 'the failed look and three more');
      expect(lines.filter((l) => /the mount root is gone|is back/.test(l))).toEqual([]);
      expect(lines.filter((l) => /looking at the mount root failed \(.*EIO\)/.test(l))).toHaveLength(1);
      expect((await m.watcher.stats()).rescans).toBe(0);
      expect(await auditsOf(m.mountId)).toEqual([]);
      expect(await healthOf(m.mountId)).toEqual(before);
      await settle(idle, m); // changes are still seen
    } finally {
      await m.close();
    }
  });

  it('failing on and on: suspended and unhealthy (after three in a row); back the same, rescanned through the cooldown, not at once', async () => {
    const lines: string[] = [];
    let failing = false;
    const look = async (root: string, why: RootLookPurpose): Promise<RootLook> => {
      if (why === 'tick' && failing) return { ok: false, gone: false, code: 'ESTALE', reason: `${root}: ESTALE` };
      return lookAtRoot(root);
    };
    const m = await watchedMount(idle, 'parcel', { rootCheckMs: 100, rescanCooldownMs: 600_000, catchUp: true, rootLook: look, log: (l) => lines.push(l) });
    try {
      expect((await m.watcher.stats()).rescans).toBe(1); // the catch-up
      failing = true; // until the watcher acts on it
      await healthBecomes(m.mountId, 'unhealthy', /ESTALE/);
      failing = false;
      await healthBecomes(m.mountId, 'healthy');
      await eventually(async () => (await m.watcher.stats()).rootProblem === null && lines.some((l) => /is back/.test(l)), 'watched again');
      // The return's rescan waits out the cooldown of the catch-up (it is sent at close at the latest).
      expect((await m.watcher.stats()).rescans).toBe(1);
      expect(await auditsOf(m.mountId)).toHaveLength(1);
    } finally {
      await m.close();
    }
  });
});

describe('health the watcher writes agrees with the shared look', () => {
  it('a mount whose staging area is a symlink stays unhealthy after its watcher starts and after its root returns', async () => {
    const outside = await mkdtemp(path.join(os.tmpdir(), 'filestore-outside-'));
    const t = await createTestMount(core, 'local');
    const root = t.root as string;
    const away = `${root}.away`;
    const lines: string[] = [];
    let w: MountWatcher | null = null;
    try {
      await symlink(outside, path.join(root, '.filestore-staging'));
      // A reconciliation (as the staging sweep at start) finds it: unhealthy.
      const { job } = await core.reconcile.enqueue({ mountId: t.mount.id, path: '', reason: 'manual', recursive: true, hash: false });
      await eventually(async () => (await core.pool.query(`SELECT 1 FROM filestore.reconciliation_jobs WHERE id = $1 AND status = 'failed'`, [job.id])).rowCount, 'the job refused');
      await healthBecomes(t.mount.id, 'unhealthy', /\.filestore-staging .* is a symbolic link/);

      w = new MountWatcher(idle, await getMount(core.pool, t.mount.id), { backend: 'parcel', catchUp: false, ...FAST, log: (l) => lines.push(l) });
      await w.start();
      expect(await healthOf(t.mount.id)).toMatchObject({ health: 'unhealthy', reason: expect.stringMatching(/\.filestore-staging .* is a symbolic link/) });

      await rename(root, away);
      await healthBecomes(t.mount.id, 'unhealthy', /does not exist/);
      await rename(away, root);
      await eventually(async () => (await w!.stats()).rootProblem === null && lines.some((l) => /is back/.test(l)), 'watched again');
      expect(await healthOf(t.mount.id)).toMatchObject({ health: 'unhealthy', reason: expect.stringMatching(/\.filestore-staging .* is a symbolic link/) });
    } finally {
      await w?.close();
      await rename(away, root).catch(() => {});
      await t.cleanup();
      await rm(outside, { recursive: true, force: true });
    }
  });
});

describe('a root back that cannot be watched yet', () => {
  it('is rescanned at once anyway, and watched at a later try', async () => {
    let failStarts = false;
    const factory: WatchBackendFactory = (kind, root, h) => {
      const backend = createWatchBackend(kind, root, h);
      if (!failStarts) return backend;
      return { ...backend, kind: backend.kind, start: () => Promise.reject(new Error('inotify_add_watch failed: No space left on device')), close: () => backend.close(), watchCount: () => backend.watchCount() };
    };
    const m = await watchedMount(idle, 'parcel', { ...FAST, backendFactory: factory });
    const away = `${m.root}.away`;
    try {
      await rename(m.root, away);
      await healthBecomes(m.mountId, 'unhealthy', /does not exist/);
      failStarts = true;
      await rename(away, m.root);
      await eventually(async () => /could not be watched/.test((await m.watcher.stats()).rootProblem ?? ''), 'not watchable yet');
      await eventually(async () => (await auditsOf(m.mountId)).length > 0, 'the rescan requested while not watched');
      failStarts = false;
      await eventually(async () => (await m.watcher.stats()).rootProblem === null, 'watched at a later try');
      await settle(idle, m);
    } finally {
      await m.close();
      await rm(away, { recursive: true, force: true });
    }
  });
});

describe('a watcher closed while it starts', () => {
  it('requests no catch-up rescan and leaves nothing watching', async () => {
    const t = await createTestMount(idle, 'local');
    const w = new MountWatcher(idle, t.mount, { backend: 'parcel', catchUp: true, ...FAST });
    try {
      const started = w.start();
      await w.close();
      await expect(started).rejects.toMatchObject({ message: expect.stringMatching(/closed while it started/) });
      expect((await w.stats()).backend).toBeNull();
      expect(await auditsOf(t.mount.id)).toEqual([]);
    } finally {
      await w.close();
      await t.cleanup();
    }
  });
});
