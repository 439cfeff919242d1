import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UPLOAD_GRACE_MS } from '../shared/catalogue/upload-state.ts';
import { startTestServer, type TestServer } from './support/api.ts';
import { bearerFetch } from './support/bearer-fetch.ts';
import { createTestMount, stopS3, type TestMount } from './support/filestore.ts';
import { getRawKey, rawKeys, testS3Client } from './support/s3.ts';

// The three-step upload of S3 mounts (POST /v1/uploads → PUT to S3 → complete), through the
// node:http server; tests/lambda-api.test.ts runs it through the API Lambda's adapter.

let server: TestServer;
let s3: TestMount;

beforeAll(async () => {
  server = await startTestServer();
  s3 = await createTestMount(server.core, 's3');
});
afterAll(async () => {
  await server?.close();
  await stopS3();
});

const call = (method: string, p: string, json?: unknown, token = server.tokens.write) => bearerFetch(server.url, token, method, p, json === undefined ? {} : { json });
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const bucket = () => s3.mount.bucket as string;
const client = () => testS3Client(s3.mount.endpoint as string);
const stagingKeys = async () => (await rawKeys(client(), bucket(), 'tenant/.filestore-staging/')).filter((k) => !k.endsWith('/'));

async function start(path: string, sizeBytes: number, extra: Record<string, unknown> = {}) {
  const res = await call('POST', '/v1/uploads', { mountId: s3.mount.key, path, sizeBytes, ...extra });
  const body = (await res.json()) as Record<string, unknown>;
  expect(res.status, JSON.stringify(body)).toBe(201);
  return body as { uploadId: number; url: string; headers: Record<string, string>; completeUrl: string; expiresAt: string };
}

async function put(url: string, bytes: Buffer) {
  // The headers POST /v1/uploads names (content-type, if-none-match; fetch sets content-length).
  const res = await fetch(url, { method: 'PUT', body: new Uint8Array(bytes), headers: { 'content-type': 'application/octet-stream', 'if-none-match': '*' } });
  expect(res.status).toBe(200);
}

async function entry(id: number) {
  const { rows } = await server.core.pool.query<{ status: string; error: { code: string } | null }>('SELECT status, error FROM filestore.journal_entries WHERE id = $1', [id]);
  return rows[0];
}

