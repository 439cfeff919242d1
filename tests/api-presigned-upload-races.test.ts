import { createHash } from 'node:crypto';
import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMount } from '../shared/catalogue/mounts.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { S3DirectTransfers } from '../shared/backends/s3/direct.ts';
import { completeUpload } from '../shared/orchestrator/upload.ts';
import type { PipelineDeps } from '../shared/orchestrator/pipeline.ts';
import { UploadStagingSweep } from '../shared/orchestrator/upload-sweep.ts';
import { startTestServer, type TestServer } from './support/api.ts';
import { bearerFetch } from './support/bearer-fetch.ts';
import { createTestMount, stopS3, uniqueKey, type TestMount } from './support/filestore.ts';
import { getRawKey, putRawKey, rawKeys, testS3Client } from './support/s3.ts';
import { startS3ConditionsProxy, type S3ConditionsProxy } from './support/s3-conditions.ts';

// What a hostile client (or anyone holding the URL) can do with a presigned upload URL that
// stays valid after its first PUT, and the uploads that could never complete. The mount here
// reaches the emulator through a proxy that honours the S3 preconditions fauxqs ignores
// (copy-source-if-match, If-None-Match on PUT): tests/support/s3-conditions.ts.

let server: TestServer;
let s3: TestMount;
let proxy: S3ConditionsProxy;
let mount: Mount;

beforeAll(async () => {
  server = await startTestServer();
  s3 = await createTestMount(server.core, 's3');
  proxy = await startS3ConditionsProxy(s3.mount.endpoint as string);
  mount = await createMount(server.core.pool, { key: uniqueKey('s3g'), kind: 's3', bucket: s3.mount.bucket as string, prefix: 'guarded/', endpoint: proxy.endpoint, region: 'us-east-1' });
});
afterAll(async () => {
  await server?.close();
  await proxy?.stop();
  await stopS3();
});

type Up = { uploadId: number; url: string; headers: Record<string, string>; completeUrl: string };
const call = (method: string, p: string, json?: unknown, token = server.tokens.write) => bearerFetch(server.url, token, method, p, json === undefined ? {} : { json });
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const raw = () => testS3Client(s3.mount.endpoint as string); // straight to the emulator, past the proxy
const bucket = () => s3.mount.bucket as string;
const stagingKeys = async () => (await rawKeys(raw(), bucket(), 'guarded/.filestore-staging/')).filter((k) => !k.endsWith('/'));
const stagingKeyOf = (id: number) => `guarded/.filestore-staging/j${id}.upload`;
const codeOf = async (res: Response) => ((await res.json()) as { error: { code: string; message: string } }).error;

async function start(path: string, sizeBytes: number, extra: Record<string, unknown> = {}): Promise<Up> {
  const res = await call('POST', '/v1/uploads', { mountId: mount.key, path, sizeBytes, ...extra });
  const body = (await res.json()) as Up;
  expect(res.status, JSON.stringify(body)).toBe(201);
  return body;
}
/** The PUT as a client does it: the headers the answer named (but Content-Length, which fetch sets). */
const put = (up: Up, bytes: Buffer) => {
  const { 'content-length': _, ...headers } = up.headers;
  return fetch(up.url, { method: 'PUT', body: new Uint8Array(bytes), headers });
};
async function entry(id: number) {
  const { rows } = await server.core.pool.query<{ status: string; error: { code: string } | null }>('SELECT status, error FROM filestore.journal_entries WHERE id = $1', [id]);
  return rows[0];
}
const expire = (id: number, agoMs: number) =>
  server.core.pool.query(`UPDATE filestore.journal_entries SET request = jsonb_set(request, '{upload,expiresAt}', to_jsonb($2::text)) WHERE id = $1`, [
    id,
    new Date(Date.now() - agoMs).toISOString(),
  ]);

