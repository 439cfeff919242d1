import { createHash, type Hash } from 'node:crypto';
import { closeSync, constants, fchmodSync, fstatSync, realpathSync, statSync, writeSync, type BigIntStats, type Stats } from 'node:fs';
import { readlink, rm, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FilestoreError } from '../../errors.ts';
import { comparePaths, normalizePath } from '../../paths.ts';
import type { Backend, ByteRange, DeleteOptions, EntryStat, HashedFile, ListOptions, OpenedFile, RangeRequest, TransferOptions, WriteOptions, WriteResult } from '../types.ts';
import { assertRangeRequest } from '../range.ts';
import { errnoOf, fsError, localError, rootUnreachable } from './errors.ts';
import { hashOpened, openedFile, type ReadHook } from './file-version.ts';
import { listSortedBatches, listSortedLines, toEntryStat } from './listing.ts';
import { linePath } from '../entry-lines.ts';
import { defaultFsOps, fsyncDir, fsyncFd, MountRoot, type FsOps } from './safe-path.ts';
import { removeQuietly, Staging, type LeftoverSweep, type StagingDir } from './staging.ts';
import { applyMetadata, copyEntry, newTally, verifyCopy } from './tree.ts';
import { Transfers } from './transfer.ts';

export interface LocalExecutorOptions {
  /** Absolute path of an existing directory: the mount root. */
  rootPath: string;
  /** @internal Test seam: lets a test simulate a tree spanning filesystems (EXDEV on rename). */
  fsOps?: Partial<FsOps> | undefined;
  /** @internal Test seam: awaited before each chunk of a file is read or hashed. */
  onRead?: ReadHook | undefined;
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
  private readonly transfers: Transfers;
  private readonly onRead: ReadHook | undefined;

