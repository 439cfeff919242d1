import { randomUUID } from 'node:crypto';
import {
  chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, utimes, writeFile,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalExecutor } from '../shared/backends/local/local-executor.ts';
import { STAGING_DIR } from '../shared/paths.ts';
import {
  backendConformanceSuite,
  bodyOf,
  byteOrder,
  collect,
  expectCode,
  readAll,
  sha256,
  type BackendFixture,
} from './conformance/backend-suite.ts';

async function putRaw(root: string, rel: string, bytes: Buffer | string): Promise<void> {
  const abs = path.join(root, rel);
  await mkdir(path.dirname(abs), { recursive: true });
  await writeFile(abs, bytes);
}

async function getRaw(root: string, rel: string): Promise<Buffer | null> {
  try {
    return await readFile(path.join(root, rel));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EISDIR' || code === 'ENOTDIR') return null;
    throw err;
  }
}

async function localFixture(options: { rename?: (from: string, to: string) => Promise<void> } = {}) {
  const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-local-'));
  const backend = new LocalExecutor({ rootPath: root, fsOps: options.rename ? { rename: options.rename } : undefined });
  return {
    root,
    backend,
    putRaw: (rel: string, bytes: Buffer | string) => putRaw(root, rel, bytes),
    getRaw: (rel: string) => getRaw(root, rel),
    cleanup: () => rm(root, { recursive: true, force: true }),
  } satisfies BackendFixture & { root: string };
}

backendConformanceSuite('local', localFixture);

