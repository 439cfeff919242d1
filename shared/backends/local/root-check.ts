import { constants } from 'node:fs';
import { access, lstat, readlink, realpath } from 'node:fs/promises';
import { errnoOf } from './errors.ts';

/** What a look at a local mount's root found: a readable directory (with its identity), or why not. */
export type RootLook = { ok: true; real: string; dev: number; ino: number } | { ok: false; reason: string; code: string };

// The registered root path → its real path as this process first found it.
const firstResolved = new Map<string, string>();

/**
 * Looks at a local mount's root the way the watcher and reconciliation both judge its health.
 *
 * The registered path is resolved once per process (symlinks in it followed then, as the
 * LocalExecutor does at its start), and from then on the directory it resolved to is looked
 * at with `lstat`: a root since replaced by a symbolic link is reported, never followed out
 * of the mount; one replaced by a file is not a directory; one removed (or a disk unmounted
 * from under its mount point, leaving nothing) does not exist. `dev` and `ino` tell a root
 * that was removed and made again (or another disk mounted there) from the one watched.
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
    const st = await lstat(real);
    if (st.isSymbolicLink()) {
      const target = await readlink(real).catch(() => null);
      return { ok: false, code: 'ELOOP', reason: `${real} is a symbolic link${target ? ` (to ${target})` : ''} where the mount's root directory was: it is not followed` };
    }
    if (!st.isDirectory()) return { ok: false, code: 'ENOTDIR', reason: `${real} is not a directory` };
    await access(real, constants.R_OK | constants.X_OK);
    return { ok: true, real, dev: st.dev, ino: st.ino };
  } catch (err) {
    return rootProblem(real, err);
  }
}

/** The same directory as a look before found (not one removed and made again, nor another disk mounted there). */
export const sameRoot = (a: { dev: number; ino: number }, b: { dev: number; ino: number }): boolean => a.dev === b.dev && a.ino === b.ino;

function rootProblem(root: string, err: unknown): RootLook {
  const code = errnoOf(err) ?? 'unknown';
  const gone = code === 'ENOENT' || code === 'ENOTDIR';
  return { ok: false, code, reason: gone ? `${root} does not exist (removed, renamed or unmounted?)` : `${root}: ${code}` };
}
