import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, startFilestore, stopS3, type BackendKind } from './support/filestore.ts';
import { expectExactRollups, journalOf, livePaths } from './support/assertions.ts';

let core: Filestore;
beforeAll(async () => {
  core = await startFilestore({ poolSize: 60 });
});
afterAll(async () => {
  await core.close();
  await stopS3();
});

describe.each<BackendKind>(['local', 's3'])('concurrency on %s', (kind) => {
  it('50 concurrent writes into one directory leave 50 files and exact rollups', async () => {
    const t = await createTestMount(core, kind);
    await core.orchestrator.mkdir(t.mount.key, { path: 'shared/dir', parents: true });
    const sizes = Array.from({ length: 50 }, (_, i) => i + 1);
    await Promise.all(
      sizes.map((n) => core.orchestrator.writeFile(t.mount.key, { path: `shared/dir/f${n}` }, Readable.from([Buffer.alloc(n, 97)]))),
    );
    const dir = await core.reader.nodeByPath(t.mount.key, 'shared/dir');
    expect(dir.rollup).toMatchObject({ sizeBytes: 1275, fileCount: 50, dirCount: 0, childCount: 50 });
    expect((await core.reader.nodeByPath(t.mount.key, '')).rollup).toMatchObject({ sizeBytes: 1275, fileCount: 50, dirCount: 2 });
    expect((await journalOf(core, t.mount.id)).every((j) => j.status === 'succeeded')).toBe(true);
    await expectExactRollups(core, t.mount.id);
    await t.cleanup();
  });

  it('writes racing to create the same missing parents, overwrites of one file, and a recursive delete stay exact', async () => {
    const t = await createTestMount(core, kind);
    await core.orchestrator.writeFile(t.mount.key, { path: 'doomed/a/b' }, Readable.from([Buffer.from('zzz')]));
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      ops.push(core.orchestrator.writeFile(t.mount.key, { path: `new/deep/p${i % 4}/f${i}` }, Readable.from([Buffer.alloc(10)])));
      ops.push(core.orchestrator.writeFile(t.mount.key, { path: 'same.txt' }, Readable.from([Buffer.alloc(i)])));
    }
    ops.push(core.orchestrator.delete(t.mount.key, { path: 'doomed', recursive: true }));
    await Promise.all(ops);
    const paths = await livePaths(core, t.mount.id);
    expect(paths.filter((p) => p.startsWith('new/deep/p') && p.split('/').length === 4)).toHaveLength(20);
    expect(paths.filter((p) => p.startsWith('doomed'))).toEqual([]);
    const same = await core.reader.nodeByPath(t.mount.key, 'same.txt');
    expect(same.version).toBe(20);
    const onDisk = await core.backends.forMount(t.mount).stat('same.txt');
    expect(onDisk?.sizeBytes).toBe(same.sizeBytes);
    await expectExactRollups(core, t.mount.id);
    await t.cleanup();
  });
});
