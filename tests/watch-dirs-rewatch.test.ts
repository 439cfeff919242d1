import { mkdirSync, renameSync, rmdirSync, statSync, symlinkSync, watch } from 'node:fs';
import { chmod, mkdir, mkdtemp, rename, rm, utimes, writeFile } from 'node:fs/promises';
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
 * whose watch failed for want of inotify watches is tried again until it is watched, and a
 * rescan is asked for once it is (what was removed meanwhile went unseen); an entry swapped
 * for a symlink just as its watch is opened is not watched through the symlink. A directory
 * only touched (chmod, utimes) keeps its watches (no walk of its subtree); one forgotten while
 * its walk reads it leaves no watch behind under it.
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

  it('a file named like its directory (d/d) removed: catalogued as gone (an event about d itself looks the same)', async () => {
    const m = await watchedMount(core, 'dirs');
    try {
      await m.writeOutOfBand('d/d', 'x');
      await eventually(async () => (await nodeAt(core, m.mountId, 'd/d'))?.consistencyState === 'ACTIVE', 'd/d catalogued');
      await settle(core, m);
      await rm(m.abs('d/d'));
      await eventually(async () => {
        const n = await nodeAt(core, m.mountId, 'd/d');
        return n === null || n.consistencyState !== 'ACTIVE';
      }, 'd/d no longer live');
    } finally {
      await m.close();
    }
  }, 60_000);

  it('a directory whose watch failed with ENOSPC is tried again until it is watched: an overflow and a rescan as it fails, another once it is watched, what it holds and what is written into it later catalogued', async () => {
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
    // No cooldown between rescans: the second (episode over) is sent at once, not 30 s later.
    const m = await watchedMount(core, 'dirs', { backendFactory: factory, rescanCooldownMs: 0 });
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

      // Three failures of one episode: one problem as it began, one as it ended (sub watched
      // again: what was removed meanwhile went unseen); two overflows counted, two full rescans.
      const s = await m.watcher.stats();
      expect(s).toMatchObject({ backend: 'dirs', problems: 2, rescans: 2, watches: watchesBefore + 2 });
      expect(await overflows(core, m.t.mount.key)).toBe(2);
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

describe('the dirs backend on its own: directories touched, replaced while walked, watched again after ENOSPC', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'filestore-dirs-rewatch-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const record = () => {
    const events: WatchEvent[] = [];
    const problems: WatchProblem[] = [];
    return { events, problems, handlers: { onEvents: (e: WatchEvent[]) => events.push(...e), onProblem: (p: WatchProblem) => problems.push(p) } };
  };

  it('chmod and utimes of watched directories (a "rename" to their parents) report updates, no create of what lies below them, and keep their watches', async () => {
    const root = path.join(dir, 'touched');
    await mkdir(path.join(root, 'd', 'a', 'b'), { recursive: true });
    await writeFile(path.join(root, 'd', 'f'), 'f');
    await writeFile(path.join(root, 'd', 'a', 'g'), 'g');
    await writeFile(path.join(root, 'd', 'a', 'b', 'h'), 'h');
    const { events, problems, handlers } = record();
    const backend = new DirsBackend(root, handlers);
    const before = (await backend.watchCount()) ?? 0;
    await backend.start();
    try {
      expect(await backend.watchCount()).toBe(before + 4); // root, d, d/a, d/a/b
      // What `chmod -R`, `rsync -a`, `tar x` do to every directory of a tree.
      await chmod(path.join(root, 'd'), 0o700);
      await utimes(path.join(root, 'd'), new Date(1_000_000), new Date(1_000_000));
      await chmod(path.join(root, 'd', 'a'), 0o700);
      await utimes(path.join(root, 'd', 'a', 'b'), new Date(2_000_000), new Date(2_000_000));
      await writeFile(path.join(root, 'sentinel'), 's');
      await eventually(async () => events.some((e) => e.path === 'sentinel'), 'sentinel reported');
      await new Promise((r) => setTimeout(r, 300));
      expect(events.filter((e) => e.type === 'create' && e.path !== 'sentinel')).toEqual([]);
      // Events about a directory itself (on its own watch, named by its basename) are an update
      // of it; the only deletes are of an entry of its name inside it (d/d: libuv cannot tell).
      expect(events.filter((e) => e.type === 'delete' && !['d/d', 'd/a/a', 'd/a/b/b'].includes(e.path))).toEqual([]);
      for (const p of ['d', 'd/a', 'd/a/b']) expect(events).toContainEqual({ type: 'update', path: p });
      expect(problems).toEqual([]);
      expect(await backend.watchCount()).toBe(before + 4);

      // Still watched: a file written at the bottom is reported.
      await writeFile(path.join(root, 'd', 'a', 'b', 'new'), 'n');
      await eventually(async () => events.some((e) => e.path === 'd/a/b/new'), 'd/a/b/new reported');
    } finally {
      await backend.close();
    }
    expect(await backend.watchCount()).toBe(before);
  });

  it('a directory replaced while its walk reads it: every subdirectory of the new one is watched by it (removed and made again, it is watched again)', async () => {
    const root = path.join(dir, 'replaced');
    const names = Array.from({ length: 200 }, (_, i) => `s${String(i).padStart(3, '0')}`);
    for (const n of names) await mkdir(path.join(root, 'd', n), { recursive: true });
    let swapped = false;
    // As the walk of `d` watches its first subdirectory, `d` is moved out of the mount and
    // another `d` with subdirectories of the same names made in its place: the walk of the old
    // `d` is still lstat-ing its entries by path (finding the new ones) when the root's watch
    // replaces `d`.
    const watchFn: WatchFunction = (filename, options, listener) => {
      if (!swapped && path.dirname(filename) === path.join(root, 'd')) {
        swapped = true;
        renameSync(path.join(root, 'd'), path.join(dir, 'replaced-old'));
        mkdirSync(path.join(root, 'd'));
        for (const n of names) mkdirSync(path.join(root, 'd', n));
      }
      return watch(filename, options, listener);
    };
    const { events, handlers } = record();
    const backend = new DirsBackend(root, handlers, { watch: watchFn });
    const before = (await backend.watchCount()) ?? 0;
    await backend.start();
    try {
      expect(swapped).toBe(true);
      // The new `d` and all its subdirectories watched (and nothing more: no watch left under the old one).
      await eventually(async () => (await backend.watchCount()) === before + 2 + names.length, 'root, the new d and its subdirectories watched');
      await eventually(async () => names.every((n) => events.some((e) => e.path === `d/${n}`)), 'the new d walked');

      // Each subdirectory removed and made again, a file written into it: seen through the new
      // `d`'s watch, so each is watched again (a watch left under the old `d` would hold its path).
      for (const n of names) {
        rmdirSync(path.join(root, 'd', n));
        mkdirSync(path.join(root, 'd', n));
      }
      await new Promise((r) => setTimeout(r, 300));
      for (const n of names) await writeFile(path.join(root, 'd', n, 'f'), 'f');
      await eventually(async () => names.every((n) => events.some((e) => e.path === `d/${n}/f`)), 'every d/*/f reported');
      expect(await backend.watchCount()).toBe(before + 2 + names.length);
    } finally {
      await backend.close();
    }
    expect(await backend.watchCount()).toBe(before);
  }, 60_000);

  it('a directory watched again after ENOSPC: a second overflow once the episode is over, asking for the rescan that finds what was removed meanwhile', async () => {
    const root = path.join(dir, 'enospc');
    await mkdir(path.join(root, 'sub'), { recursive: true });
    await writeFile(path.join(root, 'sub', 'kept'), 'k');
    let failures = 0;
    const watchFn: WatchFunction = (filename, options, listener) => {
      if (filename === path.join(root, 'sub') && failures < 1) {
        failures++;
        throw enospc();
      }
      return watch(filename, options, listener);
    };
    const { events, problems, handlers } = record();
    const backend = new DirsBackend(root, handlers, { watch: watchFn });
    const before = (await backend.watchCount()) ?? 0;
    await backend.start();
    try {
      expect(problems).toMatchObject([{ kind: 'overflow', code: 'ENOSPC' }]);
      await eventually(async () => (await backend.watchCount()) === before + 2, 'sub watched again');
      await eventually(async () => problems.length === 2, 'the second overflow');
      expect(problems[1]).toMatchObject({ kind: 'overflow' });
      expect(problems[1]?.message).toMatch(/rescan/);
      expect(problems[1]?.code).toBeUndefined(); // not taken for the watch budget running out (isWatchLimit)
      expect(events).toContainEqual({ type: 'create', path: 'sub/kept' });
    } finally {
      await backend.close();
    }
    expect(await backend.watchCount()).toBe(before);
  }, 60_000);
});
