import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowEntry } from '../shared/backends/entry-lines.ts';
import { LocalExecutor } from '../shared/backends/local/local-executor.ts';
import { walkOnThread } from '../shared/backends/local/walker.ts';
import type { EntryStat } from '../shared/backends/types.ts';
import { FilestoreError } from '../shared/errors.ts';

// The audit's walk on its own thread must list exactly what the in-thread listing lists.
describe('walker thread', () => {
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
  const onThread = async (dir: string, startAfter?: string) => {
    const out: EntryStat[] = [];
    for await (const rows of walkOnThread({ rootPath: root, dir, recursive: true, startAfter })) out.push(...rows.map((r) => rowEntry(r)));
    return out;
  };

  it('lists the same entries, in the same order, with the same facts, as the listing in this thread', async () => {
    const local = await collect(new LocalExecutor({ rootPath: root }).listBatches('', { recursive: true }));
    const threaded = await onThread('');
    expect(threaded.length).toBe(local.length);
    expect(threaded.length).toBeGreaterThan(4500);
    expect(threaded).toEqual(local);
    expect(threaded.find((e) => e.path === 'link')).toMatchObject({ kind: 'symlink', symlinkTarget: '../outside' });
  });

  it('resumes after a path and lists a subtree', async () => {
    const local = await collect(new LocalExecutor({ rootPath: root }).listBatches('', { recursive: true, startAfter: 'd2/f5.txt' }));
    expect(await onThread('', 'd2/f5.txt')).toEqual(local);
    expect((await onThread('d1')).every((e) => e.path.startsWith('d1/'))).toBe(true);
  });

  it('reports listing errors with their codes, and a consumer that stops early leaves the thread usable', async () => {
    await expect(onThread('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(onThread('d0/f1.txt')).rejects.toBeInstanceOf(FilestoreError);
    await expect(onThread('link')).rejects.toMatchObject({ code: 'SYMLINK_IN_PATH' });
    for await (const rows of walkOnThread({ rootPath: root, dir: '', recursive: true })) {
      expect(rows.length).toBeGreaterThan(0);
      break;
    }
    expect((await onThread('d4')).length).toBe(902);
  });

  it('an idle walker thread does not keep a process alive, and a walk in progress does', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'tests/support/walker-exit-child.ts', root], { encoding: 'utf8', timeout: 60_000 });
    expect(r.signal).toBeNull(); // not killed by the timeout: it exited by itself
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toMatch(/^walked \d{4,}$/);
  });
});
