import { describe, expect, it } from 'vitest';
import { Node, Snapshot, page } from '../shared/api/schemas.ts';
import type { BackendKind } from './support/filestore.ts';
import { expectError, qs, useApiServer } from './support/http.ts';

// Browsing over real HTTP: lists in byte order with keyset cursors, by-path with exact
// rollups, one node by id (tombstones too), children, snapshots.

type NodeJson = ReturnType<typeof Node.parse>;
interface Result {
  journalEntryId: number;
  node: NodeJson;
}

const fixture = useApiServer('write');
const { c, mountOf } = fixture;

const put = (mountId: string, p: string, bytes: string | Buffer) =>
  c.json<Result>('PUT', `/v1/files?${qs({ mountId, path: p })}`, 200, { body: bytes });
const command = (name: string, body: Record<string, unknown>, headers?: Record<string, string>) =>
  c.json<Result>('POST', `/v1/commands/${name}`, 200, { json: body, ...(headers ? { headers } : {}) });
const byPath = async (mountId: string, p: string) => Node.parse(await c.json('GET', `/v1/nodes/by-path?${qs({ mountId, path: p })}`, 200, { token: 'read' }));
const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** Every page of a paginated list, asserting each is at most `limit` long. */
async function allPages(route: string, params: Record<string, string | number | undefined>, limit: number) {
  const items: NodeJson[] = [];
  let cursor: string | undefined;
  let pages = 0;
  for (;;) {
    const p = page(Node).parse(await c.json('GET', `${route}?${qs({ ...params, limit, cursor })}`, 200, { token: 'read' }));
    pages++;
    expect(p.items.length).toBeLessThanOrEqual(limit);
    items.push(...p.items);
    if (p.nextCursor === null) return { items, pages };
    cursor = p.nextCursor;
    expect(pages).toBeLessThan(100);
  }
}

describe('listing nodes', () => {
  const names = ['B', 'a', 'é', '_', 'Z', 'b', '0', '~', 'ä', 'A', 'a b', 'a-b', 'aa', 'z'];

  it.each<BackendKind>(['local', 's3'])('GET /v1/nodes pages in byte order with no duplicates or omissions (%s)', async (kind) => {
    const t = await mountOf(kind);
    for (const n of names) await put(t.mount.key, `list/${n}`, n);
    await put(t.mount.key, 'other.txt', 'o');
    const { items, pages } = await allPages('/v1/nodes', { mountId: t.mount.key, prefix: 'list/' }, 4);
    expect(pages).toBeGreaterThanOrEqual(3);
    const paths = items.map((n) => n.path);
    expect(new Set(paths).size).toBe(paths.length);
    expect(paths).toEqual(names.map((n) => `list/${n}`).sort(byteOrder));
    // Byte order, not a locale's: "B" < "_" < "a" < "z" < "~" < "ä" < "é".
    expect(paths.indexOf('list/B')).toBeLessThan(paths.indexOf('list/_'));
    expect(paths.indexOf('list/_')).toBeLessThan(paths.indexOf('list/a'));
    expect(paths.indexOf('list/~')).toBeLessThan(paths.indexOf('list/é'));

    // Without a prefix: the whole mount, root first, in the same order.
    const whole = await allPages('/v1/nodes', { mountId: t.mount.id }, 5);
    expect(whole.items.map((n) => n.path)).toEqual(['', 'list', ...paths, 'other.txt'].sort(byteOrder));
  });

  it('filters by kind and state; an invalid filter is 400 VALIDATION_ERROR', async () => {
    const t = await mountOf();
    await put(t.mount.key, 'k/f1.txt', '1');
    await put(t.mount.key, 'k/sub/f2.txt', '22');
    await command('mkdir', { mountId: t.mount.key, path: 'k/empty' });
    const dirs = await allPages('/v1/nodes', { mountId: t.mount.key, kind: 'directory' }, 100);
    expect(dirs.items.map((n) => n.path)).toEqual(['', 'k', 'k/empty', 'k/sub']);
    const files = await allPages('/v1/nodes', { mountId: t.mount.key, kind: 'file', prefix: 'k/' }, 100);
    expect(files.items.map((n) => n.path)).toEqual(['k/f1.txt', 'k/sub/f2.txt']);
    const active = await allPages('/v1/nodes', { mountId: t.mount.key, state: 'ACTIVE', prefix: 'k/sub' }, 100);
    expect(active.items.map((n) => n.path)).toEqual(['k/sub', 'k/sub/f2.txt']);
    const missing = await allPages('/v1/nodes', { mountId: t.mount.key, state: 'MISSING' }, 100);
    expect(missing.items).toEqual([]);
    await expectError(c.call('GET', `/v1/nodes?${qs({ mountId: t.mount.key, kind: 'folder' })}`), 400, 'VALIDATION_ERROR');
    await expectError(c.call('GET', `/v1/nodes?${qs({ mountId: t.mount.key, state: 'active' })}`), 400, 'VALIDATION_ERROR');
    await expectError(c.call('GET', `/v1/nodes?${qs({ mountId: t.mount.key, cursor: 'garbage' })}`), 400, 'VALIDATION_ERROR');
    await expectError(c.call('GET', '/v1/nodes'), 400, 'VALIDATION_ERROR');
  });
});

