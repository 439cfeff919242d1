import { createHash } from 'node:crypto';
import { constants, realpathSync, statSync, type Stats } from 'node:fs';
import { open, readlink, rm, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FilestoreError } from '../../errors.ts';
import { isSameOrDescendant, normalizePath } from '../../paths.ts';
import type { Backend, ByteRange, EntryStat, WriteOptions, WriteResult } from '../types.ts';
import { errnoOf, fsError, localError } from './errors.ts';
import { kindOf, listSorted, toEntryStat } from './listing.ts';
import { defaultFsOps, fsyncDir, MountRoot, type FsOps } from './safe-path.ts';
import { removeQuietly, siblingTempPath, Staging } from './staging.ts';
import { applyMetadata, copyEntry } from './tree.ts';

export interface LocalExecutorOptions {
  /** Absolute path of an existing directory: the mount root. */
  rootPath: string;
  /** @internal Test seam: lets a test simulate a tree spanning filesystems (EXDEV on rename). */
  fsOps?: Partial<FsOps> | undefined;
}

/**
 * The Backend of a local directory tree. Every path is resolved without following symlinks
 * (see safe-path.ts); every write lands through a rename from a staging location, so a
 * failed operation leaves the target as it was.
 */
export class LocalExecutor implements Backend {
  readonly kind = 'local' as const;
  private readonly mount: MountRoot;
  private readonly staging: Staging;

  constructor(options: LocalExecutorOptions) {
    const { rootPath } = options;
    if (!isAbsolute(rootPath)) {
      throw new FilestoreError('CONFIG_ERROR', 'the root of a local mount must be an absolute path', { rootPath });
    }
    let real: string;
    try {
      real = realpathSync(rootPath);
    } catch {
      throw new FilestoreError('CONFIG_ERROR', 'the root of a local mount must be an existing directory', { rootPath });
    }
    if (!statSync(real).isDirectory()) {
      throw new FilestoreError('CONFIG_ERROR', 'the root of a local mount must be a directory', { rootPath });
    }
    this.mount = new MountRoot(real, { ...defaultFsOps, ...options.fsOps });
    this.staging = new Staging(this.mount);
  }

  async stat(path: string): Promise<EntryStat | null> {
    const rel = normalizePath(path);
    // A missing parent, or a parent that is a file, means the entry does not exist; a
    // symlink parent throws SYMLINK_IN_PATH (checkAncestors) since we never look through it.
    if ((await this.mount.checkAncestors(rel, 'stat')).state !== 'ok') return null;
    const st = await this.mount.lstat(rel, 'stat');
    if (st === null) return null;
    let target: string | null = null;
    if (st.isSymbolicLink()) {
      try {
        target = await readlink(this.mount.abs(rel));
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') return null;
        throw fsError(err, rel, 'stat');
      }
    }
    return toEntryStat(rel, st, target);
  }

  async *list(dir: string, options?: { recursive?: boolean }): AsyncIterable<EntryStat> {
    const rel = normalizePath(dir);
    const st = await this.existing(rel, 'list');
    if (st.isSymbolicLink()) throw localError('SYMLINK_IN_PATH', rel, 'list');
    if (!st.isDirectory()) throw localError('NOT_A_DIRECTORY', rel, 'list');
    yield* listSorted(this.mount, rel, options?.recursive ?? false);
  }

  async mkdir(path: string, options: { parents: boolean }): Promise<EntryStat> {
    const rel = normalizePath(path);
    const op = 'mkdir';
    if (rel !== '') {
      await this.mount.prepareParents(rel, op, options.parents);
      const existing = await this.mount.lstat(rel, op);
      if (existing?.isSymbolicLink()) throw localError('SYMLINK_IN_PATH', rel, op);
      if (existing !== null && !(existing.isDirectory() && options.parents)) {
        throw localError('ALREADY_EXISTS', rel, op);
      }
      // false: someone else created it between our lstat and mkdir.
      if (existing === null && !(await this.mount.mkdirOne(rel, op)) && !options.parents) {
        throw localError('ALREADY_EXISTS', rel, op);
      }
    } else if (!options.parents) {
      throw localError('ALREADY_EXISTS', rel, op);
    }
    const entry = await this.stat(rel);
    if (entry?.kind !== 'directory') throw localError('NOT_A_DIRECTORY', rel, op);
    return entry;
  }

