import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Filestore } from '../shared/runtime.ts';
import { listSnapshots } from '../shared/catalogue/nodes.ts';
import { writeFileCommand } from '../shared/orchestrator/commands/write-file.ts';
import { Orchestrator } from '../shared/orchestrator/orchestrator.ts';
import { createTestMount, startFilestore, stopS3, type BackendKind, type TestMount } from './support/filestore.ts';
import { expectCode, expectExactRollups } from './support/assertions.ts';

/*
 * A new file under catalogued parents commits in one round trip (catalogue/file-commit.ts),
 * its JSON built in SQL. What a user sees — the answer, the journal's result (a replay), the
 * events, the snapshot, the directory sizes — must be what the general commit path gives.
 */

const body = (s: string) => Readable.from([Buffer.from(s)]);

let core: Filestore;
beforeAll(async () => {
  core = await startFilestore({ relay: false });
});
afterAll(async () => {
  await core.close();
  await stopS3();
});

/** Runs `fn` with writeFile's one-statement commit switched off: the general path. */
async function generalPath<T>(fn: () => Promise<T>): Promise<T> {
  const saved = writeFileCommand.newFile;
  writeFileCommand.newFile = undefined;
  try {
    return await fn();
  } finally {
    writeFileCommand.newFile = saved;
  }
}

/** The JSON with the values that differ between two writes (ids, names, hashes, times) blanked, keys kept in order. */
function shape(json: string): string {
  const differ = new Set(['id', 'parentId', 'path', 'name', 'sha256', 'mtime', 'createdAt', 'updatedAt', 'consistencyCheckedAt', 'journalEntryId', 'etag', 'contentSha256']);
  return JSON.stringify(JSON.parse(json), (k, v: unknown) => (differ.has(k) && v !== null ? `<${k}>` : v));
}

async function eventsOf(entryId: number): Promise<Array<{ type: string; data: string }>> {
  const { rows } = await core.pool.query<{ type: string; data: string }>(
    `SELECT type, data::text AS data FROM filestore.outbox WHERE (data->>'journalEntryId')::bigint = $1 ORDER BY id`,
    [entryId],
  );
  return rows;
}

describe.each<BackendKind>(['local', 's3'])('a new file committed in one round trip, on %s', (kind) => {
  let t: TestMount;
  beforeAll(async () => {
    t = await createTestMount(core, kind);
    await core.orchestrator.mkdir(t.mount.key, { path: 'one/dir', parents: true });
    await core.orchestrator.mkdir(t.mount.key, { path: 'general/dir', parents: true });
  });
  afterAll(() => t.cleanup());

  it('answers, journals, snapshots and announces exactly what the general commit does', async () => {
    const fast = await core.orchestrator.writeFile(t.mount.key, { path: 'one/dir/a.txt' }, Buffer.from('same bytes'));
    const general = await generalPath(() => core.orchestrator.writeFile(t.mount.key, { path: 'general/dir/a.txt' }, Buffer.from('same bytes')));

    // The answer: same keys in the same order, same values apart from identities and times.
    expect(shape(JSON.stringify(fast))).toBe(shape(JSON.stringify(general)));
    // ...and the node as a later read shows it, to the millisecond.
    const read = await core.reader.nodeByPath(t.mount.key, 'one/dir/a.txt');
    const { rollup: _none, ...readNode } = JSON.parse(JSON.stringify(read)) as Record<string, unknown>;
    expect(JSON.stringify(fast.node)).toBe(JSON.stringify(readNode));

    // A replay answers the journal's result: the same as the first answer.
    const { rows: journal } = await core.pool.query<{ result: unknown; status: string; recovered: boolean }>(
      'SELECT result, status, recovered FROM filestore.journal_entries WHERE id = $1',
      [fast.journalEntryId],
    );
    expect(journal[0]).toEqual({ result: fast, status: 'succeeded', recovered: false });

    // The events: the same types in the same order, the same JSON text apart from identities and times.
    const fastEvents = await eventsOf(fast.journalEntryId);
    const generalEvents = await eventsOf(general.journalEntryId);
    expect(fastEvents.map((e) => e.type)).toEqual(['filestore.node.created', 'filestore.command.completed']);
    expect(fastEvents.map((e) => e.type)).toEqual(generalEvents.map((e) => e.type));
    expect(fastEvents.map((e) => shape(e.data))).toEqual(generalEvents.map((e) => shape(e.data)));
    // Compact, as JSON.stringify writes it (the bus carries this text as is).
    for (const e of fastEvents) expect(e.data).toBe(JSON.stringify(JSON.parse(e.data)));
    expect(JSON.parse(fastEvents[0]?.data ?? '{}')).toEqual({ node: fast.node, journalEntryId: fast.journalEntryId });

    // The snapshot of version 1.
    const snaps = await listSnapshots(core.pool, Number(fast.node.id), 10);
    expect(snaps).toHaveLength(1);
    expect(snaps[0]).toMatchObject({ version: 1, journalEntryId: fast.journalEntryId, state: { path: 'one/dir/a.txt', sizeBytes: 10, version: 1 } });

    // Directory sizes count it once, as every ancestor's.
    expect((await core.reader.nodeByPath(t.mount.key, 'one/dir')).rollup).toMatchObject({ sizeBytes: 10, fileCount: 1, childCount: 1 });
    expect((await core.reader.nodeByPath(t.mount.key, 'one')).rollup).toMatchObject({ sizeBytes: 10, fileCount: 1, dirCount: 1, childCount: 1 });
    await expectExactRollups(core, t.mount.id);
  });

  it("names with quotes, SQL's own characters and non-ASCII come back as written", async () => {
    const path = `one/dir/q"'); $1 -- é漢 😀 %_.txt`;
    const r = await core.orchestrator.writeFile(t.mount.key, { path }, Buffer.from('x'));
    expect(r.node).toMatchObject({ path, name: path.slice('one/dir/'.length) });
    const events = await eventsOf(r.journalEntryId);
    expect(JSON.parse(events[0]?.data ?? '{}')).toEqual({ node: r.node, journalEntryId: r.journalEntryId });
  });
});

