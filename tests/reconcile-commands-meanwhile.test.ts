import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { EntryStat } from '../shared/backends/types.ts';
import { findLiveByPath, listSnapshots } from '../shared/catalogue/nodes.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, runningRootJob, startFilestore, type TestMount } from './support/filestore.ts';

/**
 * A discovery that meets commands on the paths it found: what a command created while the
 * audit ran stays the command's (one live row, the command's version), and what a command
 * deleted after the walk saw it is not brought back (the catalogue keeps the delete).
 */

let core: Filestore;
let t: TestMount;
beforeAll(async () => {
  core = await startFilestore({ redisUrl: 'inline', relay: false, recover: false });
  t = await createTestMount(core, 'local');
});
afterAll(async () => {
  await t?.cleanup();
  await core?.close();
});

const put = (p: string, bytes: string) => core.orchestrator.writeFile(t.mount.id, { path: p }, Readable.from([Buffer.from(bytes)]));

it('keeps what commands created and deleted while a discovery of the same paths ran', async () => {
  const root = t.root as string;
  // Untracked on disk: the audit's walk lists all of it, and the catalogue holds none of it.
  await mkdir(path.join(root, 'y'), { recursive: true });
  for (const f of ['a.txt', 'y/created.txt', 'y/gone.txt', 'z.txt']) await writeFile(path.join(root, f), f);
  const steps: string[] = [];
  // Commands run as the walk hands over 'z.txt' (after it listed y/), before the audit writes
  // its batch: y/created.txt is written through Filestore (now catalogued, the command's), and
  // y/gone.txt written and deleted again (a tombstone, gone from disk).
  const meanwhile = async function* (walk: AsyncIterable<EntryStat>): AsyncIterable<EntryStat> {
    for await (const entry of walk) {
      if (entry.path === 'z.txt') {
        await put('y/created.txt', 'by a command');
        await put('y/gone.txt', 'deleted soon');
        await core.orchestrator.delete(t.mount.id, { path: 'y/gone.txt' });
        steps.push('commands');
      }
      yield entry;
    }
  };
  const job = await runningRootJob(core, t.mount.id);
  const result = await createReconciler(core, { wrapWalk: meanwhile })(job, async () => {});
  expect(steps).toEqual(['commands']);
  expect(result).toMatchObject({ missing: 0 });
  // Deleted by a command after the walk saw it: not resurrected.
  expect(await findLiveByPath(core.pool, t.mount.id, 'y/gone.txt')).toBeNull();
  // Created by a command meanwhile: the command's node, once.
  const created = await findLiveByPath(core.pool, t.mount.id, 'y/created.txt');
  expect(created).toMatchObject({ kind: 'file', sizeBytes: 12, version: 1 });
  const history = await listSnapshots(core.pool, Number(created?.id), 10);
  expect(history).toHaveLength(1);
  expect(history[0]?.journalEntryId).not.toBeNull();
  const { rows } = await core.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND path = 'y/created.txt' AND deleted_at IS NULL`,
    [t.mount.id],
  );
  expect(rows[0]?.n).toBe(1);
  // And what no command touched is catalogued.
  for (const f of ['a.txt', 'z.txt']) expect(await findLiveByPath(core.pool, t.mount.id, f)).toMatchObject({ kind: 'file', consistencyState: 'ACTIVE' });
});