  async writeFile(path: string, body: Readable, options: WriteOptions): Promise<WriteResult> {
    const rel = normalizePath(path);
    const op = 'writeFile';
    if (rel === '') throw localError('IS_A_DIRECTORY', rel, op);
    const before = await this.writableTarget(rel, op);
    // Replacing a file keeps its permissions unless the caller says otherwise, as editors do.
    const chmodTo = options.mode ?? (before === null ? undefined : before.mode & 0o7777);
    const { abs: tmp, fh } = await this.staging.createFile(options.stagingId, 0o644, op);
    let handle: FileHandle | undefined = fh;
    try {
      const hash = createHash('sha256');
      await pipeline(
        body,
        async function* (source: AsyncIterable<Buffer | string>) {
          for await (const chunk of source) {
            const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
            hash.update(bytes);
            yield bytes;
          }
        },
        fh.createWriteStream({ autoClose: false }),
      );
      const sha256 = hash.digest('hex');
      if (options.expectedSha256 !== undefined && options.expectedSha256.toLowerCase() !== sha256) {
        throw new FilestoreError(
          'CHECKSUM_MISMATCH',
          `the bytes received for ${JSON.stringify(rel)} do not match the expected sha256; nothing was written, send the file again`,
          { path: rel, expectedSha256: options.expectedSha256, actualSha256: sha256 },
        );
      }
      if (chmodTo !== undefined) await fh.chmod(chmodTo);
      await fh.sync();
      const st = await fh.stat();
      await fh.close();
      handle = undefined;
      // Checked again now: the tree may have changed while the body was streaming.
      await this.writableTarget(rel, op);
      await this.mount.prepareParents(rel, op, true);
      await this.placeStaged(tmp, rel, op);
      return { ...(toEntryStat(rel, st, null) as EntryStat), sha256 };
    } catch (err) {
      await handle?.close().catch(() => undefined);
      await rm(tmp, { force: true }).catch(() => undefined);
      throw fsError(err, rel, op);
    }
  }

  async read(path: string, range?: ByteRange): Promise<Readable> {
    const rel = normalizePath(path);
    if (range !== undefined) assertRange(range);
    const fh = await this.openFile(rel, 'read');
    return fh.createReadStream({ start: range?.start ?? 0, end: range?.end, autoClose: true });
  }

  async hash(path: string): Promise<string> {
    const rel = normalizePath(path);
    const fh = await this.openFile(rel, 'hash');
    const hash = createHash('sha256');
    try {
      for await (const chunk of fh.createReadStream({ autoClose: false })) hash.update(chunk as Buffer);
    } catch (err) {
      throw fsError(err, rel, 'hash');
    } finally {
      await fh.close().catch(() => undefined);
    }
    return hash.digest('hex');
  }

  async move(from: string, to: string, options: { overwrite: boolean }): Promise<void> {
    const op = 'move';
    const { src, dst, srcSt, existing } = await this.prepareTransfer(from, to, options, op);
    const srcAbs = this.mount.abs(src);
    const dstAbs = this.mount.abs(dst);
    try {
      await this.replaceTarget(dst, existing, srcSt.isDirectory(), op, async () => {
        try {
          await this.mount.ops.rename(srcAbs, dstAbs);
        } catch (err) {
          if (errnoOf(err) !== 'EXDEV') throw err;
          // The tree spans filesystems: copy onto the target's filesystem, then drop the source.
          await this.copyAcrossDevices(srcAbs, dstAbs, src, op);
          await removeQuietly(await this.staging.setAside(srcAbs, src, op));
        }
      });
      await fsyncDir(dirname(srcAbs), src, op);
      await fsyncDir(dirname(dstAbs), dst, op);
    } catch (err) {
      throw fsError(err, dst, op);
    }
  }