describe('all or nothing', () => {
  let t: TestMount;
  beforeAll(async () => {
    t = await createTestMount(core, 'local');
    await core.orchestrator.mkdir(t.mount.key, { path: 'd' });
  });
  afterAll(() => t.cleanup());

  const entryOf = async (path: string) =>
    (
      await core.pool.query<{ id: number; status: string }>(
        `SELECT id, status FROM filestore.journal_entries WHERE mount_id = $1 AND request->>'path' = $2 ORDER BY id DESC LIMIT 1`,
        [t.mount.id, path],
      )
    ).rows[0];
  const liveNode = async (path: string) =>
    (await core.pool.query('SELECT 1 FROM filestore.nodes WHERE mount_id = $1 AND path = $2 AND deleted_at IS NULL', [t.mount.id, path])).rowCount;

  it('an entry no longer pending at the commit: nothing is catalogued nor announced', async () => {
    const o = new Orchestrator({
      pool: core.pool,
      backends: core.backends,
      hooks: { afterStorage: async (id) => void (await core.pool.query(`UPDATE filestore.journal_entries SET status = 'failed' WHERE id = $1`, [id])) },
    });
    await expectCode(o.writeFile(t.mount.key, { path: 'd/finished-elsewhere' }, Buffer.from('x')), 'INTERNAL');
    const entry = await entryOf('d/finished-elsewhere');
    expect(entry?.status).toBe('failed');
    expect(await liveNode('d/finished-elsewhere')).toBe(0);
    expect(await eventsOf(entry?.id as number)).toEqual([]);
  });

  it('a parent gone from the catalogue at the commit: nothing is committed, the entry stays pending for recovery', async () => {
    await core.orchestrator.mkdir(t.mount.key, { path: 'gone' });
    const o = new Orchestrator({
      pool: core.pool,
      backends: core.backends,
      hooks: {
        afterStorage: async () => void (await core.pool.query(`UPDATE filestore.nodes SET deleted_at = now() WHERE mount_id = $1 AND path = 'gone'`, [t.mount.id])),
      },
    });
    await expectCode(o.writeFile(t.mount.key, { path: 'gone/f' }, Buffer.from('x')), 'INTERNAL');
    const entry = await entryOf('gone/f');
    expect(entry?.status).toBe('pending');
    expect(await liveNode('gone/f')).toBe(0);
    expect(await eventsOf(entry?.id as number)).toEqual([]);
    const { rows } = await core.pool.query('SELECT 1 FROM filestore.journal_entries WHERE id = $1 AND result IS NULL', [entry?.id]);
    expect(rows).toHaveLength(1);
    // Recovery resolves it once the catalogue agrees with the disk again.
    await core.pool.query(`UPDATE filestore.nodes SET deleted_at = NULL WHERE mount_id = $1 AND path = 'gone'`, [t.mount.id]);
    await core.orchestrator.recover();
    expect((await entryOf('gone/f'))?.status).toBe('succeeded');
    expect(await liveNode('gone/f')).toBe(1);
    await expectExactRollups(core, t.mount.id);
  });

  it('a body given as a stream commits the same way', async () => {
    const r = await core.orchestrator.writeFile(t.mount.key, { path: 'd/streamed' }, body('streamed'));
    expect(r.node).toMatchObject({ path: 'd/streamed', sizeBytes: 8, version: 1 });
    expect((await eventsOf(r.journalEntryId)).map((e) => e.type)).toEqual(['filestore.node.created', 'filestore.command.completed']);
  });
});
