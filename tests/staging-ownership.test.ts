/**
 * The staging area belongs to journal entries (hardening findings 1 and 4): a process sweeping
 * a mount's staging never removes what a running command staged, a copy verifies what it
 * copied before anything records it, and a staging directory swapped for a symlink is neither
 * written nor cleaned through.
 */
import { mkdir, mkdtemp, readdir, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LocalExecutor } from '../shared/backends/local/local-executor.ts';
import { getMount } from '../shared/catalogue/mounts.ts';
import { lockEntry, unlockEntry } from '../shared/catalogue/locks.ts';
import { sweepStaging } from '../shared/orchestrator/staging-sweep.ts';
import { STAGING_DIR } from '../shared/paths.ts';
import type { Filestore } from '../shared/runtime.ts';
import { bodyOf, expectCode } from './conformance/backend-suite.ts';
import { createTestMount, startFilestore, type TestMount } from './support/filestore.ts';

const HEX = 'abcdef0123456789';

async function tree(root: string, files: number): Promise<void> {
  for (let i = 0; i < files; i++) {
    const dir = path.join(root, `d${i % 5}`);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, `f${i}.txt`), `file ${i}\n`.repeat(i % 7 + 1));
  }
}

const names = (dir: string) => readdir(dir).then((n) => n.sort(), () => [] as string[]);

