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
  const discover = async (nodes: ReturnType<typeof file>[][]) => {
    const client = await core.pool.connect();
    try {
      return await inTransaction(client, async () => {
        const out = [];
        for (const level of nodes) out.push(await insertDiscovered(client, t.mount.id, level, { jobId, reason: 'manual' }));
        return out;
      });
    } finally {
      client.release();
    }
  };
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

  it('a large level with a path taken since the scan: the taken row stands, the others are inserted and announced, the transaction goes on', async () => {
    const n = PLAIN_INSERT_AT * 2;
    const names = Array.from({ length: n }, (_, i) => `taken-${String(i).padStart(4, '0')}`);
    const taken = names[57] as string;
    // A command's file, recorded before the batch writes (its own size).
    await discover([[file(taken, 999_999)]]);
    const before = await announced();

    const [first, second] = await discover([names.map((p, i) => file(p, i)), Array.from({ length: PLAIN_INSERT_AT + 1 }, (_, i) => file(`after-${i}`, i))]);

    expect(first?.map((x) => x.path)).toEqual(names.filter((p) => p !== taken));
    expect(second).toHaveLength(PLAIN_INSERT_AT + 1);
    const rows = await live('taken-');
    expect(rows).toHaveLength(n);
    expect(rows.find((r) => r.path === taken)).toEqual({ path: taken, size: 999_999, version: 1, snapshots: 1 });
    expect(rows.filter((r) => r.path !== taken).every((r, i) => r.size === (i < 57 ? i : i + 1) && r.version === 1 && r.snapshots === 1)).toBe(true);
    expect(await live('after-')).toHaveLength(PLAIN_INSERT_AT + 1);
    const events = (await announced()).slice(before.length);
    expect(events.filter((p) => p.startsWith('taken-'))).toEqual(names.filter((p) => p !== taken));
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
