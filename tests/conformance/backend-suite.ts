import { createHash, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Backend, EntryStat } from '../../shared/backends/types.ts';

/**
 * The behaviour every Backend must show, run against each implementation (local disk, S3).
 * It asserts only what both can do; backend-specific guarantees (modes, symlinks, EXDEV)
 * live in that backend's own test file.
 */

export interface BackendFixture {
  backend: Backend;
  /** Out-of-band helpers that touch storage directly (not through the backend). */
  putRaw(path: string, bytes: Buffer | string): Promise<void>;
  /** null when absent. */
  getRaw(path: string): Promise<Buffer | null>;
  cleanup(): Promise<void>;
}

export const sha256 = (bytes: Buffer | string): string => createHash('sha256').update(bytes).digest('hex');

export const bodyOf = (bytes: Buffer | string): Readable => Readable.from([Buffer.from(bytes)]);

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks);
}

export async function collect(entries: AsyncIterable<EntryStat>): Promise<EntryStat[]> {
  const out: EntryStat[] = [];
  for await (const entry of entries) out.push(entry);
  return out;
}

/** What COLLATE "C" (and S3) order means: UTF-8 bytes, not UTF-16 code units, not locale. */
export const byteOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

export async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  await expect(promise).rejects.toMatchObject({ code });
}

/** A readable that streams `size` deterministic pseudo-random bytes without holding them. */
export function generatedBody(size: number, seed = 1): { body: Readable; sha256: Promise<string> } {
  const hash = createHash('sha256');
  let resolve!: (digest: string) => void;
  const digest = new Promise<string>((r) => (resolve = r));
  async function* chunks(): AsyncGenerator<Buffer> {
    let state = seed >>> 0;
    let left = size;
    while (left > 0) {
      const chunk = Buffer.allocUnsafe(Math.min(64 * 1024, left));
      for (let i = 0; i < chunk.length; i += 4) {
        state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
        chunk.writeUInt32LE(state, i);
      }
      hash.update(chunk);
      left -= chunk.length;
      yield chunk;
    }
    resolve(hash.digest('hex'));
  }
  return { body: Readable.from(chunks()), sha256: digest };
}