describe('staging entries belong to journal entries', () => {
  let core: Filestore;
  let t: TestMount;
  let root: string;
  const logs: string[] = [];

  beforeAll(async () => {
    core = await startFilestore({ redisUrl: 'inline', recover: false });
  });
  afterAll(async () => {
    await core.close();
  });
  beforeEach(async () => {
    t = await createTestMount(core, 'local');
    root = t.root as string;
    logs.length = 0;
  });
  afterEach(async () => {
    await t.cleanup();
  });

  it("a sweep keeps what a running command staged, however old, and removes only finished commands' leftovers", async () => {
    await tree(path.join(root, 'src'), 20);
    // A copy that is running: its entry is pending and its process holds the entry lock.
    const running = await core.orchestrator.mkdir(t.mount.id, { path: 'other' });
    const { rows } = await core.pool.query<{ id: string }>(
      `INSERT INTO filestore.journal_entries (mount_id, command, status, request)
       VALUES ($1, 'copy', 'pending', '{"path":"src","targetPath":"copy","overwrite":false}'::jsonb) RETURNING id`,
      [t.mount.id],
    );
    const live = Number(rows[0]?.id);
    const owner = await core.pool.connect();
    await lockEntry(owner, live);
    try {
      const staging = path.join(root, STAGING_DIR);
      await mkdir(path.join(staging, `copy.j${live}.${HEX}`, 'half'), { recursive: true });
      await writeFile(path.join(staging, `copy.j${live}.${HEX}`, 'half', 'a.txt'), 'a');
      await writeFile(path.join(staging, `j${live}-${HEX}.tmp`), 'bytes');
      // Leftovers of a finished command, and something no journal entry names.
      await mkdir(path.join(staging, `trash.j${running.journalEntryId}.${HEX}`, 'old'), { recursive: true });
      await mkdir(path.join(staging, `copy.${HEX}`));
      // Everything looks a day old: age proves nothing about ownership.
      const dayAgo = new Date(Date.now() - 86_400_000);
      for (const n of await names(staging)) await utimes(path.join(staging, n), dayAgo, dayAgo);

      await sweepStaging(core.pool, await getMount(core.pool, t.mount.id), (l) => logs.push(l));

      expect(await names(staging)).toEqual([`copy.${HEX}`, `copy.j${live}.${HEX}`, `j${live}-${HEX}.tmp`]);
      expect(await names(path.join(staging, `copy.j${live}.${HEX}`, 'half'))).toEqual(['a.txt']);
      expect(logs.join('\n')).toMatch(/removed 1 leftover/);
      expect(logs.join('\n')).toMatch(/kept 2 staging entr\(ies\) of commands still pending/);
      expect(logs.join('\n')).toMatch(new RegExp(`no journal entry names \\(copy\\.${HEX}\\)`));
    } finally {
      await unlockEntry(owner, live).catch(() => {});
      owner.release();
    }
  });

  it('recovery removes everything a dead command staged: its temp files, half-built copies and set-aside entries', async () => {
    const { rows } = await core.pool.query<{ id: string }>(
      `INSERT INTO filestore.journal_entries (mount_id, command, status, request)
       VALUES ($1, 'copy', 'pending', '{"path":"src","targetPath":"dst","overwrite":false}'::jsonb) RETURNING id`,
      [t.mount.id],
    );
    const dead = Number(rows[0]?.id);
    const staging = path.join(root, STAGING_DIR);
    await mkdir(path.join(staging, `copy.j${dead}.${HEX}`, 'x'), { recursive: true });
    await mkdir(path.join(staging, `trash.j${dead}.${HEX}`), { recursive: true });
    await writeFile(path.join(staging, `j${dead}-${HEX}.tmp`), 'bytes');
    await writeFile(path.join(staging, `j${dead + 1000}-${HEX}.tmp`), 'another command');

    const counts = await core.orchestrator.recover();

    expect(counts.failed).toBeGreaterThanOrEqual(1);
    const entry = await core.pool.query<{ status: string }>('SELECT status FROM filestore.journal_entries WHERE id = $1', [dead]);
    expect(entry.rows[0]?.status).toBe('failed');
    expect(await names(staging)).toEqual([`j${dead + 1000}-${HEX}.tmp`]);
  });

  it('a copy command catalogues every entry it copied, counted against what it made', async () => {
    await tree(path.join(root, 'src'), 60);
    await core.orchestrator.recover(); // nothing pending of this mount
    // Catalogue the source as a user would have it.
    await core.reconcile.enqueue({ mountId: t.mount.id, path: '', reason: 'manual', recursive: true, hash: false });
    for (let i = 0; i < 100; i++) {
      const n = await core.pool.query('SELECT 1 FROM filestore.nodes WHERE mount_id = $1 AND path = $2 AND deleted_at IS NULL', [t.mount.id, 'src/d4/f59.txt']);
      if (n.rowCount) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const result = await core.orchestrator.copy(t.mount.id, { path: 'src', targetPath: 'dst' });
    expect(result.copiedCount).toBe(66); // dst, 5 directories, 60 files
    expect((await readdir(path.join(root, 'dst'), { recursive: true })).length).toBe(65);
  });
});

describe('LocalExecutor copies verify what they copied', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'filestore-copyverify-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('a staged copy that lost files before it was placed fails with STORAGE_ERROR instead of landing short', async () => {
    await tree(path.join(root, 'src'), 30);
    let disturbed = false;
    const backend = new LocalExecutor({
      rootPath: root,
      fsOps: {
        async rename(from, to) {
          // Another process removes part of the copy while it is still in staging.
          if (!disturbed && from.includes('/copy.j7.')) {
            disturbed = true;
            await rm(path.join(from, 'd3'), { recursive: true });
          }
          const { rename } = await import('node:fs/promises');
          await rename(from, to);
        },
      },
    });
    const err = await backend.copy('src', 'dst', { overwrite: false, stagingId: 'j7' }).then(
      () => null,
      (e: unknown) => e as { code: string; message: string },
    );
    expect(disturbed).toBe(true);
    expect(err?.code).toBe('STORAGE_ERROR');
    expect(err?.message).toMatch(/incomplete/);
    // Asked again (what the orchestrator does when storage shows no complete copy), it completes.
    await backend.copy('src', 'dst', { overwrite: true, stagingId: 'j7' });
    expect((await readdir(path.join(root, 'dst'), { recursive: true })).length).toBe(35);
    expect(await names(path.join(root, STAGING_DIR))).toEqual([]);
  });

  it('a move across filesystems keeps its source when the copy it made is incomplete', async () => {
    await tree(path.join(root, 'src'), 12);
    let first = true;
    const backend = new LocalExecutor({
      rootPath: root,
      fsOps: {
        async rename(from, to) {
          const { rename } = await import('node:fs/promises');
          if (from.endsWith('/src') && to.endsWith('/dst')) throw Object.assign(new Error('EXDEV'), { code: 'EXDEV' });
          if (first && path.basename(from).includes('filestore-tmp-')) {
            first = false;
            await rm(path.join(from, 'd1'), { recursive: true });
          }
          await rename(from, to);
        },
      },
    });
    await expectCode(backend.move('src', 'dst', { overwrite: false, stagingId: 'j8' }), 'STORAGE_ERROR');
    expect((await readdir(path.join(root, 'src'), { recursive: true })).length).toBe(17);
  });
});