describe('LocalExecutor', () => {
  let fx: Awaited<ReturnType<typeof localFixture>>;
  let outside: string;
  let backend: LocalExecutor;
  const staging = () => ({ stagingId: randomUUID() });
  const paths = async (dir: string) => (await collect(backend.list(dir, { recursive: true }))).map((e) => e.path);
  const stagingFiles = async () => readdir(path.join(fx.root, STAGING_DIR)).catch(() => [] as string[]);

  beforeEach(async () => {
    fx = await localFixture();
    backend = fx.backend;
    outside = await mkdtemp(path.join(os.tmpdir(), 'filestore-outside-'));
    await writeFile(path.join(outside, 'secret.txt'), 'outside bytes');
  });
  afterEach(async () => {
    await fx.cleanup();
    await rm(outside, { recursive: true, force: true });
  });

  it('refuses a root that does not exist (UNAVAILABLE: it may come back) or is relative (CONFIG_ERROR)', () => {
    expect(() => new LocalExecutor({ rootPath: path.join(fx.root, 'nope') })).toThrow(expect.objectContaining({ code: 'UNAVAILABLE' }));
    expect(() => new LocalExecutor({ rootPath: 'relative/dir' })).toThrow(expect.objectContaining({ code: 'CONFIG_ERROR' }));
  });

  describe('metadata', () => {
    it('stat reports mode, owner and mtime from lstat', async () => {
      await fx.putRaw('m.txt', 'abc');
      await chmod(path.join(fx.root, 'm.txt'), 0o640);
      const entry = await backend.stat('m.txt');
      const st = await lstat(path.join(fx.root, 'm.txt'));
      expect(entry).toEqual({
        path: 'm.txt', kind: 'file', sizeBytes: 3, mode: st.mode, uid: st.uid, gid: st.gid,
        mtime: st.mtime, etag: null, symlinkTarget: null,
      });
      expect((entry?.mode ?? 0) & 0o777).toBe(0o640);
    });

    it('copy preserves the mode and mtime of files and directories', async () => {
      await fx.putRaw('src/dir/f.txt', 'f');
      await fx.putRaw('src/top.sh', '#!/bin/sh');
      const when = new Date('2020-02-02T02:02:02.123Z');
      await chmod(path.join(fx.root, 'src/top.sh'), 0o751);
      await chmod(path.join(fx.root, 'src/dir/f.txt'), 0o600);
      await utimes(path.join(fx.root, 'src/top.sh'), when, when);
      await utimes(path.join(fx.root, 'src/dir/f.txt'), when, when);
      await chmod(path.join(fx.root, 'src/dir'), 0o750);
      await utimes(path.join(fx.root, 'src/dir'), when, when);
      await chmod(path.join(fx.root, 'src'), 0o705);
      await utimes(path.join(fx.root, 'src'), when, when);

      await backend.copy('src', 'dst', { overwrite: false });
      await backend.copy('src/top.sh', 'single.sh', { overwrite: false });

      const pairs = [
        ['dst', 'src'],
        ['dst/dir', 'src/dir'],
        ['dst/dir/f.txt', 'src/dir/f.txt'],
        ['dst/top.sh', 'src/top.sh'],
        ['single.sh', 'src/top.sh'],
      ] as const;
      for (const [copy, orig] of pairs) {
        const c = await stat(path.join(fx.root, copy));
        const o = await stat(path.join(fx.root, orig));
        expect(c.mode & 0o7777, copy).toBe(o.mode & 0o7777);
        expect(Math.abs(c.mtimeMs - when.getTime()), copy).toBeLessThan(1);
      }
    });

    it('writeFile applies an explicit mode and keeps the mode of a file it replaces', async () => {
      await backend.writeFile('x.sh', bodyOf('a'), { ...staging(), mode: 0o700 });
      expect((await stat(path.join(fx.root, 'x.sh'))).mode & 0o777).toBe(0o700);
      await backend.writeFile('x.sh', bodyOf('b'), staging());
      expect((await stat(path.join(fx.root, 'x.sh'))).mode & 0o777).toBe(0o700);
    });
  });

  describe('staging', () => {
    it('is never listed and holds nothing after successful and failed writes', async () => {
      await backend.writeFile('ok.txt', bodyOf('ok'), staging());
      await expectCode(
        backend.writeFile('bad.txt', bodyOf('x'), { ...staging(), expectedSha256: sha256('y') }),
        'CHECKSUM_MISMATCH',
      );
      const failing = new Readable({
        read() {
          this.push(Buffer.alloc(1024, 1));
          this.destroy(new Error('client went away'));
        },
      });
      await expect(backend.writeFile('ok.txt', failing, staging())).rejects.toBeDefined();
      expect(await fx.getRaw('ok.txt')).toEqual(Buffer.from('ok'));
      expect(await paths('')).toEqual(['ok.txt']);
      expect(await stagingFiles()).toEqual([]);
    });

    it('discardStaging removes what one command staged (files, copies, set-aside entries) only', async () => {
      const dir = path.join(fx.root, STAGING_DIR);
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, 'cmd1-aaaaaaaaaaaaaaaa.tmp'), 'x');
      await writeFile(path.join(dir, 'cmd1-bbbbbbbbbbbbbbbb.tmp'), 'x');
      await mkdir(path.join(dir, 'copy.cmd1.cccccccccccccccc'));
      await mkdir(path.join(dir, 'trash.cmd1.dddddddddddddddd'));
      await writeFile(path.join(dir, 'cmd10-cccccccccccccccc.tmp'), 'x');
      await mkdir(path.join(dir, 'copy.cmd10.eeeeeeeeeeeeeeee'));
      await backend.discardStaging('cmd1');
      expect((await stagingFiles()).sort()).toEqual(['cmd10-cccccccccccccccc.tmp', 'copy.cmd10.eeeeeeeeeeeeeeee']);
      await expectCode(backend.discardStaging('../etc'), 'VALIDATION_ERROR');
    });

    it('the staging name is refused as a path', async () => {
      await expectCode(backend.writeFile(`${STAGING_DIR}/x`, bodyOf('x'), staging()), 'INVALID_PATH');
      await expectCode(backend.stat(STAGING_DIR), 'INVALID_PATH');
    });

    it('a recursive delete and a directory overwrite leave nothing in staging', async () => {
      await fx.putRaw('a/b/c.txt', 'c');
      await fx.putRaw('n/new.txt', 'n');
      await backend.move('n', 'a', { overwrite: true });
      await backend.delete('a', { recursive: true });
      expect(await paths('')).toEqual([]);
      expect(await stagingFiles()).toEqual([]);
    });
  });

  describe('symlinks', () => {
    beforeEach(async () => {
      await symlink(outside, path.join(fx.root, 'evil'));
    });

    it('never writes through a symlinked directory', async () => {
      await expectCode(backend.writeFile('evil/passwd', bodyOf('pwned'), staging()), 'SYMLINK_IN_PATH');
      await expectCode(backend.writeFile('evil/new/deeper.txt', bodyOf('pwned'), staging()), 'SYMLINK_IN_PATH');
      await expectCode(backend.mkdir('evil/dir', { parents: true }), 'SYMLINK_IN_PATH');
      await expectCode(backend.mkdir('evil', { parents: true }), 'SYMLINK_IN_PATH');
      await fx.putRaw('mine.txt', 'm');
      await expectCode(backend.move('mine.txt', 'evil/mine.txt', { overwrite: false }), 'SYMLINK_IN_PATH');
      await expectCode(backend.copy('mine.txt', 'evil/mine.txt', { overwrite: false }), 'SYMLINK_IN_PATH');
      expect((await readdir(outside)).sort()).toEqual(['secret.txt']);
      expect(await readFile(path.join(outside, 'secret.txt'), 'utf8')).toBe('outside bytes');
      expect(await fx.getRaw('mine.txt')).toEqual(Buffer.from('m'));
    });

    it('never reads through a symlinked directory', async () => {
      await expectCode(backend.read('evil/secret.txt'), 'SYMLINK_IN_PATH');
      await expectCode(backend.hash('evil/secret.txt'), 'SYMLINK_IN_PATH');
      await expectCode(backend.stat('evil/secret.txt'), 'SYMLINK_IN_PATH');
      await expectCode(collect(backend.list('evil')), 'SYMLINK_IN_PATH');
      await expectCode(backend.copy('evil/secret.txt', 'stolen.txt', { overwrite: false }), 'SYMLINK_IN_PATH');
      await expectCode(backend.move('evil/secret.txt', 'stolen.txt', { overwrite: false }), 'SYMLINK_IN_PATH');
      await expectCode(backend.delete('evil/secret.txt', { recursive: false }), 'SYMLINK_IN_PATH');
      expect(await fx.getRaw('stolen.txt')).toBeNull();
      expect(await readFile(path.join(outside, 'secret.txt'), 'utf8')).toBe('outside bytes');
    });

    it('refuses a symlinked parent even when it points inside the mount', async () => {
      await fx.putRaw('real/inside.txt', 'i');
      await symlink('real', path.join(fx.root, 'alias'));
      await expectCode(backend.writeFile('alias/new.txt', bodyOf('n'), staging()), 'SYMLINK_IN_PATH');
      await expectCode(backend.read('alias/inside.txt'), 'SYMLINK_IN_PATH');
      expect(await paths('real')).toEqual(['real/inside.txt']);
    });

    it('refuses to write over a symlink and leaves its target unchanged', async () => {
      await symlink(path.join(outside, 'secret.txt'), path.join(fx.root, 'link.txt'));
      await expectCode(backend.writeFile('link.txt', bodyOf('pwned'), staging()), 'SYMLINK_IN_PATH');
      await expectCode(backend.read('link.txt'), 'SYMLINK_IN_PATH');
      expect(await readFile(path.join(outside, 'secret.txt'), 'utf8')).toBe('outside bytes');
      expect((await lstat(path.join(fx.root, 'link.txt'))).isSymbolicLink()).toBe(true);
    });

    it('lists a symlink as kind symlink with its target, without following it', async () => {
      await symlink('../somewhere/else', path.join(fx.root, 'rel-link'));
      const entries = await collect(backend.list('', { recursive: true }));
      expect(entries.map((e) => [e.path, e.kind, e.symlinkTarget, e.sizeBytes])).toEqual([
        ['evil', 'symlink', outside, 0],
        ['rel-link', 'symlink', '../somewhere/else', 0],
      ]);
      expect(await backend.stat('evil')).toMatchObject({ kind: 'symlink', symlinkTarget: outside });
    });

    it('deleting a symlink removes the link only', async () => {
      await backend.delete('evil', { recursive: true });
      expect(await backend.stat('evil')).toBeNull();
      expect(await readFile(path.join(outside, 'secret.txt'), 'utf8')).toBe('outside bytes');
    });

    it('move and copy of a tree keep symlinks as symlinks', async () => {
      await fx.putRaw('tree/file.txt', 'f');
      await symlink(outside, path.join(fx.root, 'tree/out'));
      await symlink('file.txt', path.join(fx.root, 'tree/in'));
      await backend.copy('tree', 'copied', { overwrite: false });
      await backend.move('tree', 'moved', { overwrite: false });
      for (const dir of ['copied', 'moved']) {
        expect(await readlink(path.join(fx.root, dir, 'out'))).toBe(outside);
        expect(await readlink(path.join(fx.root, dir, 'in'))).toBe('file.txt');
        expect((await backend.stat(`${dir}/out`))?.kind).toBe('symlink');
      }
      expect((await readdir(outside)).sort()).toEqual(['secret.txt']);
      await backend.copy('evil', 'evil-copy', { overwrite: false });
      expect(await readlink(path.join(fx.root, 'evil-copy'))).toBe(outside);
    });

    it('moving over a symlink replaces the link, not its target', async () => {
      await fx.putRaw('new.txt', 'n');
      await symlink(path.join(outside, 'secret.txt'), path.join(fx.root, 'link.txt'));
      await backend.move('new.txt', 'link.txt', { overwrite: true });
      expect(await fx.getRaw('link.txt')).toEqual(Buffer.from('n'));
      expect((await lstat(path.join(fx.root, 'link.txt'))).isFile()).toBe(true);
      expect(await readFile(path.join(outside, 'secret.txt'), 'utf8')).toBe('outside bytes');
    });

    it('error messages name the mount-relative path, never the host path', async () => {
      const err = await backend.writeFile('evil/x', bodyOf('x'), staging()).then(
        () => new Error('the write should have been refused'),
        (e: unknown) => e as Error,
      );
      expect(err.message).toContain('evil');
      expect(err.message).not.toContain(fx.root);
      expect(JSON.stringify(err)).not.toContain(fx.root);
    });
  });

  describe('rules specific to a local tree', () => {
    it('refuses to delete the root or move it', async () => {
      await expectCode(backend.delete('', { recursive: true }), 'INVALID_PATH');
      await expectCode(backend.move('', 'x', { overwrite: false }), 'MOVE_INTO_SELF');
    });

    it('refuses to replace a directory that holds the source', async () => {
      await fx.putRaw('outer/inner/f.txt', 'f');
      await expectCode(backend.move('outer/inner', 'outer', { overwrite: true }), 'MOVE_INTO_SELF');
      expect(await paths('')).toEqual(['outer', 'outer/inner', 'outer/inner/f.txt']);
    });

    it('a file ancestor makes a path absent for reads and NOT_A_DIRECTORY for writes', async () => {
      await fx.putRaw('f.txt', 'f');
      expect(await backend.stat('f.txt/x')).toBeNull();
      await expectCode(backend.read('f.txt/x'), 'NOT_FOUND');
      await expectCode(backend.mkdir('f.txt/x', { parents: true }), 'NOT_A_DIRECTORY');
      await expectCode(backend.move('f.txt', 'f.txt2/../x', { overwrite: false }), 'INVALID_PATH');
    });

    it('names Filestore cannot address are not listed, and a cross-device move still carries them', async () => {
      const xfs = await localFixture({ rename: exdevBetweenVolumes });
      try {
        await xfs.putRaw('vol1/src/ok.txt', 'ok');
        await writeFile(Buffer.concat([Buffer.from(path.join(xfs.root, 'vol1/src/')), Buffer.from([0x66, 0xff, 0x66])]), 'raw');
        expect((await collect(xfs.backend.list('vol1/src'))).map((e) => e.path)).toEqual(['vol1/src/ok.txt']);
        await xfs.backend.move('vol1/src', 'vol2/dst', { overwrite: false });
        const moved = await readdir(Buffer.from(path.join(xfs.root, 'vol2/dst')), { encoding: 'buffer' });
        expect(moved.map((n) => n.toString('hex')).sort()).toEqual([Buffer.from('ok.txt').toString('hex'), '66ff66'].sort());
      } finally {
        await xfs.cleanup();
      }
    });

    it('a name that really holds U+FFFD, or begins with U+FEFF, is listed (in byte order) beside one that is not UTF-8, which is passed over', async () => {
      const run = await localFixture();
      try {
        await run.putRaw('d/a\ufffd.txt', 'kept');
        await run.putRaw('d/a.txt', 'kept');
        await run.putRaw('d/\u{1f600}', 'kept');
        await run.putRaw('d/\ufeffbom', 'kept'); // a leading U+FEFF is part of the name, read as bytes too
        await writeFile(Buffer.concat([Buffer.from(path.join(run.root, 'd/')), Buffer.from([0x61, 0xff])]), 'raw');
        const listed = (await collect(run.backend.list('', { recursive: true }))).map((e) => e.path);
        expect(listed).toEqual(['d', 'd/a.txt', 'd/a\ufffd.txt', 'd/\ufeffbom', 'd/\u{1f600}']);
        expect(listed).toEqual([...listed].sort(byteOrder));
      } finally {
        await run.cleanup();
      }
    });

    it('a recursive listing matches a byte-order sort of every path, whatever the names', async () => {
      const segment = fc.string({ unit: fc.constantFrom('a', 'b', '-', '.', '0', 'é', '\uff5e', '\u{1f600}'), minLength: 1, maxLength: 3 })
        .filter((s) => s !== '.' && s !== '..');
      await fc.assert(
        fc.asyncProperty(fc.uniqueArray(fc.array(segment, { minLength: 1, maxLength: 3 }), { maxLength: 12 }), async (trees) => {
          const run = await localFixture();
          try {
            const expected = new Set<string>();
            for (const segs of trees) {
              // A path is a file unless another path needs it as a directory; create dirs first.
              for (let i = 1; i < segs.length; i++) {
                const dir = segs.slice(0, i).join('/');
                const st = await lstat(path.join(run.root, dir)).catch(() => null);
                if (st?.isFile()) return; // a file already sits where a directory is needed
                await mkdir(path.join(run.root, dir), { recursive: true });
                expected.add(dir);
              }
              const file = segs.join('/');
              const st = await lstat(path.join(run.root, file)).catch(() => null);
              if (st === null) await writeFile(path.join(run.root, file), file);
              expected.add(file);
            }
            const listed = (await collect(run.backend.list('', { recursive: true }))).map((e) => e.path);
            expect(listed).toEqual([...expected].sort(byteOrder));
          } finally {
            await run.cleanup();
          }
        }),
        { numRuns: 40 },
      );
    });
  });

  describe('a tree spanning filesystems (EXDEV)', () => {
    let xfs: Awaited<ReturnType<typeof localFixture>>;
    beforeEach(async () => {
      xfs = await localFixture({ rename: exdevBetweenVolumes });
      await xfs.putRaw('vol1/tree/a.txt', 'A');
      await xfs.putRaw('vol1/tree/sub/b.txt', 'B');
      await symlink(outside, path.join(xfs.root, 'vol1/tree/link'));
      await chmod(path.join(xfs.root, 'vol1/tree/a.txt'), 0o604);
      await mkdir(path.join(xfs.root, 'vol2'));
    });
    afterEach(async () => {
      await xfs.cleanup();
    });

    const leftovers = async () => {
      const all = await collectRaw(xfs.root);
      return all.filter((p) => p.includes('filestore-tmp') || (p.startsWith(`${STAGING_DIR}/`)));
    };

    it('moves a tree by copying it onto the other filesystem and removing the source', async () => {
      await xfs.backend.move('vol1/tree', 'vol2/tree', { overwrite: false });
      expect((await collect(xfs.backend.list('', { recursive: true }))).map((e) => [e.path, e.kind])).toEqual([
        ['vol1', 'directory'],
        ['vol2', 'directory'],
        ['vol2/tree', 'directory'],
        ['vol2/tree/a.txt', 'file'],
        ['vol2/tree/link', 'symlink'],
        ['vol2/tree/sub', 'directory'],
        ['vol2/tree/sub/b.txt', 'file'],
      ]);
      expect((await stat(path.join(xfs.root, 'vol2/tree/a.txt'))).mode & 0o777).toBe(0o604);
      expect(await readlink(path.join(xfs.root, 'vol2/tree/link'))).toBe(outside);
      expect(await leftovers()).toEqual([]);
    });

    it('replaces an existing directory on the other filesystem with overwrite', async () => {
      await xfs.putRaw('vol2/tree/old.txt', 'old');
      await expectCode(xfs.backend.move('vol1/tree', 'vol2/tree', { overwrite: false }), 'ALREADY_EXISTS');
      await xfs.backend.move('vol1/tree', 'vol2/tree', { overwrite: true });
      expect(await xfs.getRaw('vol2/tree/old.txt')).toBeNull();
      expect(await xfs.getRaw('vol2/tree/sub/b.txt')).toEqual(Buffer.from('B'));
      expect(await xfs.getRaw('vol1/tree/a.txt')).toBeNull();
      expect(await leftovers()).toEqual([]);
    });

    it('writes, copies and deletes on the other filesystem', async () => {
      const result = await xfs.backend.writeFile('vol2/new/w.txt', bodyOf('written'), staging());
      expect(result.sha256).toBe(sha256('written'));
      expect(await xfs.getRaw('vol2/new/w.txt')).toEqual(Buffer.from('written'));
      await xfs.backend.writeFile('vol2/new/w.txt', bodyOf('again'), staging());
      expect((await readAll(await xfs.backend.read('vol2/new/w.txt'))).toString()).toBe('again');
      await xfs.backend.copy('vol1/tree', 'vol2/copy', { overwrite: false });
      expect(await xfs.getRaw('vol2/copy/sub/b.txt')).toEqual(Buffer.from('B'));
      expect(await xfs.getRaw('vol1/tree/sub/b.txt')).toEqual(Buffer.from('B'));
      await xfs.backend.delete('vol2/copy', { recursive: true });
      expect(await xfs.backend.stat('vol2/copy')).toBeNull();
      expect(await leftovers()).toEqual([]);
    });
  });
});

/** Simulates "vol2/" being another filesystem than the rest of the mount (staging included). */
async function exdevBetweenVolumes(from: string, to: string): Promise<void> {
  const { rename } = await import('node:fs/promises');
  const volume = (p: string) => (p.split(path.sep).includes('vol2') ? 'vol2' : 'main');
  if (volume(from) !== volume(to)) {
    throw Object.assign(new Error(`EXDEV: cross-device link not permitted`), { code: 'EXDEV' });
  }
  await rename(from, to);
}

/** Every path under `root`, relative, straight from the disk. */
async function collectRaw(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true });
  return entries.map((e) => e.split(path.sep).join('/'));
}
