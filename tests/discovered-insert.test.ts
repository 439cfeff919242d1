import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newNodeFromStat } from '../shared/catalogue/node-writes.ts';
import { PLAIN_INSERT_AT } from '../shared/catalogue/reconcile-discovered.ts';
import { insertDiscovered } from '../shared/catalogue/reconcile-writes.ts';
import { inTransaction } from '../shared/db/pool.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, runningRootJob, wireTestFilestore, type TestMount } from './support/filestore.ts';

/**
 * What a reconciliation discovered is inserted a depth level at a time; a large level without
 * ON CONFLICT (catalogue/reconcile-discovered.ts). A path that has a live row by the time the
 * batch writes (a command created it after the scan) must still be left as its writer made it,
 * and the rest of the level inserted, in the same transaction.
 */
const file = (path: string, sizeBytes: number) =>
  newNodeFromStat({ path, kind: 'file', sizeBytes, mode: 0o100644, uid: 1, gid: 1, mtime: new Date('2024-05-01T10:00:00.000Z'), etag: null, symlinkTarget: null });

describe('discovered rows inserted a level at a time', () => {
  let core: Filestore;
  let t: TestMount;
  let jobId: number;
  /** Each call is one insertDiscovered in one transaction; `sent` collects the statements it sent. */
  const discover = async (calls: ReturnType<typeof file>[][], sent: string[] = []) => {
    const client = await core.pool.connect();
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: typeof query }).query = (...args) => {
      const first = args[0] as string | { text: string };
      sent.push(typeof first === 'string' ? first : first.text);
      return query(...args);
    };
    try {
      return await inTransaction(client, async () => {
        const out = [];
        for (const nodes of calls) out.push(await insertDiscovered(client, t.mount.id, nodes, { jobId, reason: 'manual' }));
        return out;
      });
    } finally {
      (client as unknown as { query: typeof query }).query = query;
      client.release();
    }
  };
  const rollbacks = (sent: string[]) => sent.filter((q) => q.startsWith('ROLLBACK TO SAVEPOINT')).length;
  const plainInserts = (sent: string[]) => sent.filter((q) => q.includes('INSERT INTO filestore.nodes') && !q.includes('ON CONFLICT')).length;
  const live = async (prefix: string) =>
    (
      await core.pool.query<{ path: string; size: number; version: number; snapshots: number }>(
        `SELECT n.path, n.size_bytes AS size, n.version, (SELECT count(*)::int FROM filestore.snapshots s WHERE s.node_id = n.id) AS snapshots
           FROM filestore.nodes n WHERE n.mount_id = $1 AND n.deleted_at IS NULL AND n.path LIKE $2 ORDER BY n.path`,
        [t.mount.id, `${prefix}%`],
      )
    ).rows;
  const announced = async () =>
    (
      await core.pool.query<{ type: string; data: { count?: number; nodes?: Array<{ path: string }>; node?: { path: string } } }>(
        `SELECT type, data FROM filestore.outbox WHERE mount_id = $1 AND type IN ('filestore.nodes.discovered', 'filestore.node.reconciled') ORDER BY id`,
        [t.mount.id],
      )
    ).rows.flatMap((r) => (r.data.nodes ?? (r.data.node ? [r.data.node] : [])).map((n) => n.path));

  beforeAll(async () => {
    core = await wireTestFilestore();
    t = await createTestMount(core, 'local');
    jobId = (await runningRootJob(core, t.mount.id)).id;
  });

  afterAll(async () => {
    await core?.close();
    await t?.cleanup();
  });

  it('a large level with a path taken since the scan: the taken row stands, the others are inserted and announced, earlier levels and the transaction go on', async () => {
    const n = PLAIN_INSERT_AT * 2;
    // Level 1: a directory and PLAIN_INSERT_AT files beside it; level 2: n files in the directory.
    const top = Array.from({ length: PLAIN_INSERT_AT }, (_, i) => file(`top-${String(i).padStart(4, '0')}`, i));
    const dir = newNodeFromStat({ path: 'top-dir', kind: 'directory', sizeBytes: 0, mode: 0o40755, uid: 1, gid: 1, mtime: new Date('2024-05-01T10:00:00.000Z'), etag: null, symlinkTarget: null });
    const names = Array.from({ length: n }, (_, i) => `top-dir/f-${String(i).padStart(4, '0')}`);
    const taken = names[57] as string;
    // A command's file, recorded before the batch writes (its own size); the directory's too.
    await discover([[dir], [file(taken, 999_999)]]);
    const before = await announced();

    const sent: string[] = [];
    const [first, second] = await discover([[...top, ...names.map((p, i) => file(p, i))], Array.from({ length: PLAIN_INSERT_AT + 1 }, (_, i) => file(`after-${i}`, i))], sent);

    // Both large levels went in without ON CONFLICT first; the one with the taken path again after its rollback.
    expect(plainInserts(sent)).toBe(3);
    expect(rollbacks(sent)).toBe(1);
    expect(first?.map((x) => x.path)).toEqual([...top.map((x) => x.path), ...names.filter((p) => p !== taken)]);
    expect(second).toHaveLength(PLAIN_INSERT_AT + 1);
    const rows = await live('top-dir/');
    expect(rows.map((r) => r.path)).toEqual(names);
    expect(rows.find((r) => r.path === taken)).toEqual({ path: taken, size: 999_999, version: 1, snapshots: 1 });
    expect(rows.filter((r) => r.path !== taken).map((r) => [r.size, r.version, r.snapshots])).toEqual(names.flatMap((p, i) => (p === taken ? [] : [[i, 1, 1]])));
    expect((await live('top-0')).map((r) => r.path)).toEqual(top.map((x) => x.path));
    expect(await live('after-')).toHaveLength(PLAIN_INSERT_AT + 1);
    const { rows: rollups } = await core.pool.query(`SELECT count(*)::int AS n FROM filestore.rollups r JOIN filestore.nodes d ON d.id = r.node_id WHERE d.mount_id = $1 AND d.path = 'top-dir'`, [t.mount.id]);
    expect(rollups[0]?.n).toBe(1);
    // Each inserted path announced once; the taken one not again.
    const events = (await announced()).slice(before.length);
    expect(events.filter((p) => p.startsWith('top-'))).toEqual([...top.map((x) => x.path), ...names.filter((p) => p !== taken)]);
    expect(events.filter((p) => p.startsWith('after-'))).toHaveLength(PLAIN_INSERT_AT + 1);
  });

  it('a small level leaves a taken path alone too', async () => {
    await discover([[file('small-1', 5)]]);
    const [level] = await discover([[file('small-0', 1), file('small-1', 2), file('small-2', 3)]]);
    expect(level?.map((x) => x.path)).toEqual(['small-0', 'small-2']);
    expect((await live('small-')).map((r) => [r.path, r.size])).toEqual([
      ['small-0', 1],
      ['small-1', 5],
      ['small-2', 3],
    ]);
  });
});
