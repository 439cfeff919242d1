import { randomBytes } from 'node:crypto';
import { utimes, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Filestore } from '../shared/runtime.ts';
import { eventually, nodeAt, outbox, settle, startWatchFilestore, watchedMount, type WatchedMount } from './support/watch-harness.ts';

/**
 * Issue 17: the watcher sees every write Filestore itself makes. A file whose storage is still
 * exactly what this process's write of it committed is left out of the drift judgement (no
 * transaction that try-locks its key and touches its row); a file changed since, even by the
 * same number of bytes, is judged as before.
 */

let core: Filestore;
beforeAll(async () => {
  core = await startWatchFilestore();
});
afterAll(async () => {
  await core?.close();
});

async function driftEventsAt(m: WatchedMount, paths: string[]): Promise<string[]> {
  const events = await outbox(core, m.mountId, 'filestore.drift.detected');
  return events.flatMap((e) => [String(e.data.path ?? ''), ...((e.data.paths as string[] | undefined) ?? [])]).filter((p) => paths.includes(p));
}

describe.each(['parcel', 'chokidar', 'dirs'] as const)("the watcher and this process's own writes (%s)", (backend) => {
  it('20 writes: no drift, and each node is left as its write recorded it (consistencyCheckedAt untouched)', async () => {
    const m = await watchedMount(core, backend);
    try {
      const paths = Array.from({ length: 20 }, (_, i) => `w/d${i % 4}/f${i}.bin`);
      const written = await Promise.all(paths.map((p) => core.orchestrator.writeFile(m.mountId, { path: p }, randomBytes(512))));
      await settle(core, m);
      await m.watcher.flush();
      expect(await driftEventsAt(m, paths)).toEqual([]);
      expect(written).toHaveLength(20);
      // Checked when written (the insert's now()), not again by a drift judgement since.
      const { rows } = await core.pool.query<{ path: string; state: string; untouched: boolean }>(
        `SELECT path, consistency_state AS state, consistency_checked_at = created_at AS untouched FROM filestore.nodes
          WHERE mount_id = $1 AND path = ANY($2) AND deleted_at IS NULL ORDER BY path`,
        [m.mountId, paths],
      );
      expect(rows).toEqual([...paths].sort().map((path) => ({ path, state: 'ACTIVE', untouched: true })));
    } finally {
      await m.close();
    }
  });

  it('a file of ours rewritten outside Filestore with as many bytes is drift: reported and catalogued anew', async () => {
    const m = await watchedMount(core, backend);
    try {
      const r = await core.orchestrator.writeFile(m.mountId, { path: 'mine.bin' }, Buffer.alloc(64, 1));
      await settle(core, m);
      const later = new Date(Date.now() + 5_000);
      await writeFile(m.abs('mine.bin'), Buffer.alloc(64, 2));
      await utimes(m.abs('mine.bin'), later, later);
      await eventually(async () => (await driftEventsAt(m, ['mine.bin'])).length > 0, 'the drift of mine.bin');
      await eventually(async () => {
        const node = await nodeAt(core, m.mountId, 'mine.bin');
        return node?.consistencyState === 'ACTIVE' && Number(node.version) > Number(r.node.version);
      }, 'mine.bin catalogued anew');
    } finally {
      await m.close();
    }
  });
});
