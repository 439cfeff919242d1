import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'vitest';
import { listPending } from '../../shared/catalogue/journal.ts';
import { recoverEntry } from '../../shared/orchestrator/recovery.ts';
import { STAGING_DIR } from '../../shared/paths.ts';
import type { Filestore } from '../../shared/runtime.ts';
import { walkDisk } from '../support/out-of-band.ts';
import type pg from 'pg';

/**
 * The fault battery (tests/faults/): each file injects one kind of fault. `npm test` runs the
 * first case of each (one per fault type); `npm run test:faults` (FILESTORE_FAULTS=all) runs
 * every case. Every case ends with the same three checks (expectSettled).
 */
export const ALL_FAULTS = process.env.FILESTORE_FAULTS === 'all';

/** The cases this run covers: all of them for the battery, the first one in `npm test`. */
export function faultCases<T>(cases: T[]): T[] {
  return ALL_FAULTS ? cases : cases.slice(0, 1);
}

/** Resolves the pending journal entries of one mount only (what its owner's sweep does). */
export async function recoverMount(core: Filestore, mountId: string): Promise<void> {
  const deps = { pool: core.pool, backends: core.backends, afterCommit: (id: string) => core.changed(id) };
  for (const e of await listPending(core.pool, 0, 10_000)) {
    if (e.mountId === mountId) await recoverEntry(deps, e, { wait: true });
  }
}

type Queryable = Pick<pg.Pool, 'query'>;

/**
 * After a fault and whatever recovery the product runs by itself: no journal entry of the
 * mount is pending, its staging area is empty, and its live catalogue is exactly what its disk
 * holds (paths, kinds, file sizes), every node ACTIVE, apart from nodes recorded MISSING, which
 * must be absent from the disk.
 */
export async function expectSettled(q: Queryable, mountId: string, root: string): Promise<void> {
  const pending = await q.query<{ id: string; command: string }>(
    `SELECT id, command FROM filestore.journal_entries WHERE mount_id = $1 AND status = 'pending'`,
    [mountId],
  );
  expect(pending.rows, 'no journal entry is left pending').toEqual([]);
  expect(await readdir(path.join(root, STAGING_DIR)).catch(() => []), 'the staging area is empty').toEqual([]);
  const { rows } = await q.query<{ path: string; kind: string; size: number; state: string }>(
    `SELECT path, kind, size_bytes::bigint::float8 AS size, consistency_state AS state FROM filestore.nodes
      WHERE mount_id = $1 AND deleted_at IS NULL ORDER BY path COLLATE "C"`,
    [mountId],
  );
  const disk = await walkDisk(root);
  // A node recorded MISSING is the catalogue knowing that the entry is gone: not on disk.
  const onDisk = new Set(disk.map((e) => e.path));
  expect(rows.filter((n) => n.state === 'MISSING' && onDisk.has(n.path)).map((n) => n.path), 'nothing MISSING is on disk').toEqual([]);
  expect(
    rows.filter((n) => n.state !== 'MISSING').map((n) => [n.path, n.kind, n.kind === 'file' ? n.size : 0, n.state]),
    'the catalogue is what the disk holds',
  ).toEqual(disk.map((e) => [e.path, e.kind, e.kind === 'file' ? e.size : 0, 'ACTIVE']));
}
