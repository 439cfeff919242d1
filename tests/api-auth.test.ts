import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { uniqueKey } from './support/filestore.ts';
import { expectError, qs, useApiServer, visibleEntries as visible, type Client } from './support/http.ts';

// Who may call what, idempotent retries, and how bad requests are refused: always the
// documented error body with a stable code, never a stack trace.

const api = useApiServer('write');
const { c, mountOf } = api;

const journalOf = async (mountId: string) =>
  (await c.json<{ items: Array<{ id: number; command: string; status: string }> }>('GET', `/v1/journal?${qs({ mountId })}`, 200, { token: 'read' })).items;

describe('authentication and scopes', () => {
  it('a protected route without a token, with an unknown token or a non-bearer scheme is 401 UNAUTHENTICATED', async () => {
    const t = await mountOf();
    for (const route of ['/v1/mounts', `/v1/nodes?${qs({ mountId: t.mount.key })}`, `/v1/mounts/${t.mount.key}`]) {
      await expectError(c.call('GET', route, { token: 'none' }), 401, 'UNAUTHENTICATED');
      await expectError(c.call('GET', route, { token: 'none', headers: { authorization: 'Bearer fs_not-a-real-token' } }), 401, 'UNAUTHENTICATED');
      await expectError(c.call('GET', route, { token: 'none', headers: { authorization: `Basic ${api.server.tokens.admin}` } }), 401, 'UNAUTHENTICATED');
    }
    // A refused write leaves nothing behind.
    await expectError(c.call('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'x.txt' })}`, { token: 'none', body: 'x' }), 401, 'UNAUTHENTICATED');
    await expectError(c.call('POST', '/v1/commands/mkdir', { token: 'none', json: { mountId: t.mount.key, path: 'd' } }), 401, 'UNAUTHENTICATED');
    expect(await visible(t.root as string)).toEqual([]);
    expect(await journalOf(t.mount.key)).toEqual([]);
  });

  it('the token is not echoed in error messages', async () => {
    const secret = `fs_${randomUUID()}`;
    const res = await c.call('GET', '/v1/mounts', { token: 'none', headers: { authorization: `Bearer ${secret}` } });
    const text = await res.text();
    expect(res.status).toBe(401);
    expect(text).not.toContain(secret);
  });

  it('a read token on a write route is 403 FORBIDDEN and changes nothing', async () => {
    const t = await mountOf();
    const { node } = await c.json<{ node: { id: number } }>('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'f.txt' })}`, 200, { body: 'f' });
    const refused: Array<[string, string, Parameters<Client['call']>[2]]> = [
      ['PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'g.txt' })}`, { body: 'g' }],
      ['POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: 'd' } }],
      ['POST', '/v1/commands/move', { json: { mountId: t.mount.key, path: 'f.txt', targetPath: 'h.txt' } }],
      ['POST', '/v1/commands/copy', { json: { mountId: t.mount.key, path: 'f.txt', targetPath: 'h.txt' } }],
      ['POST', '/v1/commands/delete', { json: { mountId: t.mount.key, path: 'f.txt' } }],
      ['PATCH', `/v1/nodes/${node.id}/metadata`, { json: { set: { a: 1 } } }],
      ['POST', '/v1/reconcile', { json: { mountId: t.mount.key } }],
      ['POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('api'), rootPath: '/tmp' } }],
      ['PATCH', `/v1/mounts/${t.mount.key}`, { json: { state: 'paused' } }],
    ];
    for (const [method, route, o] of refused) await expectError(c.call(method, route, { ...o, token: 'read' }), 403, 'FORBIDDEN');
    expect(await visible(t.root as string)).toEqual(['f.txt']);
    expect((await journalOf(t.mount.key)).map((e) => e.command)).toEqual(['writeFile']);
    expect(await c.json('GET', `/v1/mounts/${t.mount.key}`, 200, { token: 'read' })).toMatchObject({ state: 'active' });
    // The same read token may read.
    await c.json('GET', `/v1/nodes/${node.id}`, 200, { token: 'read' });
    expect(await (await c.call('GET', `/v1/files?${qs({ mountId: t.mount.key, path: 'f.txt' })}`, { token: 'read' })).text()).toBe('f');
  });

  it('a write token may not register or change mounts (403); admin may do everything write may', async () => {
    const t = await mountOf();
    const key = uniqueKey('api');
    await expectError(c.call('POST', '/v1/mounts', { token: 'write', json: { kind: 'local', key, rootPath: t.root } }), 403, 'FORBIDDEN');
    await expectError(c.call('GET', `/v1/mounts/${key}`, { token: 'read' }), 404, 'MOUNT_NOT_FOUND');
    await expectError(c.call('PATCH', `/v1/mounts/${t.mount.key}`, { token: 'write', json: { accessMode: 'ro' } }), 403, 'FORBIDDEN');
    expect(await c.json('GET', `/v1/mounts/${t.mount.key}`, 200, { token: 'write' })).toMatchObject({ accessMode: 'rw' });
    await c.json('POST', '/v1/commands/mkdir', 200, { token: 'admin', json: { mountId: t.mount.key, path: 'by-admin' } });
    await c.json('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'by-admin/f' })}`, 200, { token: 'admin', body: 'f' });
    const entries = await c.json<{ items: Array<{ principal: string }> }>('GET', `/v1/journal?${qs({ mountId: t.mount.key })}`, 200, { token: 'admin' });
    expect(entries.items.map((e) => e.principal)).toEqual(['test-admin', 'test-admin']);
  });

  it('probes, metrics and the API description are public', async () => {
    for (const route of ['/healthz', '/readyz', '/metrics', '/openapi.json']) {
      expect((await c.call('GET', route, { token: 'none' })).status, route).toBe(200);
    }
  });
});

describe('not found', () => {
  it('unknown routes, node ids, mounts and paths are 404 with their own codes', async () => {
    const t = await mountOf();
    await expectError(c.call('GET', '/v1/nope'), 404, 'NOT_FOUND');
    await expectError(c.call('GET', '/v2/mounts', { token: 'none' }), 404, 'NOT_FOUND');
    await expectError(c.call('GET', '/v1/nodes/123456789012'), 404, 'NOT_FOUND');
    const ghost = `ghost-${randomUUID().slice(0, 8)}`;
    await expectError(c.call('GET', `/v1/nodes?${qs({ mountId: ghost })}`), 404, 'MOUNT_NOT_FOUND');
    await expectError(c.call('GET', `/v1/nodes/by-path?${qs({ mountId: ghost, path: 'a' })}`), 404, 'MOUNT_NOT_FOUND');
    await expectError(c.call('PUT', `/v1/files?${qs({ mountId: ghost, path: 'a' })}`, { body: 'a' }), 404, 'MOUNT_NOT_FOUND');
    await expectError(c.call('POST', '/v1/commands/mkdir', { json: { mountId: ghost, path: 'a' } }), 404, 'MOUNT_NOT_FOUND');
    await expectError(c.call('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'no/such/file' })}`), 404, 'NOT_FOUND');
    await expectError(c.call('POST', '/v1/commands/delete', { json: { mountId: t.mount.key, path: 'no-such' } }), 404, 'NOT_FOUND');
  });
});

describe('idempotency', () => {
  it('a replay with the same Idempotency-Key and body returns the first result and journals nothing new', async () => {
    const t = await mountOf();
    const key = randomUUID();
    const body = { mountId: t.mount.key, path: 'once' };
    const first = await c.json<{ journalEntryId: number }>('POST', '/v1/commands/mkdir', 200, { json: body, headers: { 'idempotency-key': key } });
    const again = await c.json<{ journalEntryId: number }>('POST', '/v1/commands/mkdir', 200, { json: body, headers: { 'idempotency-key': key } });
    expect(again).toEqual(first);
    expect((await journalOf(t.mount.key)).map((e) => e.id)).toEqual([first.journalEntryId]);

    await expectError(
      c.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: 'twice' }, headers: { 'idempotency-key': key } }),
      409,
      'IDEMPOTENCY_CONFLICT',
    );
    // Another command under the same key is a different request too.
    await expectError(c.call('POST', '/v1/commands/delete', { json: body, headers: { 'idempotency-key': key } }), 409, 'IDEMPOTENCY_CONFLICT');
    expect(await visible(t.root as string)).toEqual(['once']);
    expect(await journalOf(t.mount.key)).toHaveLength(1);
  });

  it('an upload replayed with the same bytes returns the first result; different bytes are 409 IDEMPOTENCY_CONFLICT', async () => {
    const t = await mountOf();
    const key = randomUUID();
    const url = `/v1/files?${qs({ mountId: t.mount.key, path: 'up.txt' })}`;
    const first = await c.json<{ journalEntryId: number; node: { version: number } }>('PUT', url, 200, { body: 'bytes', headers: { 'idempotency-key': key } });
    const again = await c.json('PUT', url, 200, { body: 'bytes', headers: { 'idempotency-key': key } });
    expect(again).toEqual(first);
    await expectError(c.call('PUT', url, { body: 'other bytes', headers: { 'idempotency-key': key } }), 409, 'IDEMPOTENCY_CONFLICT');
    expect(await readFile(path.join(t.root as string, 'up.txt'), 'utf8')).toBe('bytes');
    expect(await journalOf(t.mount.key)).toHaveLength(1);
    expect(first.node.version).toBe(1);
  });

  it('a malformed Idempotency-Key is 400 VALIDATION_ERROR', async () => {
    const t = await mountOf();
    await expectError(
      c.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: 'k' }, headers: { 'idempotency-key': 'x'.repeat(300) } }),
      400,
      'VALIDATION_ERROR',
    );
    expect(await visible(t.root as string)).toEqual([]);
  });
});

describe('request validation', () => {
  it('a bad JSON body, an unknown field, a wrong type or a missing field is 400 VALIDATION_ERROR', async () => {
    const t = await mountOf();
    const mkdir = (o: Parameters<Client['call']>[2]) => c.call('POST', '/v1/commands/mkdir', o);
    await expectError(mkdir({ body: '{"mountId": ', headers: { 'content-type': 'application/json' } }), 400, 'VALIDATION_ERROR');
    await expectError(mkdir({ json: { mountId: t.mount.key, path: 'a', bogus: true } }), 400, 'VALIDATION_ERROR');
    await expectError(mkdir({ json: { mountId: t.mount.key, path: 42 } }), 400, 'VALIDATION_ERROR');
    await expectError(mkdir({ json: { mountId: t.mount.key, path: 'a', parents: 'yes' } }), 400, 'VALIDATION_ERROR');
    await expectError(mkdir({ json: { path: 'a' } }), 400, 'VALIDATION_ERROR');
    await expectError(mkdir({ json: [] }), 400, 'VALIDATION_ERROR');
    await expectError(mkdir({}), 400, 'VALIDATION_ERROR');
    await expectError(mkdir({ body: JSON.stringify({ mountId: t.mount.key, path: 'a' }), headers: { 'content-type': 'text/plain' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    const v = await expectError(c.call('POST', '/v1/commands/move', { json: { mountId: t.mount.key, path: 'a', targetPath: 'b', expectedVersion: -1 } }), 400, 'VALIDATION_ERROR');
    expect(v.message).toContain('expectedVersion');
    expect(await visible(t.root as string)).toEqual([]);
  });

  it('a JSON body over 1 MiB is 413 PAYLOAD_TOO_LARGE', async () => {
    const t = await mountOf();
    const big = JSON.stringify({ mountId: t.mount.key, path: 'big', pad: 'x'.repeat(1024 * 1024) });
    await expectError(c.call('POST', '/v1/commands/mkdir', { body: big, headers: { 'content-type': 'application/json' } }), 413, 'PAYLOAD_TOO_LARGE');
    const bigger = JSON.stringify({ set: { pad: 'y'.repeat(4 * 1024 * 1024) } });
    await expectError(c.call('PATCH', '/v1/nodes/1/metadata', { body: bigger, headers: { 'content-type': 'application/json' } }), 413, 'PAYLOAD_TOO_LARGE');
    expect(await visible(t.root as string)).toEqual([]);
    // The server is fine afterwards.
    await c.json('POST', '/v1/commands/mkdir', 200, { json: { mountId: t.mount.key, path: 'after' } });
  });

  it('every response carries a correlation id; a valid X-Correlation-Id is echoed and journaled', async () => {
    const t = await mountOf();
    const id = `req-${randomUUID()}`;
    const res = await c.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: 'c' }, headers: { 'x-correlation-id': id } });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-correlation-id')).toBe(id);
    const entries = await c.json<{ items: Array<{ correlationId: string }> }>('GET', `/v1/journal?${qs({ mountId: t.mount.key })}`, 200);
    expect(entries.items[0]?.correlationId).toBe(id);
    const err = await c.call('GET', '/v1/nope', { headers: { 'x-correlation-id': 'bad id with spaces' } });
    expect(err.status).toBe(404);
    // A malformed one is replaced by a fresh id of the server's, different on every response.
    const fresh = err.headers.get('x-correlation-id');
    expect(fresh).toMatch(/^[A-Za-z0-9._:-]{16,128}$/);
    const again = await c.call('GET', '/v1/nope');
    expect(again.headers.get('x-correlation-id')).not.toBe(fresh);
  });
});