  constructor(options: LocalExecutorOptions) {
    const { rootPath } = options;
    if (!isAbsolute(rootPath)) {
      throw new FilestoreError('CONFIG_ERROR', 'the root of a local mount must be an absolute path', { rootPath });
    }
    let real: string;
    try {
      real = realpathSync(rootPath);
      if (!statSync(real).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    } catch (err) {
      throw rootUnreachable(rootPath, err);
    }
    this.mount = new MountRoot(real, { ...defaultFsOps, ...options.fsOps });
    this.staging = new Staging(this.mount);
    this.transfers = new Transfers(this.mount, this.staging);
    this.onRead = options.onRead;
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

  async *list(dir: string, options?: ListOptions): AsyncIterable<EntryStat> {
    for await (const batch of this.listBatches(dir, options)) yield* batch;
  }

  async *listBatches(dir: string, options?: ListOptions): AsyncIterable<EntryStat[]> {
    const rel = await this.listableDir(dir);
    yield* keepAfter(listSortedBatches(this.mount, rel, options?.recursive ?? false), options?.startAfter, (e) => e.path);
  }

  /**
   * The listing as entry lines (what the walker processes hand over); with `below`, only what
   * lies below `dir` as one part of a larger recursive listing (nothing if `dir` is gone or
   * no longer a directory reached without symlinks).
   */
  async *listLines(dir: string, options: ListOptions & { below?: boolean | undefined }): AsyncIterable<string[]> {
    const below = options.below === true;
    const rel = below ? normalizePath(dir) : await this.listableDir(dir);
    yield* keepAfter(listSortedLines(this.mount, rel, options.recursive ?? false, below), options.startAfter, linePath);
  }

  /** The canonical path of a directory to list: NOT_FOUND, SYMLINK_IN_PATH or NOT_A_DIRECTORY otherwise. */
  private async listableDir(dir: string): Promise<string> {
    const rel = normalizePath(dir);
    const st = await this.mount.requireEntry(rel, 'list');
    if (st.isSymbolicLink()) throw localError('SYMLINK_IN_PATH', rel, 'list');
    if (!st.isDirectory()) throw localError('NOT_A_DIRECTORY', rel, 'list');
    return rel;
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
    const bytes = options.bytes;
    if (bytes) return this.staging.use(op, (dir) => this.writeWhole(dir, rel, bytes, options, chmodTo));
    return this.staging.use(op, (dir) => this.writeStaged(dir, rel, body, options, chmodTo));
  }

  /**
   * writeFile of a body held whole in memory (a small upload): the same steps as writeStaged,
   * on a plain descriptor, with the calls that only touch the page cache or the descriptor
   * (write, fchmod, fstat, close) made synchronously — microseconds each, where a thread-pool
   * round trip cost more than the call. The create, the fsyncs and the rename (placeStaged)
   * stay on the thread pool: they wait for the disk or the file system's journal.
   */
  private async writeWhole(dir: StagingDir, rel: string, bytes: Buffer, options: WriteOptions, chmodTo: number | undefined): Promise<WriteResult> {
    const op = 'writeFile';
    const { abs: tmp, fd } = await this.staging.createFileFd(dir, options.stagingId, 0o644, op);
    let open = true;
    const close = () => {
      if (open) closeSync(fd);
      open = false;
    };
    try {
      for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      assertExpectedSha256(rel, options.expectedSha256, sha256);
      if (chmodTo !== undefined) fchmodSync(fd, chmodTo);
      await fsyncFd(fd);
      const st = fstatSync(fd);
      close();
      // Checked again now: the tree may have changed while the file was written.
      await this.mount.prepareParents(rel, op, true, false); // placeStaged checks the real parent just before the rename
      await this.assertWritableEntry(rel, op);
      await options.beforeCommit?.({ sha256, sizeBytes: st.size });
      await this.transfers.placeStaged(tmp, rel, op);
      return { ...(toEntryStat(rel, st, null) as EntryStat), sha256 };
    } catch (err) {
      try {
        close();
      } catch {
        // nothing left to do with it
      }
      await rm(tmp, { force: true }).catch(() => undefined);
      throw fsError(err, rel, op);
    }
  }

  /** writeFile's bytes: streamed into a file of the verified staging directory, then renamed into place. */
  private async writeStaged(dir: StagingDir, rel: string, body: Readable, options: WriteOptions, chmodTo: number | undefined): Promise<WriteResult> {
    const op = 'writeFile';
    const { abs: tmp, fh } = await this.staging.createFile(dir, options.stagingId, 0o644, op);
    let handle: FileHandle | undefined = fh;
    try {
      const hash = createHash('sha256');
      await pipeline(body, hashingFileSink(fh, hash));
      const sha256 = hash.digest('hex');
      assertExpectedSha256(rel, options.expectedSha256, sha256);
      if (chmodTo !== undefined) await fh.chmod(chmodTo);
      await fh.sync();
      const st = await fh.stat();
      await fh.close();
      handle = undefined;
      // Checked again now: the tree may have changed while the body was streaming.
      await this.mount.prepareParents(rel, op, true, false); // placeStaged checks the real parent just before the rename
      await this.assertWritableEntry(rel, op);
      await options.beforeCommit?.({ sha256, sizeBytes: st.size });
      await this.transfers.placeStaged(tmp, rel, op);
      return { ...(toEntryStat(rel, st, null) as EntryStat), sha256 };
    } catch (err) {
      await handle?.close().catch(() => undefined);
      await rm(tmp, { force: true }).catch(() => undefined);
      throw fsError(err, rel, op);
    }
  }

  async open(path: string, range?: RangeRequest): Promise<OpenedFile> {
    const rel = normalizePath(path);
    if (range !== undefined) assertRangeRequest(range);
    // Sizes, times and bytes all come from this one handle (see file-version.ts).
    const { fh, st } = await this.openFile(rel, 'read');
    try {
      return openedFile(fh, rel, st, range, this.onRead);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async read(path: string, range?: ByteRange): Promise<Readable> {
    try {
      return (await this.open(path, range)).stream;
    } catch (err) {
      // Past the end a file system read gives no bytes, and so does this.
      if (err instanceof FilestoreError && err.code === 'RANGE_NOT_SATISFIABLE') return Readable.from([]);
      throw err;
    }
  }

  async hash(path: string): Promise<HashedFile | null> {
    const rel = normalizePath(path);
    const { fh, st } = await this.openFile(rel, 'hash');
    return hashOpened(fh, rel, st, this.onRead);
  }

  async move(from: string, to: string, options: TransferOptions): Promise<void> {
    const op = 'move';
    const { src, dst, srcSt, existing } = await this.transfers.prepare(from, to, options, op);
    const srcAbs = this.mount.abs(src);
    const dstAbs = this.mount.abs(dst);
    try {
      await this.transfers.replaceTarget(dst, existing, srcSt.isDirectory(), op, options.stagingId, async () => {
        try {
          await this.mount.ops.rename(srcAbs, dstAbs);
        } catch (err) {
          if (errnoOf(err) !== 'EXDEV') throw err;
          // The tree spans filesystems: copy onto the target's filesystem (verified), then drop the source.
          await this.transfers.copyAcrossDevices(srcAbs, dstAbs, src, op);
          await this.staging.use(op, async (dir) => removeQuietly(await this.staging.setAside(dir, srcAbs, src, options.stagingId, op)));
        }
      });
      await fsyncDir(dirname(srcAbs), src, op);
      await fsyncDir(dirname(dstAbs), dst, op);
    } catch (err) {
      throw fsError(err, dst, op);
    }
  }

  async copy(from: string, to: string, options: TransferOptions): Promise<void> {
    const op = 'copy';
    const { src, dst, srcSt, existing } = await this.transfers.prepare(from, to, options, op);
    const dstAbs = this.mount.abs(dst);
    const tally = newTally();
    await this.staging.use(op, async (dir) => {
      // Built completely off to the side, then renamed into place: a failed copy leaves no partial target.
      const staged = await this.staging.buildPathFor(dir, dstAbs, options.stagingId, op);
      try {
        const copied = await copyEntry(this.mount.abs(src), staged, { mount: this.mount, rel: src, op, tally });
        // A directory gets its own mode only once in place (a read-only one could not be renamed
        // there); anything else arrives complete.
        if (!copied.isDirectory()) await applyMetadata(staged, copied);
        const place = () => this.transfers.placeStaged(staged, dst, op);
        await this.transfers.replaceTarget(dst, existing, srcSt.isDirectory(), op, options.stagingId, place);
        if (copied.isDirectory()) await applyMetadata(dstAbs, copied);
      } catch (err) {
        await removeQuietly(staged);
        throw fsError(err, dst, op);
      }
    });
    // What is in place is everything the copy made: a copy disturbed while it was built fails
    // here (and the orchestrator redoes it or leaves its entry for recovery), never catalogued short.
    await verifyCopy(dstAbs, tally, dst, op);
  }

  async delete(path: string, options: DeleteOptions): Promise<void> {
    const rel = normalizePath(path);
    const op = 'delete';
    if (rel === '') throw new FilestoreError('INVALID_PATH', 'the mount root cannot be deleted', { path: rel });
    const st = await this.mount.requireEntry(rel, op);
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
        await this.staging.use(op, async (dir) => {
          const aside = await this.staging.setAside(dir, abs, rel, options.stagingId, op);
          await fsyncDir(dirname(abs), rel, op);
          await removeQuietly(aside);
        });
        return;
      }
      await fsyncDir(dirname(abs), rel, op);
    } catch (err) {
      throw fsError(err, rel, op);
    }
  }

  /** Staging leftovers of commands that are finished (see Staging.discardLeftovers). */
  discardLeftovers(finished: (entryIds: number[]) => Promise<Set<number>>): Promise<LeftoverSweep> {
    return this.staging.discardLeftovers(finished, 'discardLeftovers');
  }

  /** UNAVAILABLE unless the mount's root is still a directory (one lstat). */
  ready(): Promise<void> {
    return this.mount.assertRootThere();
  }

  async discardStaging(stagingId: string): Promise<void> {
    await this.staging.discard(stagingId, 'discardStaging');
  }

  /** The entry a write would replace (null when absent); refuses symlinks and directories. */
  private async writableTarget(rel: string, op: string): Promise<Stats | null> {
    const check = await this.mount.checkAncestors(rel, op);
    if (check.state === 'not-directory') throw localError('NOT_A_DIRECTORY', check.at, op);
    if (check.state === 'missing') return null;
    return this.assertWritableEntry(rel, op);
  }

  /** The entry itself (its ancestors already checked) may be replaced by a file. */
  private async assertWritableEntry(rel: string, op: string): Promise<Stats | null> {
    const st = await this.mount.lstat(rel, op);
    if (st?.isSymbolicLink()) throw localError('SYMLINK_IN_PATH', rel, op);
    if (st?.isDirectory()) throw localError('IS_A_DIRECTORY', rel, op);
    return st;
  }

  /** The regular file at `rel`, opened without following symlinks, with its fstat (nanoseconds). */
  private async openFile(rel: string, op: string): Promise<{ fh: FileHandle; st: BigIntStats }> {
    const st = await this.mount.requireEntry(rel, op);
    if (st.isSymbolicLink()) throw localError('SYMLINK_IN_PATH', rel, op);
    if (st.isDirectory()) throw localError('IS_A_DIRECTORY', rel, op);
    // O_NONBLOCK: a FIFO swapped in after the lstat must not hang the open.
    const fh = await this.mount.openVerified(this.mount.abs(rel), rel, constants.O_RDONLY | constants.O_NONBLOCK, op);
    const now = await fh.stat({ bigint: true }).catch(async (err: unknown) => {
      await fh.close();
      throw fsError(err, rel, op);
    });
    if (!now.isFile()) {
      await fh.close();
      throw localError(now.isDirectory() ? 'IS_A_DIRECTORY' : 'NOT_FOUND', rel, op);
    }
    return { fh, st: now };
  }

}

/**
 * A sink that hashes and writes each chunk as it arrives (constant memory, backpressure
 * from the disk). Not FileHandle.createWriteStream: with autoClose off it keeps a reference
 * on the handle that makes the later close() wait forever, and with autoClose on we could
 * not fsync before closing.
 */
/**
 * Hashes and writes the body. While one write is in flight, further chunks queue (up to
 * 1 MiB) and go down in a single writev: far fewer syscalls than one per 64 KiB chunk.
 */
function hashingFileSink(fh: FileHandle, hash: Hash): Writable {
  return new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      writeAll(fh, [chunk]).then(() => done(), done);
    },
    writev(entries, done) {
      const chunks = entries.map((e) => e.chunk as Buffer);
      for (const c of chunks) hash.update(c);
      writeAll(fh, chunks).then(() => done(), done);
    },
  });
}

