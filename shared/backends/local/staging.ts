import { randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, open as openCallback, openSync } from 'node:fs';
import { lstat, mkdir, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { FilestoreError, type ErrorCode } from '../../errors.ts';
import { STAGING_DIR } from '../../paths.ts';
import { errnoOf, fsError } from './errors.ts';
import { handlePath, realPathOfFd, type MountRoot } from './safe-path.ts';

/**
 * The staging area of a local mount: `<root>/.filestore-staging/` (mode 0700). Every entry in
 * it belongs to the journal entry whose staging id (`j<entry id>`) it carries:
 *
 * - `<stagingId>-<random>.tmp` — a file being written by a command;
 * - `copy.<stagingId>.<random>` — a tree being copied, renamed into place once complete;
 * - `trash.<stagingId>.<random>` — an entry set aside (a replaced directory, a tree being
 *   deleted) so that it disappears from the tree in one rename; removed right after.
 *
 * What a command leaves here is removed by recovery when it resolves that command's entry
 * (`discard`), or, once the entry is finished, by the owning agent's sweep at start
 * (`discardLeftovers`). Nothing is ever judged by its age: a live command's entry is pending.
 *
 * The directory is only ever used through a verified handle (`use`): opened without
 * following a symlink and checked to be exactly `<root>/.filestore-staging`; the paths handed
 * out lead through that handle (`/proc/self/fd/N/…` on Linux), so a staging directory swapped
 * for a symlink can neither receive nor lose anything outside the mount.
 *
 * When the tree spans filesystems, a rename into the staging area fails with EXDEV; the
 * entry is then staged next to its target as `.<name>.filestore-tmp-<random>`, which is on
 * the target's filesystem by construction. Listings skip both kinds of names.
 */

const STAGING_ID = /^[A-Za-z0-9_-]{1,128}$/;
const SIBLING_TEMP = /^\.(?:.*\.)?filestore-tmp-[0-9a-f]{16}$/s;
/** Names of what a command stages, and the staging id they carry. */
const OWNED_NAME = /^(?:(?:copy|trash)\.([A-Za-z0-9_-]{1,128})\.[0-9a-f]{16}|([A-Za-z0-9_-]{1,128})-[0-9a-f]{16}\.tmp)$/;
/** A staging id of the orchestrator: its journal entry. */
const JOURNAL_STAGING_ID = /^j([1-9][0-9]{0,17})$/;
/** Staging id of operations called without one (tests, tools): never attributed to an entry. */
const ANONYMOUS = 'anon';

const openFd = promisify(openCallback) as (path: string, flags: number, mode: number) => Promise<number>;

function randomSuffix(): string {
  return randomBytes(8).toString('hex');
}

/** True for the transient sibling names of a cross-filesystem copy or move. */
export function isSiblingTempName(name: string): boolean {
  return SIBLING_TEMP.test(name);
}

/** A fresh hidden path next to `targetAbs` (same directory, hence same filesystem). */
export function siblingTempPath(targetAbs: string): string {
  const name = basename(targetAbs);
  // Keep the whole name within NAME_MAX (255 bytes); the target's name only helps operators.
  const label = Buffer.byteLength(name, 'utf8') <= 200 ? `.${name}.` : '.';
  return join(dirname(targetAbs), `${label}filestore-tmp-${randomSuffix()}`);
}

/** Best-effort removal of something Filestore put aside; a leftover is removed by recovery or the next sweep. */
export async function removeQuietly(abs: string): Promise<void> {
  await rm(abs, { recursive: true, force: true }).catch(() => undefined);
}

/** The staging journal entry id named by a staging id (`j42` → 42), or null. */
export function journalEntryOfStagingId(stagingId: string): number | null {
  const m = JOURNAL_STAGING_ID.exec(stagingId);
  return m ? Number(m[1]) : null;
}

/** Thrown when `.filestore-staging` is not a plain directory of the mount: nothing is staged through it. */
export function unsafeStaging(code: Extract<ErrorCode, 'SYMLINK_IN_PATH' | 'NOT_A_DIRECTORY' | 'PATH_ESCAPES_MOUNT'>, op: string): FilestoreError {
  const what = code === 'SYMLINK_IN_PATH' ? 'is a symbolic link' : code === 'NOT_A_DIRECTORY' ? 'is not a directory' : 'resolves outside the mount root';
  return new FilestoreError(
    code,
    `the mount's staging directory ${STAGING_DIR} ${what}; Filestore neither writes nor deletes through it. ` +
      `Remove it (Filestore creates it again) and check who put it there`,
    { path: STAGING_DIR, op, staging: true },
  );
}

/** The staging directory, open and verified for the length of one operation. */
export class StagingDir {
  private closed = false;

  constructor(
    /** A descriptor of the verified directory (opened and closed synchronously: see safe-path.ts). */
    private readonly fh: { fd: number },
    private readonly dirAbs: string,
  ) {}

  /** Where `name` is inside the verified directory (through its handle on Linux). */
  path(name: string): string {
    return `${handlePath(this.fh, this.dirAbs)}/${name}`;
  }

  /** The device the staging directory is on. */
  async dev(): Promise<number> {
    return fstatSync(this.fh.fd).dev;
  }

  names(): Promise<string[]> {
    return readdir(handlePath(this.fh, this.dirAbs));
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      try {
        closeSync(this.fh.fd);
      } catch {
        // nothing left to do with it
      }
    }
    return Promise.resolve();
  }
}

