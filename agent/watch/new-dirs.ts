import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Pool } from '../../shared/db/index.ts';
import { lockKey } from '../../shared/catalogue/index.ts';
import { joinPath } from '../../shared/index-paths.ts';
import type { WatchBackend } from './types.ts';

/**
 * Entries below new directories judged path by path, per batch; a directory holding more
 * gets one recursive reconcile job instead (reason `drift`).
 */
export const NEW_DIR_WALK_LIMIT = 1_000;

/**
 * Of the directories that appeared with subdirectories, those Filestore accounts for: a live
 * row (a command catalogued it) or held by a command right now (its path lock: it creates the
 * directory on its way — `mkdir -p` parents, a put's or a move's parents — and catalogues it at
 * its commit). The others appeared outside Filestore: their drift was reported by the batch.
 */
export async function accountedDirs(pool: Pool, mountId: string, dirs: readonly string[]): Promise<Set<string>> {
  if (dirs.length === 0) return new Set();
  const { rows } = await pool.query<{ path: string }>(
    `SELECT path FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'directory' AND path = ANY($2::text[])`,
    [mountId, dirs],
  );
  const known = new Set(rows.map((r) => r.path));
  const rest = dirs.filter((d) => !known.has(d));
  if (rest.length === 0) return known;
  // An exclusive try-lock on the directory's own key fails while a command holds it (exclusive)
  // or a path below it (shared): the keys commands take (locks.ts). Transaction-scoped: the
  // ROLLBACK lets go of those we got.
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const keys = rest.map((d) => lockKey('path', mountId, d).toString());
    const held = await client.query<{ i: number }>(
      `SELECT i FROM unnest($1::bigint[]) WITH ORDINALITY AS t(key, i) WHERE NOT pg_try_advisory_xact_lock(key) ORDER BY i`,
      [keys],
    );
    for (const { i } of held.rows) known.add(rest[Number(i) - 1] as string);
  } finally {
    await client.query('ROLLBACK').catch(() => {});
    client.release();
  }
  return known;
}

/**
 * Every entry below each directory (mount-relative paths; symlinks not followed), within
 * `limit` entries in all. A directory whose walk would pass the limit, or that cannot be read,
 * is in `whole` (to be looked at recursively by a reconcile job), none of its entries in `paths`.
 */
export async function walkNewDirs(root: string, dirs: readonly string[], limit = NEW_DIR_WALK_LIMIT): Promise<{ paths: string[]; whole: string[] }> {
  const paths: string[] = [];
  const whole: string[] = [];
  for (const dir of dirs) {
    const found: string[] = [];
    let ok = true;
    const todo = [dir];
    while (ok && todo.length > 0) {
      const d = todo.pop() as string;
      try {
        for (const e of await readdir(path.join(root, ...d.split('/')), { withFileTypes: true })) {
          const p = joinPath(d, e.name);
          found.push(p);
          if (e.isDirectory()) todo.push(p);
        }
      } catch (err) {
        // Gone since (ENOENT): the batch that sees it go judges it. Unreadable: the reconciler looks.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') ok = false;
      }
      if (paths.length + found.length > limit) ok = false;
    }
    if (ok) paths.push(...found);
    else whole.push(dir);
  }
  return { paths, whole };
}

/** What watchNewDirs needs of the mount's watcher. */
export interface NewDirWatch {
  backend: Pick<WatchBackend, 'rewatch'>;
  root: string;
  pool: Pool;
  mountId: string;
  mountKey: string;
  log: (line: string) => void;
}

/**
 * Directories that appeared in a batch. A new directory may hold what was made in it before
 * the backend watched it, which nothing would ever report: parcel watches a new directory but
 * not the subdirectories it already held, and chokidar misses files made in a directory just
 * before its watch of it is up (seen under load: a file written into a directory `mkdir -p`
 * had just made, never reported). For parcel, a directory holding a subdirectory gets the
 * tree watched anew (`rewatch`) before the batch's jobs are sent; for chokidar (already
 * watching the directories it reported) every new directory holding anything qualifies. What
 * such a directory holds is then looked at, after the watch is up, so between them they see
 * everything written there. A directory with no subdirectory (parcel) or empty (chokidar)
 * when we look is watched whole already: what is made in it from now on is reported.
 *
 * A directory Filestore accounts for (catalogued, or held by the command creating it on its
 * way: `mkdir -p`, a put's or a move's parents) is walked and its entries handed to the next
 * batch (`walked`): each is judged by the drift rules, so a command's own directories lead
 * to no job, and anything else written there is drift as usual. Directories that appeared
 * outside Filestore, or hold more than NEW_DIR_WALK_LIMIT entries, get a recursive job.
 * Returns the directories to look at recursively (mount-watcher.ts).
 */
export async function watchNewDirs(w: NewDirWatch, dirs: readonly string[], walked: string[], on: { rewatched(): void; failed(err: unknown): void }): Promise<string[]> {
  const rewatch = w.backend.rewatch !== undefined;
  const holding: string[] = [];
  for (const dir of dirs) {
    try {
      const entries = await readdir(path.join(w.root, ...dir.split('/')), { withFileTypes: true });
      // parcel: a directory holding a subdirectory; chokidar: one holding anything (a file
      // made in it before chokidar's watch of it was up is reported by nobody).
      if (rewatch ? entries.some((e) => e.isDirectory()) : entries.length > 0) holding.push(dir);
    } catch {
      // Gone again, or unreadable (its judgement says so): nothing there to watch.
    }
  }
  if (holding.length === 0) return [];
  if (rewatch) {
    try {
      await w.backend.rewatch?.();
      on.rewatched();
      w.log(`watcher ${w.mountKey}: watching the tree anew: ${holding.length} new director${holding.length === 1 ? 'y' : 'ies'} with subdirectories (${holding.slice(0, 3).join(', ')}${holding.length > 3 ? ', …' : ''})`);
    } catch (err) {
      on.failed(err);
    }
  }
  const accounted = await accountedDirs(w.pool, w.mountId, holding);
  const { paths, whole } = await walkNewDirs(w.root, holding.filter((d) => accounted.has(d)));
  walked.push(...paths);
  return [...holding.filter((d) => !accounted.has(d)), ...whole];
}
