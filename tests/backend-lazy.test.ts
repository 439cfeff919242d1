import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LazyBackend } from '../shared/backends/lazy.ts';
import { LocalExecutor } from '../shared/backends/local/local-executor.ts';

// The S3 executor (and with it the AWS SDK) is loaded by a mount's first operation, not by
// every process: a backend that loads on first use must behave as the backend itself.
describe('a backend loaded on first use', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(os.tmpdir(), 'filestore-lazy-'));
    await writeFile(join(root, 'a.txt'), 'alpha');
    await writeFile(join(root, 'b.txt'), 'beta');
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  it('loads nothing until used, answers as the backend does, and tries again after a failed load', async () => {
    let loads = 0;
    const lazy = new LazyBackend('s3', async () => {
      loads++;
      if (loads === 1) throw new Error('the SDK could not be loaded');
      return new LocalExecutor({ rootPath: root });
    });
    expect(lazy.kind).toBe('s3');
    expect(loads).toBe(0);
    await expect(lazy.stat('a.txt')).rejects.toThrow('the SDK could not be loaded');
    expect(await lazy.stat('a.txt')).toMatchObject({ path: 'a.txt', kind: 'file', sizeBytes: 5 });
    const listed: string[] = [];
    for await (const e of lazy.list('', { recursive: true })) listed.push(e.path);
    expect(listed).toEqual(['a.txt', 'b.txt']);
    const batches: string[][] = [];
    for await (const b of lazy.listBatches('')) batches.push(b.map((e) => e.path));
    expect(batches.flat()).toEqual(['a.txt', 'b.txt']);
    expect((await lazy.hash('b.txt'))?.sha256).toMatch(/^[0-9a-f]{64}$/);
    await expect(lazy.stat('../outside')).rejects.toMatchObject({ code: expect.any(String) });
    expect(loads).toBe(2); // one load served everything after the failed one
  });
});
