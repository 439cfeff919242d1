import { spawnSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowEntry } from '../shared/backends/entry-lines.ts';
import { LocalExecutor } from '../shared/backends/local/local-executor.ts';
import { walkerPids, walkersReady, walkOnWalker, walkTree } from '../shared/backends/local/walker.ts';
import type { EntryStat } from '../shared/backends/types.ts';
import { FilestoreError } from '../shared/errors.ts';

// The audit's walk in a walker process must list exactly what the in-process listing lists.
describe('walker process', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(os.tmpdir(), 'filestore-walker-'));
    for (let d = 0; d < 5; d++) {
      await mkdir(join(root, `d${d}`, 'sub'), { recursive: true });
      for (let f = 0; f < 900; f++) await writeFile(join(root, `d${d}`, `f${f}.txt`), 'x'.repeat(f % 17));
      await writeFile(join(root, `d${d}`, 'sub', 'deep.txt'), 'deep');
    }
    await mkdir(join(root, 'a-b'));
    await mkdir(join(root, 'a'));
    await writeFile(join(root, 'a', 'x'), '1');
    await writeFile(join(root, 'é.txt'), 'accent');
    await symlink('../outside', join(root, 'link'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const collect = async (it: AsyncIterable<EntryStat[]>) => {
    const out: EntryStat[] = [];
    for await (const b of it) out.push(...b);
    return out;
  };
  const onWalker = async (dir: string, startAfter?: string) => {
    const out: EntryStat[] = [];
    for await (const rows of walkOnWalker({ rootPath: root, dir, recursive: true, startAfter })) out.push(...rows.map((r) => rowEntry(r)));
    return out;
  };

  it('lists the same entries, in the same order, with the same facts, as the listing in this process', async () => {
    const local = await collect(new LocalExecutor({ rootPath: root }).listBatches('', { recursive: true }));
    const walked = await onWalker('');
    expect(walked.length).toBe(local.length);
    expect(walked.length).toBeGreaterThan(4500);
    expect(walked).toEqual(local);
    expect(walked.find((e) => e.path === 'link')).toMatchObject({ kind: 'symlink', symlinkTarget: '../outside' });
  });

  it('resumes after a path and lists a subtree', async () => {
    const local = await collect(new LocalExecutor({ rootPath: root }).listBatches('', { recursive: true, startAfter: 'd2/f5.txt' }));
    expect(await onWalker('', 'd2/f5.txt')).toEqual(local);
    expect((await onWalker('d1')).every((e) => e.path.startsWith('d1/'))).toBe(true);
  });

  it('reports listing errors with their codes, and a consumer that stops early leaves the walker usable', async () => {
    await expect(onWalker('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(onWalker('d0/f1.txt')).rejects.toBeInstanceOf(FilestoreError);
    await expect(onWalker('link')).rejects.toMatchObject({ code: 'SYMLINK_IN_PATH' });
    for await (const rows of walkOnWalker({ rootPath: root, dir: '', recursive: true })) {
      expect(rows.length).toBeGreaterThan(0);
      break;
    }
    expect((await onWalker('d4')).length).toBe(902);
  });

  it('a walker process that dies mid-walk fails that walk with STORAGE_ERROR, and the next walk gets a new one', async () => {
    const walk = walkOnWalker({ rootPath: root, dir: '', recursive: true });
    let killed: number[] = [];
    const done = (async () => {
      for await (const rows of walk) {
        expect(rows.length).toBeGreaterThan(0);
        if (killed.length === 0) {
          killed = walkerPids();
          for (const pid of killed) process.kill(pid, 'SIGKILL');
        }
      }
    })();
    await expect(done).rejects.toMatchObject({ code: 'STORAGE_ERROR', message: expect.stringMatching(/walker process: exited with SIGKILL/) });
    expect(killed.length).toBeGreaterThan(0);
    expect((await onWalker('d3')).length).toBe(902);
    expect(walkerPids().some((pid) => killed.includes(pid))).toBe(false);
  });

  it('walkers killed while idle, their exit not yet seen: the next walk goes to new ones and lists everything', async () => {
    expect((await onWalker('d1')).length).toBe(902); // the walkers are up
    const killed = walkerPids();
    expect(killed.length).toBeGreaterThan(0);
    for (const pid of killed) process.kill(pid, 'SIGKILL');
    expect((await onWalker('d2')).length).toBe(902); // at once: before their 'close' events
    expect(walkerPids().some((pid) => killed.includes(pid))).toBe(false);
  });

  it('a walker process rides out SIGINT and SIGTERM (meant for its parent, which drains), and holds no environment', async () => {
    let signalled: number[] = [];
    let n = 0;
    for await (const rows of walkOnWalker({ rootPath: root, dir: '', recursive: true })) {
      n += rows.length;
      if (signalled.length === 0) {
        // Walkers started by the test before may still be starting: until a walker serves
        // sessions, a signal ends it (as it ends any process that is starting).
        await walkersReady();
        signalled = walkerPids();
        for (const pid of signalled) {
          process.kill(pid, 'SIGINT');
          process.kill(pid, 'SIGTERM');
        }
      }
    }
    expect(signalled.length).toBeGreaterThan(0);
    expect(n).toBeGreaterThan(4500);
    expect(walkerPids()).toEqual(expect.arrayContaining(signalled));
    // Only what node sets up its IPC channel with.
    for (const pid of walkerPids()) {
      const names = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean).map((v) => v.split('=')[0]);
      expect(names.filter((n) => !n?.startsWith('NODE_CHANNEL_'))).toEqual([]);
    }
  });

  it('an idle walker process is not inside the mount (its working directory is /)', async () => {
    expect((await onWalker('d2')).length).toBe(902);
    const pids = walkerPids();
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) expect(readlinkSync(`/proc/${pid}/cwd`)).toBe('/');
  });

  it('listings in this process leave its working directory alone (only walker processes change theirs)', async () => {
    const cwd = process.cwd();
    expect((await collect(new LocalExecutor({ rootPath: root }).listBatches('', { recursive: true }))).length).toBeGreaterThan(4500);
    expect(process.cwd()).toBe(cwd);
  });

  it('an idle walker process does not keep a process alive, and a walk in progress does', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'tests/support/walker-exit-child.ts', root], { encoding: 'utf8', timeout: 60_000 });
    expect(r.signal).toBeNull(); // not killed by the timeout: it exited by itself
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toMatch(/^walked \d{4,}$/);
  });
});

