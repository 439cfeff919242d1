import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { JournalEntry, Mount, page } from '../shared/api/schemas.ts';
import { sharedS3, uniqueKey } from './support/filestore.ts';
import { expectError, qs, useApiServer, visibleEntries as readdir } from './support/http.ts';

// The mount registry, journal, reconciliation records, probes and metrics, driven over
// real HTTP.

const api = useApiServer('admin');
const { c, mountOf } = api;

const putFile = (mountId: string, p: string, bytes: string) =>
  c.json<{ journalEntryId: number; node: { id: number; version: number } }>('PUT', `/v1/files?${qs({ mountId, path: p })}`, 200, { token: 'write', body: bytes });

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'filestore-api-'));
  api.cleanup(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

describe('mount registry', () => {
  it('POST /v1/mounts registers a local mount (201); it is found by id, by key and in the list', async () => {
    const rootPath = await tempDir();
    const key = uniqueKey('api');
    const created = Mount.parse(await c.json('POST', '/v1/mounts', 201, { json: { kind: 'local', key, rootPath } }));
    expect(created).toMatchObject({ key, kind: 'local', rootPath, accessMode: 'rw', state: 'active', bucket: null });

    expect(await c.json('GET', `/v1/mounts/${created.id}`, 200)).toEqual(created);
    // Where it lives on its host is for admins only.
    const asReader = { ...created, rootPath: null };
    expect(await c.json('GET', `/v1/mounts/${key}`, 200, { token: 'read' })).toEqual(asReader);
    const list = page(Mount).parse(await c.json('GET', '/v1/mounts', 200, { token: 'read' }));
    expect(list.items.filter((m) => m.key === key)).toEqual([asReader]);
    const keys = list.items.map((m) => m.key);
    expect(keys).toEqual([...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));

    // The new mount has its root directory in the catalogue and accepts writes at once.
    expect(await c.json('GET', `/v1/nodes/by-path?${qs({ mountId: key, path: '' })}`, 200, { token: 'read' })).toMatchObject({ path: '', kind: 'directory' });
    await putFile(key, 'hello.txt', 'hi');
    expect(await readdir(rootPath)).toEqual(['hello.txt']);
  });

  it('POST /v1/mounts registers an s3 mount and normalises its prefix to end with "/"', async () => {
    const s3 = await sharedS3();
    const bucket = await s3.createBucket();
    const key = uniqueKey('api');
    const created = Mount.parse(
      await c.json('POST', '/v1/mounts', 201, { json: { kind: 's3', key, bucket, prefix: 'team', endpoint: s3.endpoint, region: 'us-east-1' } }),
    );
    expect(created).toMatchObject({ key, kind: 's3', bucket, prefix: 'team/', rootPath: null });
    await putFile(key, 'a/b.txt', 'abc');
    const node = await c.json('GET', `/v1/nodes/by-path?${qs({ mountId: created.id, path: 'a/b.txt' })}`, 200, { token: 'read' });
    expect(node).toMatchObject({ kind: 'file', sizeBytes: 3 });
  });

  it('a duplicate key is 409 ALREADY_EXISTS; a relative rootPath or a bad key is 400', async () => {
    const rootPath = await tempDir();
    const key = uniqueKey('api');
    await c.json('POST', '/v1/mounts', 201, { json: { kind: 'local', key, rootPath } });
    await expectError(c.call('POST', '/v1/mounts', { json: { kind: 'local', key, rootPath } }), 409, 'ALREADY_EXISTS');
    await expectError(c.call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('api'), rootPath: 'relative/dir' } }), 400, 'VALIDATION_ERROR');
    await expectError(c.call('POST', '/v1/mounts', { json: { kind: 'local', key: 'Not A Key!', rootPath } }), 400, 'VALIDATION_ERROR');
    await expectError(c.call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('api'), rootPath, extra: 1 } }), 400, 'VALIDATION_ERROR');
    await expectError(c.call('POST', '/v1/mounts', { json: { kind: 'nfs', key: uniqueKey('api'), rootPath } }), 400, 'VALIDATION_ERROR');
  });

  it('PATCH accessMode ro (by key) makes writes 409 MOUNT_READ_ONLY; back to rw (by id) they succeed', async () => {
    const t = await mountOf();
    const ro = Mount.parse(await c.json('PATCH', `/v1/mounts/${t.mount.key}`, 200, { json: { accessMode: 'ro' } }));
    expect(ro).toMatchObject({ id: t.mount.id, accessMode: 'ro', state: 'active' });
    expect(await c.json('GET', `/v1/mounts/${t.mount.id}`, 200, { token: 'read' })).toMatchObject({ accessMode: 'ro' });

    await expectError(c.call('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'x.txt' })}`, { token: 'write', body: 'x' }), 409, 'MOUNT_READ_ONLY');
    await expectError(c.call('POST', '/v1/commands/mkdir', { token: 'write', json: { mountId: t.mount.id, path: 'd' } }), 409, 'MOUNT_READ_ONLY');
    expect(await readdir(t.root as string)).toEqual([]);
    // Reads still work on a read-only mount.
    await c.json('GET', `/v1/nodes?${qs({ mountId: t.mount.key })}`, 200, { token: 'read' });

    await c.json('PATCH', `/v1/mounts/${t.mount.id}`, 200, { json: { accessMode: 'rw' } });
    await putFile(t.mount.key, 'x.txt', 'x');
    expect(await readdir(t.root as string)).toEqual(['x.txt']);
  });

  it('PATCH state paused makes writes 409 MOUNT_PAUSED until it is active again', async () => {
    const t = await mountOf();
    expect(await c.json('PATCH', `/v1/mounts/${t.mount.id}`, 200, { json: { state: 'paused' } })).toMatchObject({ state: 'paused' });
    await expectError(c.call('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'p.txt' })}`, { token: 'write', body: 'p' }), 409, 'MOUNT_PAUSED');
    await expectError(c.call('POST', '/v1/commands/mkdir', { token: 'write', json: { mountId: t.mount.key, path: 'd' } }), 409, 'MOUNT_PAUSED');
    expect(await readdir(t.root as string)).toEqual([]);
    await c.json('PATCH', `/v1/mounts/${t.mount.key}`, 200, { json: { state: 'active' } });
    await c.json('POST', '/v1/commands/mkdir', 200, { token: 'write', json: { mountId: t.mount.key, path: 'd' } });
    expect(await readdir(t.root as string)).toEqual(['d']);
  });

  it('an unknown mount is 404 MOUNT_NOT_FOUND on GET and PATCH; a bad PATCH body is 400', async () => {
    await expectError(c.call('GET', `/v1/mounts/${uniqueKey('nope')}`), 404, 'MOUNT_NOT_FOUND');
    await expectError(c.call('GET', '/v1/mounts/00000000-0000-4000-8000-000000000000'), 404, 'MOUNT_NOT_FOUND');
    await expectError(c.call('PATCH', `/v1/mounts/${uniqueKey('nope')}`, { json: { state: 'paused' } }), 404, 'MOUNT_NOT_FOUND');
    const t = await mountOf();
    await expectError(c.call('PATCH', `/v1/mounts/${t.mount.key}`, { json: { accessMode: 'rx' } }), 400, 'VALIDATION_ERROR');
    await expectError(c.call('PATCH', `/v1/mounts/${t.mount.key}`, { json: { key: 'other' } }), 400, 'VALIDATION_ERROR');
  });
});

describe('journal', () => {
  it('GET /v1/journal pages through every command in id order with after/limit/nextCursor', async () => {
    const t = await mountOf();
    const ids: number[] = [];
    ids.push((await c.json<{ journalEntryId: number }>('POST', '/v1/commands/mkdir', 200, { token: 'write', json: { mountId: t.mount.key, path: 'j' } })).journalEntryId);
    ids.push((await putFile(t.mount.key, 'j/a.txt', 'a')).journalEntryId);
    ids.push((await c.json<{ journalEntryId: number }>('POST', '/v1/commands/move', 200, { token: 'write', json: { mountId: t.mount.key, path: 'j/a.txt', targetPath: 'j/b.txt' } })).journalEntryId);
    ids.push((await c.json<{ journalEntryId: number }>('POST', '/v1/commands/copy', 200, { token: 'write', json: { mountId: t.mount.key, path: 'j/b.txt', targetPath: 'j/c.txt' } })).journalEntryId);
    ids.push((await c.json<{ journalEntryId: number }>('POST', '/v1/commands/delete', 200, { token: 'write', json: { mountId: t.mount.key, path: 'j/b.txt' } })).journalEntryId);
    // A failed command is journaled too.
    await expectError(c.call('POST', '/v1/commands/mkdir', { token: 'write', json: { mountId: t.mount.key, path: 'j' } }), 409, 'ALREADY_EXISTS');

    const seen: Array<ReturnType<typeof JournalEntry.parse>> = [];
    let after: string | undefined;
    let pages = 0;
    for (;;) {
      const p = page(JournalEntry).parse(await c.json('GET', `/v1/journal?${qs({ mountId: t.mount.id, limit: 2, after })}`, 200, { token: 'read' }));
      pages++;
      seen.push(...p.items);
      if (p.nextCursor === null) break;
      expect(p.items).toHaveLength(2);
      after = p.nextCursor;
    }
    expect(pages).toBe(3);
    expect(seen.map((e) => e.command)).toEqual(['mkdir', 'writeFile', 'move', 'copy', 'delete', 'mkdir']);
    expect(seen.map((e) => e.status)).toEqual(['succeeded', 'succeeded', 'succeeded', 'succeeded', 'succeeded', 'failed']);
    expect(seen.slice(0, 5).map((e) => e.id)).toEqual(ids);
    expect(seen[5]?.error).toMatchObject({ code: 'ALREADY_EXISTS' });
    expect(seen.every((e) => e.mountId === t.mount.id && e.principal === 'test-write')).toBe(true);
    expect(seen.map((e) => e.id)).toEqual([...seen.map((e) => e.id)].sort((a, b) => a - b));
    // The internal request fingerprint is not part of the wire shape.
    const raw = await c.json<{ items: Array<Record<string, unknown>> }>('GET', `/v1/journal?${qs({ mountId: t.mount.key, limit: 1 })}`, 200, { token: 'read' });
    expect(raw.items[0]).not.toHaveProperty('requestFingerprint');

    const empty = await c.json('GET', `/v1/journal?${qs({ mountId: t.mount.key, after: seen[5]?.id })}`, 200, { token: 'read' });
    expect(empty).toEqual({ items: [], nextCursor: null });
    await expectError(c.call('GET', `/v1/journal?${qs({ mountId: uniqueKey('nope') })}`, { token: 'read' }), 404, 'MOUNT_NOT_FOUND');
    await expectError(c.call('GET', `/v1/journal?${qs({ mountId: t.mount.key, limit: 0 })}`, { token: 'read' }), 400, 'VALIDATION_ERROR');
  });
});

describe('reconciliation routes', () => {
  it('GET /v1/reconcile/jobs answers an empty page for a new mount; an unknown job is 404', async () => {
    const t = await mountOf();
    expect(await c.json('GET', `/v1/reconcile/jobs?${qs({ mountId: t.mount.key })}`, 200, { token: 'read' })).toEqual({ items: [], nextCursor: null });
    const all = await c.json<{ items: unknown[]; nextCursor: string | null }>('GET', '/v1/reconcile/jobs?limit=5', 200, { token: 'read' });
    expect(Array.isArray(all.items)).toBe(true);
    await expectError(c.call('GET', '/v1/reconcile/jobs/987654321', { token: 'read' }), 404, 'NOT_FOUND');
    await expectError(c.call('GET', '/v1/reconcile/jobs/abc', { token: 'read' }), 400, 'VALIDATION_ERROR');
  });

  it('POST /v1/reconcile answers 404 MOUNT_NOT_FOUND for an unknown mount and 400 for a bad path', async () => {
    await expectError(c.call('POST', '/v1/reconcile', { token: 'write', json: { mountId: uniqueKey('nope') } }), 404, 'MOUNT_NOT_FOUND');
    const t = await mountOf();
    await expectError(c.call('POST', '/v1/reconcile', { token: 'write', json: { mountId: t.mount.key, path: '../x' } }), 400, 'INVALID_PATH');
    await expectError(c.call('POST', '/v1/reconcile', { token: 'read', json: { mountId: t.mount.key } }), 403, 'FORBIDDEN');
  });
});

describe('probes and metrics', () => {
  it('/healthz and /readyz answer without a token; readiness checks postgres and redis', async () => {
    expect(await c.json('GET', '/healthz', 200, { token: 'none' })).toEqual({ status: 'ok' });
    expect(await c.json('GET', '/readyz', 200, { token: 'none' })).toEqual({ status: 'ok', checks: { postgres: 'ok', redis: 'ok' } });
  });

  it('/metrics serves Prometheus text without a token', async () => {
    await c.call('GET', '/healthz', { token: 'none' });
    const res = await c.call('GET', '/metrics', { token: 'none' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toMatch(/^# HELP /m);
    expect(text).toMatch(/^# TYPE \w+ (counter|gauge|histogram)/m);
    expect(text).toContain('filestore_executor_operations_total');
  });
});
