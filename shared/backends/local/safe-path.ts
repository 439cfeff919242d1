import { closeSync, constants, existsSync, fsync, lstatSync, openSync, readlinkSync, realpathSync, type Stats } from 'node:fs';
import { mkdir, open, readlink, realpath, rename, type FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join, sep } from 'node:path';
import { ancestorsOf } from '../../paths.ts';
import { errnoOf, escapesMount, fsError, localError, rootUnreachable } from './errors.ts';

/**
 * Path resolution for a local mount without ever following a symlink.
 *
 * Node has no openat2(RESOLVE_NO_SYMLINKS), so every operation first walks the ancestors of
 * its path with lstat and refuses a symlink anywhere above the entry (SYMLINK_IN_PATH).
 * Because a path can change between that walk and the syscall that uses it, handles are
 * verified after opening (through /proc/self/fd on Linux) and directories are checked with
 * realpath just before a rename or mkdir lands in them.
 *
 * The metadata calls (lstat, realpath, the open and close of a directory to fsync) are
 * synchronous: each is microseconds on a local disk, where the thread pool's round trip for
 * it cost more than the call (a write makes about a dozen; the watcher's DiskStat looks the
 * same way). fsync stays on the thread pool.
 *
 * Guarantee: a file Filestore opens is inside the root, or the operation fails.
 * Non-guarantee: a process racing Filestore *inside* the mount (swapping a directory for a
 * symlink between the check and a rename/mkdir) can still redirect that one syscall; the
 * post-checks then fail the operation but cannot undo the syscall.
 */

/** Swappable filesystem calls; tests inject EXDEV through `rename`. */
export interface FsOps {
  rename(from: string, to: string): Promise<void>;
}

export const defaultFsOps: FsOps = { rename };

/** Where the ancestors of a path stand. A symlink ancestor never gets here: it throws. */
export type AncestorCheck =
  | { state: 'ok' }
  | { state: 'missing'; first: string }
  | { state: 'not-directory'; at: string };

let procFd: boolean | undefined;

/**
 * Whether /proc/self/fd/N names the file an fd really refers to, whatever happened to its path
 * since (Linux). Looked at on first use, not when the module is imported.
 */
export function hasProcFd(): boolean {
  return (procFd ??= process.platform === 'linux' && existsSync('/proc/self/fd'));
}

export class MountRoot {
  /** realpath of the mount root, resolved once. */
  readonly root: string;
  private readonly rootPrefix: string;

  constructor(
    realRoot: string,
    readonly ops: FsOps,
  ) {
    this.root = realRoot;
    this.rootPrefix = realRoot.endsWith(sep) ? realRoot : realRoot + sep;
  }

  /** Absolute host path of a canonical mount-relative path. */
  abs(rel: string): string {
    return rel === '' ? this.root : join(this.root, ...rel.split('/'));
  }

  isInside(absReal: string): boolean {
    return absReal === this.root || absReal.startsWith(this.rootPrefix);
  }

  /**
   * lstat of every ancestor of `rel`, root first. Throws SYMLINK_IN_PATH for a symlink
   * ancestor; reports the first missing ancestor or the first one that is not a directory.
   */
  async checkAncestors(rel: string, op: string): Promise<AncestorCheck> {
    for (const ancestor of ancestorsOf(rel)) {
      if (ancestor === '') continue; // the root was resolved with realpath at start
      const st = await this.lstat(ancestor, op);
      if (st === null) return { state: 'missing', first: ancestor };
      if (st.isSymbolicLink()) throw localError('SYMLINK_IN_PATH', ancestor, op);
      if (!st.isDirectory()) return { state: 'not-directory', at: ancestor };
    }
    return { state: 'ok' };
  }

  /** lstat of an entry that must exist: NOT_FOUND otherwise, also behind a file parent. */
  async requireEntry(rel: string, op: string): Promise<Stats> {
    if ((await this.checkAncestors(rel, op)).state !== 'ok') throw localError('NOT_FOUND', rel, op);
    const st = await this.lstat(rel, op);
    // FIFOs, sockets and devices are not catalogued: to Filestore they are not there.
    if (st === null || !(st.isFile() || st.isDirectory() || st.isSymbolicLink())) {
      throw localError('NOT_FOUND', rel, op);
    }
    return st;
  }

  /**
   * lstat, or null when the entry (or a parent) is absent. Absent only while the root is there:
   * with the root gone (unmounted, renamed away) nothing can be told about an entry, and
   * "absent" would let recovery or a command decide on missing evidence.
   */
  async lstat(rel: string, op: string): Promise<Stats | null> {
    try {
      return lstatSync(this.abs(rel));
    } catch (err) {
      const errno = errnoOf(err);
      if (errno === 'ENOENT' || errno === 'ENOTDIR') {
        await this.assertRootThere();
        return null;
      }
      throw fsError(err, rel, op);
    }
  }

  /** UNAVAILABLE (retry later) unless the root is still a directory. */
  async assertRootThere(): Promise<void> {
    let problem: unknown;
    try {
      if (lstatSync(this.root).isDirectory()) return;
      problem = Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    } catch (err) {
      problem = err;
    }
    throw rootUnreachable(this.root, problem);
  }