describe('complete pins the version of the staged object it checked', () => {
  it('bytes replaced between the hash and the copy: 409 UPLOAD_CHANGED, nothing written, the entry failed (not a catalogue sha256 other than the bytes)', async () => {
    const good = Buffer.alloc(64, 1);
    const evil = Buffer.alloc(64, 2);
    const up = await start('race.bin', 64, { sha256: sha(good) });
    expect((await put(up, good)).status).toBe(200);
    proxy.beforeForward(async (method, _url, headers) => {
      if (method === 'PUT' && headers['x-amz-copy-source'] !== undefined) {
        proxy.beforeForward(null);
        await putRawKey(raw(), bucket(), stagingKeyOf(up.uploadId), evil); // same length, other bytes
      }
    });
    try {
      const done = await call('POST', up.completeUrl);
      expect(done.status).toBe(409);
      expect((await codeOf(done)).code).toBe('UPLOAD_CHANGED');
    } finally {
      proxy.beforeForward(null);
    }
    expect(await entry(up.uploadId)).toMatchObject({ status: 'failed', error: { code: 'UPLOAD_CHANGED' } });
    expect(await getRawKey(raw(), bucket(), 'guarded/race.bin')).toBeNull();
    const { rows } = await server.core.pool.query('SELECT 1 FROM filestore.nodes WHERE mount_id = $1 AND path = $2 AND deleted_at IS NULL', [mount.id, 'race.bin']);
    expect(rows).toHaveLength(0);
    expect(await stagingKeys()).toEqual([]);
    expect((await call('POST', up.completeUrl)).status).toBe(409); // the failure is the answer from then on
  });

  it('bytes replaced between the HEAD and the hash (the emulator honours GetObject If-Match): 409 UPLOAD_CHANGED', async () => {
    const up = await start('race2.bin', 16);
    expect((await put(up, Buffer.alloc(16, 1))).status).toBe(200);
    proxy.beforeForward(async (method, url) => {
      if (method === 'GET' && url.includes(`j${up.uploadId}.upload`)) {
        proxy.beforeForward(null);
        await putRawKey(raw(), bucket(), stagingKeyOf(up.uploadId), Buffer.alloc(16, 9));
      }
    });
    try {
      const done = await call('POST', up.completeUrl);
      expect(done.status).toBe(409);
      expect((await codeOf(done)).code).toBe('UPLOAD_CHANGED');
    } finally {
      proxy.beforeForward(null);
    }
    expect(await entry(up.uploadId)).toMatchObject({ status: 'failed', error: { code: 'UPLOAD_CHANGED' } });
    expect(await getRawKey(raw(), bucket(), 'guarded/race2.bin')).toBeNull();
  });

  it('the URL is signed with If-None-Match: * (a client must send it), so S3 refuses a second PUT to the staging key', async () => {
    const up = await start('once.bin', 4);
    expect(up.headers['if-none-match']).toBe('*');
    expect(new URL(up.url).searchParams.get('X-Amz-SignedHeaders')?.split(';')).toEqual(expect.arrayContaining(['content-length', 'if-none-match']));
    expect((await put(up, Buffer.from('good'))).status).toBe(200);
    expect((await put(up, Buffer.from('evil'))).status).toBe(412);
    const done = await call('POST', up.completeUrl);
    expect(done.status).toBe(200);
    expect(await getRawKey(raw(), bucket(), 'guarded/once.bin')).toEqual(Buffer.from('good'));
  });
});

