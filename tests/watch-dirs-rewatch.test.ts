import { mkdirSync, renameSync, rmdirSync, statSync, symlinkSync, watch } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DirsBackend } from '../agent/watch/backends/index.ts';
import type { WatchFunction } from '../agent/watch/backends/dirs.ts';
import type { WatchBackendFactory, WatchEvent, WatchProblem } from '../agent/watch/types.ts';
import type { PromMetrics } from '../shared/metrics/prom.ts';
import type { Filestore } from '../shared/runtime.ts';
import { eventually, nodeAt, settle, startWatchFilestore, watchedMount } from './support/watch-harness.ts';

/**
 * The 'dirs' backend keeps watching what it should: a directory removed and made again under
 * the same name (with the same inode number, as ext4 gives it at once) is watched anew; one
 * whose watch failed for want of inotify watches is tried again until it is watched; and an
 * entry swapped for a symlink just as its watch is opened is not watched through the symlink.
 */

const enospc = () => Object.assign(new Error('ENOSPC: System limit for number of file watchers reached'), { code: 'ENOSPC' });

const overflows = async (core: Filestore, mountKey: string): Promise<number> =>
  (await (core.metrics as PromMetrics).watcherEvents.get()).values.find((v) => v.labels.mount === mountKey && v.labels.event === 'overflow')?.value ?? 0;

describe('the dirs backend watches directories anew (Filestore)', () => {
  let core: Filestore;
  beforeAll(async () => {
    core = await startWatchFilestore();
  });
  afterAll(async () => {
    await core?.close();
  });

  it('a watched directory removed and made again at once, with the same inode number: a file written into it afterwards is catalogued', async () => {
    const m = await watchedMount(core, 'dirs');
    try {
      mkdirSync(m.abs('d'));
      await eventually(async () => (await nodeAt(core, m.mountId, 'd'))?.consistencyState === 'ACTIVE', 'd catalogued');
      await settle(core, m);

      // Removed and made again back to back until it gets the inode number of the one watched
      // (ext4: at once, unless another process took that number first; then the watcher is let
      // catch up with the new directory, and it is tried again).
      let tries = 0;
      let same = false;
      while (!same && tries < 20) {
        tries++;
        const ino = statSync(m.abs('d')).ino;
        rmdirSync(m.abs('d'));
        mkdirSync(m.abs('d'));
        same = statSync(m.abs('d')).ino === ino;
        await settle(core, m);
      }
      expect(same, `d made again ${tries} times without getting the watched one's inode number back: this filesystem does not reuse them at once`).toBe(true);

      await m.writeOutOfBand('d/f', 'written after d was made again');
      const node = await eventually(async () => {
        const n = await nodeAt(core, m.mountId, 'd/f');
        return n?.consistencyState === 'ACTIVE' ? n : null;
      }, `d/f catalogued (d made again ${tries} times)`);
      expect(node).toMatchObject({ kind: 'file', sizeBytes: 'written after d was made again'.length });
    } finally {
      await m.close();
    }
  }, 60_000);

  it('a directory whose watch failed with ENOSPC is tried again until it is watched: one overflow, one rescan, what it holds and what is written into it later catalogued', async () => {
    let failures = 0;
    let sub = '';
    // The real watch, except that `sub`'s first 3 watches fail as when the inotify budget is spent.
    const watchFn: WatchFunction = (filename, options, listener) => {
      if (filename === sub && failures < 3) {
        failures++;
        throw enospc();
      }
      return watch(filename, options, listener);
    };
    const factory: WatchBackendFactory = (kind, root, handlers) => {
      expect(kind).toBe('dirs');
      sub = path.join(root, 'sub');
      return new DirsBackend(root, handlers, { watch: watchFn });
    };
    const m = await watchedMount(core, 'dirs', { backendFactory: factory });
    const staging = await mkdtemp(path.join(path.dirname(m.root), 'tree-'));
    try {
      const watchesBefore = (await m.watcher.stats()).watches as number;
      // A tree moved in whole: `sub` (holding a file and a subdirectory) cannot be watched at first.
      await mkdir(path.join(staging, 'sub', 'deeper'), { recursive: true });
      await writeFile(path.join(staging, 'sub', 'before'), 'b');
      await writeFile(path.join(staging, 'sub', 'deeper', 'before'), 'bb');
      await rename(path.join(staging, 'sub'), m.abs('sub'));

      // Watched in the end (sub and sub/deeper: two more watches), after 3 failed tries.
      await eventually(async () => (await m.watcher.stats()).watches === watchesBefore + 2, 'sub and sub/deeper watched');
      expect(failures).toBe(3);
      for (const p of ['sub/before', 'sub/deeper/before']) {
        await eventually(async () => (await nodeAt(core, m.mountId, p))?.consistencyState === 'ACTIVE', `${p} catalogued`);
      }

      // Written through the new watches: catalogued.
      await m.writeOutOfBand('sub/after', 'aa');
      await m.writeOutOfBand('sub/deeper/after', 'aaa');
      for (const [p, size] of [
        ['sub/after', 2],
        ['sub/deeper/after', 3],
      ] as const) {
        const node = await eventually(async () => {
          const n = await nodeAt(core, m.mountId, p);
          return n?.consistencyState === 'ACTIVE' ? n : null;
        }, `${p} catalogued`);
        expect(node).toMatchObject({ kind: 'file', sizeBytes: size });
      }

      // Three failures of one episode: one problem, one overflow counted, one full rescan.
      const s = await m.watcher.stats();
      expect(s).toMatchObject({ backend: 'dirs', problems: 1, rescans: 1, watches: watchesBefore + 2 });
      expect(await overflows(core, m.t.mount.key)).toBe(1);
    } finally {
      await rm(staging, { recursive: true, force: true });
      await m.close();
    }
  }, 60_000);
});

describe('the dirs backend on its own: an entry swapped for a symlink as its watch opens', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'filestore-dirs-swap-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is not watched through the symlink: nothing written in the directory it points to is reported', async () => {
    const root = path.join(dir, 'root');
    const outside = path.join(dir, 'outside');
    await mkdir(path.join(root, 'sub'), { recursive: true });
    await mkdir(outside);
    let swapped = false;
    // Between the lstat that found `sub` a directory and its watch, `sub` is moved away and a
    // symlink to a directory outside the mount put in its place (fs.watch follows it).
    const watchFn: WatchFunction = (filename, options, listener) => {
      if (filename === path.join(root, 'sub') && !swapped) {
        swapped = true;
        renameSync(filename, path.join(dir, 'sub-away'));
        symlinkSync(outside, filename);
      }
      return watch(filename, options, listener);
    };
    const events: WatchEvent[] = [];
    const problems: WatchProblem[] = [];
    const backend = new DirsBackend(root, { onEvents: (e) => events.push(...e), onProblem: (p) => problems.push(p) }, { watch: watchFn });
    const before = (await backend.watchCount()) ?? 0;
    await backend.start();
    try {
      expect(swapped).toBe(true);
      expect(await backend.watchCount()).toBe(before + 1); // the root alone
      await writeFile(path.join(outside, 'o.txt'), 'o');
      await writeFile(path.join(root, 'sentinel'), 's');
      await eventually(async () => events.some((e) => e.path === 'sentinel'), 'sentinel reported');
      await new Promise((r) => setTimeout(r, 200));
      expect(events.filter((e) => e.path.startsWith('sub/'))).toEqual([]);
      expect(problems).toEqual([]);
    } finally {
      await backend.close();
    }
    expect(await backend.watchCount()).toBe(before);
  });
});
