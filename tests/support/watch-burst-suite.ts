import { mkdir } from 'node:fs/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { WatchBackendKind } from '../../agent/watch/types.ts';
import type { Filestore } from '../../shared/runtime.ts';
import { eventually, startWatchFilestore, watchedMount, writeFilesOutOfProcess } from './watch-harness.ts';

const FILES = 10_000;

/**
 * The burst acceptance test, one file per backend (each stays well under a minute):
 * 10,000 files written by another process, half in a tracked directory, half in a new one.
 */
export function burstSuite(backend: WatchBackendKind): void {
  let core: Filestore;
  beforeAll(async () => {
    core = await startWatchFilestore();
  });
  afterAll(async () => {
    await core?.close();
  });

  const liveFilesUnder = async (mountId: string, dir: string) => {
    const { rows } = await core.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM filestore.nodes
        WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'file' AND consistency_state = 'ACTIVE' AND path >= $2 AND path < $3`,
      [mountId, `${dir}/`, `${dir}0`],
    );
    return rows[0]?.n ?? 0;
  };

  it(`a burst of ${FILES.toLocaleString('en')} files written outside Filestore is all catalogued, with a handful of reconcile jobs (${backend})`, async () => {
    const m = await watchedMount(core, backend);
    // Test servers may run without autovacuum: a nodes table that grows by thousands of rows
    // and is never analyzed gets generic plans that filter paths instead of seeking them
    // (the reconciler's inserts then take tens of seconds). Production runs autovacuum.
    const analyze = setInterval(() => void core.pool.query('ANALYZE filestore.nodes').catch(() => {}), 2_000);
    try {
      await core.orchestrator.mkdir(m.mountId, { path: 'tracked' });
      await mkdir(m.abs('fresh'));
      const names = Array.from({ length: FILES }, (_, i) => `${i % 2 === 0 ? 'tracked' : 'fresh'}/f-${String(i).padStart(5, '0')}.dat`);
      await writeFilesOutOfProcess(m.root, names);
      await eventually(
        async () => (await liveFilesUnder(m.mountId, 'tracked')) === FILES / 2 && (await liveFilesUnder(m.mountId, 'fresh')) === FILES / 2,
        'every file catalogued',
        45_000,
      );
      // The burst did not flood the queue: jobs per directory, joined while waiting.
      const { rows } = await core.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.reconciliation_jobs WHERE mount_id = $1`, [m.mountId]);
      expect(rows[0]?.n).toBeLessThan(50);
    } finally {
      clearInterval(analyze);
      await m.close();
    }
  }, 55_000);
}