export function backendConformanceSuite(name: string, createFixture: () => Promise<BackendFixture>): void {
  describe(`backend conformance: ${name}`, () => {
    let fx: BackendFixture;
    let backend: Backend;
    const staging = () => ({ stagingId: randomUUID() });
    const write = (path: string, bytes: Buffer | string) => backend.writeFile(path, bodyOf(bytes), staging());
    const listPaths = async (dir: string, recursive = false) =>
      (await collect(backend.list(dir, { recursive }))).map((e) => e.path);

    beforeEach(async () => {
      fx = await createFixture();
      backend = fx.backend;
    });
    afterEach(async () => {
      await fx.cleanup();
    });

    describe('files', () => {
      it('writeFile creates missing parents and returns the size and sha256 of the bytes', async () => {
        const result = await write('café/naïve.txt', 'crème brûlée');
        expect(result).toMatchObject({
          path: 'café/naïve.txt',
          kind: 'file',
          sizeBytes: Buffer.byteLength('crème brûlée'),
          sha256: sha256('crème brûlée'),
        });
        expect(await fx.getRaw('café/naïve.txt')).toEqual(Buffer.from('crème brûlée'));
        expect(await backend.stat('café')).toMatchObject({ path: 'café', kind: 'directory' });
        expect(await backend.stat('café/naïve.txt')).toMatchObject({
          kind: 'file',
          sizeBytes: Buffer.byteLength('crème brûlée'),
          symlinkTarget: null,
        });
      });

      it('the root is a directory and an absent path stats as null', async () => {
        expect(await backend.stat('')).toMatchObject({ path: '', kind: 'directory' });
        expect(await backend.stat('nothing/here.txt')).toBeNull();
      });

      it('writing over a file replaces its bytes', async () => {
        await fx.putRaw('doc.txt', 'old old old old');
        const result = await write('doc.txt', 'new');
        expect(result).toMatchObject({ sizeBytes: 3, sha256: sha256('new') });
        expect(await fx.getRaw('doc.txt')).toEqual(Buffer.from('new'));
      });

      it('a write whose bytes do not match expectedSha256 fails with CHECKSUM_MISMATCH and leaves nothing', async () => {
        await fx.putRaw('kept.txt', 'original');
        const wrong = sha256('something else');
        await expectCode(
          backend.writeFile('new/fresh.txt', bodyOf('payload'), { ...staging(), expectedSha256: wrong }),
          'CHECKSUM_MISMATCH',
        );
        await expectCode(
          backend.writeFile('kept.txt', bodyOf('payload'), { ...staging(), expectedSha256: wrong }),
          'CHECKSUM_MISMATCH',
        );
        expect(await fx.getRaw('new/fresh.txt')).toBeNull();
        expect(await backend.stat('new/fresh.txt')).toBeNull();
        expect(await fx.getRaw('kept.txt')).toEqual(Buffer.from('original'));
        expect(await listPaths('', true)).toEqual(['kept.txt']);
      });

      it('a write with the right expectedSha256 succeeds', async () => {
        const result = await backend.writeFile('ok.txt', bodyOf('payload'), {
          ...staging(),
          expectedSha256: sha256('payload'),
        });
        expect(result.sha256).toBe(sha256('payload'));
      });

      it('writing over a directory is IS_A_DIRECTORY and under a file is NOT_A_DIRECTORY', async () => {
        await fx.putRaw('dir/child.txt', 'x');
        await fx.putRaw('file.txt', 'x');
        await expectCode(write('dir', 'y'), 'IS_A_DIRECTORY');
        await expectCode(write('file.txt/inner.txt', 'y'), 'NOT_A_DIRECTORY');
        expect(await fx.getRaw('dir/child.txt')).toEqual(Buffer.from('x'));
        expect(await fx.getRaw('file.txt')).toEqual(Buffer.from('x'));
      });

      it('reads a whole file, a byte range and an open-ended range', async () => {
        await fx.putRaw('range.txt', 'hello world');
        expect((await readAll(await backend.read('range.txt'))).toString()).toBe('hello world');
        expect((await readAll(await backend.read('range.txt', { start: 6, end: 10 }))).toString()).toBe('world');
        expect((await readAll(await backend.read('range.txt', { start: 0, end: 0 }))).toString()).toBe('h');
        expect((await readAll(await backend.read('range.txt', { start: 6 }))).toString()).toBe('world');
      });

      it('reading a directory is IS_A_DIRECTORY', async () => {
        await fx.putRaw('d/f.txt', 'x');
        await expectCode(backend.read('d'), 'IS_A_DIRECTORY');
      });

      it('hash is the sha256 of the current bytes', async () => {
        await fx.putRaw('h.bin', Buffer.from([0, 1, 2, 255]));
        expect((await backend.hash('h.bin'))?.sha256).toBe(sha256(Buffer.from([0, 1, 2, 255])));
      });

      it('a 20 MB body is streamed and its sha256 matches', async () => {
        const size = 20 * 1024 * 1024;
        const { body, sha256: expected } = generatedBody(size, 7);
        const result = await backend.writeFile('big/blob.bin', body, staging());
        expect(result.sizeBytes).toBe(size);
        expect(result.sha256).toBe(await expected);
        expect((await backend.hash('big/blob.bin'))?.sha256).toBe(await expected);
        expect((await backend.stat('big/blob.bin'))?.sizeBytes).toBe(size);
      }, 120_000);
    });

    describe('reading one version (open, hash)', () => {
      const failureOf = (p: Promise<unknown>) => p.then(() => null, (err: unknown) => err as { code?: string; details?: Record<string, unknown> });

      it('open says which version it reads (size, length, range, validator) and streams exactly those bytes', async () => {
        await fx.putRaw('v.txt', 'hello world');
        const whole = await backend.open('v.txt');
        expect(whole).toMatchObject({ sizeBytes: 11, length: 11, range: null, validator: expect.any(String) });
        expect((await readAll(whole.stream)).toString()).toBe('hello world');
        const part = await backend.open('v.txt', { start: 6, end: 100 });
        expect(part).toMatchObject({ sizeBytes: 11, length: 5, range: { start: 6, end: 10 } });
        expect((await readAll(part.stream)).toString()).toBe('world');
        const suffix = await backend.open('v.txt', { suffixLength: 3 });
        expect(suffix).toMatchObject({ sizeBytes: 11, length: 3, range: { start: 8, end: 10 } });
        expect((await readAll(suffix.stream)).toString()).toBe('rld');
        const longSuffix = await backend.open('v.txt', { suffixLength: 50 });
        expect(longSuffix).toMatchObject({ length: 11, range: { start: 0, end: 10 } });
        expect((await readAll(longSuffix.stream)).toString()).toBe('hello world');
        const empty = await backend.open('v.txt', { start: 0, end: 0 });
        expect((await readAll(empty.stream)).toString()).toBe('h');
      });

      it('a range past the end, a suffix of 0 or any range of an empty file is RANGE_NOT_SATISFIABLE with the size', async () => {
        await fx.putRaw('short.txt', 'abc');
        await fx.putRaw('empty.txt', '');
        for (const range of [{ start: 3 }, { start: 9, end: 12 }, { suffixLength: 0 }]) {
          expect(await failureOf(backend.open('short.txt', range)), JSON.stringify(range)).toMatchObject({ code: 'RANGE_NOT_SATISFIABLE', details: { sizeBytes: 3 } });
        }
        expect(await failureOf(backend.open('empty.txt', { start: 0 }))).toMatchObject({ code: 'RANGE_NOT_SATISFIABLE', details: { sizeBytes: 0 } });
        const whole = await backend.open('empty.txt');
        expect(whole).toMatchObject({ sizeBytes: 0, length: 0, range: null });
        expect((await readAll(whole.stream)).length).toBe(0);
        await fx.putRaw('d/f.txt', 'x');
        await expectCode(backend.open('d'), 'IS_A_DIRECTORY');
        await expectCode(backend.open('none.txt'), 'NOT_FOUND');
      });

      it('a file replaced after it was opened: its stream gives the opened version exactly, or fails; never the new bytes as a whole', async () => {
        const before = Buffer.alloc(300 * 1024, 'a');
        const after = Buffer.alloc(200 * 1024, 'b');
        await fx.putRaw('swap.bin', before);
        const opened = await backend.open('swap.bin');
        await fx.putRaw('swap.bin', after);
        const got = await readAll(opened.stream).then((b) => b, (err: unknown) => err);
        // S3: a GetObject answer is one version. Local: rewritten in place under the open handle.
        if (Buffer.isBuffer(got)) expect(got.equals(before)).toBe(true);
        else expect(got).toMatchObject({ code: 'STORAGE_ERROR' });
        const again = await backend.open('swap.bin');
        expect(again.length).toBe(after.length);
        expect((await readAll(again.stream)).equals(after)).toBe(true);
      });

      it('hash gives the sha256 with the version it read: the version open reports, another one once the file changed', async () => {
        await fx.putRaw('h2.txt', 'versioned');
        const hashed = await backend.hash('h2.txt');
        const opened = await backend.open('h2.txt');
        await readAll(opened.stream);
        expect(hashed).toMatchObject({ sha256: sha256('versioned'), sizeBytes: 9, validator: opened.validator, etag: opened.etag });
        expect(hashed?.mtime?.getTime()).toBe(opened.mtime?.getTime());
        await fx.putRaw('h2.txt', 'changed');
        expect(await backend.hash('h2.txt')).toMatchObject({ sha256: sha256('changed'), sizeBytes: 7 });
        expect((await backend.hash('h2.txt'))?.validator).not.toBe(opened.validator);
      });
    });

    describe('directories', () => {
      it('mkdir without parents needs the parent; with parents it creates the chain and is idempotent', async () => {
        await expectCode(backend.mkdir('x/y/z', { parents: false }), 'NOT_FOUND');
        expect(await backend.mkdir('x/y/z', { parents: true })).toMatchObject({ path: 'x/y/z', kind: 'directory' });
        expect(await backend.mkdir('x/y/z', { parents: true })).toMatchObject({ kind: 'directory' });
        expect(await backend.mkdir('x/y/w', { parents: false })).toMatchObject({ path: 'x/y/w', kind: 'directory' });
        await expectCode(backend.mkdir('x/y/z', { parents: false }), 'ALREADY_EXISTS');
        expect(await backend.stat('x/y')).toMatchObject({ kind: 'directory' });
        expect(await listPaths('', true)).toEqual(['x', 'x/y', 'x/y/w', 'x/y/z']);
      });

      it('mkdir over a file is ALREADY_EXISTS', async () => {
        await fx.putRaw('f.txt', 'x');
        await expectCode(backend.mkdir('f.txt', { parents: true }), 'ALREADY_EXISTS');
        await expectCode(backend.mkdir('f.txt', { parents: false }), 'ALREADY_EXISTS');
        expect(await fx.getRaw('f.txt')).toEqual(Buffer.from('x'));
      });

      it('an empty directory made by mkdir is listed as a directory', async () => {
        await backend.mkdir('empty', { parents: false });
        const [entry] = await collect(backend.list(''));
        expect(entry).toMatchObject({ path: 'empty', kind: 'directory', sizeBytes: 0 });
        expect(await collect(backend.list('empty', { recursive: true }))).toEqual([]);
      });
    });

    describe('listing order', () => {
      // '-' (0x2D) and '.' (0x2E) sort before '/' (0x2F), which sorts before '0' (0x30): the
      // subtree of "a" must come between "a.b" and "a0". U+FF5E (EF BD 9E) sorts before
      // U+1F600 (F0 9F 98 80) in bytes although its UTF-16 unit is larger.
      const files = ['a/x', 'a/y/z', 'a-b', 'a.b', 'a0', 'b', 'é/1', '\uff5e', '\u{1f600}'];

      beforeEach(async () => {
        for (const path of files) await fx.putRaw(path, path);
      });

      it('a recursive listing is in byte order of the full path', async () => {
        const expected = ['a', 'a-b', 'a.b', 'a/x', 'a/y', 'a/y/z', 'a0', 'b', 'é', 'é/1', '\uff5e', '\u{1f600}'];
        expect([...expected].sort(byteOrder)).toEqual(expected);
        expect(await listPaths('', true)).toEqual(expected);
      });

      it('a non-recursive listing holds the direct children in byte order', async () => {
        expect(await listPaths('')).toEqual(['a', 'a-b', 'a.b', 'a0', 'b', 'é', '\uff5e', '\u{1f600}']);
        expect(await listPaths('a')).toEqual(['a/x', 'a/y']);
      });

      it('listing a subdirectory excludes the directory itself and reports kinds and sizes', async () => {
        const entries = await collect(backend.list('a', { recursive: true }));
        expect(entries.map((e) => [e.path, e.kind])).toEqual([
          ['a/x', 'file'],
          ['a/y', 'directory'],
          ['a/y/z', 'file'],
        ]);
        expect(entries[0]?.sizeBytes).toBe(3);
      });

      it('a listing resumed with startAfter yields exactly the entries after that path, in order', async () => {
        const all = await listPaths('', true);
        for (const after of ['', 'a', 'a-b', 'a.b', 'a/x', 'a/y', 'a/y/z', 'a0', 'é', '\uff5e', '\u{1f600}', 'zz']) {
          const resumed = (await collect(backend.list('', { recursive: true, startAfter: after }))).map((e) => e.path);
          expect(resumed, `after "${after}"`).toEqual(all.filter((p) => byteOrder(p, after) > 0));
        }
      });

      it('listing a missing directory is NOT_FOUND and listing a file is NOT_A_DIRECTORY', async () => {
        await expectCode(collect(backend.list('nope')), 'NOT_FOUND');
        await expectCode(collect(backend.list('b')), 'NOT_A_DIRECTORY');
      });
    });

    describe('move', () => {
      it('moves a file, creating the target parents and removing the source', async () => {
        await fx.putRaw('src/naïve.txt', 'bytes');
        await backend.move('src/naïve.txt', 'dst/deep/naïve.txt', { overwrite: false });
        expect(await fx.getRaw('src/naïve.txt')).toBeNull();
        expect(await fx.getRaw('dst/deep/naïve.txt')).toEqual(Buffer.from('bytes'));
        expect(await backend.stat('dst/deep')).toMatchObject({ kind: 'directory' });
      });

      it('moves a tree with all its descendants', async () => {
        await fx.putRaw('tree/a.txt', 'A');
        await fx.putRaw('tree/sub/b.txt', 'B');
        await backend.mkdir('tree/empty', { parents: false });
        await backend.move('tree', 'moved', { overwrite: false });
        expect(await listPaths('', true)).toEqual(['moved', 'moved/a.txt', 'moved/empty', 'moved/sub', 'moved/sub/b.txt']);
        expect(await fx.getRaw('moved/sub/b.txt')).toEqual(Buffer.from('B'));
        expect(await backend.stat('tree')).toBeNull();
      });

      it('refuses an existing target unless overwrite, which replaces it', async () => {
        await fx.putRaw('one.txt', '1');
        await fx.putRaw('two.txt', '2');
        await expectCode(backend.move('one.txt', 'two.txt', { overwrite: false }), 'ALREADY_EXISTS');
        expect(await fx.getRaw('one.txt')).toEqual(Buffer.from('1'));
        expect(await fx.getRaw('two.txt')).toEqual(Buffer.from('2'));
        await backend.move('one.txt', 'two.txt', { overwrite: true });
        expect(await fx.getRaw('one.txt')).toBeNull();
        expect(await fx.getRaw('two.txt')).toEqual(Buffer.from('1'));
      });

      it('overwrite replaces a directory target whole', async () => {
        await fx.putRaw('new/keep.txt', 'new');
        await fx.putRaw('old/stale.txt', 'old');
        await fx.putRaw('old/sub/stale2.txt', 'old');
        await expectCode(backend.move('new', 'old', { overwrite: false }), 'ALREADY_EXISTS');
        await backend.move('new', 'old', { overwrite: true });
        expect(await listPaths('', true)).toEqual(['old', 'old/keep.txt']);
      });

      it('moving a directory into its own subtree is MOVE_INTO_SELF', async () => {
        await fx.putRaw('d/f.txt', 'x');
        await expectCode(backend.move('d', 'd/inner', { overwrite: false }), 'MOVE_INTO_SELF');
        await expectCode(backend.move('d', 'd/inner/deeper', { overwrite: true }), 'MOVE_INTO_SELF');
        expect(await listPaths('', true)).toEqual(['d', 'd/f.txt']);
      });

      it('moving a missing source is NOT_FOUND', async () => {
        await expectCode(backend.move('ghost.txt', 'x.txt', { overwrite: false }), 'NOT_FOUND');
        expect(await backend.stat('x.txt')).toBeNull();
      });
    });

    describe('copy', () => {
      it('copies a file; both exist with equal bytes', async () => {
        await fx.putRaw('orig/café.txt', 'same bytes');
        await backend.copy('orig/café.txt', 'copies/café.txt', { overwrite: false });
        expect(await fx.getRaw('orig/café.txt')).toEqual(Buffer.from('same bytes'));
        expect(await fx.getRaw('copies/café.txt')).toEqual(Buffer.from('same bytes'));
      });

      it('copies a tree; source and copy hold the same entries and bytes', async () => {
        await fx.putRaw('t/a.txt', 'A');
        await fx.putRaw('t/s/b.txt', 'B');
        await backend.mkdir('t/e', { parents: false });
        await backend.copy('t', 'u', { overwrite: false });
        const rel = (paths: string[], root: string) => paths.map((p) => p.slice(root.length));
        expect(rel(await listPaths('u', true), 'u')).toEqual(rel(await listPaths('t', true), 't'));
        expect(rel(await listPaths('u', true), 'u')).toEqual(['/a.txt', '/e', '/s', '/s/b.txt']);
        expect(await fx.getRaw('u/s/b.txt')).toEqual(Buffer.from('B'));
        expect(await fx.getRaw('t/s/b.txt')).toEqual(Buffer.from('B'));
      });

      it('refuses an existing target unless overwrite, which replaces it', async () => {
        await fx.putRaw('p.txt', 'P');
        await fx.putRaw('q/old.txt', 'Q');
        await expectCode(backend.copy('p.txt', 'q', { overwrite: false }), 'ALREADY_EXISTS');
        await backend.copy('p.txt', 'q', { overwrite: true });
        expect(await fx.getRaw('q')).toEqual(Buffer.from('P'));
        expect(await fx.getRaw('q/old.txt')).toBeNull();
        expect(await fx.getRaw('p.txt')).toEqual(Buffer.from('P'));
      });

      it('copying a directory into its own subtree is MOVE_INTO_SELF', async () => {
        await fx.putRaw('d/f.txt', 'x');
        await expectCode(backend.copy('d', 'd/copy', { overwrite: false }), 'MOVE_INTO_SELF');
        expect(await listPaths('', true)).toEqual(['d', 'd/f.txt']);
      });

      it('copying a missing source is NOT_FOUND', async () => {
        await expectCode(backend.copy('ghost', 'x', { overwrite: false }), 'NOT_FOUND');
      });
    });

    describe('delete', () => {
      it('deletes a file', async () => {
        await fx.putRaw('gone.txt', 'x');
        await fx.putRaw('stays.txt', 'y');
        await backend.delete('gone.txt', { recursive: false });
        expect(await fx.getRaw('gone.txt')).toBeNull();
        expect(await listPaths('')).toEqual(['stays.txt']);
      });

      it('a non-empty directory needs recursive; recursive removes the whole tree', async () => {
        await fx.putRaw('full/a.txt', 'a');
        await fx.putRaw('full/deep/b.txt', 'b');
        await fx.putRaw('full-sibling.txt', 's');
        await expectCode(backend.delete('full', { recursive: false }), 'DIRECTORY_NOT_EMPTY');
        expect(await fx.getRaw('full/deep/b.txt')).toEqual(Buffer.from('b'));
        await backend.delete('full', { recursive: true });
        expect(await backend.stat('full')).toBeNull();
        expect(await fx.getRaw('full/deep/b.txt')).toBeNull();
        expect(await listPaths('', true)).toEqual(['full-sibling.txt']);
      });

      it('an empty directory is deleted without recursive', async () => {
        await backend.mkdir('hollow', { parents: false });
        await backend.delete('hollow', { recursive: false });
        expect(await backend.stat('hollow')).toBeNull();
      });

      it('deleting a missing path is NOT_FOUND', async () => {
        await expectCode(backend.delete('ghost.txt', { recursive: false }), 'NOT_FOUND');
        await expectCode(backend.delete('ghost/dir', { recursive: true }), 'NOT_FOUND');
      });
    });

    describe('absent paths', () => {
      it('read and hash of a missing file are NOT_FOUND', async () => {
        await expectCode(backend.read('missing.txt'), 'NOT_FOUND');
        await expectCode(backend.hash('missing/inside.txt'), 'NOT_FOUND');
      });

      it('discardStaging of an unknown staging id is a no-op', async () => {
        await fx.putRaw('keep.txt', 'k');
        await backend.discardStaging(randomUUID());
        expect(await listPaths('', true)).toEqual(['keep.txt']);
      });
    });
  });
}
