import { mkdir, mkdtemp, rename, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EntryStat } from '../shared/backends/types.ts';
import { symlinkedRootNote } from '../shared/backends/local/root-check.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { findLiveByPath } from '../shared/catalogue/nodes.ts';
import { createReconciler, type ReconcilerOptions } from '../shared/reconcile/reconciler.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, startFilestore, uniqueKey, type TestMount } from './support/filestore.ts';

// A local mount's root can be a readable directory and still not be the mount: the empty
// mount point left where a disk was unmounted (or a directory made anew) reads as every file
// deleted. Reconciliation compares the root's device:inode with the one the catalogue was
// audited against: directory jobs refuse another root, a full audit accepts it only when it
// completes (under the mass-missing rule), and a root replaced while a job runs makes that
// job refuse before anything is marked MISSING.

let core: Filestore;
beforeAll(async () => {
  core = await startFilestore();
});
afterAll(() => core.close());

async function run(mountId: string, p: string, options: Record<string, unknown> = { recursive: true }, o: ReconcilerOptions = {}) {
  const { rows } = await core.pool.query(
    `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status) VALUES ($1, $2, 'manual', $3, 'running')
     RETURNING id, mount_id AS "mountId", path, reason, options, status, attempts, coalesced, result, checkpoint, error,
               created_at AS "createdAt", started_at AS "startedAt", finished_at AS "finishedAt", updated_at AS "updatedAt"`,
    [mountId, p, JSON.stringify(options)],
  );
  return createReconciler(core, o)(rows[0], async () => {});
}
const put = (mountId: string, p: string, bytes: string) => core.orchestrator.writeFile(mountId, { path: p }, Readable.from([Buffer.from(bytes)]));
const stateOf = async (mountId: string, p: string) => (await findLiveByPath(core.pool, mountId, p))?.consistencyState ?? null;
const healthOf = async (mountId: string) =>
  (await core.pool.query<{ health: string; reason: string | null }>('SELECT health, health_reason AS reason FROM filestore.mounts WHERE id = $1', [mountId])).rows[0];
