import { createHash } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { FileChangedError } from '../errors.ts';
import { resolveRange } from '../range.ts';
import type { FileVersion, HashedFile, OpenedFile, RangeRequest } from '../types.ts';
import { fsError } from './errors.ts';

const CHUNK = 64 * 1024;

/** @internal Test seam: awaited before each chunk of a file is read (a test rewrites the file mid-read). */
export type ReadHook = (path: string, position: number) => Promise<void> | void;

/** The version an fstat of the open handle describes (bigint: nanoseconds). */
export function versionOf(st: BigIntStats): FileVersion {
  return {
    sizeBytes: Number(st.size),
    mtime: new Date(wholeMs(st.mtimeNs)),
    ctime: new Date(wholeMs(st.ctimeNs)),
    etag: null,
    validator: [st.ino, st.size, st.mtimeNs, st.ctimeNs].map((n) => n.toString(36)).join('-'),
  };
}

/** Whole milliseconds as Node's Stats rounds them: what listings, and so the catalogue, record. */
function wholeMs(ns: bigint): number {
  return Math.round(Number(ns / 1_000_000_000n) * 1e3 + Number(ns % 1_000_000_000n) / 1e6);
}

/**
 * Whether the handle still reads the version it was opened with (docs/api.md, Downloads).
 * Its bytes moved when its size or mtime did, or when its ctime did while its link count did
 * not: a rewrite in place that put mtime back. A ctime that moved with the link count is a
 * rename over the file or an unlink (Filestore's own overwrite, move onto it, delete): the
 * inode being read keeps its bytes, so a download goes on with the old version. Not told
 * apart: a move of the file itself or a chmod (ctime alone, as a rewrite with mtime put back),
 * which cut the download, and a rewrite with mtime put back together with a link change.
 * A hash audit compares strictly (any ctime change): it records what is at the path now.
 */
function sameVersion(a: BigIntStats, b: BigIntStats, op: string): boolean {
  if (a.size !== b.size || a.mtimeNs !== b.mtimeNs) return false;
  if (a.ctimeNs === b.ctimeNs) return true;
  return op === 'read' && a.nlink !== b.nlink;
}

/**
 * `fh` (a regular file, `st` its fstat) opened for `range`: exactly the bytes of the version
 * `st` describes. Throws RANGE_NOT_SATISFIABLE without closing `fh` (the caller does).
 */
export function openedFile(fh: FileHandle, rel: string, st: BigIntStats, range: RangeRequest | undefined, hook?: ReadHook): OpenedFile {
  const version = versionOf(st);
  const r = range === undefined ? null : resolveRange(range, version.sizeBytes);
  const length = r === null ? version.sizeBytes : r.end - r.start + 1;
  return { ...version, range: r, length, stream: new VersionReadStream(fh, rel, st, r?.start ?? 0, length, 'read', hook) };
}

/** The sha256 of the version `st` describes, or null when the file changed while it was read. Closes `fh`. */
export async function hashOpened(fh: FileHandle, rel: string, st: BigIntStats, hook?: ReadHook): Promise<HashedFile | null> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of new VersionReadStream(fh, rel, st, 0, Number(st.size), 'hash', hook)) hash.update(chunk as Buffer);
  } catch (err) {
    if (err instanceof FileChangedError) return null;
    throw err;
  }
  return { ...versionOf(st), sha256: hash.digest('hex') };
}

/**
 * Exactly `length` bytes from `start`, read at explicit positions through one handle. It
 * fails (FileChangedError) instead of ending when the file ends early, or when the handle's
 * fstat after the last read differs from the one it was opened with (written, truncated,
 * extended, or rewritten with mtime put back: see sameVersion). The last chunk waits for that check: a reader
 * never gets all `length` bytes of a file that changed under it, so a client of a download
 * sees a cut connection rather than a whole-looking mix of two versions. Closes the handle
 * when it ends or is destroyed.
 */
class VersionReadStream extends Readable {
  private position: number;
  private left: number;

  constructor(
    private readonly fh: FileHandle,
    private readonly rel: string,
    private readonly opened: BigIntStats,
    start: number,
    length: number,
    private readonly op: string,
    private readonly hook: ReadHook | undefined,
  ) {
    super({ highWaterMark: CHUNK });
    this.position = start;
    this.left = length;
  }

  override _read(): void {
    this.next().catch((err: unknown) => this.destroy(fsError(err, this.rel, this.op)));
  }

  private async next(): Promise<void> {
    if (this.left === 0) {
      await this.verify();
      this.push(null);
      return;
    }
    await this.hook?.(this.rel, this.position);
    const want = Math.min(CHUNK, this.left);
    const buf = Buffer.allocUnsafe(want);
    const { bytesRead } = await this.fh.read(buf, 0, want, this.position);
    if (bytesRead === 0) throw new FileChangedError(this.rel, this.op); // it shrank under us
    this.position += bytesRead;
    this.left -= bytesRead;
    const chunk = bytesRead === want ? buf : buf.subarray(0, bytesRead);
    if (this.left > 0) {
      this.push(chunk);
      return;
    }
    await this.verify();
    this.push(chunk);
    this.push(null);
  }

  private async verify(): Promise<void> {
    if (!sameVersion(await this.fh.stat({ bigint: true }), this.opened, this.op)) throw new FileChangedError(this.rel, this.op);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.fh.close().then(
      () => done(err),
      () => done(err),
    );
  }
}