  async copy(from: string, to: string, options: { overwrite: boolean }): Promise<void> {
    const op = 'copy';
    const { src, dst, srcSt, existing } = await this.prepareTransfer(from, to, options, op);
    const dstAbs = this.mount.abs(dst);
    // Built completely off to the side, then renamed into place: a failed copy leaves no partial target.
    const staged = await this.staging.buildPathFor(dstAbs, op);
    try {
      const copied = await copyEntry(this.mount.abs(src), staged, { mount: this.mount, rel: src, op });
      // A directory gets its own mode only once in place (a read-only one could not be renamed
      // there); anything else arrives complete.
      if (!copied.isDirectory()) await applyMetadata(staged, copied);
      await this.replaceTarget(dst, existing, srcSt.isDirectory(), op, () => this.placeStaged(staged, dst, op));
      if (copied.isDirectory()) await applyMetadata(dstAbs, copied);
    } catch (err) {
      await removeQuietly(staged);
      throw fsError(err, dst, op);
    }
  }

  async delete(path: string, options: { recursive: boolean }): Promise<void> {
    const rel = normalizePath(path);
    const op = 'delete';
    if (rel === '') throw new FilestoreError('INVALID_PATH', 'the mount root cannot be deleted', { path: rel });
    const st = await this.existing(rel, op);
    const abs = this.mount.abs(rel);
    try {
      if (!st.isDirectory()) {
        await unlink(abs); // a symlink goes, its target stays
      } else if (!options.recursive) {
        await rmdir(abs).catch((err: unknown) => {
          if (errnoOf(err) === 'ENOTEMPTY' || errnoOf(err) === 'EEXIST') {
            throw localError('DIRECTORY_NOT_EMPTY', rel, op);
          }
          throw err;
        });
      } else {
        // One rename makes the whole tree disappear at once; the slow removal happens off-tree.
        const aside = await this.staging.setAside(abs, rel, op);
        await fsyncDir(dirname(abs), rel, op);
        await removeQuietly(aside);
        return;
      }
      await fsyncDir(dirname(abs), rel, op);
    } catch (err) {
      throw fsError(err, rel, op);
    }
  }

  async discardStaging(stagingId: string): Promise<void> {
    await this.staging.discard(stagingId, 'discardStaging');
  }

  /** lstat of an entry that must exist (NOT_FOUND otherwise, including behind a file parent). */
  private async existing(rel: string, op: string): Promise<Stats> {
    if ((await this.mount.checkAncestors(rel, op)).state !== 'ok') throw localError('NOT_FOUND', rel, op);
    const st = await this.mount.lstat(rel, op);
    if (st === null || kindOf(st) === null) throw localError('NOT_FOUND', rel, op);
    return st;
  }

  /** The entry a write would replace (null when absent); refuses symlinks and directories. */
  private async writableTarget(rel: string, op: string): Promise<Stats | null> {
    const check = await this.mount.checkAncestors(rel, op);
    if (check.state === 'not-directory') throw localError('NOT_A_DIRECTORY', check.at, op);
    if (check.state === 'missing') return null;
    const st = await this.mount.lstat(rel, op);
    if (st?.isSymbolicLink()) throw localError('SYMLINK_IN_PATH', rel, op);
    if (st?.isDirectory()) throw localError('IS_A_DIRECTORY', rel, op);
    return st;
  }

  private async openFile(rel: string, op: string): Promise<FileHandle> {
    const st = await this.existing(rel, op);
    if (st.isSymbolicLink()) throw localError('SYMLINK_IN_PATH', rel, op);
    if (st.isDirectory()) throw localError('IS_A_DIRECTORY', rel, op);
    // O_NONBLOCK: a FIFO swapped in after the lstat must not hang the open.
    const fh = await this.mount.openVerified(this.mount.abs(rel), rel, constants.O_RDONLY | constants.O_NONBLOCK, op);
    const now = await fh.stat().catch(async (err: unknown) => {
      await fh.close();
      throw fsError(err, rel, op);
    });
    if (!now.isFile()) {
      await fh.close();
      throw localError(now.isDirectory() ? 'IS_A_DIRECTORY' : 'NOT_FOUND', rel, op);
    }
    return fh;
  }

