import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { Node, ReconcileJob } from '../shared/api/schemas.ts';
import { expectExactRollups } from './support/assertions.ts';
import { sharedS3, type BackendKind, type TestMount } from './support/filestore.ts';
import { putRawKey, rawKeys } from './support/s3.ts';
import { eventually, qs, useApiServer } from './support/http.ts';

// Issue 16, item 8: a directory's size counts what is present on storage. A file deleted
// outside Filestore (MISSING after a reconciliation) no longer counts in its directories'
// rollups; when it comes back it counts again; deleting it through Filestore changes nothing more.

const api = useApiServer('write');
const { c, mountOf } = api;

const put = (mountId: string, p: string, bytes: string) => c.json('PUT', `/v1/files?${qs({ mountId, path: p })}`, 200, { body: bytes });
const byPath = async (mountId: string, p: string) => Node.parse(await c.json('GET', `/v1/nodes/by-path?${qs({ mountId, path: p })}`, 200, { token: 'read' }));
const sizeOf = async (mountId: string, p: string) => {
  const r = (await byPath(mountId, p)).rollup;
  return { sizeBytes: r?.sizeBytes, fileCount: r?.fileCount, dirCount: r?.dirCount, childCount: r?.childCount };
};

async function reconcile(mountId: string) {
  const queued = await c.json<{ id: number }>('POST', '/v1/reconcile', 202, { json: { mountId } });
  const job = await eventually(async () => {
    const j = ReconcileJob.parse(await c.json('GET', `/v1/reconcile/jobs/${queued.id}`, 200, { token: 'read' }));
    return ['succeeded', 'failed', 'cancelled'].includes(j.status) ? j : undefined;
  }, `job ${queued.id}`);
  expect(job.status).toBe('succeeded');
  return job.result as Record<string, number>;
}

/** Out of band: removes `p` (a file, or a directory and everything in it) from storage. */
async function removeOutside(t: TestMount, p: string): Promise<void> {
  if (t.root) return rm(path.join(t.root, p), { recursive: true, force: true });
  const s3 = await sharedS3();
  const bucket = t.mount.bucket as string;
  const keys = [...(await rawKeys(s3.client, bucket, `tenant/${p}`))].filter((k) => k === `tenant/${p}` || k.startsWith(`tenant/${p}/`));
  await s3.client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.map((Key) => ({ Key })) } }));
}

async function writeOutside(t: TestMount, p: string, bytes: string): Promise<void> {
  if (t.root) return writeFile(path.join(t.root, p), bytes);
  await putRawKey((await sharedS3()).client, t.mount.bucket as string, `tenant/${p}`, bytes);
}

describe('directory sizes count what is present (MISSING nodes do not count)', () => {
  it.each<BackendKind>(['local', 's3'])('a file deleted outside Filestore leaves its directories, comes back, is deleted (%s)', async (kind) => {
    const t = await mountOf(kind);
    const m = t.mount.key;
    await put(m, 'd/a.txt', 'a'.repeat(10));
    await put(m, 'd/b.txt', 'b'.repeat(20));
    await put(m, 'd/c.txt', 'c'.repeat(30));
    await put(m, 'd/gone/x.txt', 'x'.repeat(5));
    expect(await sizeOf(m, 'd')).toEqual({ sizeBytes: 65, fileCount: 4, dirCount: 1, childCount: 4 });
    expect(await sizeOf(m, '')).toEqual({ sizeBytes: 65, fileCount: 4, dirCount: 2, childCount: 1 });

    // c.txt and the directory gone/ are deleted outside Filestore: MISSING, and no longer counted.
    await removeOutside(t, 'd/c.txt');
    await removeOutside(t, 'd/gone');
    expect(await reconcile(m)).toMatchObject({ missing: 3 });
    expect(await byPath(m, 'd/c.txt')).toMatchObject({ consistencyState: 'MISSING' });
    expect(await byPath(m, 'd/gone')).toMatchObject({ consistencyState: 'MISSING' });
    expect(await sizeOf(m, 'd')).toEqual({ sizeBytes: 30, fileCount: 2, dirCount: 0, childCount: 2 });
    expect(await sizeOf(m, '')).toEqual({ sizeBytes: 30, fileCount: 2, dirCount: 1, childCount: 1 });
    expect(await sizeOf(m, 'd/gone')).toEqual({ sizeBytes: 0, fileCount: 0, dirCount: 0, childCount: 0 });
    await expectExactRollups(api.server.core, t.mount.id);

    // c.txt comes back (as it was): counted again.
    await writeOutside(t, 'd/c.txt', 'c'.repeat(30));
    expect(await reconcile(m)).toMatchObject({ missing: 0 });
    expect(await byPath(m, 'd/c.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
    expect(await sizeOf(m, 'd')).toEqual({ sizeBytes: 60, fileCount: 3, dirCount: 0, childCount: 3 });
    expect(await sizeOf(m, '')).toEqual({ sizeBytes: 60, fileCount: 3, dirCount: 1, childCount: 1 });
    await expectExactRollups(api.server.core, t.mount.id);

    // Gone again, then comes back with other content: counted with its new size.
    await removeOutside(t, 'd/c.txt');
    await reconcile(m);
    expect(await sizeOf(m, 'd')).toEqual({ sizeBytes: 30, fileCount: 2, dirCount: 0, childCount: 2 });
    await writeOutside(t, 'd/c.txt', 'c'.repeat(7));
    await reconcile(m);
    expect(await byPath(m, 'd/c.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 7 });
    expect(await sizeOf(m, 'd')).toEqual({ sizeBytes: 37, fileCount: 3, dirCount: 0, childCount: 3 });
    await expectExactRollups(api.server.core, t.mount.id);

    // A MISSING file written anew through Filestore counts with its new size.
    await removeOutside(t, 'd/c.txt');
    await reconcile(m);
    await put(m, 'd/c.txt', 'c'.repeat(4));
    expect(await sizeOf(m, 'd')).toEqual({ sizeBytes: 34, fileCount: 3, dirCount: 0, childCount: 3 });
    await expectExactRollups(api.server.core, t.mount.id);

    // Deleting MISSING nodes through Filestore changes no size: they were not counted.
    await c.json('POST', '/v1/commands/delete', 200, { json: { mountId: m, path: 'd/gone', recursive: true } });
    expect(await sizeOf(m, 'd')).toEqual({ sizeBytes: 34, fileCount: 3, dirCount: 0, childCount: 3 });
    expect(await sizeOf(m, '')).toEqual({ sizeBytes: 34, fileCount: 3, dirCount: 1, childCount: 1 });
    await expectExactRollups(api.server.core, t.mount.id);
  });
});
