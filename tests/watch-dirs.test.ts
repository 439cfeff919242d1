import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DirsBackend } from '../agent/watch/backends/index.ts';
import type { WatchEvent, WatchProblem } from '../agent/watch/types.ts';
import { STAGING_DIR } from '../shared/index-paths.ts';
import type { Filestore } from '../shared/runtime.ts';
import { eventually, nodeAt, startWatchFilestore, watchedMount } from './support/watch-harness.ts';

/**
 * The 'dirs' backend (issue 17): one non-recursive fs.watch per directory, no per-file state.
 * A directory that appears already holding files and subdirectories is watched whole at once
 * and everything in it is reported, so all of it is catalogued.
 */

describe('the dirs backend on its own', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'filestore-dirs-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('watches every directory (not symlinks, not the staging area), reports a tree that appears whole, lets go of a removed one quietly, and is silent after close', async () => {
    const root = path.join(dir, 'root');
    await mkdir(path.join(root, 'x', 'y'), { recursive: true });
    await mkdir(path.join(root, STAGING_DIR, 'tmp'), { recursive: true });
    await writeFile(path.join(root, 'x', 'f.txt'), 'f');
    await mkdir(path.join(dir, 'outside'));
    await symlink(path.join(dir, 'outside'), path.join(root, 'link'));
    const events: WatchEvent[] = [];
    const problems: WatchProblem[] = [];
    const backend = new DirsBackend(root, { onEvents: (e) => events.push(...e), onProblem: (p) => problems.push(p) });
    const before = (await backend.watchCount()) ?? 0;
    await backend.start();
    try {
      // root, x, x/y: neither the symlink's target nor the staging area.
      expect(await backend.watchCount()).toBe(before + 3);

      // A tree made in one go (mkdir -p, files written at once): every entry reported.
      execFileSync('sh', ['-c', 'mkdir -p a/b/c && echo 1 > a/x && echo 2 > a/b/y && echo 3 > a/b/c/z'], { cwd: root });
      const want = ['a', 'a/x', 'a/b', 'a/b/y', 'a/b/c', 'a/b/c/z'];
      await eventually(async () => want.every((p) => events.some((e) => e.path === p)), 'every entry of the new tree reported');
      await eventually(async () => (await backend.watchCount()) === before + 6, 'a, a/b, a/b/c watched');

      // Files in the new tree's deepest directory are reported from its own watch.
      await writeFile(path.join(root, 'a', 'b', 'c', 'later.txt'), 'later');
      await eventually(async () => events.some((e) => e.path === 'a/b/c/later.txt'), 'a file in the new subdirectory reported');

      // Writes in the staging area and through the symlink are never reported.
      await writeFile(path.join(root, STAGING_DIR, 'tmp', 'part'), 'p');
      await writeFile(path.join(dir, 'outside', 'o.txt'), 'o');
      await writeFile(path.join(root, 'sentinel'), 's');
      await eventually(async () => events.some((e) => e.path === 'sentinel'), 'sentinel reported');
      expect(events.filter((e) => e.path.startsWith(STAGING_DIR) || e.path.startsWith('link/'))).toEqual([]);

      // Removed: its watchers are closed, the removal reported, no problem.
      await rm(path.join(root, 'a'), { recursive: true });
      await eventually(async () => (await backend.watchCount()) === before + 3, 'the removed tree let go of');
      await eventually(async () => events.some((e) => e.path === 'a' && e.type === 'delete'), 'a reported deleted');
      // Renamed away and back in under another name: watched again, its entries reported.
      await rename(path.join(root, 'x'), path.join(dir, 'x-away'));
      await eventually(async () => (await backend.watchCount()) === before + 1, 'x let go of');
      events.length = 0;
      await rename(path.join(dir, 'x-away'), path.join(root, 'x2'));
      await eventually(async () => ['x2', 'x2/f.txt', 'x2/y'].every((p) => events.some((e) => e.path === p && e.type === 'create')), 'x2 and its entries reported');
      expect(await backend.watchCount()).toBe(before + 3);
      expect(problems).toEqual([]);
    } finally {
      await backend.close();
    }
    expect(await backend.watchCount()).toBe(before);
    const seen = events.length;
    await writeFile(path.join(root, 'after-close'), 'x');
    await mkdir(path.join(root, 'dir-after-close'));
    await new Promise((r) => setTimeout(r, 200));
    expect(events.length).toBe(seen);
  });
});

describe('a directory that appears already holding files and subdirectories (dirs)', () => {
  let core: Filestore;
  beforeAll(async () => {
    core = await startWatchFilestore();
  });
  afterAll(async () => {
    await core?.close();
  });

  it('made in one go (mkdir -p a/b && write a/x a/b/y): every file is catalogued', async () => {
    const m = await watchedMount(core, 'dirs');
    try {
      execFileSync('sh', ['-c', 'mkdir -p a/b/c && echo x > a/x && echo y > a/b/y && echo z > a/b/c/z'], { cwd: m.root });
      for (const p of ['a/x', 'a/b/y', 'a/b/c/z']) {
        await eventually(async () => (await nodeAt(core, m.mountId, p))?.consistencyState === 'ACTIVE', `${p} catalogued`);
      }
    } finally {
      await m.close();
    }
  });

  it('a tree moved in: every file is catalogued, and files written into its subdirectories afterwards too', async () => {
    const m = await watchedMount(core, 'dirs');
    const staging = await mkdtemp(path.join(path.dirname(m.root), 'tree-'));
    try {
      await mkdir(path.join(staging, 't', 'u', 'v'), { recursive: true });
      await writeFile(path.join(staging, 't', 'one'), '1');
      await writeFile(path.join(staging, 't', 'u', 'two'), '22');
      await writeFile(path.join(staging, 't', 'u', 'v', 'three'), '333');
      await rename(path.join(staging, 't'), m.abs('moved'));
      for (const p of ['moved/one', 'moved/u/two', 'moved/u/v/three']) {
        await eventually(async () => (await nodeAt(core, m.mountId, p))?.consistencyState === 'ACTIVE', `${p} catalogued`);
      }
      await writeFile(m.abs('moved/u/v/four'), '4444');
      const node = await eventually(async () => {
        const n = await nodeAt(core, m.mountId, 'moved/u/v/four');
        return n?.consistencyState === 'ACTIVE' ? n : null;
      }, 'moved/u/v/four catalogued');
      expect(node).toMatchObject({ kind: 'file', sizeBytes: 4 });
    } finally {
      await rm(staging, { recursive: true, force: true });
      await m.close();
    }
  });
});