  /** Shared checks of move and copy, in the order a caller can act on them. */
  private async prepareTransfer(
    from: string,
    to: string,
    options: { overwrite: boolean },
    op: string,
  ): Promise<{ src: string; dst: string; srcSt: Stats; existing: Stats | null }> {
    const src = normalizePath(from);
    const dst = normalizePath(to);
    if (src === '') throw new FilestoreError('MOVE_INTO_SELF', `the mount root cannot be the source of a ${op}`, { path: src, targetPath: dst });
    const srcSt = await this.existing(src, op);
    if (isSameOrDescendant(dst, src)) {
      throw new FilestoreError('MOVE_INTO_SELF', `cannot ${op} ${JSON.stringify(src)} into itself (${JSON.stringify(dst)})`, { path: src, targetPath: dst });
    }
    if (dst === '') throw new FilestoreError('INVALID_PATH', 'the mount root cannot be replaced', { path: src, targetPath: dst });
    const check = await this.mount.checkAncestors(dst, op);
    if (check.state === 'not-directory') throw localError('NOT_A_DIRECTORY', check.at, op);
    const existing = check.state === 'ok' ? await this.mount.lstat(dst, op) : null;
    if (existing !== null) {
      if (!options.overwrite) throw localError('ALREADY_EXISTS', dst, op);
      // Replacing an ancestor of the source would carry the source away with it.
      if (isSameOrDescendant(src, dst)) {
        throw new FilestoreError('MOVE_INTO_SELF', `cannot replace ${JSON.stringify(dst)}: it contains the source ${JSON.stringify(src)}`, { path: src, targetPath: dst });
      }
    }
    await this.mount.prepareParents(dst, op, true);
    return { src, dst, srcSt, existing };
  }

  /**
   * Runs `place` (which puts the new entry at `dst`) over what is there. A file or symlink
   * target is replaced by the rename itself (atomic); a directory target, or a directory
   * source over a non-directory, needs the old entry set aside first, and it comes back if
   * placing fails.
   */
  private async replaceTarget(
    dst: string,
    existing: Stats | null,
    sourceIsDir: boolean,
    op: string,
    place: () => Promise<void>,
  ): Promise<void> {
    if (existing === null || (!existing.isDirectory() && !sourceIsDir)) {
      await place();
      return;
    }
    const dstAbs = this.mount.abs(dst);
    const aside = await this.staging.setAside(dstAbs, dst, op);
    try {
      await place();
    } catch (err) {
      await this.mount.ops.rename(aside, dstAbs).catch(() => undefined);
      throw err;
    }
    await removeQuietly(aside);
  }

  /** Renames a staged entry onto `rel`; across filesystems (EXDEV) it is copied there instead. */
  private async placeStaged(staged: string, rel: string, op: string): Promise<void> {
    const abs = this.mount.abs(rel);
    await this.mount.assertDirInside(dirname(abs), rel, op);
    try {
      await this.mount.ops.rename(staged, abs);
    } catch (err) {
      if (errnoOf(err) !== 'EXDEV') throw err;
      await this.copyAcrossDevices(staged, abs, rel, op);
      await removeQuietly(staged);
    }
    await fsyncDir(dirname(abs), rel, op);
  }

  /**
   * Copies `srcAbs` to a hidden sibling of `dstAbs` (on the target's filesystem by
   * construction) and renames it into place, so the target appears whole or not at all.
   */
  private async copyAcrossDevices(srcAbs: string, dstAbs: string, rel: string, op: string): Promise<void> {
    const sibling = siblingTempPath(dstAbs);
    try {
      const st = await copyEntry(srcAbs, sibling, { mount: this.mount, rel, op });
      if (st.isDirectory()) {
        await this.mount.ops.rename(sibling, dstAbs);
        await applyMetadata(dstAbs, st);
      } else {
        await applyMetadata(sibling, st);
        await this.mount.ops.rename(sibling, dstAbs);
      }
    } catch (err) {
      await removeQuietly(sibling);
      throw err;
    }
  }
}

function assertRange(range: ByteRange): void {
  const ok =
    Number.isSafeInteger(range.start) &&
    range.start >= 0 &&
    (range.end === undefined || (Number.isSafeInteger(range.end) && range.end >= range.start));
  if (!ok) {
    throw new FilestoreError('VALIDATION_ERROR', 'a byte range needs 0 <= start <= end (inclusive, whole numbers)', {
      start: range.start,
      end: range.end,
    });
  }
}
