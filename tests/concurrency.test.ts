import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, startFilestore, stopS3, type BackendKind } from './support/filestore.ts';
import { expectExactRollups, journalOf, livePaths } from './support/assertions.ts';

let fs: Filestore;
beforeAll(async () => {
  fs = await startFilestore({ poolSize: 60 });
});
afterAll(async () => {
  await fs.close();
  await stopS3();
});

describe.each<BackendKind>(['local', 's3'])('concurrency on %s', (kind) => {
  it('50 concurrent writes into one directory leave 50 files and exact rollups', async () => {
    const t = await createTestMount(fs, kind);
    await fs.orchestrator.mkdir(t.mount.key, { path: 'shared/dir', parents: true });
    const sizes = Array.from({ length: 50 }, (_, i) => i + 1);
    await Promise.all(
      sizes.map((n) => fs.orchestrator.writeFile(t.mount.key, { path: `shared/dir/f${n}` }, Readable.from([Buffer.alloc(n, 97)]))),
    );
    const dir = await fs.reader.nodeByPath(t.mount.key, 'shared/dir');
    expect(dir.rollup).toMatchObject({ sizeBytes: 1275, fileCount: 50, dirCount: 0, childCount: 50 });
    expect((await fs.reader.nodeByPath(t.mount.key, '')).rollup).toMatchObject({ sizeBytes: 1275, fileCount: 50, dirCount: 2 });
    expect((await journalOf(fs, t.mount.id)).every((j) => j.status === 'succeeded')).toBe(true);
    await expectExactRollups(fs, t.mount.id);
    await t.cleanup();
  });

  it('writes racing to create the same missing parents, overwrites of one file, and a recursive delete stay exact', async () => {
    const t = await createTestMount(fs, kind);
    await fs.orchestrator.writeFile(t.mount.key, { path: 'doomed/a/b' }, Readable.from([Buffer.from('zzz')]));
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      ops.push(fs.orchestrator.writeFile(t.mount.key, { path: `new/deep/p${i % 4}/f${i}` }, Readable.from([Buffer.alloc(10)])));
      ops.push(fs.orchestrator.writeFile(t.mount.key, { path: 'same.txt' }, Readable.from([Buffer.alloc(i)])));
    }
    ops.push(fs.orchestrator.delete(t.mount.key, { path: 'doomed', recursive: true }));
    await Promise.all(ops);
    const paths = await livePaths(fs, t.mount.id);
    expect(paths.filter((p) => p.startsWith('new/deep/p') && p.split('/').length === 4)).toHaveLength(20);
    expect(paths.filter((p) => p.startsWith('doomed'))).toEqual([]);
    const same = await fs.reader.nodeByPath(t.mount.key, 'same.txt');
    expect(same.version).toBe(20);
    const onDisk = await fs.backends.forMount(t.mount).stat('same.txt');
    expect(onDisk?.sizeBytes).toBe(same.sizeBytes);
    await expectExactRollups(fs, t.mount.id);
    await t.cleanup();
  });
});
