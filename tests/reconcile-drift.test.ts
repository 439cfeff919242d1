import { Readable } from 'node:stream';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findLiveByPath, findSequencer } from '../shared/catalogue/nodes.ts';
import { lockPathsForWrite } from '../shared/catalogue/reconcile-writes.ts';
import { detectDrift, type DriftChange } from '../shared/reconcile/drift.ts';
import type { JobTarget } from '../shared/reconcile/job-plan.ts';
import { reconcilePath } from '../shared/reconcile/reconcile-path.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, sharedS3, startFilestore, stopS3, type TestMount } from './support/filestore.ts';
import { putRawKey } from './support/s3.ts';

/**
 * The drift rules (shared/reconcile/drift.ts) outside the agent's watcher: S3 keys reported
 * changed, as the S3-event Lambda hands them over — looked at with HEAD, judged against the
 * catalogue under the path locks, Filestore's own writes no drift, INCONSISTENT and
 * filestore.drift.detected for the rest, and their reconciliations requested. (The watcher's
 * side is tests/watch-*.test.ts.)
 */
describe('drift signals of S3 keys', () => {
  let core: Filestore;
  let t: TestMount;
  let raw: (p: string, bytes: string) => Promise<void>;
  let unlink: (p: string) => Promise<void>;
  beforeAll(async () => {
    core = await startFilestore({ redisUrl: 'inline', recover: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } });
    t = await createTestMount(core, 's3');
    const s3 = await sharedS3();
    const key = (p: string) => `${t.mount.prefix}${p}`;
    raw = (p, bytes) => putRawKey(s3.client, t.mount.bucket as string, key(p), bytes);
    unlink = async (p) => void (await s3.client.send(new DeleteObjectCommand({ Bucket: t.mount.bucket as string, Key: key(p) })));
  });
  afterAll(async () => {
    await core?.close();
    await stopS3();
  });

  const put = (p: string, bytes: string) => core.orchestrator.writeFile(t.mount.id, { path: p }, Readable.from([Buffer.from(bytes)]));
  const changes = (paths: Record<string, DriftChange>) => new Map(Object.entries(paths));
  const driftEvents = async (paths: string[]) =>
    (
      await core.pool.query<{ data: { nodeId: number | null; path: string; reason: string } }>(
        `SELECT data FROM filestore.outbox WHERE mount_id = $1 AND type = 'filestore.drift.detected' AND data->>'path' = ANY($2::text[]) ORDER BY id`,
        [t.mount.id, paths],
      )
    ).rows.map((r) => r.data);

  it("judges keys against the catalogue: Filestore's own write is no drift (its sequencer stored), the rest is marked and reconciled", async () => {
    await put('own.txt', 'written through Filestore');
    await put('theirs.txt', 'v1');
    await put('gone.txt', 'g');
    await raw('theirs.txt', 'rewritten behind its back');
    await raw('new.txt', 'n');
    await unlink('gone.txt');
    const sequencers = new Map([['own.txt', '0A'], ['theirs.txt', '0B'], ['new.txt', '0C'], ['gone.txt', '0D']]);
    const requested: JobTarget[] = [];
    const r = await detectDrift(
      core,
      t.mount,
      { changes: changes({ 'own.txt': 'created', 'theirs.txt': 'changed', 'new.txt': 'created', 'gone.txt': 'deleted' }), sequencers },
      { reason: 's3_event', dispatch: async (targets) => (requested.push(...targets), targets.length) },
    );
    expect(r).toMatchObject({ checked: 4, drift: 3, deferred: [], dropped: [], jobs: 3 });
    expect(requested.sort((a, b) => a.path.localeCompare(b.path))).toEqual([
      { path: 'gone.txt', recursive: false },
      { path: 'new.txt', recursive: false },
      { path: 'theirs.txt', recursive: false },
    ]);
    expect(await findLiveByPath(core.pool, t.mount.id, 'own.txt')).toMatchObject({ consistencyState: 'ACTIVE', sequencer: '0A', version: 1 });
    expect(await findLiveByPath(core.pool, t.mount.id, 'theirs.txt')).toMatchObject({ consistencyState: 'INCONSISTENT', sizeBytes: 2, sequencer: null });
    expect(await findLiveByPath(core.pool, t.mount.id, 'gone.txt')).toMatchObject({ consistencyState: 'INCONSISTENT' });
    const events = await driftEvents(['own.txt', 'theirs.txt', 'new.txt', 'gone.txt']);
    expect(events.map((e) => [e.path, e.reason, e.nodeId === null])).toEqual(
      expect.arrayContaining([
        ['theirs.txt', 's3_event', false],
        ['gone.txt', 's3_event', false],
        ['new.txt', 's3_event', true],
      ]),
    );
    expect(events).toHaveLength(3);

    // What the Lambda does with the targets: each key reconciled inline, carrying its event's sequencer.
    for (const target of requested) {
      const done = await reconcilePath(core, { mountId: t.mount.id, path: target.path, reason: 's3_event', recursive: target.recursive, hash: false, sequencer: sequencers.get(target.path) }, {}, { s3MissingGraceMs: 5 });
      expect(done.outcome).toBe('succeeded');
    }
    expect(await findLiveByPath(core.pool, t.mount.id, 'theirs.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 25, sequencer: '0B' });
    expect(await findLiveByPath(core.pool, t.mount.id, 'new.txt')).toMatchObject({ consistencyState: 'ACTIVE', sequencer: '0C' });
    expect(await findLiveByPath(core.pool, t.mount.id, 'gone.txt')).toMatchObject({ consistencyState: 'MISSING', sequencer: '0D' });
  });

  it('a key a command holds right now is deferred, not judged; by default the requests go to the reconcile queue', async () => {
    await put('held.txt', 'h');
    await raw('held.txt', 'changed while a command holds it');
    await raw('queued.txt', 'q');
    const client = await core.pool.connect();
    try {
      await client.query('BEGIN');
      await lockPathsForWrite(client, t.mount.id, ['held.txt']);
      const r = await detectDrift(core, t.mount, { changes: changes({ 'held.txt': 'changed', 'queued.txt': 'created' }), sequencers: new Map([['held.txt', '01']]) }, { reason: 's3_event' });
      expect(r).toMatchObject({ checked: 1, drift: 1, deferred: ['held.txt'], jobs: 1 });
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
    expect(await findLiveByPath(core.pool, t.mount.id, 'held.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 1 });
    expect(await findSequencer(core.pool, t.mount.id, 'held.txt')).toBeNull();
    const { rows } = await core.pool.query(`SELECT path, reason, status FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND path = 'queued.txt'`, [t.mount.id]);
    expect(rows).toEqual([{ path: 'queued.txt', reason: 'drift', status: 'queued' }]);
  });
});
