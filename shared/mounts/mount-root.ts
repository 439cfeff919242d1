import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { FilestoreError } from '../errors.ts';

/**
 * Refuses a local mount root that is a filesystem root however it is spelled: `/`, a symlink
 * to it, or /proc's links to any process's root and working directory (`/proc/self/root`).
 * Judged on the real path, since a mount's operations follow the root's symlinks. A path
 * that does not exist (yet, or on this host: the agent may live elsewhere) is judged by its
 * deepest existing ancestor's real path. Returns the path as given, made absolute.
 */
export async function assertMountableRoot(rootPath: string): Promise<string> {
  if (!path.isAbsolute(rootPath)) throw invalid('must be an absolute directory path');
  const resolved = path.resolve(rootPath);
  const real = await realPathOfNearest(resolved);
  for (const p of [resolved, real]) {
    if (p === path.parse(p).root) throw invalid(`a filesystem root cannot be a mount (${rootPath} is ${p})`);
    if (p === '/proc' || p.startsWith('/proc/')) throw invalid(`/proc cannot hold a mount: its entries lead to other processes' roots and directories`);
  }
  return resolved;
}

/** The real path of `p`, or of its deepest existing ancestor with the rest appended. */
export async function realPathOfNearest(p: string): Promise<string> {
  const missing: string[] = [];
  for (let at = p; ; ) {
    try {
      return path.join(await realpath(at), ...missing.reverse());
    } catch {
      const parent = path.dirname(at);
      if (parent === at) return p;
      missing.push(path.basename(at));
      at = parent;
    }
  }
}

const invalid = (why: string) => new FilestoreError('VALIDATION_ERROR', `rootPath: ${why}`);