// An audit's walk split by subtree over the walker processes must list exactly, and in the same
// order, what one listing lists: the order traps of byte order ("a-b" and "a.b" before "a/x",
// "a0" after), a tree with one big directory on top (split further down), empty directories.
describe('walk split over the walker processes', () => {
  let root: string;
  const local = async (dir: string) => {
    const out: EntryStat[] = [];
    for await (const b of new LocalExecutor({ rootPath: root }).listBatches(dir, { recursive: true })) out.push(...b);
    return out;
  };
  const split = async (dir: string) => {
    const out: EntryStat[] = [];
    for await (const rows of walkTree({ rootPath: root, dir })) out.push(...rows.map((r) => rowEntry(r)));
    return out;
  };
  beforeAll(async () => {
    root = await mkdtemp(join(os.tmpdir(), 'filestore-walktree-'));
    const names = ['a', 'a-b', 'a.b', 'a0', 'a b', 'ab', 'A', 'z', '😀', 'é', 'empty'];
    for (const n of names) {
      await mkdir(join(root, n, 'inner', n), { recursive: true });
      await writeFile(join(root, n, 'inner', n, 'leaf'), n);
      await writeFile(join(root, n, 'file'), n);
      await writeFile(join(root, `${n}.txt`), n);
    }
    await rm(join(root, 'empty'), { recursive: true });
    await mkdir(join(root, 'empty'));
    // One big directory on top, holding three: split one and two levels down.
    for (let d = 0; d < 3; d++) {
      for (let e = 0; e < 6; e++) {
        await mkdir(join(root, 'only', `p${d}`, `q${e}`), { recursive: true });
        for (let f = 0; f < 40; f++) await writeFile(join(root, 'only', `p${d}`, `q${e}`, `f${f}`), 'x'.repeat(f));
      }
    }
    await symlink('only', join(root, 'only-link'));
    await symlink('/etc', join(root, 'only', 'p0', 'etc'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('lists the same entries in the same order as one listing, from the root and from a subtree', async () => {
    const whole = await split('');
    expect(whole.length).toBeGreaterThan(800);
    expect(whole).toEqual(await local(''));
    expect(await split('only')).toEqual(await local('only'));
    expect(await split('a')).toEqual(await local('a'));
    expect(await split('empty')).toEqual([]);
    expect(whole.find((e) => e.path === 'only/p0/etc')).toMatchObject({ kind: 'symlink', symlinkTarget: '/etc' });
    expect(whole.some((e) => e.path.startsWith('only-link/'))).toBe(false);
  });

  it('reports errors of the listed directory itself with their codes, and stops cleanly when the consumer stops', async () => {
    await expect(split('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(split('only-link')).rejects.toMatchObject({ code: 'SYMLINK_IN_PATH' });
    let seen = 0;
    for await (const rows of walkTree({ rootPath: root, dir: '' })) {
      seen += rows.length;
      break;
    }
    expect(seen).toBeGreaterThan(0);
    expect(await split('only')).toEqual(await local('only'));
  });

  it('a directory swapped for a symlink while the walk is under way is not followed into', async () => {
    // "only" is split into subtree sessions two levels down. After the first batch, "only" is
    // swapped for a symlink to a twin tree (files g*): sessions opened after that must not list
    // the twin's files under only/ (the symlink is an ancestor of the directory they open).
    for (let d = 0; d < 3; d++) {
      for (let e = 0; e < 6; e++) {
        await mkdir(join(root, 'twin', `p${d}`, `q${e}`), { recursive: true });
        await writeFile(join(root, 'twin', `p${d}`, `q${e}`, 'g1'), 'twin');
      }
    }
    const out: EntryStat[] = [];
    let swapped = false;
    try {
      for await (const rows of walkTree({ rootPath: root, dir: 'only' })) {
        out.push(...rows.map((r) => rowEntry(r)));
        if (!swapped) {
          swapped = true;
          await rename(join(root, 'only'), join(root, 'only-moved'));
          await symlink('twin', join(root, 'only'));
        }
      }
    } finally {
      if (swapped) {
        await rm(join(root, 'only'));
        await rename(join(root, 'only-moved'), join(root, 'only'));
      }
    }
    expect(swapped).toBe(true);
    expect(out.filter((e) => /\/g1$/.test(e.path))).toEqual([]);
  });
});