describe('a staging directory that is a symlink', () => {
  let root: string;
  let outside: string;
  let backend: LocalExecutor;
  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'filestore-stagelink-'));
    outside = await mkdtemp(path.join(os.tmpdir(), 'filestore-outside-'));
    await mkdir(path.join(outside, `copy.j1.${HEX}`));
    await writeFile(path.join(outside, `copy.j1.${HEX}`, 'precious.txt'), 'not yours');
    await mkdir(path.join(outside, `trash.${HEX}`));
    await writeFile(path.join(outside, `j1-${HEX}.tmp`), 'not yours either');
    await symlink(outside, path.join(root, STAGING_DIR));
    backend = new LocalExecutor({ rootPath: root });
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  });

  const outsideNames = () => names(outside);
  const untouched = [`copy.j1.${HEX}`, `j1-${HEX}.tmp`, `trash.${HEX}`];

  it('is neither cleaned by the sweep nor by recovery, and the refusal names the staging directory', async () => {
    const sweep = backend.discardLeftovers(async (ids) => new Set(ids));
    await expect(sweep).rejects.toMatchObject({ code: 'SYMLINK_IN_PATH', message: expect.stringContaining(STAGING_DIR) });
    await expectCode(backend.discardStaging('j1'), 'SYMLINK_IN_PATH');
    expect(await outsideNames()).toEqual(untouched);
  });

  it('receives no staging file from a write, not even for a moment', async () => {
    const past = new Date('2020-01-01T00:00:00Z');
    await utimes(outside, past, past);
    await expectCode(backend.writeFile('a.txt', bodyOf('hello'), { stagingId: 'j2' }), 'SYMLINK_IN_PATH');
    // Creating and removing a file there would have moved the directory's mtime.
    expect((await stat(outside)).mtime.toISOString()).toBe(past.toISOString());
    expect(await outsideNames()).toEqual(untouched);
    expect(await names(root)).toEqual([STAGING_DIR]);
  });

  it('is used for no copy, move over a directory or recursive delete', async () => {
    await mkdir(path.join(root, 'a', 'b'), { recursive: true });
    await writeFile(path.join(root, 'a', 'b', 'c.txt'), 'c');
    await mkdir(path.join(root, 'z'));
    await expectCode(backend.copy('a', 'a2', { overwrite: false, stagingId: 'j3' }), 'SYMLINK_IN_PATH');
    await expectCode(backend.move('a', 'z', { overwrite: true, stagingId: 'j4' }), 'SYMLINK_IN_PATH');
    await expectCode(backend.delete('a', { recursive: true, stagingId: 'j5' }), 'SYMLINK_IN_PATH');
    expect(await names(root)).toEqual([STAGING_DIR, 'a', 'z']);
    expect(await names(path.join(root, 'a', 'b'))).toEqual(['c.txt']);
    expect(await outsideNames()).toEqual(untouched);
  });

  it('makes the mount unhealthy with the reason when its agent sweeps staging at start, and so does an audit', async () => {
    const core = await startFilestore({ redisUrl: 'inline', recover: false });
    try {
      const { createMount } = await import('../shared/catalogue/mounts.ts');
      const { uniqueKey } = await import('./support/filestore.ts');
      const mount = await createMount(core.pool, { key: uniqueKey('stagelink'), kind: 'local', rootPath: root });
      const logs: string[] = [];
      await sweepStaging(core.pool, mount, (l) => logs.push(l));
      const after = await getMount(core.pool, mount.id);
      expect(after.health).toBe('unhealthy');
      expect(after.healthReason).toContain(STAGING_DIR);
      expect(logs.join('\n')).toContain('symbolic link');

      const { job } = await core.reconcile.enqueue({ mountId: mount.id, path: '', reason: 'manual', recursive: true, hash: false });
      let status = '';
      for (let i = 0; i < 100 && status !== 'failed' && status !== 'succeeded'; i++) {
        await new Promise((r) => setTimeout(r, 100));
        const row = await core.pool.query<{ status: string }>('SELECT status FROM filestore.reconciliation_jobs WHERE id = $1', [job.id]);
        status = row.rows[0]?.status ?? '';
      }
      expect(status).toBe('failed');
      const audited = await getMount(core.pool, mount.id);
      expect(audited.health).toBe('unhealthy');
      expect(audited.healthReason).toContain(STAGING_DIR);
      expect(await outsideNames()).toEqual(untouched);
    } finally {
      await core.close();
    }
  });
});
