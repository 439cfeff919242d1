/**
 * Writes into a catalogue that started empty stay index lookups as it grows (issue 17). A
 * command's statements keep their generic plans per connection, and plans made when the nodes
 * table was empty and never analysed read the whole children index for every lookup by path
 * (PostgreSQL costs both alike on an empty table): each write then read every live node, a
 * few times over, until autovacuum analysed the table — a minute later, or never with it off.
 * The orchestrator now analyses the tables its commits grew (orchestrator/statistics.ts), which
 * replaces those plans. What a user sees is a write that costs more the more files there are;
 * what is measured here is the index tuples read in the nodes table per write
 * (pg_stat_user_indexes).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMount } from '../shared/catalogue/mounts.ts';
import { migrate } from '../shared/db/migrate.ts';
import type { Filestore } from '../shared/runtime.ts';
import { startFilestore } from './support/filestore.ts';
import { ownDatabase } from './support/own-database.ts';

const db = ownDatabase('filestore_write_plans');
// A write looks up its path and its ancestors a few times (begin, commit): some tens of index
// tuples. A scan of the live nodes reads thousands here.
const TUPLES_PER_WRITE_AT_MOST = 60;

describe('writes into a catalogue that started empty', () => {
  let core: Filestore;
  let root: string;
  let mountId: string;

  beforeAll(async () => {
    await db.create();
    await migrate(db.url);
    core = await startFilestore({ databaseUrl: db.url, redisUrl: 'inline', migrate: false, recover: false });
    // Only the orchestrator's statistics may help here: autovacuum off, as on the machines the issue was seen on.
    for (const t of ['nodes', 'journal_entries', 'outbox', 'snapshots', 'rollup_deltas']) await core.pool.query(`ALTER TABLE filestore.${t} SET (autovacuum_enabled = false)`);
    root = await mkdtemp(path.join(os.tmpdir(), 'filestore-plans-'));
    mountId = (await createMount(core.pool, { key: 'plans', kind: 'local', rootPath: root })).id;
    for (let d = 0; d < 6; d++) await core.orchestrator.mkdir(mountId, { path: `d${d}` });
  }, 60_000);
  afterAll(async () => {
    await core?.close();
    await db.drop();
    await rm(root, { recursive: true, force: true });
  });

  const write = async (from: number, count: number) => {
    for (let i = from; i < from + count; i += 8) {
      await Promise.all(
        Array.from({ length: Math.min(8, from + count - i) }, (_, k) => core.orchestrator.writeFile(mountId, { path: `d${(i + k) % 6}/f${i + k}` }, Buffer.from(`file ${i + k}`))),
      );
    }
  };

  /** Index tuples read in the nodes table so far, once the sessions' statistics have reached the shared counters. */
  const tuplesRead = async (): Promise<number> => {
    const read = async () =>
      Number((await core.pool.query<{ n: string }>(`SELECT sum(idx_tup_read) AS n FROM pg_stat_user_indexes WHERE schemaname = 'filestore' AND relname = 'nodes'`)).rows[0]?.n);
    let last = await read();
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 600));
      const now = await read();
      if (now === last) return now;
      last = now;
    }
    return last;
  };

  it('reads a few index tuples per write, not every live node', { timeout: 120_000 }, async () => {
    await write(0, 600);
    await new Promise((r) => setTimeout(r, 1_200)); // the sessions' counts reach the statistics the orchestrator looks at
    await write(600, 600);
    await core.orchestrator.statistics.settled();
    const before = await tuplesRead();
    await write(1200, 120);
    const perWrite = ((await tuplesRead()) - before) / 120;
    expect(perWrite).toBeLessThan(TUPLES_PER_WRITE_AT_MOST);
  });
});
