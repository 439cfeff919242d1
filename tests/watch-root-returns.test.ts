import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWatchBackend, DriftSink, MountWatcher, type WatchBackendFactory } from '../agent/watch/index.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, startFilestore } from './support/filestore.ts';
import { eventually, nodeAt, outbox, startWatchFilestore, watchedMount, watcherDrift, type WatchedMount } from './support/watch-harness.ts';

// A mount root that goes away while its watcher runs (rm -rf, renamed away, replaced) and
// comes back: the watcher must watch the new root, rescan the mount and say the mount is
// healthy again by itself; while the root is gone it judges nothing (no storm of deletions,
// nothing MISSING), and a root replaced by a symlink or a file stays unhealthy and is not
// followed.

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

// Fast root checks for tests (the default is 2 s, with a 30 s rescan cooldown).
const FAST = { rootCheckMs: 100, rescanCooldownMs: 200 };

interface Health {
  health: string;
  reason: string | null;
  checkedAt: Date | null;
}
const healthOf = async (mountId: string): Promise<Health> => {
  const { rows } = await core.pool.query<Health>(
    `SELECT health, health_reason AS reason, health_checked_at AS "checkedAt" FROM filestore.mounts WHERE id = $1`,
    [mountId],
  );
  return rows[0] as Health;
};
const healthBecomes = (mountId: string, health: string, reason?: RegExp) =>
  eventually(async () => {
    const h = await healthOf(mountId);
    return h.health === health && (reason === undefined || reason.test(h.reason ?? '')) ? h : null;
  }, `the mount ${health}${reason ? ` (${String(reason)})` : ''}`);

const jobsOf = async (mountId: string) => {
  const { rows } = await core.pool.query<{ id: number; path: string; reason: string; status: string; error: unknown }>(
    `SELECT id, path, reason, status, error FROM filestore.reconciliation_jobs WHERE mount_id = $1 ORDER BY id`,
    [mountId],
  );
  return rows;
};

const activeWith = (m: WatchedMount, p: string, size: number) =>
  eventually(async () => {
    const n = await nodeAt(core, m.mountId, p);
    return n?.consistencyState === 'ACTIVE' && n.sizeBytes === size ? n : null;
  }, `${p} ACTIVE with ${size} bytes`);
const missing = (m: WatchedMount, p: string) =>
  eventually(async () => ((await nodeAt(core, m.mountId, p))?.consistencyState === 'MISSING' ? true : null), `${p} MISSING`);

/** The full rescan of the root's return has run, and nothing else is queued or running. */
const rescanned = (m: WatchedMount) =>
  eventually(async () => {
    const jobs = await jobsOf(m.mountId);
    const done = jobs.some((j) => j.path === '' && j.reason === 'audit' && j.status === 'succeeded');
    return done && jobs.every((j) => j.status !== 'queued' && j.status !== 'running');
  }, 'the rescan of the root back');

/**
 * A file made and then deleted directly in the root are each reconciled: the top level is
 * watched. After the rescan, so that only the watcher can have seen them.
 */
async function topLevelWatched(m: WatchedMount, tag: string): Promise<void> {
  await rescanned(m);
  await writeFile(m.abs(`${tag}-new.txt`), 'new!');
  await activeWith(m, `${tag}-new.txt`, 4);
  await unlink(m.abs(`${tag}-new.txt`));
  await missing(m, `${tag}-new.txt`);
}