describe('staged bytes do not outlive their upload', () => {
  it('a PUT after complete (the URL is still valid) is removed by the next maintenance pass', async () => {
    const up = await start('late.bin', 8);
    expect((await put(up, Buffer.alloc(8, 3))).status).toBe(200);
    expect((await call('POST', up.completeUrl)).status).toBe(200);
    expect(await stagingKeys()).toEqual([]);
    expect((await put(up, Buffer.alloc(8, 4))).status).toBe(200); // the key is gone, so If-None-Match holds
    expect(await stagingKeys()).toEqual([stagingKeyOf(up.uploadId)]);
    await server.core.maintain();
    expect(await stagingKeys()).toEqual([]);
    expect(await getRawKey(raw(), bucket(), 'guarded/late.bin')).toEqual(Buffer.alloc(8, 3));
  });

  it('an upload just expired is left alone for the grace period (a PUT begun in time may still arrive), then failed; bytes arriving after that are swept', async () => {
    const up = await start('slow.bin', 8);
    await expire(up.uploadId, 1000);
    await server.core.maintain();
    expect((await entry(up.uploadId))?.status).toBe('pending');
    await expire(up.uploadId, 16 * 60 * 1000); // past the 15-minute grace
    await server.core.maintain();
    expect(await entry(up.uploadId)).toMatchObject({ status: 'failed', error: { code: 'UPLOAD_EXPIRED' } });
    expect((await put(up, Buffer.alloc(8, 5))).status).toBe(200); // a PUT begun before the expiry ends now
    await server.core.maintain();
    expect(await stagingKeys()).toEqual([]);
    expect((await call('POST', up.completeUrl)).status).toBe(410);
  });

  it('the sweep deletes only keys of finished entries, a bounded page per mount per pass, and goes on where it stopped', async () => {
    const done = await start('swept.bin', 1);
    expect((await call('DELETE', `/v1/uploads/${done.uploadId}`)).status).toBe(200);
    const open = await start('still open.bin', 1);
    const finishedKeys = ['a', 'b', 'c'].map((x) => `guarded/.filestore-staging/j${done.uploadId}.${x}`);
    const kept = [stagingKeyOf(open.uploadId), 'guarded/.filestore-staging/not-ours', 'guarded/.filestore-staging/j999999999.x'];
    for (const k of [...finishedKeys, ...kept]) await putRawKey(raw(), bucket(), k, 'x');
    const sweep = new UploadStagingSweep(server.core.pool, server.core.backends, 2);
    const passes: number[] = [];
    for (let i = 0; i < 4; i++) passes.push((await sweep.pass()).removed);
    expect(passes.every((n) => n <= 2)).toBe(true); // at most one page of 2 keys looked at per mount
    expect(passes.reduce((a, b) => a + b, 0)).toBe(3);
    expect((await stagingKeys()).sort()).toEqual(kept.sort());
    expect((await call('DELETE', `/v1/uploads/${open.uploadId}`)).status).toBe(200);
    await raw().send(new DeleteObjectsCommand({ Bucket: bucket(), Delete: { Objects: kept.map((Key) => ({ Key })) } }));
  });

  it('a commit whose after-commit nudge fails still answers its result; the staged bytes are removed', async () => {
    const up = await start('nudge.bin', 5);
    expect((await put(up, Buffer.from('hello'))).status).toBe(200);
    const deps = (server.core.orchestrator as unknown as { deps: PipelineDeps }).deps;
    const failing: PipelineDeps = {
      ...deps,
      afterCommit: async () => {
        throw new Error('Redis away');
      },
    };
    const result = await completeUpload(failing, up.uploadId, { principal: 'test-write' });
    expect(result).toMatchObject({ journalEntryId: up.uploadId, node: { sizeBytes: 5, sha256: sha(Buffer.from('hello')) } });
    expect((await entry(up.uploadId))?.status).toBe('succeeded');
    expect(await stagingKeys()).toEqual([]);
  });
});