export interface LeftoverSweep {
  /** Entries removed: their journal entry is finished. */
  removed: number;
  /** Entries of commands still pending (a live command, or one recovery has yet to resolve). */
  pending: number;
  /** Entries no journal entry of this catalogue names (an older version's, or another tool's): left alone. */
  unattributed: string[];
}

export class Staging {
  readonly dirAbs: string;

  constructor(private readonly mount: MountRoot) {
    this.dirAbs = join(mount.root, STAGING_DIR);
  }

  /**
   * Opens the staging directory as a verified handle, creating it (mode 0700) when `create`;
   * null when it is absent and not to be created. A symlink, a non-directory or a directory
   * that is not exactly `<root>/.filestore-staging` is refused (see unsafeStaging).
   */
  async open(op: string, create: boolean): Promise<StagingDir | null> {
    for (let attempt = 0; ; attempt++) {
      let fd: number;
      try {
        fd = openSync(this.dirAbs, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      } catch (err) {
        const errno = errnoOf(err);
        // O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR (or ELOOP): tell the two apart.
        if (errno === 'ELOOP' || errno === 'ENOTDIR') {
          const link = await lstat(this.dirAbs).then((st) => st.isSymbolicLink(), () => errno === 'ELOOP');
          throw unsafeStaging(link ? 'SYMLINK_IN_PATH' : 'NOT_A_DIRECTORY', op);
        }
        if (errno !== 'ENOENT' || attempt > 0) throw fsError(err, STAGING_DIR, op);
        if (!create) return null;
        await this.mount.assertDirInside(this.mount.root, STAGING_DIR, op);
        await mkdir(this.dirAbs, { mode: 0o700 }).catch((e: unknown) => {
          if (errnoOf(e) !== 'EEXIST') throw fsError(e, STAGING_DIR, op);
        });
        continue;
      }
      try {
        if (realPathOfFd(fd, this.dirAbs) !== this.dirAbs) throw unsafeStaging('PATH_ESCAPES_MOUNT', op);
      } catch (err) {
        try {
          closeSync(fd);
        } catch {
          // nothing left to do with it
        }
        throw fsError(err, STAGING_DIR, op);
      }
      return new StagingDir({ fd }, this.dirAbs);
    }
  }

  /** Runs `fn` with the verified staging directory (created if needed), closed afterwards. */
  async use<T>(op: string, fn: (dir: StagingDir) => Promise<T>): Promise<T> {
    const dir = (await this.open(op, true)) as StagingDir;
    try {
      return await fn(dir);
    } finally {
      await dir.close();
    }
  }

  /**
   * createFile as a plain descriptor (the caller closes it): for a body written whole with
   * synchronous calls (local-executor.ts). The create itself stays on the thread pool: it takes
   * a journal handle of the file system, which can wait behind a commit.
   */
  async createFileFd(dir: StagingDir, stagingId: string, mode: number, op: string): Promise<{ abs: string; fd: number }> {
    assertStagingId(stagingId);
    const abs = dir.path(`${stagingId}-${randomSuffix()}.tmp`);
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
    try {
      return { abs, fd: await openFd(abs, flags, mode) };
    } catch (err) {
      throw fsError(err, STAGING_DIR, op);
    }
  }

  /** Opens a new, exclusive staging file for a command's write, inside `dir`. */
  async createFile(dir: StagingDir, stagingId: string, mode: number, op: string): Promise<{ abs: string; fh: FileHandle }> {
    assertStagingId(stagingId);
    const abs = dir.path(`${stagingId}-${randomSuffix()}.tmp`);
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
    try {
      return { abs, fh: await open(abs, flags, mode) };
    } catch (err) {
      throw fsError(err, STAGING_DIR, op);
    }
  }

  /**
   * Where to build a copy that will be renamed onto `targetAbs`: the staging area when it is on
   * the same device as the target's directory, otherwise a sibling of the target.
   */
  async buildPathFor(dir: StagingDir, targetAbs: string, stagingId: string | undefined, op: string): Promise<string> {
    const sid = stagingId ?? ANONYMOUS;
    assertStagingId(sid);
    const [stagingDev, parentDev] = await Promise.all([dir.dev(), this.devOf(dirname(targetAbs))]).catch((err: unknown) => {
      throw fsError(err, STAGING_DIR, op);
    });
    return stagingDev === parentDev ? dir.path(`copy.${sid}.${randomSuffix()}`) : siblingTempPath(targetAbs);
  }

  /**
   * Moves an entry out of the tree in one rename and returns where it went: into the staging
   * area, or next to itself when the staging area is on another filesystem.
   */
  async setAside(dir: StagingDir, abs: string, rel: string, stagingId: string | undefined, op: string): Promise<string> {
    const sid = stagingId ?? ANONYMOUS;
    assertStagingId(sid);
    const trash = dir.path(`trash.${sid}.${randomSuffix()}`);
    try {
      await this.mount.ops.rename(abs, trash);
      return trash;
    } catch (err) {
      if (errnoOf(err) !== 'EXDEV') throw fsError(err, rel, op);
    }
    const sibling = siblingTempPath(abs);
    try {
      await this.mount.ops.rename(abs, sibling);
      return sibling;
    } catch (err) {
      throw fsError(err, rel, op);
    }
  }

  /** Removes everything command `stagingId` staged (recovery, once its owner is gone). */
  async discard(stagingId: string, op: string): Promise<void> {
    assertStagingId(stagingId);
    const dir = await this.open(op, false);
    if (!dir) return;
    try {
      for (const name of await dir.names()) {
        if (stagingIdOf(name) !== stagingId) continue;
        await rm(dir.path(name), { recursive: true, force: true }).catch((err: unknown) => {
          throw fsError(err, STAGING_DIR, op);
        });
      }
    } catch (err) {
      throw fsError(err, STAGING_DIR, op);
    } finally {
      await dir.close();
    }
  }

  /**
   * Removes what finished commands left in the staging area (a removal that failed quietly,
   * a process killed between its commit and its clean-up). `finished` answers, for journal
   * entry ids, which of them are no longer pending; entries of pending commands are left to
   * their command or to recovery, and entries no journal entry names are reported, not removed.
   */
  async discardLeftovers(finished: (entryIds: number[]) => Promise<Set<number>>, op: string): Promise<LeftoverSweep> {
    const sweep: LeftoverSweep = { removed: 0, pending: 0, unattributed: [] };
    const dir = await this.open(op, false);
    if (!dir) return sweep;
    try {
      const byEntry = new Map<number, string[]>();
      for (const name of await dir.names()) {
        const sid = stagingIdOf(name);
        const entryId = sid === null ? null : journalEntryOfStagingId(sid);
        if (entryId === null) {
          sweep.unattributed.push(name);
          continue;
        }
        byEntry.set(entryId, [...(byEntry.get(entryId) ?? []), name]);
      }
      if (byEntry.size === 0) return sweep;
      const done = await finished([...byEntry.keys()]);
      for (const [entryId, names] of byEntry) {
        if (!done.has(entryId)) {
          sweep.pending += names.length;
          continue;
        }
        for (const name of names) {
          await rm(dir.path(name), { recursive: true, force: true });
          sweep.removed++;
        }
      }
      return sweep;
    } catch (err) {
      throw fsError(err, STAGING_DIR, op);
    } finally {
      await dir.close();
    }
  }

  private async devOf(abs: string): Promise<number> {
    const fh = await open(abs, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      return (await fh.stat()).dev;
    } finally {
      await fh.close();
    }
  }
}

/** The staging id a staging entry's name carries, or null for a name Filestore did not make. */
function stagingIdOf(name: string): string | null {
  const m = OWNED_NAME.exec(name);
  return m ? ((m[1] ?? m[2]) as string) : null;
}

function assertStagingId(stagingId: string): void {
  if (!STAGING_ID.test(stagingId)) {
    throw new FilestoreError(
      'VALIDATION_ERROR',
      'stagingId must be 1-128 characters of A-Z, a-z, 0-9, "_" or "-"',
      { stagingId: stagingId.slice(0, 140) },
    );
  }
}
