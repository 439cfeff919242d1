import path from 'node:path';
import { InvalidPathError } from '../../../shared/index.ts';
import { normalizePath, STAGING_DIR } from '../../../shared/index-paths.ts';

/**
 * Turns the absolute paths watchers report into canonical mount paths (shared/paths.ts),
 * and tells which absolute paths are Filestore's staging area (never reported).
 */
export class MountPaths {
  /** Absolute path of the staging directory of this mount. */
  readonly staging: string;
  private readonly prefix: string;

  /** `root`: the mount root as an absolute, real path (symlinks resolved once, at start). */
  constructor(readonly root: string) {
    this.staging = path.join(root, STAGING_DIR);
    this.prefix = root.endsWith(path.sep) ? root : root + path.sep;
  }

  /** True for the staging directory and anything below it. */
  isStaging(abs: string): boolean {
    return abs === this.staging || abs.startsWith(this.staging + path.sep);
  }

  /**
   * The canonical mount path of `abs`; null when it is outside the root, in the staging
   * area, or a name Filestore cannot catalogue (a backslash or control character: the
   * path rules of SPEC §2 refuse it everywhere, so reconciliation never records it either).
   */
  toMountPath(abs: string): string | null {
    if (abs === this.root || abs + path.sep === this.prefix) return '';
    if (!abs.startsWith(this.prefix) || this.isStaging(abs)) return null;
    const rel = abs.slice(this.prefix.length);
    try {
      return normalizePath(path.sep === '/' ? rel : rel.split(path.sep).join('/'));
    } catch (err) {
      if (err instanceof InvalidPathError) return null;
      throw err;
    }
  }
}
