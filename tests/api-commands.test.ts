import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Node, page } from '../shared/api/schemas.ts';
import type { BackendKind } from './support/filestore.ts';
import { expectError, qs, useApiServer, visibleEntries } from './support/http.ts';

// The journaled commands over real HTTP (mkdir, move, copy, delete, metadata), asserting
// on files on disk and the catalogue as later GETs show it.

type NodeJson = ReturnType<typeof Node.parse>;
interface Result {
  journalEntryId: number;
  node: NodeJson;
}

const { c, mountOf } = useApiServer('write');

const put = (mountId: string, p: string, bytes: string) => c.json<Result>('PUT', `/v1/files?${qs({ mountId, path: p })}`, 200, { body: bytes });
const command = (name: string, body: Record<string, unknown>) => c.json<Result>('POST', `/v1/commands/${name}`, 200, { json: body });
const byPath = async (mountId: string, p: string) => Node.parse(await c.json('GET', `/v1/nodes/by-path?${qs({ mountId, path: p })}`, 200, { token: 'read' }));
const liveFiles = async (mountId: string) =>
  page(Node).parse(await c.json('GET', `/v1/nodes?${qs({ mountId, kind: 'file', limit: 1000 })}`, 200, { token: 'read' })).items;
const livePaths = async (mountId: string) =>
  page(Node).parse(await c.json('GET', `/v1/nodes?${qs({ mountId, limit: 1000 })}`, 200, { token: 'read' })).items.map((n) => n.path);

