import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMount } from '../shared/catalogue/mounts.ts';
import { insertNodes, type NewNode } from '../shared/catalogue/node-writes.ts';
import { compactRollups, readRollup } from '../shared/catalogue/rollups.ts';
import { migrate, migrationsDir } from '../shared/db/migrate.ts';
import { createPool } from '../shared/db/pool.ts';
import { ownDatabase } from './support/own-database.ts';

// Migration 16 (issue 16, item 8): a catalogue whose rollups counted MISSING nodes (the rule
// before it) has them recomputed to count only what is present; other directories are untouched.

const MIGRATION = '1700000000016_rollups-count-present';
const db = ownDatabase('filestore_rollup_mig');
const url = db.url;
let before: string;
let pool: pg.Pool;

beforeAll(async () => {
  await db.create();
  // The migrations before this one, as a catalogue made before it has them.
  before = await mkdtemp(path.join(os.tmpdir(), 'filestore-migrations-'));
  for (const f of await readdir(migrationsDir())) {
    if (f.endsWith('.sql') && f.replace(/\.sql$/, '') < MIGRATION) await copyFile(path.join(migrationsDir(), f), path.join(before, f));
  }
  await migrate(url, () => {}, { dir: before });
  pool = createPool(url, 2);
});

afterAll(async () => {
  await pool?.end();
  await rm(before, { recursive: true, force: true });
  await db.drop();
});

const node = (p: string, kind: 'file' | 'directory', sizeBytes = 0): NewNode => ({
  path: p,
  kind,
  sizeBytes,
  sha256: null,
  etag: null,
  mode: null,
  uid: null,
  gid: null,
  mtime: null,
});

const totals = async (id: number) => {
  const r = await readRollup(pool, id);
  return { sizeBytes: r?.sizeBytes, fileCount: r?.fileCount, dirCount: r?.dirCount, childCount: r?.childCount };
};

describe('migration 16: rollups count present nodes only', () => {
  it('recomputes the directories above MISSING nodes; a mount with none keeps its rollups', async () => {
    const gone = await createMount(pool, { key: 'gone', kind: 'local', rootPath: '/srv/gone' });
    const kept = await createMount(pool, { key: 'kept', kind: 'local', rootPath: '/srv/kept' });
    const tree = [
      node('d', 'directory'),
      node('d/a.txt', 'file', 10),
      node('d/b.txt', 'file', 20),
      node('d/c.txt', 'file', 30),
      node('d/gone', 'directory'),
      node('d/gone/x.txt', 'file', 5),
    ];
    // Today's insert records snapshots in snapshots.node_row (migration 1700000000021): for
    // this catalogue made before it, the column is there only while the rows are written, and
    // their snapshots are left as the catalogue then held them (state: to_jsonb of the row).
    await pool.query('ALTER TABLE filestore.snapshots ADD COLUMN node_row filestore.nodes; ALTER TABLE filestore.snapshots ALTER COLUMN state DROP NOT NULL');
    const rows = await insertNodes(pool, gone.id, tree, {}, 'error', true);
    const keptRows = await insertNodes(pool, kept.id, tree, {}, 'error', true);
    await pool.query(
      'UPDATE filestore.snapshots SET state = to_jsonb(node_row); ALTER TABLE filestore.snapshots DROP COLUMN node_row; ALTER TABLE filestore.snapshots ALTER COLUMN state SET NOT NULL',
    );
    // Marked MISSING as reconciliation did before: the rollups kept counting them.
    await pool.query(`UPDATE filestore.nodes SET consistency_state = 'MISSING' WHERE mount_id = $1 AND path = ANY($2::text[])`, [
      gone.id,
      ['d/c.txt', 'd/gone', 'd/gone/x.txt'],
    ]);
    const id = (list: typeof rows, p: string) => list.find((n) => n.path === p)?.id as number;
    const rootOf = async (mountId: string) =>
      (await pool.query<{ id: number }>(`SELECT id FROM filestore.nodes WHERE mount_id = $1 AND path = ''`, [mountId])).rows[0]?.id as number;
    expect(await totals(id(rows, 'd'))).toEqual({ sizeBytes: 65, fileCount: 4, dirCount: 1, childCount: 4 });

    // This migration first; later ones (if any) after it.
    expect((await migrate(url))[0]).toBe(MIGRATION);

    expect(await totals(id(rows, 'd'))).toEqual({ sizeBytes: 30, fileCount: 2, dirCount: 0, childCount: 2 });
    expect(await totals(await rootOf(gone.id))).toEqual({ sizeBytes: 30, fileCount: 2, dirCount: 1, childCount: 1 });
    expect(await totals(id(rows, 'd/gone'))).toEqual({ sizeBytes: 0, fileCount: 0, dirCount: 0, childCount: 0 });
    // Nothing MISSING in the other mount: its totals are as they were.
    expect(await totals(id(keptRows, 'd'))).toEqual({ sizeBytes: 65, fileCount: 4, dirCount: 1, childCount: 4 });
    expect(await totals(await rootOf(kept.id))).toEqual({ sizeBytes: 65, fileCount: 4, dirCount: 2, childCount: 1 });
    // Compaction folds what is left without changing any total.
    await compactRollups(pool);
    expect(await totals(id(rows, 'd'))).toEqual({ sizeBytes: 30, fileCount: 2, dirCount: 0, childCount: 2 });
    expect(await totals(id(keptRows, 'd'))).toEqual({ sizeBytes: 65, fileCount: 4, dirCount: 1, childCount: 4 });
  });
});
