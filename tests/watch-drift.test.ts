import { mkdir, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PromMetrics } from '../shared/metrics/prom.ts';
import type { Filestore } from '../shared/runtime.ts';
import { atomicSave, eventually, nodeAt, outbox, settle, startWatchFilestore, watchedMount, watcherDrift } from './support/watch-harness.ts';

let core: Filestore;
beforeAll(async () => {
  core = await startWatchFilestore();
});
afterAll(async () => {
  await core?.close();
});

describe.each(['chokidar', 'parcel', 'dirs'] as const)('watched local mount (%s)', (backend) => {
  it('a file created outside Filestore is reported as untracked drift in the outbox, then catalogued', async () => {
    const m = await watchedMount(core, backend);
    try {
      await m.writeOutOfBand('docs/new.txt', 'hello');
      const node = await eventually(async () => {
        const n = await nodeAt(core, m.mountId, 'docs/new.txt');
        return n?.consistencyState === 'ACTIVE' ? n : null;
      }, 'docs/new.txt catalogued');
      expect(node).toMatchObject({ kind: 'file', sizeBytes: 5 });
      // "docs" was new too: one signal for the new directory covers what is inside it, or
      // (when the file came in a later batch) the file itself. Outbox rows, not bus events:
      // publication waits for every older transaction of the PostgreSQL server to end, which
      // another process on a shared server can hold up for minutes.
      const drift = await watcherDrift(core, m.mountId);
      expect(drift.some((d) => d.data.nodeId === null && (d.data.path === 'docs' || d.data.path === 'docs/new.txt'))).toBe(true);
      const reconciled = await outbox(core, m.mountId, 'filestore.node.reconciled');
      expect(reconciled.some((e) => (e.data.node as { path: string }).path === 'docs/new.txt' && e.data.change === 'discovered')).toBe(true);
    } finally {
      await m.close();
    }
  });

  it('a file modified outside Filestore is marked INCONSISTENT, then reconciled to what the disk holds', async () => {
    const m = await watchedMount(core, backend);
    try {
      const before = await m.writeThrough('report.csv', 'a,b\n');
      await settle(core, m);
      await writeFile(m.abs('report.csv'), 'a,b\n1,2\n');
      const after = await eventually(async () => {
        const n = await nodeAt(core, m.mountId, 'report.csv');
        return n?.sizeBytes === 8 && n.consistencyState === 'ACTIVE' ? n : null;
      }, 'report.csv reconciled');
      expect(after.id).toBe(before.id);
      expect(after.version).toBe(before.version + 1);
      const drift = await watcherDrift(core, m.mountId, 'report.csv');
      expect(drift).toHaveLength(1);
      expect(drift[0]?.data).toMatchObject({ nodeId: before.id, reason: 'watcher', observed: { sizeBytes: 8 } });
    } finally {
      await m.close();
    }
  });

  it('a file deleted outside Filestore becomes MISSING', async () => {
    const m = await watchedMount(core, backend);
    try {
      const node = await m.writeThrough('old.log', 'bye');
      await settle(core, m);
      await unlink(m.abs('old.log'));
      await eventually(async () => (await nodeAt(core, m.mountId, 'old.log'))?.consistencyState === 'MISSING', 'old.log MISSING');
      expect((await watcherDrift(core, m.mountId, 'old.log')).map((d) => d.data.nodeId)).toEqual([node.id]);
      expect((await outbox(core, m.mountId, 'filestore.node.missing')).length).toBe(1);
    } finally {
      await m.close();
    }
  });

  it('a rename outside Filestore: the old path becomes MISSING, the new one is catalogued', async () => {
    const m = await watchedMount(core, backend);
    try {
      await m.writeThrough('dir/a.txt', 'alpha');
      await settle(core, m);
      await rename(m.abs('dir/a.txt'), m.abs('dir/b.txt'));
      await eventually(async () => {
        const [a, b] = await Promise.all([nodeAt(core, m.mountId, 'dir/a.txt'), nodeAt(core, m.mountId, 'dir/b.txt')]);
        return a?.consistencyState === 'MISSING' && b?.consistencyState === 'ACTIVE' && b.sizeBytes === 5;
      }, 'the rename reconciled');
    } finally {
      await m.close();
    }
  });

  it("an editor's atomic save (temp file renamed over the target) is one drift of the target, no delete/create pair", async () => {
    const m = await watchedMount(core, backend);
    try {
      const before = await m.writeThrough('notes.md', 'v1');
      await settle(core, m);
      // vim: probe file "4913" created and removed; then the new content renamed over the file.
      await writeFile(m.abs('4913'), '');
      await unlink(m.abs('4913'));
      await atomicSave(m.abs('notes.md'), 'version two', '.notes.md.tmp');
      const after = await eventually(async () => {
        const n = await nodeAt(core, m.mountId, 'notes.md');
        return n?.sizeBytes === 11 && n.consistencyState === 'ACTIVE' ? n : null;
      }, 'notes.md reconciled');
      await settle(core, m);
      expect(after.id).toBe(before.id);
      expect(await watcherDrift(core, m.mountId, 'notes.md')).toHaveLength(1);
      const missing = await outbox(core, m.mountId, 'filestore.node.missing');
      expect(missing).toHaveLength(0);
      // The temp files lived and died within the window: nothing about them anywhere.
      for (const temp of ['4913', '.notes.md.tmp']) {
        expect(await watcherDrift(core, m.mountId, temp)).toHaveLength(0);
        expect(await nodeAt(core, m.mountId, temp)).toBeNull();
      }
    } finally {
      await m.close();
    }
  });

  it('an atomic save by unlink and re-create within the window is one drift too', async () => {
    const m = await watchedMount(core, backend);
    try {
      const before = await m.writeThrough('data.json', '{}');
      await settle(core, m);
      await unlink(m.abs('data.json'));
      await writeFile(m.abs('data.json'), '{"a":1}');
      const after = await eventually(async () => {
        const n = await nodeAt(core, m.mountId, 'data.json');
        return n?.sizeBytes === 7 && n.consistencyState === 'ACTIVE' ? n : null;
      }, 'data.json reconciled');
      expect(after.id).toBe(before.id);
      expect(await watcherDrift(core, m.mountId, 'data.json')).toHaveLength(1);
      expect(await outbox(core, m.mountId, 'filestore.node.missing')).toHaveLength(0);
    } finally {
      await m.close();
    }
  });

  it("Filestore's own writes, mkdirs, moves, copies and deletes produce no drift and leave every node ACTIVE", async () => {
    const m = await watchedMount(core, backend);
    try {
      await m.writeThrough('own/a.txt', 'one');
      await m.writeThrough('own/a.txt', 'one, overwritten');
      await core.orchestrator.mkdir(m.mountId, { path: 'own/sub/deeper', parents: true });
      await m.writeThrough('own/sub/deeper/b.bin', 'bytes');
      await core.orchestrator.move(m.mountId, { path: 'own/a.txt', targetPath: 'own/sub/a-moved.txt' });
      await core.orchestrator.copy(m.mountId, { path: 'own/sub', targetPath: 'own/sub-copy' });
      await core.orchestrator.delete(m.mountId, { path: 'own/sub-copy', recursive: true });
      const sentinel = await settle(core, m);
      // The watcher did see those writes (events beyond the sentinel's), and judged them no drift.
      const seen = (await (core.metrics as PromMetrics).watcherEvents.get()).values.filter((v) => v.labels.mount === m.t.mount.key).reduce((n, v) => n + v.value, 0);
      expect(seen).toBeGreaterThan(3);
      const drift = await watcherDrift(core, m.mountId);
      expect(drift.map((d) => d.data.path)).toEqual([sentinel]);
      const { rows } = await core.pool.query(
        `SELECT path, consistency_state AS state FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND path <> $2 AND consistency_state <> 'ACTIVE'`,
        [m.mountId, sentinel],
      );
      expect(rows).toEqual([]);
    } finally {
      await m.close();
    }
  });

  it('activity in the staging directory is ignored', async () => {
    const m = await watchedMount(core, backend);
    try {
      await mkdir(m.abs('.filestore-staging/j1'), { recursive: true });
      await writeFile(m.abs('.filestore-staging/j1/x.tmp'), 'staged');
      await writeFile(m.abs('.filestore-staging/loose.tmp'), 'staged');
      await rm(m.abs('.filestore-staging/j1'), { recursive: true });
      const sentinel = await settle(core, m);
      const events = await outbox(core, m.mountId);
      expect(events.filter((e) => String(e.data.path ?? '').includes('filestore-staging'))).toEqual([]);
      expect((await watcherDrift(core, m.mountId)).map((d) => d.data.path)).toEqual([sentinel]);
      const { rows } = await core.pool.query(`SELECT path FROM filestore.nodes WHERE mount_id = $1 AND path LIKE '.filestore-staging%'`, [m.mountId]);
      expect(rows).toEqual([]);
    } finally {
      await m.close();
    }
  });
});
