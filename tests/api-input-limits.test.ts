import { mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FilestoreError } from '../shared/errors.ts';
import { normalizePath } from '../shared/paths.ts';
import { uniqueKey } from './support/filestore.ts';
import { expectError, qs, useApiServer, visibleEntries as visible } from './support/http.ts';

// Inputs that once reached PostgreSQL or the call stack unchecked: each is a 400 with a stable
// code, never a 500, and changes nothing.

const api = useApiServer('admin');
const { c, mountOf } = api;

/** A JSON body sent as this exact text (so lone-surrogate escapes such as \ud800 survive). */
const rawJson = (text: string) => ({ body: text, headers: { 'content-type': 'application/json' } });

describe('a filesystem root cannot be a mount, however it is spelled', () => {
  it('/, /proc/self/root and a symlink to / are refused (400 VALIDATION_ERROR); a symlink to a directory is fine', async () => {
    const scratch = await mkdtemp(path.join(os.tmpdir(), 'filestore-roots-'));
    api.cleanup(() => rm(scratch, { recursive: true, force: true }));
    await symlink('/', path.join(scratch, 'to-root'));
    await symlink(scratch, path.join(scratch, 'to-scratch'));
    for (const rootPath of ['/', '/proc/self/root', '/proc/self/cwd/..', path.join(scratch, 'to-root'), path.join(scratch, 'to-root', 'tmp', '..'), '/proc/1/root/tmp']) {
      const e = await expectError(c.call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('root'), rootPath } }), 400, 'VALIDATION_ERROR');
      expect(e.message, rootPath).toMatch(/rootPath/);
    }
    const ok = await c.json<{ rootPath: string }>('POST', '/v1/mounts', 201, { json: { kind: 'local', key: uniqueKey('link'), rootPath: path.join(scratch, 'to-scratch') } });
    expect(ok.rootPath).toBe(path.join(scratch, 'to-scratch'));
  });
});

describe('lone surrogates (not UTF-8, refused by PostgreSQL)', () => {
  it('in a path: 400 INVALID_PATH, in commands and reconciliation requests alike', async () => {
    const t = await mountOf();
    const key = JSON.stringify(t.mount.key);
    await expectError(c.call('POST', '/v1/commands/mkdir', rawJson(`{"mountId":${key},"path":"a\\ud800b"}`)), 400, 'INVALID_PATH');
    await expectError(c.call('POST', '/v1/commands/mkdir', rawJson(`{"mountId":${key},"path":"\\udc00"}`)), 400, 'INVALID_PATH');
    await c.json('POST', '/v1/commands/mkdir', 200, { json: { mountId: t.mount.key, path: 'src' } });
    await expectError(c.call('POST', '/v1/commands/move', rawJson(`{"mountId":${key},"path":"src","targetPath":"x\\ud83d"}`)), 400, 'INVALID_PATH');
    await expectError(c.call('POST', '/v1/reconcile', rawJson(`{"mountId":${key},"path":"y\\udfff"}`)), 400, 'INVALID_PATH');
    expect(() => normalizePath('a/\ud800')).toThrow(FilestoreError);
    // A surrogate pair is a character like any other.
    await c.json('POST', '/v1/commands/mkdir', 200, rawJson(`{"mountId":${key},"path":"smile-\\ud83d\\ude00"}`));
    expect(await visible(t.root as string)).toEqual(['smile-😀', 'src']);
  });

  it('in metadata keys or values, and in mount fields: 400 VALIDATION_ERROR', async () => {
    const t = await mountOf();
    const { node } = await c.json<{ node: { id: number } }>('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'm.txt' })}`, 200, { body: 'm' });
    const route = `/v1/nodes/${node.id}/metadata`;
    for (const body of ['{"set":{"\\ud800":1}}', '{"set":{"k":"v\\udc00"}}', '{"set":{"k":{"deeper":["ok","\\ud800"]}}}', '{"unset":["\\ud800"]}']) {
      await expectError(c.call('PATCH', route, rawJson(body)), 400, 'VALIDATION_ERROR');
    }
    await expectError(c.call('POST', '/v1/mounts', rawJson(`{"kind":"s3","key":"${uniqueKey('s3')}","bucket":"some-bucket","prefix":"p\\ud800/"}`)), 400, 'VALIDATION_ERROR');
    await expectError(c.call('POST', '/v1/mounts', rawJson(`{"kind":"local","key":"${uniqueKey('l')}","rootPath":"/tmp/x\\ud800"}`)), 400, 'VALIDATION_ERROR');
    const after = await c.json<{ version: number; metadata: Record<string, unknown> }>('GET', `/v1/nodes/${node.id}`, 200);
    expect(after).toMatchObject({ version: 1, metadata: {} });
  });

  it('the refusal says where: the path of the value or key, inside a large body too', async () => {
    const t = await mountOf();
    const { node } = await c.json<{ node: { id: number } }>('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'w.txt' })}`, 200, { body: 'w' });
    const route = `/v1/nodes/${node.id}/metadata`;
    const wide = Array.from({ length: 20_000 }, (_, i) => `"k${i}":"v${i}"`).join(',');
    const value = await expectError(c.call('PATCH', route, rawJson(`{"set":{${wide},"k":{"deeper":["ok","\\ud800"]}}}`)), 400, 'VALIDATION_ERROR');
    expect(value.message).toBe('set.k.deeper.1: not valid Unicode (a lone surrogate)');
    const key = await expectError(c.call('PATCH', route, rawJson(`{"set":{${wide},"list":[1,{"\\udc00":2}]}}`)), 400, 'VALIDATION_ERROR');
    expect(key.message).toBe('set.list.1.<key>: a key that is not valid Unicode (a lone surrogate)');
    const deep = await expectError(c.call('PATCH', route, rawJson(`{"set":{${wide},"a":{"b":${'['.repeat(70)}${']'.repeat(70)}}}}`)), 400, 'VALIDATION_ERROR');
    expect(deep.message).toBe(`body.set.a.b${'.0'.repeat(61)}: JSON bodies may nest at most 64 levels deep`);
  });
});

describe('deeply nested JSON', () => {
  const nested = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;

  it('a body nested deeper than 64 levels is 400 VALIDATION_ERROR (100,000 levels included), and changes nothing', async () => {
    const t = await mountOf();
    const { node } = await c.json<{ node: { id: number } }>('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'deep.txt' })}`, 200, { body: 'd' });
    const route = `/v1/nodes/${node.id}/metadata`;
    await expectError(c.call('PATCH', route, rawJson(`{"set":{"a":${nested(100_000)}}}`)), 400, 'VALIDATION_ERROR');
    await expectError(c.call('PATCH', route, rawJson(`{"set":{"a":${nested(63)}}}`)), 400, 'VALIDATION_ERROR'); // 65 levels with the body and set
    await c.json('PATCH', route, 200, rawJson(`{"set":{"a":${nested(62)}}}`)); // 64 levels
    const after = await c.json<{ version: number }>('GET', `/v1/nodes/${node.id}`, 200);
    expect(after.version).toBe(2);
  });

  it('the orchestrator refuses deep metadata from any caller (VALIDATION_ERROR, not a stack overflow)', async () => {
    const t = await mountOf();
    await c.json('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'o.txt' })}`, 200, { body: 'o' });
    let deep: unknown = 'bottom';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    const err = await api.server.core.orchestrator.updateMetadata(t.mount.key, { path: 'o.txt', set: { deep } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FilestoreError);
    expect((err as FilestoreError).code).toBe('VALIDATION_ERROR');
  });
});
