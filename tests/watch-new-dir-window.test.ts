import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { createWatchBackend } from '../agent/watch/backends/index.ts';
import type { WatchBackendFactory } from '../agent/watch/types.ts';
import type { Filestore } from '../shared/runtime.ts';
import { eventually, settle, startWatchFilestore, watchedMount } from './support/watch-harness.ts';

/**
 * A file made in a new directory just as the watcher reports the directory. chokidar reports
 * a new directory, reads it, and only then opens its watch: a file made between the read and
 * the watch was known to nobody, so its later rename (or deletion) was reported by nothing and
 * the catalogue kept a file the disk no longer held (seen in CI under load: watch-drift's "a
 * rename outside Filestore", where Filestore's own write landed in that window).
 *
 * The window is made wide on purpose: the moment the backend reports directory `dN`, the
 * agent's thread is held for 30 ms (the directory's read runs on libuv's pool meanwhile) and
 * `dN/f` and `dN/sub/f` are written at its end — after the read, before anything the backend
 * does next.
 */

const DIRS = 5;

/** The real backend, whose report of a new directory `d<i>` is followed by that hold and write. */
const writesIntoNewDirs = (): WatchBackendFactory => (kind, root, handlers) =>
  createWatchBackend(kind, root, {
    ...handlers,
    onEvents(events) {
      for (const e of events) {
        if (e.type !== 'create' || !/^d\d+$/.test(e.path)) continue;
        process.nextTick(() => {
          const until = performance.now() + 30;
          while (performance.now() < until);
          try {
            writeFileSync(path.join(root, e.path, 'f'), 'x', { flag: 'wx' });
            mkdirSync(path.join(root, e.path, 'sub'));
            writeFileSync(path.join(root, e.path, 'sub', 'f'), 'x');
          } catch {
            // Already written (the directory reported twice).
          }
        });
      }
      handlers.onEvents(events);
    },
  });

const countState = async (core: Filestore, mountId: string, name: string, state: string): Promise<number> => {
  const { rows } = await core.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'file' AND path ~ ('^d[0-9]+/(sub/)?' || $2 || '$') AND consistency_state = $3`,
    [mountId, name, state],
  );
  return rows[0]?.n ?? 0;
};

let core: Filestore;
beforeAll(async () => {
  core = await startWatchFilestore();
});
afterAll(async () => {
  await core?.close();
});

describe.each(['chokidar', 'parcel', 'dirs'] as const)('a file made in a new directory as the watcher reports it (%s)', (backend) => {
  it('is watched from then on: renamed outside Filestore, its old path becomes MISSING and the new one is catalogued', async () => {
    const m = await watchedMount(core, backend, { backendFactory: writesIntoNewDirs() });
    try {
      for (let i = 0; i < DIRS; i++) {
        await m.writeOutOfBand(`d${i}/.keep`, '');
        await eventually(async () => (await countState(core, m.mountId, 'f', 'ACTIVE')) === 2 * (i + 1), `d${i}/f and d${i}/sub/f catalogued`);
      }
      await settle(core, m);
      for (let i = 0; i < DIRS; i++) {
        renameSync(m.abs(`d${i}/f`), m.abs(`d${i}/g`));
        renameSync(m.abs(`d${i}/sub/f`), m.abs(`d${i}/sub/g`));
      }
      await eventually(
        async () => (await countState(core, m.mountId, 'f', 'MISSING')) === 2 * DIRS && (await countState(core, m.mountId, 'g', 'ACTIVE')) === 2 * DIRS,
        `every rename seen: ${2 * DIRS} old paths MISSING, ${2 * DIRS} new ones catalogued`,
      );
    } finally {
      await m.close();
    }
  }, 60_000);
});