describe.each(['chokidar', 'parcel', 'dirs'] as const)('a mount root that goes away and comes back (%s)', { timeout: 60_000 }, (backend) => {
  it('removed (rm -rf) and made again: files made and deleted in the root are noticed, the mount is rescanned and healthy again', async () => {
    const lines: string[] = [];
    const m = await watchedMount(core, backend, { ...FAST, log: (l: string) => lines.push(l) });
    try {
      await m.writeThrough('before.txt', 'before');
      await rm(m.root, { recursive: true, force: true });
      await healthBecomes(m.mountId, 'unhealthy', /does not exist/);
      await mkdir(m.root);
      await healthBecomes(m.mountId, 'healthy');
      await topLevelWatched(m, 'back');
      // The rescan on its return found what went with the old root.
      await missing(m, 'before.txt');
      expect(lines.filter((l) => /the mount root is gone/.test(l))).toHaveLength(1);
      expect(lines.filter((l) => /the mount root .* is back/.test(l))).toHaveLength(1);
    } finally {
      await m.close();
    }
  });

  it('renamed away and a new directory made in its place: the new root is watched, the old one no longer reports', async () => {
    const m = await watchedMount(core, backend, FAST);
    const away = `${m.root}.away`;
    try {
      await rename(m.root, away);
      await mkdir(m.root);
      await topLevelWatched(m, 'fresh');
      // A change in the directory renamed away is not a change of the mount.
      await writeFile(path.join(away, 'elsewhere.txt'), 'not the mount');
      await writeFile(m.abs('sentinel.txt'), 'sentinel');
      await activeWith(m, 'sentinel.txt', 8);
      expect(await nodeAt(core, m.mountId, 'elsewhere.txt')).toBeNull();
      expect(await watcherDrift(core, m.mountId, 'elsewhere.txt')).toEqual([]);
    } finally {
      await m.close();
      await rm(away, { recursive: true, force: true });
    }
  });

  it('renamed away and back (the same directory): watched again and rescanned', async () => {
    const m = await watchedMount(core, backend, FAST);
    const away = `${m.root}.away`;
    try {
      await rename(m.root, away);
      await healthBecomes(m.mountId, 'unhealthy', /does not exist/);
      // Made while the root was elsewhere: only the rescan on its return can find it.
      await writeFile(path.join(away, 'while-away.txt'), 'away');
      await rename(away, m.root);
      await healthBecomes(m.mountId, 'healthy');
      await activeWith(m, 'while-away.txt', 4);
      await topLevelWatched(m, 'again');
    } finally {
      await m.close();
      await rm(away, { recursive: true, force: true });
    }
  });

  it('while the root is gone nothing is judged: no storm of deletions, nothing INCONSISTENT or MISSING; health comes back without any job', async () => {
    const t = await watchedMount(idle, backend, FAST);
    const away = `${t.root}.away`;
    try {
      for (let i = 0; i < 8; i++) await t.writeThrough(`keep/f${i}.txt`, String(i));
      await t.writeThrough('top.txt', 'top');
      // The root goes away, and its files are deleted there: the old directory's watch still
      // reports their deletion, under the old paths.
      await rename(t.root, away);
      await rm(path.join(away, 'keep'), { recursive: true, force: true });
      await rm(path.join(away, 'top.txt'));
      const gone = await healthBecomes(t.mountId, 'unhealthy', /does not exist/);
      expect((await t.watcher.stats()).rootProblem).toMatch(/does not exist/);
      await new Promise((r) => setTimeout(r, 600)); // a few debounce windows
      expect(await watcherDrift(core, t.mountId)).toEqual([]);
      const { rows } = await core.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND consistency_state <> 'ACTIVE'`,
        [t.mountId],
      );
      expect(rows[0]?.n).toBe(0);
      expect((await jobsOf(t.mountId)).filter((j) => j.reason === 'drift')).toEqual([]);

      // The root is back (the same directory: another one would be unhealthy until an audit
      // accepts it): the watcher says so and asks for a rescan; no job has run (this
      // Filestore's queue runs none), so the health is the watcher's own look.
      await rename(away, t.root);
      const back = await healthBecomes(t.mountId, 'healthy');
      expect(back.checkedAt?.getTime()).toBeGreaterThan(gone.checkedAt?.getTime() ?? 0);
      await eventually(async () => (await t.watcher.stats()).rootProblem === null, 'the root watched again');
      const jobs = await eventually(async () => {
        const j = await jobsOf(t.mountId);
        return j.some((x) => x.path === '' && x.reason === 'audit') ? j : null;
      }, 'the rescan requested');
      expect(jobs.every((j) => j.status === 'queued')).toBe(true);
    } finally {
      await t.close();
      await rm(away, { recursive: true, force: true });
    }
  });

  it('a root back empty (a disk that did not mount): its rescan stops at the mass-missing rule, nothing is marked MISSING', async () => {
    const m = await watchedMount(core, backend, FAST);
    const away = `${m.root}.away`;
    try {
      for (let i = 0; i < 24; i++) await m.writeThrough(`keep/f${i}.txt`, String(i));
      await rename(m.root, away);
      await healthBecomes(m.mountId, 'unhealthy', /does not exist/);
      await mkdir(m.root);
      const rescan = await eventually(
        async () => (await jobsOf(m.mountId)).find((j) => j.path === '' && j.reason === 'audit' && j.status === 'failed'),
        'the rescan failed',
      );
      expect(JSON.stringify(rescan.error)).toMatch(/MISSING/);
      // Another directory than the one audited, which the audit did not accept: unhealthy, saying why.
      expect(await healthOf(m.mountId)).toMatchObject({ health: 'unhealthy', reason: expect.stringMatching(/another directory .*would mark/) });
      expect((await nodeAt(core, m.mountId, 'keep/f0.txt'))?.consistencyState).toBe('ACTIVE');
      expect(await outbox(core, m.mountId, 'filestore.node.missing')).toEqual([]);
    } finally {
      await m.close();
      await rm(away, { recursive: true, force: true });
    }
  });

  it('a watcher that cannot start because its root is gone marks the mount unhealthy; one that starts marks it healthy', async () => {
    const t = await createTestMount(core, 'local');
    await rm(t.root as string, { recursive: true, force: true });
    const first = new MountWatcher(core, t.mount, { backend, catchUp: false, ...FAST });
    try {
      await expect(first.start()).rejects.toMatchObject({ code: 'STORAGE_ERROR', message: expect.stringMatching(/does not exist/) });
      expect(await healthOf(t.mount.id)).toMatchObject({ health: 'unhealthy', reason: expect.stringMatching(/does not exist/) });
    } finally {
      await first.close();
    }
    await mkdir(t.root as string);
    const second = new MountWatcher(core, { ...t.mount, health: 'unhealthy' }, { backend, catchUp: false, ...FAST });
    try {
      await second.start();
      expect(await healthOf(t.mount.id)).toMatchObject({ health: 'healthy', reason: null });
      expect(await jobsOf(t.mount.id)).toEqual([]);
    } finally {
      await second.close();
      await t.cleanup();
    }
  });

  it('a root replaced by a symlink or a file stays unhealthy with the reason; nothing outside is followed; the real one back is watched', async () => {
    const outside = await mkdtemp(path.join(os.tmpdir(), 'filestore-outside-'));
    const m = await watchedMount(core, backend, FAST);
    const real = `${m.root}.real`;
    try {
      await writeFile(path.join(outside, 'secret.txt'), 'not ours');
      await rename(m.root, real);
      await symlink(outside, m.root);
      await healthBecomes(m.mountId, 'unhealthy', /symbolic link/);
      await writeFile(path.join(outside, 'later.txt'), 'not ours either');
      // Nor does a reconciliation look through it.
      const { job } = await core.reconcile.enqueue({ mountId: m.mountId, path: '', reason: 'manual', recursive: true, hash: false });
      await eventually(async () => (await jobsOf(m.mountId)).find((j) => j.id === job.id && j.status === 'failed'), 'the audit refused');
      expect((await healthOf(m.mountId)).reason).toMatch(/symbolic link/);
      expect(await nodeAt(core, m.mountId, 'secret.txt')).toBeNull();
      expect(await nodeAt(core, m.mountId, 'later.txt')).toBeNull();
      expect(await watcherDrift(core, m.mountId)).toEqual([]);

      await unlink(m.root);
      await writeFile(m.root, 'a file where the root was');
      await healthBecomes(m.mountId, 'unhealthy', /not a directory/);

      await unlink(m.root);
      await rename(real, m.root);
      await healthBecomes(m.mountId, 'healthy');
      await topLevelWatched(m, 'real');
      expect(await nodeAt(core, m.mountId, 'secret.txt')).toBeNull();
    } finally {
      await m.close();
      await rm(outside, { recursive: true, force: true });
      await rm(real, { recursive: true, force: true });
    }
  });
});

describe('a root back that cannot be watched at once', () => {
  it('is healthy (it is a readable directory), says why it is not watched, and is watched at a later try', async () => {
    let starts = 0;
    const factory: WatchBackendFactory = (kind, root, h) => {
      const backend = createWatchBackend(kind, root, h);
      // The second start (the root's return) fails once, as with ENOSPC; the third works.
      if (++starts === 2) return { ...backend, kind: backend.kind, start: () => Promise.reject(new Error('inotify_add_watch failed: No space left on device')), close: () => backend.close(), watchCount: () => backend.watchCount() };
      return backend;
    };
    const lines: string[] = [];
    const m = await watchedMount(core, 'parcel', { ...FAST, backendFactory: factory, log: (l: string) => lines.push(l) });
    const away = `${m.root}.away`;
    try {
      await rename(m.root, away);
      await healthBecomes(m.mountId, 'unhealthy', /does not exist/);
      await rename(away, m.root);
      await healthBecomes(m.mountId, 'healthy');
      await eventually(async () => starts >= 3 && (await m.watcher.stats()).rootProblem === null, 'watched at a later try');
      expect(lines.filter((l) => /is back but could not be watched: .*No space left/.test(l))).toHaveLength(1);
      await topLevelWatched(m, 'later');
    } finally {
      await m.close();
      await rm(away, { recursive: true, force: true });
    }
  });
});

describe('a batch judged while the root goes away', () => {
  it('is dropped unjudged when the root changed during its lstats, instead of reading as every path deleted', async () => {
    const m = await watchedMount(core, 'parcel', FAST);
    const away = `${m.root}.away`;
    try {
      for (const p of ['a.txt', 'b.txt']) await m.writeThrough(p, p);
      const sink = new DriftSink(core, m.t.mount);
      const batch = { changes: new Map([['a.txt', 'changed'], ['b.txt', 'changed']] as const), rescans: [] };
      await m.watcher.close(); // the sink alone, judging while the root is elsewhere
      await rename(m.root, away);
      const held = await sink.apply(batch, { rootUnchanged: async () => false });
      expect(held).toMatchObject({ drift: 0, jobs: 0, dropped: ['a.txt', 'b.txt'], deferred: [] });
      // A look that failed (EIO…) hands the chunk back instead, to be judged later.
      expect(await sink.apply(batch, { rootUnchanged: async () => null })).toMatchObject({ drift: 0, jobs: 0, deferred: ['a.txt', 'b.txt'], dropped: [] });
      expect(await watcherDrift(core, m.mountId)).toEqual([]);
      // Without the question, both would be drift (as they were before it was asked).
      const judged = await sink.apply(batch, {});
      expect(judged.drift).toBe(2);
    } finally {
      await rename(away, m.root).catch(() => {});
      await m.close();
    }
  });
});

describe('a disk unmounted from under its mount and mounted again', () => {
  /** `src` bind-mounted on `on` (skipped where this process may not mount). */
  function bind(src: string, on: string, ctx: { skip: () => void }): void {
    try {
      execFileSync('mount', ['--bind', src, on], { stdio: 'ignore' });
    } catch {
      ctx.skip(); // not root, or no mount(8) here: the test says so by being skipped
    }
  }

  it.for(['chokidar', 'parcel', 'dirs'] as const)(
    '%s: the empty mount point is not taken for deletions (mass-missing rule), and the disk back is confirmed and watched',
    async (backend, ctx) => {
      const disk = await mkdtemp(path.join(os.tmpdir(), 'filestore-disk-'));
      const m = await watchedMount(core, backend, FAST);
      let mounted = false;
      try {
        bind(disk, m.root, ctx);
        mounted = true;
        await healthBecomes(m.mountId, 'healthy'); // a new directory at the root: watched anew
        for (let i = 0; i < 24; i++) await m.writeThrough(`data/f${i}.txt`, String(i));
        await rescanned(m);

        execFileSync('umount', [m.root]);
        mounted = false;
        // What is left is the empty mount point: another directory, so rescanned — and that audit
        // stops at the mass-missing rule.
        const stopped = await eventually(
          async () => (await jobsOf(m.mountId)).find((j) => j.reason === 'audit' && j.status === 'failed'),
          'the rescan of the empty mount point stopped',
        );
        expect(JSON.stringify(stopped.error)).toMatch(/MISSING/);
        expect((await nodeAt(core, m.mountId, 'data/f0.txt'))?.consistencyState).toBe('ACTIVE');
        expect(await outbox(core, m.mountId, 'filestore.node.missing')).toEqual([]);

        bind(disk, m.root, ctx);
        mounted = true;
        await eventually(async () => (await jobsOf(m.mountId)).filter((j) => j.reason === 'audit' && j.status === 'succeeded').length >= 2, 'the disk rescanned');
        expect((await nodeAt(core, m.mountId, 'data/f23.txt'))?.consistencyState).toBe('ACTIVE');
        await topLevelWatched(m, 'remounted');
      } finally {
        if (mounted) execFileSync('umount', [m.root]);
        await m.close();
        await rm(disk, { recursive: true, force: true });
      }
    },
  );
});
