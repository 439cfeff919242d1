import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { EntryStat } from '../../shared/backends/types.ts';
import { findJob, type ReconcileJobRow } from '../../shared/catalogue/jobs.ts';
import { findLiveByPath } from '../../shared/catalogue/nodes.ts';
import { markInconsistent } from '../../shared/catalogue/reconcile-writes.ts';
import type { CatalogueNode } from '../../shared/catalogue/types.ts';
import type { EventEnvelope } from '../../shared/catalogue/outbox.ts';
import { MassMissingError, MountUnhealthyError, ScanFailedError } from '../../shared/reconcile/errors.ts';
import { createReconciler, type ReconcilerOptions } from '../../shared/reconcile/reconciler.ts';
import type { ReconcileCounts } from '../../shared/reconcile/types.ts';
import type { Filestore } from '../../shared/runtime.ts';
import { expectExactRollups } from '../support/assertions.ts';
import { collectEvents, startFilestore, stopS3, type TestMount } from '../support/filestore.ts';

/**
 * What reconciliation must do on every backend (SPEC §3 transitions, issue 4 safety rules),
 * run for local disks and S3 by tests/reconcile-local.test.ts and tests/reconcile-s3.test.ts.
 * Changes are made around Filestore, straight on storage.
 */
export interface ReconcileFixture {
  mount: TestMount;
  /** Out of band: write bytes at a path (parents implied/created). */
  write(path: string, bytes: string): Promise<void>;
  /** Out of band: remove a file, or a directory with everything below it. */
  remove(path: string): Promise<void>;
  /** Out of band: an empty directory. */
  mkdir(path: string): Promise<void>;
  /** Makes the mount's root unreadable (unmount, delete the bucket); returns the undo. */
  breakRoot(): Promise<() => Promise<void>>;
  cleanup(): Promise<void>;
}