async function writeAll(fh: FileHandle, chunks: Buffer[]): Promise<void> {
  let pending = chunks;
  while (pending.length > 0) {
    let { bytesWritten } = await fh.writev(pending);
    // A short write: drop what went down and retry the rest.
    while (pending.length > 0 && bytesWritten >= (pending[0] as Buffer).length) {
      bytesWritten -= (pending[0] as Buffer).length;
      pending = pending.slice(1);
    }
    if (bytesWritten > 0) pending = [(pending[0] as Buffer).subarray(bytesWritten), ...pending.slice(1)];
  }
}

/** Batches of a listing without what comes up to `after` (a resumed listing), empty batches dropped. */
async function* keepAfter<T>(batches: AsyncIterable<T[]>, after: string | undefined, pathOf: (item: T) => string): AsyncGenerator<T[]> {
  for await (const batch of batches) {
    if (after === undefined) yield batch;
    else {
      const kept = batch.filter((item) => comparePaths(pathOf(item), after) > 0);
      if (kept.length > 0) yield kept;
    }
  }
}

/** CHECKSUM_MISMATCH when the client sent an expected sha256 the written bytes do not have (nothing is placed). */
function assertExpectedSha256(rel: string, expected: string | undefined, actual: string): void {
  if (expected === undefined || expected.toLowerCase() === actual) return;
  throw new FilestoreError('CHECKSUM_MISMATCH', `the bytes received for ${JSON.stringify(rel)} do not match the expected sha256; nothing was written, send the file again`, {
    path: rel,
    expectedSha256: expected,
    actualSha256: actual,
  });
}
