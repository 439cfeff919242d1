import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Filestore } from '../shared/runtime.ts';
import type { Backend } from '../shared/backends/types.ts';
import { updateMount } from '../shared/catalogue/mounts.ts';
import { listSnapshots } from '../shared/catalogue/nodes.ts';
import { collectEvents, createTestMount, startFilestore, stopS3, type BackendKind, type TestMount } from './support/filestore.ts';
import { expectCode, expectExactRollups, journalOf, livePaths, readAll } from './support/assertions.ts';

const body = (s: string) => Readable.from([Buffer.from(s)]);
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

let core: Filestore;
beforeAll(async () => {
  core = await startFilestore();
});
afterAll(async () => {
  await core.close();
  await stopS3();
});

describe.each<BackendKind>(['local', 's3'])('orchestrator on %s', (kind) => {
  let t: TestMount;
  let m: string;
  let backend: Backend;
  beforeEach(async () => {
    t = await createTestMount(core, kind);
    m = t.mount.key;
    backend = core.backends.forMount(t.mount);
    return () => t.cleanup();
  });

  it('writeFile creates missing parents, records sha256 and size, and emits events through the outbox', async () => {
    const events = await collectEvents(core, t.mount.id);
    const r = await core.orchestrator.writeFile(m, { path: '/docs/notes/a.txt' }, body('hello'));
    expect(r.node).toMatchObject({ path: 'docs/notes/a.txt', kind: 'file', sizeBytes: 5, sha256: sha('hello'), version: 1, consistencyState: 'ACTIVE' });
    expect(await readAll(backend, 'docs/notes/a.txt')).toBe('hello');
    expect(await livePaths(core, t.mount.id)).toEqual(['', 'docs', 'docs/notes', 'docs/notes/a.txt']);
    const docs = await core.reader.nodeByPath(m, 'docs');
    expect(docs.rollup).toMatchObject({ sizeBytes: 5, fileCount: 1, dirCount: 1, childCount: 1 });
    await events.waitFor((e) => e.type === 'filestore.command.completed' && e.data.journalEntryId === r.journalEntryId);
    const types = events.events.map((e) => e.type);
    expect(types.filter((x) => x === 'filestore.node.created')).toHaveLength(3);
    const seqs = events.events.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    await events.unsubscribe();
    await expectExactRollups(core, t.mount.id);
  });

  it('overwriting a file makes a new version with a snapshot; If-Match guards it', async () => {
    const first = await core.orchestrator.writeFile(m, { path: 'f.txt' }, body('one'));
    const second = await core.orchestrator.writeFile(m, { path: 'f.txt', expectedVersion: 1 }, body('three'));
    expect(second.node).toMatchObject({ version: 2, sizeBytes: 5, sha256: sha('three') });
    expect(second.node.id).toBe(first.node.id);
    await expectCode(core.orchestrator.writeFile(m, { path: 'f.txt', expectedVersion: 1 }, body('stale')), 'VERSION_MISMATCH');
    await expectCode(core.orchestrator.writeFile(m, { path: 'f.txt', expectedVersion: 0 }, body('new?')), 'VERSION_MISMATCH');
    expect(await readAll(backend, 'f.txt')).toBe('three');
    const snaps = await listSnapshots(core.pool, second.node.id as number, 10);
    expect(snaps.map((s) => [s.version, s.state.sha256])).toEqual([[1, sha('one')], [2, sha('three')]]);
    const journal = await journalOf(core, t.mount.id);
    expect(journal.map((j) => j.status)).toEqual(['succeeded', 'succeeded', 'failed', 'failed']);
    expect(journal[2]?.error?.code).toBe('VERSION_MISMATCH');
    expect((await core.reader.nodeByPath(m, '')).rollup).toMatchObject({ sizeBytes: 5, fileCount: 1 });
  });

  it('a checksum mismatch is refused and leaves neither bytes nor rows', async () => {
    await expectCode(core.orchestrator.writeFile(m, { path: 'c/x.bin', expectedSha256: sha('other') }, body('data')), 'CHECKSUM_MISMATCH');
    expect(await backend.stat('c/x.bin')).toBeNull();
    expect(await livePaths(core, t.mount.id)).toEqual(['']);
    const [entry] = await journalOf(core, t.mount.id);
    expect(entry).toMatchObject({ command: 'writeFile', status: 'failed', error: { code: 'CHECKSUM_MISMATCH' } });
  });

  it('mkdir with and without parents', async () => {
    await expectCode(core.orchestrator.mkdir(m, { path: 'x/y' }), 'NOT_FOUND');
    const r = await core.orchestrator.mkdir(m, { path: 'x/y', parents: true });
    expect(r.node).toMatchObject({ path: 'x/y', kind: 'directory' });
    expect((await backend.stat('x/y'))?.kind).toBe('directory');
    await expectCode(core.orchestrator.mkdir(m, { path: 'x/y' }), 'ALREADY_EXISTS');
    await core.orchestrator.mkdir(m, { path: 'x/y', parents: true });
    await core.orchestrator.writeFile(m, { path: 'x/file' }, body('1'));
    await expectCode(core.orchestrator.mkdir(m, { path: 'x/file/sub', parents: true }), 'NOT_A_DIRECTORY');
    expect((await core.reader.nodeByPath(m, '')).rollup).toMatchObject({ dirCount: 2, fileCount: 1, childCount: 1 });
    await expectExactRollups(core, t.mount.id);
  });

  it('moves a tree: every descendant and every ancestor rollup follows', async () => {
    await core.orchestrator.writeFile(m, { path: 'src/a/1.txt' }, body('11'));
    await core.orchestrator.writeFile(m, { path: 'src/a/b/2.txt' }, body('222'));
    await core.orchestrator.mkdir(m, { path: 'dst', parents: true });
    const r = await core.orchestrator.move(m, { path: 'src/a', targetPath: 'dst/moved' });
    expect(r.node).toMatchObject({ path: 'dst/moved', name: 'moved' });
    expect(r.movedCount).toBe(4);
    expect(await livePaths(core, t.mount.id)).toEqual(['', 'dst', 'dst/moved', 'dst/moved/1.txt', 'dst/moved/b', 'dst/moved/b/2.txt', 'src']);
    expect(await readAll(backend, 'dst/moved/b/2.txt')).toBe('222');
    expect(await backend.stat('src/a')).toBeNull();
    expect((await core.reader.nodeByPath(m, 'src')).rollup).toMatchObject({ sizeBytes: 0, fileCount: 0, childCount: 0 });
    expect((await core.reader.nodeByPath(m, 'dst')).rollup).toMatchObject({ sizeBytes: 5, fileCount: 2, dirCount: 2 });
    await expectExactRollups(core, t.mount.id);
  });

  it('refuses to move a directory into its own subtree, or onto an existing target without overwrite', async () => {
    await core.orchestrator.writeFile(m, { path: 'a/b/f' }, body('f'));
    await core.orchestrator.writeFile(m, { path: 'other' }, body('o'));
    await expectCode(core.orchestrator.move(m, { path: 'a', targetPath: 'a/b/c' }), 'MOVE_INTO_SELF');
    await expectCode(core.orchestrator.move(m, { path: 'a/b/f', targetPath: 'a' }), 'MOVE_INTO_SELF');
    await expectCode(core.orchestrator.move(m, { path: 'a/b/f', targetPath: 'other' }), 'ALREADY_EXISTS');
    const r = await core.orchestrator.move(m, { path: 'a/b/f', targetPath: 'other', overwrite: true });
    expect(r.node).toMatchObject({ path: 'other', sha256: sha('f') });
    expect(await readAll(backend, 'other')).toBe('f');
    await expectExactRollups(core, t.mount.id);
  });

  it('copies a tree with hashes and metadata; the source stays', async () => {
    await core.orchestrator.writeFile(m, { path: 'p/q/1' }, body('one'));
    await core.orchestrator.writeFile(m, { path: 'p/2' }, body('two!'));
    await core.orchestrator.updateMetadata(m, { path: 'p/2', set: { owner: 'ann' } });
    const r = await core.orchestrator.copy(m, { path: 'p', targetPath: 'copy/p2' });
    expect(r.copiedCount).toBe(4);
    expect(await livePaths(core, t.mount.id)).toEqual(['', 'copy', 'copy/p2', 'copy/p2/2', 'copy/p2/q', 'copy/p2/q/1', 'p', 'p/2', 'p/q', 'p/q/1']);
    const copied = await core.reader.nodeByPath(m, 'copy/p2/2');
    expect(copied).toMatchObject({ sha256: sha('two!'), metadata: { owner: 'ann' }, version: 1 });
    expect(await readAll(backend, 'copy/p2/q/1')).toBe('one');
    expect((await core.reader.nodeByPath(m, '')).rollup).toMatchObject({ sizeBytes: 14, fileCount: 4, dirCount: 5 });
    await expectExactRollups(core, t.mount.id);
  });

  it('deletes recursively; tombstones never block the path', async () => {
    await core.orchestrator.writeFile(m, { path: 'd/e/f' }, body('x'));
    await expectCode(core.orchestrator.delete(m, { path: 'd' }), 'DIRECTORY_NOT_EMPTY');
    const r = await core.orchestrator.delete(m, { path: 'd', recursive: true });
    expect(r.deletedCount).toBe(3);
    expect(r.node.deletedAt).toBeTruthy();
    expect(await backend.stat('d')).toBeNull();
    expect(await livePaths(core, t.mount.id)).toEqual(['']);
    await expectCode(core.orchestrator.delete(m, { path: 'd' }), 'NOT_FOUND');
    const again = await core.orchestrator.writeFile(m, { path: 'd/e/f' }, body('again'));
    expect(again.node).toMatchObject({ version: 1, sizeBytes: 5 });
    expect((await core.reader.nodeByPath(m, '')).rollup).toMatchObject({ sizeBytes: 5, fileCount: 1, dirCount: 2, childCount: 1 });
    await expectExactRollups(core, t.mount.id);
  });

  it('updates metadata with set and unset, versioned', async () => {
    await core.orchestrator.writeFile(m, { path: 'meta' }, body('m'));
    await core.orchestrator.updateMetadata(m, { path: 'meta', set: { a: 1, b: 'two' } });
    const r = await core.orchestrator.updateMetadata(m, { path: 'meta', unset: ['a'], expectedVersion: 2 });
    expect(r.node).toMatchObject({ metadata: { b: 'two' }, version: 3 });
    await expectCode(core.orchestrator.updateMetadata(m, { path: 'meta', set: { symlinkTarget: '/etc' } }), 'VALIDATION_ERROR');
  });

  it('idempotency keys replay the first result and refuse a different request', async () => {
    const first = await core.orchestrator.writeFile(m, { path: 'idem' }, body('v1'), { idempotencyKey: `k-${t.mount.id}` });
    const replay = await core.orchestrator.writeFile(m, { path: 'idem' }, body('v1'), { idempotencyKey: `k-${t.mount.id}` });
    expect(replay).toEqual(first);
    await expectCode(core.orchestrator.writeFile(m, { path: 'idem' }, body('v2'), { idempotencyKey: `k-${t.mount.id}` }), 'IDEMPOTENCY_CONFLICT');
    await expectCode(core.orchestrator.mkdir(m, { path: 'idem2' }, { idempotencyKey: `k-${t.mount.id}` }), 'IDEMPOTENCY_CONFLICT');
    expect(await readAll(backend, 'idem')).toBe('v1');
    expect((await journalOf(core, t.mount.id)).length).toBe(1);

    const key = `mk-${t.mount.id}`;
    const results = await Promise.all([
      core.orchestrator.mkdir(m, { path: 'race', parents: true }, { idempotencyKey: key }),
      core.orchestrator.mkdir(m, { path: 'race', parents: true }, { idempotencyKey: key }),
    ]);
    expect(results[0]).toEqual(results[1]);
    expect((await journalOf(core, t.mount.id)).filter((j) => j.command === 'mkdir')).toHaveLength(1);
  });

  it('refuses writes to read-only and paused mounts, journaled as failed', async () => {
    await updateMount(core.pool, t.mount.id, { accessMode: 'ro' });
    await expectCode(core.orchestrator.mkdir(m, { path: 'no' }), 'MOUNT_READ_ONLY');
    await updateMount(core.pool, t.mount.id, { accessMode: 'rw', state: 'paused' });
    await expectCode(core.orchestrator.writeFile(m, { path: 'no' }, body('x')), 'MOUNT_PAUSED');
    expect(await backend.stat('no')).toBeNull();
    expect((await journalOf(core, t.mount.id)).map((j) => j.error?.code)).toEqual(['MOUNT_READ_ONLY', 'MOUNT_PAUSED']);
  });

  it('a storage failure marks the entry failed and leaves the catalogue unchanged', async () => {
    // Out-of-band: a file where the command needs a directory; the catalogue does not know it.
    if (t.root) {
      const { writeFile } = await import('node:fs/promises');
      await writeFile(`${t.root}/blocker`, 'x');
    } else {
      await backend.writeFile('blocker', body('x'), { stagingId: 'oob' });
    }
    const err = await core.orchestrator.writeFile(m, { path: 'blocker/child' }, body('y')).catch((e) => e);
    expect(err.code).toMatch(/NOT_A_DIRECTORY|ALREADY_EXISTS|STORAGE_ERROR/);
    expect(await livePaths(core, t.mount.id)).toEqual(['']);
    const [entry] = await journalOf(core, t.mount.id);
    expect(entry?.status).toBe('failed');
    expect(entry?.error?.code).toBe(err.code);
  });
});