  /**
   * Ancestors for an entry about to be created: symlinks throw SYMLINK_IN_PATH, a file in
   * the way throws NOT_A_DIRECTORY, and missing ones are created one level at a time (never
   * mkdir -p, which would follow a symlink planted halfway) when `create` is set, otherwise
   * NOT_FOUND. `verifyInside: false` is for a caller that checks the parent's real path
   * itself right before it writes there (placeStaged does).
   */
  async prepareParents(rel: string, op: string, create: boolean, verifyInside = true): Promise<void> {
    const check = await this.checkAncestors(rel, op);
    if (check.state === 'not-directory') throw localError('NOT_A_DIRECTORY', check.at, op);
    if (check.state === 'missing') {
      if (!create) throw localError('NOT_FOUND', check.first, op);
      const all = ancestorsOf(rel);
      for (const dir of all.slice(all.indexOf(check.first))) await this.mkdirOne(dir, op);
    }
    if (verifyInside) await this.assertDirInside(this.parentAbs(rel), rel, op);
  }

  /** Creates one directory whose parent has been checked; an existing directory is fine. */
  async mkdirOne(rel: string, op: string, mode = 0o777): Promise<boolean> {
    const abs = this.abs(rel);
    await this.assertDirInside(this.parentAbs(rel), rel, op);
    try {
      await mkdir(abs, { mode });
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw fsError(err, rel, op);
      const st = await this.lstat(rel, op);
      if (st?.isSymbolicLink()) throw localError('SYMLINK_IN_PATH', rel, op);
      if (!st?.isDirectory()) throw localError('NOT_A_DIRECTORY', rel, op);
      return false;
    }
    await fsyncDir(this.parentAbs(rel), rel, op);
    return true;
  }

  parentAbs(rel: string): string {
    const i = rel.lastIndexOf('/');
    return i === -1 ? this.root : this.abs(rel.slice(0, i));
  }

  /** Defence in depth: the directory an operation lands in really is inside the root. */
  async assertDirInside(absDir: string, rel: string, op: string): Promise<void> {
    let real: string;
    try {
      real = realpathSync.native(absDir);
    } catch (err) {
      throw fsError(err, rel, op);
    }
    if (!this.isInside(real)) throw escapesMount(rel, op);
  }

  /**
   * Opens `abs` without following a final symlink (O_NOFOLLOW → ELOOP → SYMLINK_IN_PATH)
   * and checks where the handle really points, so a swapped ancestor cannot smuggle in a
   * file from outside the root. With `exact`, it must point at `abs` itself.
   */
  async openVerified(abs: string | Buffer, rel: string, flags: number, op: string, mode?: number, exact = false): Promise<FileHandle> {
    let fh: FileHandle;
    try {
      fh = await open(abs, flags | constants.O_NOFOLLOW, mode);
    } catch (err) {
      throw fsError(err, rel, op);
    }
    try {
      const real = hasProcFd() ? await readlink(`/proc/self/fd/${fh.fd}`) : await realpath(abs);
      // exact: the handle must be at `abs` itself, not merely somewhere inside the root
      // (a staging file must not land in a user directory through a swapped staging dir).
      if (!this.isInside(real) || (exact && hasProcFd() && real !== abs)) throw escapesMount(rel, op);
      return fh;
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw fsError(err, rel, op);
    }
  }
}

/** Where the file behind `fh` really is now (through /proc/self/fd on Linux; else the realpath of `fallbackAbs`). */
export async function realPathOf(fh: FileHandle, fallbackAbs: string): Promise<string> {
  return hasProcFd() ? readlink(`/proc/self/fd/${fh.fd}`) : realpath(fallbackAbs);
}

/** realPathOf for a plain descriptor, synchronously. */
export function realPathOfFd(fd: number, fallbackAbs: string): string {
  return hasProcFd() ? readlinkSync(`/proc/self/fd/${fd}`) : realpathSync.native(fallbackAbs);
}

/** A path that reopens exactly the file behind `fh` (Linux), so copyFile cannot be redirected. */
export function handlePath<P extends string | Buffer>(fh: { fd: number }, fallbackAbs: P): string | P {
  return hasProcFd() ? `/proc/self/fd/${fh.fd}` : fallbackAbs;
}

/** fsync of a plain descriptor, on the thread pool (it waits for the disk). */
export const fsyncFd = promisify(fsync);

/**
 * fsync of a directory makes a rename or create in it durable. Some filesystems refuse
 * fsync on directories; durability there is the filesystem's business, not an error.
 */
export async function fsyncDir(absDir: string, rel: string, op: string): Promise<void> {
  let fd: number | undefined;
  try {
    fd = openSync(absDir, constants.O_RDONLY | constants.O_DIRECTORY);
    await fsyncFd(fd);
  } catch (err) {
    const errno = errnoOf(err);
    if (errno !== 'EINVAL' && errno !== 'EPERM' && errno !== 'EISDIR' && errno !== 'EBADF' && errno !== 'ENOENT') {
      throw fsError(err, rel, op);
    }
  } finally {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        // nothing left to do with it
      }
    }
  }
}