describe('presigned uploads to an S3 mount', () => {
  it('three steps: a pending entry, the bytes PUT straight to S3, complete commits them as PUT /v1/files does', async () => {
    const bytes = randomBytes(300_000);
    const up = await start('dir/big file é.bin', bytes.length, { sha256: sha(bytes) });
    expect((await entry(up.uploadId))?.status).toBe('pending');
    expect(new Date(up.expiresAt).getTime()).toBeGreaterThan(Date.now());
    await put(up.url, bytes);
    // Nothing at the path until completed.
    expect(await getRawKey(client(), bucket(), 'tenant/dir/big file é.bin')).toBeNull();

    const done = await call('POST', up.completeUrl);
    const result = (await done.json()) as { journalEntryId: number; node: { sizeBytes: number; sha256: string; version: number } };
    expect(done.status).toBe(200);
    expect(result.journalEntryId).toBe(up.uploadId);
    expect(result.node).toMatchObject({ sizeBytes: bytes.length, sha256: sha(bytes), version: 1 });
    expect((await entry(up.uploadId))?.status).toBe('succeeded');
    expect((await getRawKey(client(), bucket(), 'tenant/dir/big file é.bin'))?.equals(bytes)).toBe(true);
    expect(await stagingKeys()).toEqual([]);

    const got = await call('GET', `/v1/files?${new URLSearchParams({ mountId: s3.mount.key, path: 'dir/big file é.bin' })}`, undefined, server.tokens.read);
    expect(Buffer.from(await got.arrayBuffer()).equals(bytes)).toBe(true);

    // Completing again answers the first result; nothing is written twice.
    const again = await call('POST', up.completeUrl);
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual(result);
    const { rows } = await server.core.pool.query('SELECT 1 FROM filestore.journal_entries WHERE mount_id = $1 AND status = $2', [s3.mount.id, 'succeeded']);
    expect(rows).toHaveLength(1);
  });

  it('complete before the PUT: 409 UPLOAD_INCOMPLETE and the upload stays open', async () => {
    const up = await start('early.bin', 10);
    const res = await call('POST', up.completeUrl);
    expect(res.status).toBe(409);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('UPLOAD_INCOMPLETE');
    expect((await entry(up.uploadId))?.status).toBe('pending');
    await put(up.url, Buffer.alloc(10, 1));
    expect((await call('POST', up.completeUrl)).status).toBe(200);
  });

  it('a size other than announced: 422 SIZE_MISMATCH, the entry failed, the staged bytes removed, nothing at the path', async () => {
    const up = await start('size.bin', 100);
    // An S3 that enforces the signed Content-Length refuses this PUT itself; the emulator does not, complete must.
    await fetch(up.url, { method: 'PUT', body: new Uint8Array(50).fill(7) });
    const res = await call('POST', up.completeUrl);
    expect(res.status).toBe(422);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('SIZE_MISMATCH');
    expect(await entry(up.uploadId)).toMatchObject({ status: 'failed', error: { code: 'SIZE_MISMATCH' } });
    expect(await stagingKeys()).toEqual([]);
    expect(await getRawKey(client(), bucket(), 'tenant/size.bin')).toBeNull();
    // And the failure is the answer from then on.
    expect((await call('POST', up.completeUrl)).status).toBe(422);
  });

  it('bytes that do not hash to the sha256 given: 422 CHECKSUM_MISMATCH, failed, staged bytes removed', async () => {
    const up = await start('sum.bin', 64, { sha256: sha(Buffer.alloc(64, 1)) });
    await put(up.url, Buffer.alloc(64, 2));
    const res = await call('POST', up.completeUrl);
    expect(res.status).toBe(422);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('CHECKSUM_MISMATCH');
    expect(await entry(up.uploadId)).toMatchObject({ status: 'failed', error: { code: 'CHECKSUM_MISMATCH' } });
    expect(await stagingKeys()).toEqual([]);
    expect(await getRawKey(client(), bucket(), 'tenant/sum.bin')).toBeNull();
  });

  it('an abandoned upload is failed UPLOAD_EXPIRED by maintenance once expired, its staged bytes removed; not before', async () => {
    const up = await start('abandoned.bin', 20);
    await put(up.url, Buffer.alloc(20, 3));
    await server.core.maintain();
    expect((await entry(up.uploadId))?.status).toBe('pending'); // still open: left alone
    expect(await stagingKeys()).toHaveLength(1);
    // The clock moves past its expiry and the grace after it (UPLOAD_GRACE_MS: a PUT begun in time may still be arriving).
    await server.core.pool.query(
      `UPDATE filestore.journal_entries SET request = jsonb_set(request, '{upload,expiresAt}', to_jsonb($2::text)) WHERE id = $1`,
      [up.uploadId, new Date(Date.now() - UPLOAD_GRACE_MS - 1000).toISOString()],
    );
    await server.core.maintain();
    expect(await entry(up.uploadId)).toMatchObject({ status: 'failed', error: { code: 'UPLOAD_EXPIRED' } });
    expect(await stagingKeys()).toEqual([]);
    expect(await getRawKey(client(), bucket(), 'tenant/abandoned.bin')).toBeNull();
    const res = await call('POST', up.completeUrl);
    expect(res.status).toBe(410);
  });

  it('refuses a path outside the mount, a local mount, a read-only token, and another caller completing it', async () => {
    const outside = await call('POST', '/v1/uploads', { mountId: s3.mount.key, path: '../escape.bin', sizeBytes: 1 });
    expect(outside.status).toBe(400);
    expect(['PATH_ESCAPES_MOUNT', 'INVALID_PATH']).toContain(((await outside.json()) as { error: { code: string } }).error.code);
    const local = await createTestMount(server.core, 'local');
    try {
      const res = await call('POST', '/v1/uploads', { mountId: local.mount.key, path: 'a.bin', sizeBytes: 1 });
      expect(res.status).toBe(400);
    } finally {
      await local.cleanup();
    }
    const reader = await call('POST', '/v1/uploads', { mountId: s3.mount.key, path: 'r.bin', sizeBytes: 1 }, server.tokens.read);
    expect(reader.status).toBe(403);
    const up = await start('mine.bin', 1);
    const other = await call('POST', up.completeUrl, undefined, server.tokens.admin);
    expect(other.status).toBe(404);
  });

  it('an open upload holds its path: another write there is 409 UPLOAD_IN_PROGRESS until it completes', async () => {
    const up = await start('held.bin', 3);
    const target = `/v1/files?${new URLSearchParams({ mountId: s3.mount.key, path: 'held.bin' })}`;
    const other = await bearerFetch(server.url, server.tokens.write, 'PUT', target, { body: 'xyz' });
    expect(other.status).toBe(409);
    expect(((await other.json()) as { error: { code: string } }).error.code).toBe('UPLOAD_IN_PROGRESS');
    const second = await call('POST', '/v1/uploads', { mountId: s3.mount.key, path: 'held.bin', sizeBytes: 1 });
    expect(second.status).toBe(409);
    const nested = await start('held dir/inner.bin', 1);
    const parent = await call('POST', '/v1/commands/delete', { mountId: s3.mount.key, path: 'held dir', recursive: true });
    expect(parent.status).toBe(409);
    expect(((await parent.json()) as { error: { code: string } }).error.code).toBe('UPLOAD_IN_PROGRESS');
    expect(nested.uploadId).toBeGreaterThan(up.uploadId);
    await put(up.url, Buffer.from('abc'));
    expect((await call('POST', up.completeUrl)).status).toBe(200);
    const after = await bearerFetch(server.url, server.tokens.write, 'PUT', target, { body: 'xyz' });
    expect(after.status).toBe(200);
  });

  it('is described in the OpenAPI document', async () => {
    const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>>; components: { schemas: Record<string, unknown> } };
    expect(Object.keys(doc.paths['/v1/uploads']?.post?.responses ?? {})).toContain('201');
    expect(Object.keys(doc.paths['/v1/uploads/{id}/complete']?.post?.responses ?? {})).toEqual(expect.arrayContaining(['200', '409', '410', '422']));
    expect(Object.keys(doc.paths['/v1/uploads/{id}']?.delete?.responses ?? {})).toEqual(expect.arrayContaining(['200', '404']));
    expect(Object.keys(doc.components.schemas)).toEqual(expect.arrayContaining(['PresignedUpload', 'PresignedDownload', 'CancelledUpload']));
  });

  it('If-Match is checked when the upload starts and again when it completes', async () => {
    const first = await start('versioned.bin', 1, { ifMatch: 0 });
    await put(first.url, Buffer.from('a'));
    expect((await call('POST', first.completeUrl)).status).toBe(200);
    const stale = await call('POST', '/v1/uploads', { mountId: s3.mount.key, path: 'versioned.bin', sizeBytes: 1, ifMatch: 0 });
    expect(stale.status).toBe(409);
    expect(((await stale.json()) as { error: { code: string } }).error.code).toBe('VERSION_MISMATCH');
  });
});