describe('one node, children and history', () => {
  it('by-path carries exact recursive rollups for directories, kept up to date by commands', async () => {
    const t = await mountOf();
    await put(t.mount.key, 'r/a.txt', 'x'.repeat(10));
    await put(t.mount.key, 'r/sub/b.txt', 'y'.repeat(20));
    await put(t.mount.key, 'r/sub/deep/c.txt', 'z'.repeat(5));
    await command('mkdir', { mountId: t.mount.key, path: 'r/empty' });
    expect((await byPath(t.mount.key, 'r')).rollup).toMatchObject({ sizeBytes: 35, fileCount: 3, dirCount: 3, childCount: 3 });
    expect((await byPath(t.mount.key, 'r/sub')).rollup).toMatchObject({ sizeBytes: 25, fileCount: 2, dirCount: 1, childCount: 2 });
    expect((await byPath(t.mount.key, '')).rollup).toMatchObject({ sizeBytes: 35, fileCount: 3, dirCount: 4, childCount: 1 });
    expect(await byPath(t.mount.key, 'r/a.txt')).not.toHaveProperty('rollup');

    await put(t.mount.key, 'r/a.txt', 'x'); // 10 → 1 byte
    await command('delete', { mountId: t.mount.key, path: 'r/sub/deep', recursive: true });
    await command('copy', { mountId: t.mount.key, path: 'r/sub', targetPath: 'r/empty/copy' });
    expect((await byPath(t.mount.key, 'r')).rollup).toMatchObject({ sizeBytes: 41, fileCount: 3, dirCount: 3, childCount: 3 });
    expect((await byPath(t.mount.key, 'r/empty')).rollup).toMatchObject({ sizeBytes: 20, fileCount: 1, dirCount: 1, childCount: 1 });
    // A leading "/" is accepted and dropped.
    expect((await byPath(t.mount.key, '/r/a.txt')).sizeBytes).toBe(1);
    await expectError(c.call('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'r/sub/deep' })}`), 404, 'NOT_FOUND');
  });

  it('GET /v1/nodes/:id returns live and deleted nodes; an unknown id is 404 NOT_FOUND', async () => {
    const t = await mountOf();
    const { node } = await put(t.mount.key, 'd/gone.txt', 'bye');
    const dir = await byPath(t.mount.key, 'd');
    const got = Node.parse(await c.json('GET', `/v1/nodes/${dir.id}`, 200, { token: 'read' }));
    expect(got).toMatchObject({ id: dir.id, path: 'd', kind: 'directory', rollup: { sizeBytes: 3, fileCount: 1, childCount: 1 } });
    await command('delete', { mountId: t.mount.key, path: 'd/gone.txt' });
    const tomb = Node.parse(await c.json('GET', `/v1/nodes/${node.id}`, 200, { token: 'read' }));
    expect(tomb.deletedAt).not.toBeNull();
    expect(tomb.path).toBe('d/gone.txt');
    await expectError(c.call('GET', '/v1/nodes/9007199254740'), 404, 'NOT_FOUND');
    await expectError(c.call('GET', '/v1/nodes/abc'), 400, 'VALIDATION_ERROR');
  });

  it('children are paginated by name in byte order, with rollups for directory children', async () => {
    const t = await mountOf();
    const names = ['b.txt', 'A', '_x', 'é', 'a'];
    for (const n of names) await put(t.mount.key, `p/${n}`, n);
    await put(t.mount.key, 'p/dir/inner.txt', '12345');
    const parent = await byPath(t.mount.key, 'p');
    const { items, pages } = await allPages(`/v1/nodes/${parent.id}/children`, {}, 2);
    expect(pages).toBe(3);
    expect(items.map((n) => n.name)).toEqual([...names, 'dir'].sort(byteOrder));
    const dir = items.find((n) => n.name === 'dir');
    expect(dir?.rollup).toMatchObject({ sizeBytes: 5, fileCount: 1, dirCount: 0, childCount: 1 });
    for (const n of items.filter((i) => i.kind === 'file')) expect(n).not.toHaveProperty('rollup');
    const file = items.find((n) => n.name === 'a');
    await expectError(c.call('GET', `/v1/nodes/${file?.id}/children`), 409, 'NOT_A_DIRECTORY');
    await expectError(c.call('GET', '/v1/nodes/9007199254740/children'), 404, 'NOT_FOUND');
  });

  it('snapshots record every version, oldest first, paginated', async () => {
    const t = await mountOf();
    const first = await put(t.mount.key, 'h.txt', 'v1');
    await put(t.mount.key, 'h.txt', 'v2-longer');
    await put(t.mount.key, 'h.txt', 'v3');
    await c.json('PATCH', `/v1/nodes/${first.node.id}/metadata`, 200, { json: { set: { tag: 'x' } } });
    const snaps: Array<ReturnType<typeof Snapshot.parse>> = [];
    let cursor: string | undefined;
    for (;;) {
      const p = page(Snapshot).parse(await c.json('GET', `/v1/nodes/${first.node.id}/snapshots?${qs({ limit: 3, cursor })}`, 200, { token: 'read' }));
      snaps.push(...p.items);
      if (!p.nextCursor) break;
      cursor = p.nextCursor;
    }
    expect(snaps.map((s) => s.version)).toEqual([1, 2, 3, 4]);
    expect(snaps.every((s) => s.nodeId === first.node.id && s.journalEntryId !== null)).toBe(true);
    expect(snaps[1]?.state).toMatchObject({ sizeBytes: 9 });
    expect(snaps[3]?.state).toMatchObject({ metadata: { tag: 'x' } });
    expect((await byPath(t.mount.key, 'h.txt')).version).toBe(4);
    await expectError(c.call('GET', '/v1/nodes/9007199254740/snapshots'), 404, 'NOT_FOUND');
  });

  it("a snapshot's state is the node document of that version, exactly as before snapshots were recorded as rows, and older snapshots (documents, to_jsonb rows) read as they were written", async () => {
    const t = await mountOf();
    const written = await put(t.mount.key, 'k.txt', 'v1');
    const pool = fixture.server.core.pool;
    // The document snapshots held before (filestore.node_state of the row), from the row as it is: nothing changed it since.
    const { rows } = await pool.query<{ doc: Record<string, unknown> }>('SELECT filestore.node_state(n) AS doc FROM filestore.nodes n WHERE id = $1', [written.node.id]);
    const doc = rows[0]?.doc;
    // A snapshot written in that form (a catalogue older than the compact record), as version 1000.
    await pool.query('INSERT INTO filestore.snapshots (node_id, version, state) VALUES ($1, 1000, $2)', [written.node.id, { ...doc, path: 'legacy.txt' }]);
    // And one as written after migration 1700000000020, before 1700000000021: the row as to_jsonb (column names).
    await pool.query('INSERT INTO filestore.snapshots (node_id, version, state) SELECT id, 1001, to_jsonb(n) FROM filestore.nodes n WHERE id = $1', [written.node.id]);
    const history = page(Snapshot).parse(await c.json('GET', `/v1/nodes/${written.node.id}/snapshots`, 200, { token: 'read' }));
    expect(history.items.map((s) => s.version)).toEqual([1, 1000, 1001]);
    expect(history.items[0]?.state).toEqual(doc);
    expect(history.items[1]?.state).toEqual({ ...doc, path: 'legacy.txt' });
    expect(history.items[2]?.state).toEqual(doc);
    // Since 1700000000021 the record is the row itself (not a document, not JSON).
    const { rows: recorded } = await pool.query<{ state: unknown; path: string }>('SELECT state, (node_row).path AS path FROM filestore.snapshots WHERE node_id = $1 AND version = 1', [written.node.id]);
    expect(recorded[0]).toEqual({ state: null, path: 'k.txt' });
  });
});