const missingCount = async (mountId: string) =>
  (await core.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND consistency_state = 'MISSING'`, [mountId])).rows[0]?.n;

/** A mount with `keep/f0..f{n-1}.txt` written through Filestore and audited (its root recorded). */
async function auditedMount(n: number): Promise<TestMount & { id: string; root: string }> {
  const t = await createTestMount(core, 'local');
  for (let i = 0; i < n; i++) await put(t.mount.id, `keep/f${i}.txt`, String(i));
  await run(t.mount.id, '');
  return { ...t, id: t.mount.id, root: t.root as string };
}

describe('a local root that is another directory than the one audited', () => {
  it('a directory job run after the root was swapped for an empty directory marks nothing MISSING; with the disk back it runs', async () => {
    const t = await auditedMount(5);
    const away = `${t.root}.disk`;
    try {
      // The disk goes (unmounted from under its mount point): an empty directory is left.
      await rename(t.root, away);
      await mkdir(t.root);
      const err = await run(t.id, 'keep').then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ name: 'RootReplacedError', retryable: true, message: expect.stringMatching(/another directory.*nothing was marked MISSING/s) });
      expect(await missingCount(t.id)).toBe(0);
      expect(await stateOf(t.id, 'keep/f0.txt')).toBe('ACTIVE');
      expect(await healthOf(t.id)).toMatchObject({ health: 'unhealthy', reason: expect.stringMatching(/another directory than the one the catalogue was audited against/) });

      // The disk is back: the same directory, so the job runs (and finds the file removed meanwhile).
      await rm(t.root, { recursive: true });
      await rename(away, t.root);
      await unlink(path.join(t.root, 'keep', 'f4.txt'));
      await expect(run(t.id, 'keep')).resolves.toMatchObject({ missing: 1 });
      expect(await stateOf(t.id, 'keep/f0.txt')).toBe('ACTIVE');
      expect((await healthOf(t.id))?.health).toBe('healthy');
    } finally {
      await rm(away, { recursive: true, force: true });
      await t.cleanup();
    }
  });

  it('a root replaced while a directory job walks it: the job refuses before marking anything MISSING', async () => {
    const t = await auditedMount(5);
    const away = `${t.root}.disk`;
    // The walk begins only once the root is swapped: the run began with the real root, and its
    // listing and second look see the empty one.
    const swapFirst = (walk: AsyncIterable<EntryStat>) =>
      (async function* () {
        await rename(t.root, away);
        await mkdir(t.root);
        yield* walk;
      })();
    try {
      await expect(run(t.id, 'keep', { recursive: true }, { wrapWalk: swapFirst })).rejects.toMatchObject({
        name: 'RootReplacedError',
        message: expect.stringMatching(/replaced by another directory while it was reconciled/),
      });
      expect(await missingCount(t.id)).toBe(0);
      expect((await healthOf(t.id))?.health).toBe('unhealthy');
    } finally {
      await rm(away, { recursive: true, force: true });
      await t.cleanup();
    }
  });

  it('an audit accepts a root made anew once it completes; one of an empty mount point stops at the mass-missing rule and leaves the mount unhealthy', async () => {
    const t = await auditedMount(24);
    const away = `${t.root}.disk`;
    try {
      // An empty directory where 24 files were: the audit stops, the mount says why.
      await rename(t.root, away);
      await mkdir(t.root);
      await expect(run(t.id, '')).rejects.toMatchObject({ name: 'MassMissingError' });
      expect(await missingCount(t.id)).toBe(0);
      expect(await healthOf(t.id)).toMatchObject({ health: 'unhealthy', reason: expect.stringMatching(/another directory.*would mark 25 of 25 nodes MISSING/s) });
      await expect(run(t.id, 'keep')).rejects.toMatchObject({ name: 'RootReplacedError' });

      // The same files restored into a new directory (a new disk, a restore): accepted by the audit.
      await rm(t.root, { recursive: true });
      await rename(away, `${t.root}.old`);
      await mkdir(path.join(t.root, 'keep'), { recursive: true });
      for (let i = 0; i < 23; i++) await writeFile(path.join(t.root, 'keep', `f${i}.txt`), String(i));
      await expect(run(t.id, '')).resolves.toMatchObject({ missing: 1 });
      expect((await healthOf(t.id))?.health).toBe('healthy');
      // From now on it is the mount's root: directory jobs run.
      await writeFile(path.join(t.root, 'keep', 'late.txt'), 'late');
      await expect(run(t.id, 'keep', { recursive: false })).resolves.toMatchObject({ discovered: 1 });
    } finally {
      await rm(`${t.root}.old`, { recursive: true, force: true });
      await rm(away, { recursive: true, force: true });
      await t.cleanup();
    }
  });
});

describe('a root path that goes through a symbolic link', () => {
  it('is resolved once per process: re-pointed, reconciliation still works in the first target (and the agent says so at start)', async () => {
    const base = await mkdtemp(path.join(os.tmpdir(), 'filestore-releases-'));
    const current = path.join(base, 'current');
    try {
      await mkdir(path.join(base, 'v1'));
      await mkdir(path.join(base, 'v2'));
      await writeFile(path.join(base, 'v1', 'one.txt'), 'v1');
      await writeFile(path.join(base, 'v2', 'one.txt'), 'v2');
      await writeFile(path.join(base, 'v2', 'two.txt'), 'v2');
      await symlink('v1', current);
      const mount = await createMount(core.pool, { key: uniqueKey('sym'), kind: 'local', rootPath: current });
      expect(symlinkedRootNote(current)).toMatch(/goes through a symbolic link: this process uses .*v1 until it restarts/);
      await run(mount.id, '');
      expect(await stateOf(mount.id, 'one.txt')).toBe('ACTIVE');

      // A deploy flips the link: this process keeps to v1 — its walk, its second look before
      // MISSING and the commands alike (not the walk in one and the second look in the other).
      await unlink(current);
      await symlink('v2', current);
      await expect(run(mount.id, '', { recursive: false })).resolves.toMatchObject({ missing: 0, discovered: 0 });
      await unlink(path.join(base, 'v1', 'one.txt'));
      await expect(run(mount.id, '')).resolves.toMatchObject({ missing: 1, discovered: 0 });
      expect(await stateOf(mount.id, 'one.txt')).toBe('MISSING');
      expect(await stateOf(mount.id, 'two.txt')).toBeNull();
      await put(mount.id, 'three.txt', 'written through');
      expect(await stat(path.join(base, 'v1', 'three.txt'))).toBeTruthy();
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});
