import { constants, realpathSync } from 'node:fs';
import { access, lstat, readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import { STAGING_DIR } from '../../paths.ts';
import { errnoOf } from './errors.ts';

/**
 * What a look at a local mount's root found: a readable directory (with its identity, and why
 * the mount is nonetheless unhealthy: its staging area), or why not (`gone` when the root is
 * certainly not there: absent, a symbolic link or not a directory; other errors, such as EIO,
 * ESTALE or EACCES on a network filesystem, may pass).
 */
export type RootLook =
  | { ok: true; real: string; id: string; unhealthy: string | null }
  | { ok: false; reason: string; code: string; gone: boolean };

// The registered root path → its real path as this process first found it.
const firstResolved = new Map<string, string>();

/**
 * Looks at a local mount's root the way the watcher and reconciliation both judge its health.
 *
 * The registered path is resolved once per process (symlinks in it followed then; see
 * `pinnedRoot`), and from then on the directory it resolved to is looked at with `lstat`: a
 * root since replaced by a symbolic link is reported, never followed out of the mount; one
 * replaced by a file is not a directory; one removed (or a disk unmounted from under its mount
 * point, leaving nothing) does not exist. `id` (device and inode, exact) tells a root that was
 * removed and made again (or another disk mounted there) from the one seen before.
 *
 * The staging area is judged too, as commands judge it: absent or a plain directory is fine; a
 * symbolic link or anything else there makes the mount unhealthy (`unhealthy`), though the
 * root itself can still be watched.
 */
export async function lookAtRoot(rootPath: string): Promise<RootLook> {
  let real = firstResolved.get(rootPath);
  if (real === undefined) {
    try {
      real = await realpath(rootPath);
    } catch (err) {
      return rootProblem(rootPath, err);
    }
    firstResolved.set(rootPath, real);
  }
  try {
    const st = await lstat(real, { bigint: true });
    if (st.isSymbolicLink()) {
      const target = await readlink(real).catch(() => null);
      return { ok: false, gone: true, code: 'ELOOP', reason: `${real} is a symbolic link${target ? ` (to ${target})` : ''} where the mount's root directory was: it is not followed` };
    }
    if (!st.isDirectory()) return { ok: false, gone: true, code: 'ENOTDIR', reason: `${real} is not a directory` };
    await access(real, constants.R_OK | constants.X_OK);
    const staging = await lstat(path.join(real, STAGING_DIR)).catch((err: unknown) => {
      if (errnoOf(err) === 'ENOENT') return null;
      throw err;
    });
    const unhealthy =
      staging === null || staging.isDirectory()
        ? null
        : `${STAGING_DIR} in ${rootPath} is ${staging.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}: Filestore neither writes nor deletes through it; remove it`;
    return { ok: true, real, id: `${st.dev}:${st.ino}`, unhealthy };
  } catch (err) {
    return rootProblem(real, err);
  }
}

/**
 * The real path this process uses for a registered root: resolved (symlinks followed) the
 * first time any part of the process asks, by this or by `lookAtRoot`, and the same from then
 * on — the watcher, reconciliation, its walker processes (given this path) and the commands'
 * executor all work in one directory even if a symlink in the registered path is re-pointed
 * later (that takes a restart). Throws when the path cannot be resolved (nothing is pinned then).
 */
export function pinnedRoot(rootPath: string): string {
  let real = firstResolved.get(rootPath);
  if (real === undefined) {
    real = realpathSync(rootPath);
    firstResolved.set(rootPath, real);
  }
  return real;
}

/** `pinnedRoot`, or the registered path itself while it cannot be resolved (its user reports that in its own way). */
export function pinnedRootOr(rootPath: string): string {
  try {
    return pinnedRoot(rootPath);
  } catch {
    return rootPath;
  }
}

/**
 * For a log line at start: when the registered root path goes through a symbolic link (the
 * root itself, `/srv/data/current → releases/v1`, or a directory above it), what this process
 * resolved it to and that re-pointing the link needs a restart; null otherwise (or while the
 * path cannot be resolved). Pins the root as a side effect.
 */
export function symlinkedRootNote(rootPath: string): string | null {
  let real: string;
  try {
    real = pinnedRoot(rootPath);
  } catch {
    return null;
  }
  if (real === path.resolve(rootPath)) return null;
  return (
    `the root path ${rootPath} goes through a symbolic link: this process uses ${real} until it restarts ` +
    '(re-pointing the link takes effect at the next restart; register the real directory to avoid this)'
  );
}

/**
 * Why a mount is unhealthy when its root (the registered path) is a readable directory, but not
 * the one its catalogue was last audited against (`recorded`): another disk, an empty mount
 * point, a directory made anew. The watcher and reconciliation say it alike
 * (shared/catalogue/root-identity.ts).
 */
export function anotherRootReason(rootPath: string, id: string, recorded: string): string {
  return (
    `${rootPath} is another directory than the one the catalogue was audited against (device:inode ${id}, was ${recorded}): ` +
    'a disk not mounted there? Nothing is marked MISSING below it until a full audit accepts it (one that would not mark most of the mount MISSING, or a forced one)'
  );
}

function rootProblem(root: string, err: unknown): RootLook {
  const code = errnoOf(err) ?? 'unknown';
  const gone = code === 'ENOENT' || code === 'ENOTDIR';
  return { ok: false, code, gone, reason: gone ? `${root} does not exist (removed, renamed or unmounted?)` : `${root}: ${code}` };
}