describe('commands', () => {
  it('mkdir creates a directory (parents: ancestors too, an existing directory is fine)', async () => {
    const t = await mountOf();
    const r = await command('mkdir', { mountId: t.mount.key, path: 'm' });
    expect(r).toMatchObject({ journalEntryId: expect.any(Number), node: { path: 'm', kind: 'directory', version: 1 } });
    await command('mkdir', { mountId: t.mount.id, path: 'x/y/z', parents: true });
    await command('mkdir', { mountId: t.mount.id, path: 'x/y', parents: true });
    expect((await stat(path.join(t.root as string, 'x/y/z'))).isDirectory()).toBe(true);
    await expectError(c.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: 'm' } }), 409, 'ALREADY_EXISTS');
    await expectError(c.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: 'q/r' } }), 404, 'NOT_FOUND');
  });

  it('move renames on disk and in the catalogue; the old path is gone', async () => {
    const t = await mountOf();
    const { node } = await put(t.mount.key, 'src/a.txt', 'move me');
    const r = await command('move', { mountId: t.mount.key, path: 'src/a.txt', targetPath: 'dst/b.txt' });
    expect(r.node).toMatchObject({ path: 'dst/b.txt', name: 'b.txt', sizeBytes: 7 });
    expect(await readFile(path.join(t.root as string, 'dst/b.txt'), 'utf8')).toBe('move me');
    expect(await readdir(path.join(t.root as string, 'src'))).toEqual([]);
    await expectError(c.call('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'src/a.txt' })}`), 404, 'NOT_FOUND');
    expect((await byPath(t.mount.key, 'dst/b.txt')).sizeBytes).toBe(7);
    expect(node.path).toBe('src/a.txt');
    // A taken target needs overwrite.
    await put(t.mount.key, 'src/c.txt', 'c');
    await expectError(c.call('POST', '/v1/commands/move', { json: { mountId: t.mount.key, path: 'src/c.txt', targetPath: 'dst/b.txt' } }), 409, 'ALREADY_EXISTS');
    await command('move', { mountId: t.mount.key, path: 'src/c.txt', targetPath: 'dst/b.txt', overwrite: true });
    expect(await readFile(path.join(t.root as string, 'dst/b.txt'), 'utf8')).toBe('c');
    await expectError(c.call('POST', '/v1/commands/move', { json: { mountId: t.mount.key, path: 'dst', targetPath: 'dst/inner' } }), 409, 'MOVE_INTO_SELF');
  });

  it.each<BackendKind>(['local', 's3'])('copy duplicates a file and a tree (%s)', async (kind) => {
    const t = await mountOf(kind);
    await put(t.mount.key, 'tree/a.txt', 'aaa');
    await put(t.mount.key, 'tree/sub/b.txt', 'bb');
    await command('copy', { mountId: t.mount.key, path: 'tree/a.txt', targetPath: 'one.txt' });
    await command('copy', { mountId: t.mount.key, path: 'tree', targetPath: 'tree2' });
    expect((await liveFiles(t.mount.key)).map((n) => [n.path, n.sizeBytes])).toEqual([
      ['one.txt', 3], ['tree/a.txt', 3], ['tree/sub/b.txt', 2], ['tree2/a.txt', 3], ['tree2/sub/b.txt', 2],
    ]);
    const res = await c.call('GET', `/v1/files?${qs({ mountId: t.mount.key, path: 'tree2/sub/b.txt' })}`, { token: 'read' });
    expect(await res.text()).toBe('bb');
  });

  it('delete: a non-empty directory needs recursive (409 DIRECTORY_NOT_EMPTY); the nodes become tombstones', async () => {
    const t = await mountOf();
    await put(t.mount.key, 'full/a.txt', 'a');
    await put(t.mount.key, 'full/sub/b.txt', 'b');
    await expectError(c.call('POST', '/v1/commands/delete', { json: { mountId: t.mount.key, path: 'full' } }), 409, 'DIRECTORY_NOT_EMPTY');
    expect(await readdir(path.join(t.root as string, 'full'))).toEqual(['a.txt', 'sub']);
    const r = await command('delete', { mountId: t.mount.key, path: 'full', recursive: true });
    expect(r.node).toMatchObject({ path: 'full', deletedAt: expect.any(String) });
    expect(await visibleEntries(t.root as string)).toEqual([]);
    expect(await livePaths(t.mount.key)).toEqual(['']);
    await expectError(c.call('POST', '/v1/commands/delete', { json: { mountId: t.mount.key, path: 'full' } }), 404, 'NOT_FOUND');
  });

  it('PATCH metadata sets and unsets keys; If-Match must name the current version', async () => {
    const t = await mountOf();
    const { node } = await put(t.mount.key, 'meta.txt', 'm');
    const url = `/v1/nodes/${node.id}/metadata`;
    const set = await c.json<Result>('PATCH', url, 200, { json: { set: { owner: 'ana', tags: ['a', 'b'], n: 1 } } });
    expect(set.node).toMatchObject({ version: 2, metadata: { owner: 'ana', tags: ['a', 'b'], n: 1 } });
    const unset = await c.json<Result>('PATCH', url, 200, { json: { unset: ['n', 'absent'] }, headers: { 'if-match': '2' } });
    expect(unset.node.metadata).toEqual({ owner: 'ana', tags: ['a', 'b'] });
    expect(unset.node.version).toBe(3);
    await expectError(c.call('PATCH', url, { json: { set: { x: 1 } }, headers: { 'if-match': '2' } }), 409, 'VERSION_MISMATCH');
    await c.json('PATCH', url, 200, { json: { set: { x: 1 } }, headers: { 'if-match': '"3"' } });
    expect((await byPath(t.mount.key, 'meta.txt')).metadata).toEqual({ owner: 'ana', tags: ['a', 'b'], x: 1 });
    await expectError(c.call('PATCH', url, { json: { set: { x: 1 } }, headers: { 'if-match': 'abc' } }), 400, 'VALIDATION_ERROR');
    await expectError(c.call('PATCH', url, { json: { replace: {} } }), 400, 'VALIDATION_ERROR');
    await expectError(c.call('PATCH', '/v1/nodes/9007199254740/metadata', { json: { set: { x: 1 } } }), 404, 'NOT_FOUND');
  });

  it('move/copy/delete honour If-Match (or expectedVersion); the two must agree', async () => {
    const t = await mountOf();
    await put(t.mount.key, 'a.txt', 'a');
    await put(t.mount.key, 'a.txt', 'aa'); // version 2
    const move = (body: Record<string, unknown>, headers?: Record<string, string>) =>
      c.call('POST', '/v1/commands/move', { json: { mountId: t.mount.key, path: 'a.txt', targetPath: 'b.txt', ...body }, ...(headers ? { headers } : {}) });
    await expectError(move({}, { 'if-match': '1' }), 409, 'VERSION_MISMATCH');
    await expectError(move({ expectedVersion: 1 }), 409, 'VERSION_MISMATCH');
    await expectError(move({ expectedVersion: 2 }, { 'if-match': '1' }), 400, 'VALIDATION_ERROR');
    await expectError(c.call('POST', '/v1/commands/delete', { json: { mountId: t.mount.key, path: 'a.txt' }, headers: { 'if-match': '5' } }), 409, 'VERSION_MISMATCH');
    expect(await visibleEntries(t.root as string)).toEqual(['a.txt']);
    expect((await (await move({}, { 'if-match': '2' })).json()) as Result).toMatchObject({ node: { path: 'b.txt' } });
    expect(await visibleEntries(t.root as string)).toEqual(['b.txt']);
  });

  it('a move or copy to another mount is refused cleanly, leaving both mounts as they were', async () => {
    // SPEC §4 lists targetMountId; this version refuses it (400 VALIDATION_ERROR "not supported yet").
    const a = await mountOf();
    const b = await mountOf();
    await put(a.mount.key, 'x/f.txt', 'f');
    for (const name of ['copy', 'move']) {
      const res = await c.call('POST', `/v1/commands/${name}`, { json: { mountId: a.mount.key, path: 'x', targetMountId: b.mount.key, targetPath: 'y' } });
      expect([400, 501]).toContain(res.status);
    }
    expect(await livePaths(a.mount.key)).toEqual(['', 'x', 'x/f.txt']);
    expect(await livePaths(b.mount.key)).toEqual(['']);
    expect(await visibleEntries(b.root as string)).toEqual([]);
    expect(await readFile(path.join(a.root as string, 'x/f.txt'), 'utf8')).toBe('f');
  });
});
