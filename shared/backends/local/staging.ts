import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, readdir, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FilestoreError } from '../../errors.ts';
import { STAGING_DIR } from '../../paths.ts';
import { errnoOf, fsError, localError } from './errors.ts';
import type { MountRoot } from './safe-path.ts';

/**
 * The staging area of a local mount: `<root>/.filestore-staging/` (mode 0700).
 *
 * - `<stagingId>-<random>.tmp` — a file being written by a command; discardStaging removes them.
 * - `trash.<random>` — an entry set aside (a replaced directory, a tree being deleted) so that
 *   it disappears from the tree in one rename; removed right after.
 * - `copy.<random>` — a tree being copied, renamed into place once complete.
 * The internal names use "." so that no valid stagingId prefix (`<id>-`) can match them.
 *
 * When the tree spans filesystems, a rename into the staging area fails with EXDEV; the
 * entry is then staged next to its target as `.<name>.filestore-tmp-<random>`, which is on
 * the target's filesystem by construction. Listings skip both kinds of names.
 */

const STAGING_ID = /^[A-Za-z0-9_-]{1,128}$/;
const SIBLING_TEMP = /^\.(?:.*\.)?filestore-tmp-[0-9a-f]{16}$/s;

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

/** Best-effort removal of something Filestore put aside; a leftover is harmless garbage. */
export async function removeQuietly(abs: string): Promise<void> {
  await rm(abs, { recursive: true, force: true }).catch(() => undefined);
}

export class Staging {
  readonly dirAbs: string;

  constructor(private readonly mount: MountRoot) {
    this.dirAbs = join(mount.root, STAGING_DIR);
  }

  /** Creates the staging directory on demand and refuses one that is not a plain directory. */
  async ensure(op: string): Promise<string> {
    try {
      await mkdir(this.dirAbs, { mode: 0o700 });
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw fsError(err, STAGING_DIR, op);
    }
    const st = await lstat(this.dirAbs).catch((err: unknown) => {
      throw fsError(err, STAGING_DIR, op);
    });
    if (st.isSymbolicLink()) throw localError('SYMLINK_IN_PATH', STAGING_DIR, op);
    if (!st.isDirectory()) throw localError('NOT_A_DIRECTORY', STAGING_DIR, op);
    return this.dirAbs;
  }

  /**
   * Opens a new, exclusive staging file for a command's write. The staging directory is
   * checked (ensure) only when the open finds it missing: openVerified already proves where
   * the new file really is, so a swapped staging directory cannot lead outside the root.
   */
  async createFile(stagingId: string, mode: number, op: string): Promise<{ abs: string; fh: FileHandle }> {
    assertStagingId(stagingId);
    const abs = join(this.dirAbs, `${stagingId}-${randomSuffix()}.tmp`);
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL;
    try {
      return { abs, fh: await this.mount.openVerified(abs, STAGING_DIR, flags, op, mode, true) };
    } catch (err) {
      if ((err as { details?: { errno?: string } }).details?.errno !== 'ENOENT') throw err;
    }
    await this.ensure(op);
    return { abs, fh: await this.mount.openVerified(abs, STAGING_DIR, flags, op, mode, true) };
  }

  /**
   * Where to build a copy that will be renamed onto `targetAbs`: the staging area when it is on
   * the same device as the target's directory, otherwise a sibling of the target.
   */
  async buildPathFor(targetAbs: string, op: string): Promise<string> {
    const dir = await this.ensure(op);
    const [staging, parent] = await Promise.all([lstat(dir), lstat(dirname(targetAbs))]).catch((err: unknown) => {
      throw fsError(err, STAGING_DIR, op);
    });
    return staging.dev === parent.dev ? join(dir, `copy.${randomSuffix()}`) : siblingTempPath(targetAbs);
  }

  /**
   * Moves an entry out of the tree in one rename and returns where it went: into the staging
   * area, or next to itself when the staging area is on another filesystem.
   */
  async setAside(abs: string, rel: string, op: string): Promise<string> {
    const trash = join(await this.ensure(op), `trash.${randomSuffix()}`);
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

  /** Removes the staging files of one command (recovery after a crash). */
  async discard(stagingId: string, op: string): Promise<void> {
    assertStagingId(stagingId);
    let names: string[];
    try {
      names = await readdir(this.dirAbs);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return;
      throw fsError(err, STAGING_DIR, op);
    }
    const prefix = `${stagingId}-`;
    for (const name of names) {
      if (!name.startsWith(prefix)) continue;
      await rm(join(this.dirAbs, name), { recursive: true, force: true }).catch((err: unknown) => {
        throw fsError(err, STAGING_DIR, op);
      });
    }
  }

  /**
   * Removes what operations of an earlier process left in the staging area: tree copies and
   * set-aside entries (`copy.*`, `trash.*`), which no journal entry names, so recovery cannot
   * find them. Run by the process that executes the mount's commands when it starts, before
   * it takes any: `before` is its start (a copy being built by a live process has a newer mtime).
   * Command files (`<stagingId>-*`) are recovery's. Returns how many entries went.
   */
  async discardLeftovers(before: Date, op: string): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.dirAbs);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return 0;
      throw fsError(err, STAGING_DIR, op);
    }
    let removed = 0;
    for (const name of names) {
      if (!name.startsWith('copy.') && !name.startsWith('trash.')) continue;
      const abs = join(this.dirAbs, name);
      const st = await lstat(abs).catch(() => null);
      if (!st || st.mtimeMs >= before.getTime()) continue;
      await rm(abs, { recursive: true, force: true }).catch((err: unknown) => {
        throw fsError(err, STAGING_DIR, op);
      });
      removed++;
    }
    return removed;
  }
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