describe('uploads that could never complete', () => {
  it('sizeBytes above 5 GiB (one PutObject’s limit) is 400 VALIDATION_ERROR naming the limit; 5 GiB is accepted', async () => {
    const over = await call('POST', '/v1/uploads', { mountId: mount.key, path: 'huge.bin', sizeBytes: 5 * 1024 ** 3 + 1 });
    expect(over.status).toBe(400);
    const err = await codeOf(over);
    expect(err.code).toBe('VALIDATION_ERROR');
    expect(err.message).toMatch(/5368709120|5 GiB/);
    const max = await start('max.bin', 5 * 1024 ** 3);
    expect((await call('DELETE', `/v1/uploads/${max.uploadId}`)).status).toBe(200);
    await expect(server.core.orchestrator.beginUpload(mount.key, { path: 'huge2.bin', sizeBytes: 5 * 1024 ** 3 + 1 })).rejects.toMatchObject({ code: 'VALIDATION_ERROR' });
  });

  it('DELETE /v1/uploads/:id cancels: failed UPLOAD_CANCELLED, staged bytes removed, the path free; again: the same answer', async () => {
    const up = await start('cancel me.bin', 3);
    expect((await put(up, Buffer.from('abc'))).status).toBe(200);
    const target = `/v1/files?${new URLSearchParams({ mountId: mount.key, path: 'cancel me.bin' })}`;
    expect((await bearerFetch(server.url, server.tokens.write, 'PUT', target, { body: 'xyz' })).status).toBe(409); // held
    expect((await call('DELETE', `/v1/uploads/${up.uploadId}`, undefined, server.tokens.read)).status).toBe(403);

    const res = await call('DELETE', `/v1/uploads/${up.uploadId}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ uploadId: up.uploadId, status: 'cancelled', error: { code: 'UPLOAD_CANCELLED' } });
    expect(await entry(up.uploadId)).toMatchObject({ status: 'failed', error: { code: 'UPLOAD_CANCELLED' } });
    expect(await stagingKeys()).toEqual([]);
    expect((await bearerFetch(server.url, server.tokens.write, 'PUT', target, { body: 'xyz' })).status).toBe(200);
    const complete = await call('POST', up.completeUrl);
    expect(complete.status).toBe(410);
    expect((await codeOf(complete)).code).toBe('UPLOAD_CANCELLED');
    const again = await call('DELETE', `/v1/uploads/${up.uploadId}`);
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ status: 'cancelled' });
  });

  it('an upload whose URL could not be signed does not hold its path', async () => {
    const presign = S3DirectTransfers.prototype.presignPut;
    S3DirectTransfers.prototype.presignPut = () => Promise.reject(new Error('no credentials'));
    try {
      const res = await call('POST', '/v1/uploads', { mountId: mount.key, path: 'unsigned.bin', sizeBytes: 1 });
      expect(res.status).toBe(500);
    } finally {
      S3DirectTransfers.prototype.presignPut = presign;
    }
    const target = `/v1/files?${new URLSearchParams({ mountId: mount.key, path: 'unsigned.bin' })}`;
    expect((await bearerFetch(server.url, server.tokens.write, 'PUT', target, { body: 'x' })).status).toBe(200);
    const { rows } = await server.core.pool.query<{ status: string }>(
      `SELECT status FROM filestore.journal_entries WHERE mount_id = $1 AND request->>'path' = 'unsigned.bin' AND request ? 'upload'`,
      [mount.id],
    );
    expect(rows).toEqual([{ status: 'failed' }]);
  });

  it('DELETE: an admin may cancel anyone’s upload, another principal may not see it; a completed upload stays completed', async () => {
    const mine = await start('admin cancels.bin', 1);
    const stranger = await call('DELETE', `/v1/uploads/${mine.uploadId}`, undefined, server.tokens.admin);
    expect(stranger.status).toBe(200);
    expect(await stranger.json()).toMatchObject({ status: 'cancelled' });

    const theirs = await call('POST', '/v1/uploads', { mountId: mount.key, path: 'admins.bin', sizeBytes: 1 }, server.tokens.admin);
    const { uploadId } = (await theirs.json()) as Up;
    expect((await call('DELETE', `/v1/uploads/${uploadId}`)).status).toBe(404);
    expect((await entry(uploadId))?.status).toBe('pending');
    expect((await call('DELETE', `/v1/uploads/${uploadId}`, undefined, server.tokens.admin)).status).toBe(200);

    const done = await start('done.bin', 1);
    expect((await put(done, Buffer.from('d'))).status).toBe(200);
    expect((await call('POST', done.completeUrl)).status).toBe(200);
    const late = await call('DELETE', `/v1/uploads/${done.uploadId}`);
    expect(late.status).toBe(200);
    expect(await late.json()).toEqual({ uploadId: done.uploadId, status: 'succeeded' });
    expect(await getRawKey(raw(), bucket(), 'guarded/done.bin')).toEqual(Buffer.from('d'));
    expect((await call('DELETE', '/v1/uploads/999999999')).status).toBe(404);
  });
});