export function reconcileSuite(kind: 'local' | 's3', makeFixture: (core: Filestore) => Promise<ReconcileFixture>): void {
  describe(`reconciliation on ${kind}`, () => {
    let core: Filestore;
    let f: ReconcileFixture;
    let m: string;

    beforeAll(async () => {
      core = await startFilestore();
    });
    afterAll(async () => {
      await core.close();
      await stopS3();
    });
    beforeEach(async () => {
      f = await makeFixture(core);
      m = f.mount.mount.id;
      return () => f.cleanup();
    });

    let jobs = 0;
    async function reconcile(path = '', o: { recursive?: boolean; hash?: boolean; force?: boolean; reason?: string } & ReconcilerOptions = {}): Promise<ReconcileCounts> {
      const { rows } = await core.pool.query(
        `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status) VALUES ($1, $2, $3, $4, 'running')
         RETURNING id, mount_id AS "mountId", path, reason, options, status, attempts, coalesced, result, checkpoint, error,
                   created_at AS "createdAt", started_at AS "startedAt", finished_at AS "finishedAt", updated_at AS "updatedAt"`,
        [m, path, o.reason ?? 'manual', JSON.stringify({ recursive: o.recursive ?? true, hash: o.hash ?? false, force: o.force ?? false })],
      );
      jobs++;
      return createReconciler(core, { s3MissingGraceMs: 5, ...o })(rows[0], async () => {});
    }
    const put = (path: string, bytes: string) => core.orchestrator.writeFile(m, { path }, Readable.from([Buffer.from(bytes)]));
    const node = async (path: string) => findLiveByPath(core.pool, m, path);
    const mustNode = async (path: string) => (await node(path)) as CatalogueNode;
    const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
    const eventsOf = (events: EventEnvelope[], type: string, path: string) =>
      events.filter((e) => e.type === type && ((e.data.node as { path?: string } | undefined)?.path ?? e.data.path) === path);

    it('an unchanged tree is checked and left as it is: no new versions, no events', async () => {
      await put('a/one.txt', 'one');
      await put('a/b/two.txt', 'two');
      const before = await mustNode('a/one.txt');
      const ev = await collectEvents(core, m);
      const dbNow = async () => (await core.pool.query<{ t: Date }>('SELECT now() AS t')).rows[0]!.t.getTime();
      const auditBegan = await dbNow();
      const counts = await reconcile();
      expect(counts).toMatchObject({ updated: 0, discovered: 0, missing: 0 });
      expect(counts.unchanged).toBe(counts.checked);
      const after = await mustNode('a/one.txt');
      expect(after.version).toBe(before.version);
      // Checked as of the audit (the mount's audit mark), though the row itself was not rewritten.
      expect(after.consistencyCheckedAt!.getTime()).toBeGreaterThanOrEqual(auditBegan);
      expect(after.updatedAt.getTime()).toBe(before.updatedAt.getTime());
      // A reconciliation of a subtree marks the rows it checked.
      const subtreeBegan = await dbNow();
      await reconcile('a');
      expect((await mustNode('a/b/two.txt')).consistencyCheckedAt!.getTime()).toBeGreaterThanOrEqual(subtreeBegan);
      await core.relay?.drain();
      expect(ev.events.filter((e) => e.type.startsWith('filestore.node.reconciled') || e.type === 'filestore.drift.detected')).toEqual([]);
      ev.unsubscribe();
      await expectExactRollups(core, m);
    });

    it('a file changed outside Filestore gets a new version and snapshot, and emits drift.detected then node.reconciled', async () => {
      await put('doc.txt', 'short');
      const before = await mustNode('doc.txt');
      await f.write('doc.txt', 'a much longer body than before');
      const ev = await collectEvents(core, m);
      expect(await reconcile()).toMatchObject({ updated: 1, discovered: 0, missing: 0 });
      const after = await mustNode('doc.txt');
      expect(after).toMatchObject({ id: before.id, version: before.version + 1, sizeBytes: 30, consistencyState: 'ACTIVE' });
      expect(after.lastDriftDetectedAt).not.toBeNull();
      expect(after.lastReconciledAt).not.toBeNull();
      await ev.waitFor((e) => e.type === 'filestore.node.reconciled' && (e.data.node as { path: string }).path === 'doc.txt');
      expect(eventsOf(ev.events, 'filestore.drift.detected', 'doc.txt')).toHaveLength(1);
      ev.unsubscribe();
      const { rows } = await core.pool.query('SELECT version, reconciliation_job_id FROM filestore.snapshots WHERE node_id = $1 ORDER BY version', [before.id]);
      expect(rows.map((r) => r.version)).toEqual([before.version, before.version + 1]);
      expect(rows[1].reconciliation_job_id).not.toBeNull();
      await expectExactRollups(core, m);
    });

    it('a file deleted outside Filestore becomes MISSING (filestore.node.missing) and ACTIVE again when it reappears', async () => {
      await put('gone.txt', 'bytes');
      await put('stays.txt', 'bytes');
      await f.remove('gone.txt');
      const ev = await collectEvents(core, m);
      expect(await reconcile()).toMatchObject({ missing: 1, updated: 0 });
      expect(await mustNode('gone.txt')).toMatchObject({ consistencyState: 'MISSING' });
      expect(await mustNode('stays.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
      await ev.waitFor((e) => e.type === 'filestore.node.missing');
      // A second audit changes nothing.
      expect(await reconcile()).toMatchObject({ missing: 0, updated: 0 });
      await f.write('gone.txt', 'bytes');
      expect(await reconcile()).toMatchObject({ updated: 1, missing: 0 });
      expect(await mustNode('gone.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
      await ev.waitFor((e) => e.type === 'filestore.node.reconciled' && (e.data.node as { path: string }).path === 'gone.txt');
      ev.unsubscribe();
      await expectExactRollups(core, m);
    });

    it('untracked files and directories found on storage become ACTIVE nodes (node.reconciled, change "discovered")', async () => {
      await put('known.txt', 'k');
      await f.write('new/deep/file.txt', 'found');
      await f.write('top.txt', 'also');
      const ev = await collectEvents(core, m);
      const counts = await reconcile();
      expect(counts.discovered).toBe(4); // new, new/deep, new/deep/file.txt, top.txt
      expect(await mustNode('new/deep/file.txt')).toMatchObject({ kind: 'file', sizeBytes: 5, consistencyState: 'ACTIVE' });
      const parent = await mustNode('new/deep');
      expect((await mustNode('new/deep/file.txt')).parentId).toBe(parent.id);
      await ev.waitFor((e) => e.type === 'filestore.node.reconciled' && e.data.change === 'discovered' && (e.data.node as { path: string }).path === 'top.txt');
      ev.unsubscribe();
      await expectExactRollups(core, m);
    });

    it('a drift signal makes a node INCONSISTENT; reconciliation confirms it ACTIVE without a new version', async () => {
      await put('watched.txt', 'same');
      const before = await mustNode('watched.txt');
      await markInconsistent(core.pool, m, 'watched.txt', 'drift');
      expect(await mustNode('watched.txt')).toMatchObject({ consistencyState: 'INCONSISTENT' });
      expect(await reconcile('watched.txt', { recursive: false, reason: 'drift' })).toMatchObject({ updated: 1, checked: 1 });
      expect(await mustNode('watched.txt')).toMatchObject({ consistencyState: 'ACTIVE', version: before.version });
    });

    it('a file replaced by a directory, and a directory replaced by a file, change kind', async () => {
      await put('x', 'file first');
      await put('y/inner.txt', 'in a directory');
      await f.remove('x');
      await f.write('x/child.txt', 'now a directory');
      await f.remove('y');
      await f.write('y', 'now a file');
      const counts = await reconcile();
      expect(await mustNode('x')).toMatchObject({ kind: 'directory', consistencyState: 'ACTIVE' });
      expect(await mustNode('x/child.txt')).toMatchObject({ kind: 'file' });
      expect(await mustNode('y')).toMatchObject({ kind: 'file', sizeBytes: 10 });
      expect(await mustNode('y/inner.txt')).toMatchObject({ consistencyState: 'MISSING' });
      expect(counts).toMatchObject({ updated: 2, discovered: 1, missing: 1 });
      await expectExactRollups(core, m);
    });

    it('a scan that fails part-way records what it found and marks nothing MISSING', async () => {
      for (const p of ['a.txt', 'b.txt', 'c.txt', 'd.txt']) await put(p, p);
      await f.remove('c.txt');
      await f.remove('d.txt');
      await f.write('a.txt', 'changed size');
      const failing = (walk: AsyncIterable<EntryStat>) =>
        (async function* () {
          let n = 0;
          for await (const e of walk) {
            if (n++ === 2) throw new Error('listing failed: injected'); // after "" and a.txt
            yield e;
          }
        })();
      await expect(reconcile('', { wrapWalk: failing })).rejects.toBeInstanceOf(ScanFailedError);
      expect(await mustNode('a.txt')).toMatchObject({ sizeBytes: 12 }); // seen before the failure
      expect(await mustNode('c.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
      expect(await mustNode('d.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
      await expectExactRollups(core, m);
    });

    it('a mount whose root is gone is reported unhealthy and nothing is marked MISSING', async () => {
      await put('p/q.txt', 'data');
      const undo = await f.breakRoot();
      await expect(reconcile()).rejects.toBeInstanceOf(MountUnhealthyError);
      const { rows } = await core.pool.query('SELECT health, health_reason FROM filestore.mounts WHERE id = $1', [m]);
      expect(rows[0].health).toBe('unhealthy');
      expect(await mustNode('p/q.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
      await undo();
      await reconcile();
      const again = await core.pool.query('SELECT health FROM filestore.mounts WHERE id = $1', [m]);
      expect(again.rows[0].health).toBe('healthy');
    });

    it('an audit that would mark more than the allowed share MISSING stops and reports; forced, it applies', async () => {
      for (let i = 0; i < 24; i++) await put(`many/f${String(i).padStart(2, '0')}.txt`, 'x');
      await f.remove('many');
      const err = await reconcile().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(MassMissingError);
      expect((err as MassMissingError).details).toMatchObject({ wouldMiss: 25, maxRatio: 0.5 });
      // Out of the mount's live nodes, its root aside, as the catalogue holds them.
      const live = await core.pool.query(`SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND path <> ''`, [m]);
      expect((err as MassMissingError).details?.total).toBe(live.rows[0].n);
      expect(await mustNode('many/f00.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
      expect(await reconcile('', { force: true })).toMatchObject({ missing: 25 });
      expect(await mustNode('many/f00.txt')).toMatchObject({ consistencyState: 'MISSING' });
    });

    it('a drift job for a path below untracked directories catalogues the directories too', async () => {
      await f.write('u/v/w.txt', 'deep');
      expect(await reconcile('u/v/w.txt', { recursive: false, reason: 'drift' })).toMatchObject({ discovered: 3 });
      expect(await mustNode('u/v/w.txt')).toMatchObject({ parentId: (await mustNode('u/v')).id });
      await expectExactRollups(core, m);
    });

    it('reconciling one directory non-recursively covers it and its children only', async () => {
      await put('d/k1.txt', '1');
      await put('d/sub/k2.txt', '2');
      await put('d/sub/k3.txt', '3'); // keeps d/sub on S3, where directories are implicit
      await f.write('d/new.txt', 'n');
      await f.remove('d/sub/k2.txt');
      const counts = await reconcile('d', { recursive: false });
      expect(counts).toMatchObject({ discovered: 1, missing: 0 });
      expect(await mustNode('d/sub/k2.txt')).toMatchObject({ consistencyState: 'ACTIVE' }); // not in scope
      await expectExactRollups(core, m);
    });

    it('an interrupted audit continues after its checkpoint when retried, and finishes correctly', async () => {
      for (let i = 0; i < 30; i++) await put(`r/f${String(i).padStart(2, '0')}.txt`, 'v1');
      await f.write('r/f03.txt', 'changed early');
      await f.write('r/f25.txt', 'changed late');
      await f.remove('r/f28.txt');
      const { rows } = await core.pool.query(
        `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status) VALUES ($1, '', 'audit', '{"recursive":true}', 'running') RETURNING id`,
        [m],
      );
      const id = rows[0].id as number;
      const load = async () => (await findJob(core.pool, id)) as ReconcileJobRow;
      const failAfter = (n: number) => (walk: AsyncIterable<EntryStat>) =>
        (async function* () {
          let seen = 0;
          for await (const e of walk) {
            if (seen++ === n) throw new Error('connection reset: injected');
            yield e;
          }
        })();
      const first = createReconciler(core, { checkpointEvery: 5, wrapWalk: failAfter(18), s3MissingGraceMs: 5 });
      await expect(first(await load(), async () => {})).rejects.toBeInstanceOf(ScanFailedError);
      const checkpoint = (await load()).checkpoint;
      expect(checkpoint?.after).toMatch(/^r\/f1\d\.txt$/);
      expect(await mustNode('r/f03.txt')).toMatchObject({ sizeBytes: 13 }); // recorded before the failure

      const resumedPaths: string[] = [];
      const record = (walk: AsyncIterable<EntryStat>) =>
        (async function* () {
          for await (const e of walk) {
            resumedPaths.push(e.path);
            yield e;
          }
        })();
      const counts = await createReconciler(core, { checkpointEvery: 5, wrapWalk: record, s3MissingGraceMs: 5 })(await load(), async () => {});
      expect(resumedPaths.length).toBeGreaterThan(0);
      expect(resumedPaths.every((p) => byteOrder(p, checkpoint!.after) > 0)).toBe(true); // the listing started after the checkpoint
      expect(counts).toMatchObject({ updated: 2, missing: 1, discovered: 0 });
      expect(await mustNode('r/f25.txt')).toMatchObject({ sizeBytes: 12 });
      expect(await mustNode('r/f28.txt')).toMatchObject({ consistencyState: 'MISSING' });
      expect((await load()).checkpoint).toBeNull();
      await expectExactRollups(core, m);
    });

    it('jobs ran', () => expect(jobs).toBeGreaterThan(0));
  });
}
