import type { Stats } from 'node:fs';
import { dirname } from 'node:path';
import { FilestoreError } from '../../errors.ts';
import { isSameOrDescendant, normalizePath } from '../../paths.ts';
import { errnoOf, localError } from './errors.ts';
import { fsyncDir, type MountRoot } from './safe-path.ts';
import { removeQuietly, siblingTempPath, type Staging } from './staging.ts';
import { applyMetadata, copyEntry, newTally, verifyCopy } from './tree.ts';

/**
 * The target rules shared by move and copy, and how a new entry is put in place: by one
 * rename when it can be, by a copy onto the target's filesystem when the tree spans
 * filesystems (EXDEV), with an existing directory target set aside and restored on failure.
 */
export class Transfers {
  constructor(
    private readonly mount: MountRoot,
    private readonly staging: Staging,
  ) {}

  /** Shared checks of move and copy, in the order a caller can act on them. */
  async prepare(
    from: string,
    to: string,
    options: { overwrite: boolean },
    op: string,
  ): Promise<{ src: string; dst: string; srcSt: Stats; existing: Stats | null }> {
    const src = normalizePath(from);
    const dst = normalizePath(to);
    const refuse = (code: 'MOVE_INTO_SELF' | 'INVALID_PATH', message: string) =>
      new FilestoreError(code, message, { path: src, targetPath: dst });
    if (src === '') throw refuse('MOVE_INTO_SELF', `the mount root cannot be the source of a ${op}`);
    const srcSt = await this.mount.requireEntry(src, op);
    if (isSameOrDescendant(dst, src)) {
      throw refuse('MOVE_INTO_SELF', `cannot ${op} ${JSON.stringify(src)} into itself (${JSON.stringify(dst)})`);
    }
    if (dst === '') throw refuse('INVALID_PATH', 'the mount root cannot be replaced');
    const check = await this.mount.checkAncestors(dst, op);
    if (check.state === 'not-directory') throw localError('NOT_A_DIRECTORY', check.at, op);
    const existing = check.state === 'ok' ? await this.mount.lstat(dst, op) : null;
    if (existing !== null) {
      if (!options.overwrite) throw localError('ALREADY_EXISTS', dst, op);
      // Replacing an ancestor of the source would carry the source away with it.
      if (isSameOrDescendant(src, dst)) {
        throw refuse('MOVE_INTO_SELF', `cannot replace ${JSON.stringify(dst)}: it contains the source ${JSON.stringify(src)}`);
      }
    }
    await this.mount.prepareParents(dst, op, true);
    return { src, dst, srcSt, existing };
  }

  /**
   * Runs `place` (which puts the new entry at `dst`) over what is there. A file or symlink
   * target is replaced by the rename itself (atomic); a directory target, or a directory
   * source over a non-directory, needs the old entry set aside first (staged under the
   * command's `stagingId`), and it comes back if placing fails.
   */
  async replaceTarget(
    dst: string,
    existing: Stats | null,
    sourceIsDir: boolean,
    op: string,
    stagingId: string | undefined,
    place: () => Promise<void>,
  ): Promise<void> {
    if (existing === null || (!existing.isDirectory() && !sourceIsDir)) {
      await place();
      return;
    }
    const dstAbs = this.mount.abs(dst);
    await this.staging.use(op, async (dir) => {
      const aside = await this.staging.setAside(dir, dstAbs, dst, stagingId, op);
      try {
        await place();
      } catch (err) {
        await this.mount.ops.rename(aside, dstAbs).catch(() => undefined);
        throw err;
      }
      await removeQuietly(aside);
    });
  }

  /** Renames a staged entry onto `rel`; across filesystems (EXDEV) it is copied there instead. */
  async placeStaged(staged: string, rel: string, op: string): Promise<void> {
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
  async copyAcrossDevices(srcAbs: string, dstAbs: string, rel: string, op: string): Promise<void> {
    const sibling = siblingTempPath(dstAbs);
    const tally = newTally();
    try {
      const st = await copyEntry(srcAbs, sibling, { mount: this.mount, rel, op, tally });
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
    // Before a move drops its source: what is in place is all of it.
    await verifyCopy(dstAbs, tally, rel, op);
  }
}
