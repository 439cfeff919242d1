import { lstat, mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findLiveByPath } from '../shared/catalogue/nodes.ts';
import { DISCOVERED_BATCH_EVENT_AT } from '../shared/catalogue/reconcile-writes.ts';
import { readRollups } from '../shared/catalogue/rollups.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, runningRootJob, startFilestore } from './support/filestore.ts';

/**
 * Discovery: the first audit of a mount over a tree that is already there. Everything found is
 * catalogued as it is on disk, with a snapshot, the rollups of every directory, and its
 * announcement (change "discovered"): a `filestore.node.reconciled` event whose node is the node
 * as the API shows it, or, for nodes discovered in bulk, a `filestore.nodes.discovered` event
 * listing them — in batches smaller than the tree, across depth levels in one batch.
 */
describe('discovery of an existing tree', () => {
  let core: Filestore;
  beforeAll(async () => {
    core = await startFilestore();
  });
  afterAll(() => core.close());

  /** Every entry below `root`: relative path → kind and size (files). */
  async function walk(root: string, rel = ''): Promise<Map<string, { kind: string; size: number }>> {
    const out = new Map<string, { kind: string; size: number }>();
    for (const name of await readdir(path.join(root, rel))) {
      const p = rel === '' ? name : `${rel}/${name}`;
      const st = await lstat(path.join(root, p));
      if (st.isDirectory()) {
        out.set(p, { kind: 'directory', size: 0 });
        for (const [k, v] of await walk(root, p)) out.set(k, v);
      } else out.set(p, { kind: st.isSymbolicLink() ? 'symlink' : 'file', size: st.isFile() ? st.size : 0 });
    }
    return out;
  }

  it('catalogues every node as on disk, with its snapshot, exact rollups and its announcement (per node, or together in bulk), parents first', async () => {
    const t = await createTestMount(core, 'local');
    const root = t.root as string;
    try {
      // 2,000+ nodes over three levels; batches of 300 mix levels (a directory and its files).
      for (let a = 0; a < 4; a++) {
        await mkdir(path.join(root, `a${a}`, 'empty'), { recursive: true });
        for (let b = 0; b < 5; b++) {
          const dir = path.join(root, `a${a}`, `b${b}`);
          await mkdir(dir, { recursive: true });
          await Promise.all(Array.from({ length: 100 }, (_, f) => writeFile(path.join(dir, `f${f}.txt`), 'x'.repeat(1 + ((a * 7 + b * 13 + f) % 50)))));
        }
        await writeFile(path.join(root, `a${a}.txt`), 'top');
      }
      await symlink('a0.txt', path.join(root, 'link'));
      const tree = await walk(root);

      const counts = await createReconciler(core, { batchSize: 300 })(await runningRootJob(core, t.mount.id), async () => {});
      expect(counts).toMatchObject({ discovered: tree.size, missing: 0, updated: 0 });

      // The catalogue is the tree.
      const { rows } = await core.pool.query<{ path: string; kind: string; size: number; version: number; snapshots: number }>(
        `SELECT n.path, n.kind, n.size_bytes AS size, n.version, (SELECT count(*)::int FROM filestore.snapshots s WHERE s.node_id = n.id) AS snapshots
           FROM filestore.nodes n WHERE n.mount_id = $1 AND n.deleted_at IS NULL AND n.path <> ''`,
        [t.mount.id],
      );
      expect(new Map(rows.map((r) => [r.path, { kind: r.kind, size: r.size }]))).toEqual(tree);
      expect(rows.every((r) => r.version === 1 && r.snapshots === 1)).toBe(true);

      // Every node announced once, a parent before its children: a level of fewer than
      // DISCOVERED_BATCH_EVENT_AT nodes (the top two here) with one event per node, the node as
      // the API reads it; a larger one (the files, 300 a batch) in one filestore.nodes.discovered
      // event listing its nodes, each with the API node's identity, place, size and version.
      const { rows: events } = await core.pool.query<{ type: string; data: { node?: Record<string, unknown>; nodes?: Array<Record<string, unknown>>; count?: number; change: string; reason: string; jobId: number } }>(
        `SELECT type, data FROM filestore.outbox WHERE mount_id = $1 ORDER BY id`,
        [t.mount.id],
      );
      const announced: Array<{ node: Record<string, unknown>; together: boolean }> = [];
      for (const e of events) {
        expect(e.data).toMatchObject({ change: 'discovered', reason: 'manual' });
        if (e.type === 'filestore.node.reconciled') announced.push({ node: e.data.node as Record<string, unknown>, together: false });
        else {
          expect(e.type).toBe('filestore.nodes.discovered');
          expect(e.data.count).toBe(e.data.nodes?.length);
          expect(e.data.count).toBeGreaterThanOrEqual(DISCOVERED_BATCH_EVENT_AT);
          for (const n of e.data.nodes ?? []) announced.push({ node: n, together: true });
        }
      }
      expect(announced).toHaveLength(tree.size);
      const order = new Map<string, number>();
      announced.forEach((a, i) => order.set(a.node.path as string, i));
      expect(new Set(order.keys())).toEqual(new Set(tree.keys()));
      for (const p of order.keys()) {
        const parent = p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : null;
        if (parent !== null) expect(order.get(parent) as number).toBeLessThan(order.get(p) as number);
      }
      expect(announced.filter((a) => a.together)).toHaveLength(2_000);
      expect(events.filter((e) => e.type === 'filestore.nodes.discovered').length).toBeLessThanOrEqual(Math.ceil(2_000 / 300) + 4);
      for (const p of ['a0.txt', 'a1/b2/f7.txt', 'a3/empty', 'link']) {
        const node = JSON.parse(JSON.stringify(await findLiveByPath(core.pool, t.mount.id, p))) as Record<string, unknown>;
        const a = announced[order.get(p) as number];
        const brief = Object.fromEntries(['id', 'path', 'parentId', 'kind', 'sizeBytes', 'sha256', 'etag', 'mtime', 'version'].map((k) => [k, node[k]]));
        expect(a?.node).toEqual(a?.together ? brief : node);
      }

      // Every directory's rollup: its files, bytes, directories and direct children below it.
      const dirs = await core.pool.query<{ id: number; path: string }>(
        `SELECT id, path FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'directory'`,
        [t.mount.id],
      );
      const rollups = await readRollups(core.pool, dirs.rows.map((d) => d.id));
      for (const d of dirs.rows) {
        const below = [...tree].filter(([p]) => d.path === '' || p.startsWith(`${d.path}/`));
        expect(rollups.get(d.id), d.path).toMatchObject({
          fileCount: below.filter(([, v]) => v.kind === 'file').length,
          sizeBytes: below.reduce((s, [, v]) => s + v.size, 0),
          dirCount: below.filter(([, v]) => v.kind === 'directory').length,
          childCount: below.filter(([p]) => !p.slice(d.path === '' ? 0 : d.path.length + 1).includes('/')).length,
        });
      }

      // A second audit finds nothing new and writes no event.
      const again = await createReconciler(core, { batchSize: 300 })(await runningRootJob(core, t.mount.id), async () => {});
      expect(again).toMatchObject({ discovered: 0, updated: 0, missing: 0, unchanged: tree.size + 1 });
      const { rows: after } = await core.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.outbox WHERE mount_id = $1`, [t.mount.id]);
      expect(after[0]?.n).toBe(events.length);
    } finally {
      await t.cleanup();
    }
  });
});
