import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { expectError, qs, useApiServer, visibleEntries as visible } from './support/http.ts';

// Paths over HTTP (SPEC §2): NFC normalisation, and paths that must be refused with
// INVALID_PATH (or a symlink refusal) before anything reaches storage, inside or outside the root.

const api = useApiServer('write');
const { c, mountOf } = api;

const fileUrl = (mountId: string, p: string) => `/v1/files?${qs({ mountId, path: p })}`;
const put = (mountId: string, p: string, body: string) =>
  c.json<{ journalEntryId: number; node: { id: number; version: number } }>('PUT', fileUrl(mountId, p), 200, { body });
const download = (mountId: string, p: string) => c.call('GET', fileUrl(mountId, p), { token: 'read' });

describe('normalisation', () => {
  it('paths are NFC-normalised: a decomposed name finds, lists and stores the composed one', async () => {
    const t = await mountOf();
    const nfd = 'cafe\u0301/cre\u0300me.txt';
    const nfc = nfd.normalize('NFC');
    expect(nfc).not.toBe(nfd);
    const r = await put(t.mount.key, nfd, 'crème');
    expect(await visible(t.root as string)).toEqual(['caf\u00e9']);
    expect(await readdir(path.join(t.root as string, 'caf\u00e9'))).toEqual(['cr\u00e8me.txt']);
    const byNfc = await c.json<{ id: number; path: string }>('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: nfc })}`, 200, { token: 'read' });
    expect(byNfc).toMatchObject({ id: r.node.id, path: nfc });
    expect(await (await download(t.mount.key, nfd)).text()).toBe('crème');
    const listed = await c.json<{ items: Array<{ path: string }> }>('GET', `/v1/nodes?${qs({ mountId: t.mount.key, prefix: 'cafe\u0301/' })}`, 200, { token: 'read' });
    expect(listed.items.map((n) => n.path)).toEqual([nfc]);
    // Writing the other form overwrites the same node.
    expect((await put(t.mount.key, nfc, 'again')).node).toMatchObject({ id: r.node.id, version: 2 });
  });
});

describe('invalid paths', () => {
  const overlongSegment = 'a'.repeat(256);
  const overlongPath = Array.from({ length: 20 }, () => 'b'.repeat(250)).join('/');
  const bad: Array<[string, string]> = [
    ['a parent segment', '../escape-NAME'],
    ['a nested parent segment', 'x/../../escape-NAME'],
    ['a dot segment', './escape-NAME'],
    ['an empty segment', 'a//escape-NAME'],
    ['a NUL', 'escape-NAME\u0000.txt'],
    ['a control character', 'escape-NAME\u0001.txt'],
    ['a backslash', '..\\escape-NAME'],
    ['a segment over 255 bytes', `${overlongSegment}/escape-NAME`],
    ['a segment of 128 characters but 256 bytes', `${'\u00e9'.repeat(128)}/escape-NAME`],
    ['a path over 4096 bytes', `${overlongPath}/escape-NAME`],
  ];

  it.each(bad)('%s is 400 INVALID_PATH for writes, reads and commands, and nothing is written anywhere', async (_label, pattern) => {
    const t = await mountOf();
    const root = t.root as string;
    const name = `escape-${randomUUID().slice(0, 8)}`;
    const p = pattern.replace('NAME', name.slice('escape-'.length));
    await expectError(c.call('PUT', fileUrl(t.mount.key, p), { body: 'evil' }), 400, 'INVALID_PATH');
    await expectError(download(t.mount.key, p), 400, 'INVALID_PATH');
    await expectError(c.call('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: p })}`, { token: 'read' }), 400, 'INVALID_PATH');
    await expectError(c.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: p, parents: true } }), 400, 'INVALID_PATH');
    await put(t.mount.key, 'ok.txt', 'ok');
    await expectError(c.call('POST', '/v1/commands/copy', { json: { mountId: t.mount.key, path: 'ok.txt', targetPath: p } }), 400, 'INVALID_PATH');
    await expectError(c.call('POST', '/v1/commands/move', { json: { mountId: t.mount.key, path: 'ok.txt', targetPath: p } }), 400, 'INVALID_PATH');
    // Nothing inside the root but the one good file, nothing beside it.
    expect(await visible(root)).toEqual(['ok.txt']);
    expect((await readdir(path.dirname(root))).filter((n) => n.includes(name))).toEqual([]);
    const nodes = await c.json<{ items: Array<{ path: string }> }>('GET', `/v1/nodes?${qs({ mountId: t.mount.key })}`, 200);
    expect(nodes.items.map((n) => n.path)).toEqual(['', 'ok.txt']);
  });

  it('a NUL sent raw as %00 in the query is 400 INVALID_PATH', async () => {
    const t = await mountOf();
    await expectError(c.call('PUT', `/v1/files?mountId=${t.mount.key}&path=a%00b`, { body: 'x' }), 400, 'INVALID_PATH');
    expect(await visible(t.root as string)).toEqual([]);
  });

  it('a write through a symlink that leaves the root is refused and writes nothing outside', async () => {
    const t = await mountOf();
    const outside = await mkdtemp(path.join(os.tmpdir(), 'filestore-outside-'));
    api.cleanup(() => rm(outside, { recursive: true, force: true }));
    await symlink(outside, path.join(t.root as string, 'link'));
    await mkdir(path.join(t.root as string, 'real'));
    await symlink(path.join(t.root as string, 'real'), path.join(t.root as string, 'inner-link'));
    for (const p of ['link/x.txt', 'link/deep/x.txt', 'inner-link/x.txt']) {
      await expectError(c.call('PUT', fileUrl(t.mount.key, p), { body: 'evil' }), 400, ['PATH_ESCAPES_MOUNT', 'SYMLINK_IN_PATH']);
      await expectError(c.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: p, parents: true } }), 400, ['PATH_ESCAPES_MOUNT', 'SYMLINK_IN_PATH']);
    }
    expect(await readdir(outside)).toEqual([]);
    expect(await readdir(path.join(t.root as string, 'real'))).toEqual([]);
  });
});
