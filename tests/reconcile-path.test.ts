import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EntryStat } from '../shared/backends/types.ts';
import { findJob } from '../shared/catalogue/jobs.ts';
import { findLiveByPath, findSequencer } from '../shared/catalogue/nodes.ts';
import { FilestoreError } from '../shared/errors.ts';
import { tryLockJobRun } from '../shared/reconcile/job-run-lock.ts';
import { reconcilePath } from '../shared/reconcile/reconcile-path.ts';
import type { ReconcileRequest } from '../shared/reconcile/types.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, sharedS3, startFilestore, stopS3, type TestMount } from './support/filestore.ts';
import { putRawKey } from './support/s3.ts';

/**
 * reconcilePath (shared/reconcile/reconcile-path.ts): one path reconciled from a request, here
 * and now, as the S3-event Lambda does per key. It records its job row as the queue does and
 * runs it inline; nobody inserts raw job rows.
 */
describe('reconciling one path from a request', () => {
  let core: Filestore;
  let t: TestMount;
  let raw: (p: string, bytes: string) => Promise<void>;
  beforeAll(async () => {
    // Nothing consumes the queue: whatever runs here is reconcilePath's own doing.
    core = await startFilestore({ redisUrl: 'inline', recover: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } });
    t = await createTestMount(core, 's3');
    const s3 = await sharedS3();
    raw = (p, bytes) => putRawKey(s3.client, t.mount.bucket as string, `${t.mount.prefix}${p}`, bytes);
  });
  afterAll(async () => {
    await core?.close();
    await stopS3();
  });

  const event = (path: string, extra: Partial<ReconcileRequest> = {}): ReconcileRequest => ({ mountId: t.mount.id, path, reason: 's3_event', recursive: false, hash: false, ...extra });
  const put = (p: string, bytes: string) => core.orchestrator.writeFile(t.mount.id, { path: p }, Readable.from([Buffer.from(bytes)]));

  it('records its own job row, runs it inline and returns the result', async () => {
    await raw('inbox/new.txt', 'arrived behind Filestore');
    const r = await reconcilePath(core, event('inbox/new.txt'));
    expect(r).toMatchObject({ outcome: 'succeeded', coalesced: false, result: { discovered: 2, missing: 0 } }); // inbox/ and the file
    expect(await findJob(core.pool, r.job.id)).toMatchObject({ status: 'succeeded', reason: 's3_event', path: 'inbox/new.txt', attempts: 1, options: { recursive: false, hash: false } });
    expect(await findLiveByPath(core.pool, t.mount.id, 'inbox/new.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 24 });
    expect(await core.reconcile.backlog()).toBe(0); // nothing went through the queue
  });

  it('joins the row already waiting for the same path, and runs that one', async () => {
    await raw('joined.txt', 'j');
    const waiting = await core.reconcile.enqueue({ mountId: t.mount.id, path: 'joined.txt', reason: 'drift', recursive: false, hash: false });
    const r = await reconcilePath(core, event('joined.txt'));
    expect(r).toMatchObject({ outcome: 'succeeded', coalesced: true, result: { discovered: 1 } });
    expect(r.job.id).toBe(waiting.job.id);
    // The merged reason keeps the higher precedence (s3_event over drift).
    expect(await findJob(core.pool, waiting.job.id)).toMatchObject({ status: 'succeeded', reason: 's3_event', coalesced: 1 });
  });

  it('does not run a row whose run goes on elsewhere (its run lock is held): skipped, left as it is', async () => {
    await raw('busy.txt', 'b');
    const waiting = await core.reconcile.enqueue({ mountId: t.mount.id, path: 'busy.txt', reason: 'drift', recursive: false, hash: false });
    const lock = await tryLockJobRun(core.pool, waiting.job.id);
    try {
      const r = await reconcilePath(core, event('busy.txt'));
      expect(r).toMatchObject({ outcome: 'skipped', result: null });
      expect(await findJob(core.pool, waiting.job.id)).toMatchObject({ status: 'queued', attempts: 0 });
      expect(await findLiveByPath(core.pool, t.mount.id, 'busy.txt')).toBeNull();
    } finally {
      await lock?.release();
    }
    expect(await reconcilePath(core, event('busy.txt'))).toMatchObject({ outcome: 'succeeded', result: { discovered: 1 } });
  });

  it('a retryable failure leaves the row waiting with its error; the next request for the path runs it again', async () => {
    await raw('dir/flaky.txt', 'f');
    await put('dir/kept.txt', 'k');
    const failing = (walk: AsyncIterable<EntryStat>) =>
      (async function* () {
        yield* [];
        for await (const _ of walk) throw new Error('connection reset: injected');
      })();
    const first = await reconcilePath(core, event('dir'), {}, { wrapWalk: failing });
    expect(first.outcome).toBe('retried');
    expect(await findJob(core.pool, first.job.id)).toMatchObject({ status: 'queued', attempts: 1, error: { code: 'STORAGE_ERROR', retryable: true } });
    const again = await reconcilePath(core, event('dir'));
    expect(again).toMatchObject({ outcome: 'succeeded', coalesced: true, result: { discovered: 1 } });
    expect(again.job.id).toBe(first.job.id);
    expect(await findJob(core.pool, first.job.id)).toMatchObject({ status: 'succeeded', attempts: 2, error: null });
  });

  it('records the S3 event sequencer on the key\'s node, only ever moving to a newer one', async () => {
    await put('seq.txt', 'ours');
    // Filestore's own write: the event changes nothing but is accounted for.
    const own = await reconcilePath(core, event('seq.txt', { sequencer: '0055AED6DCD90281E5' }));
    expect(own).toMatchObject({ outcome: 'succeeded', result: { updated: 0, discovered: 0 } });
    expect(await findSequencer(core.pool, t.mount.id, 'seq.txt')).toBe('0055AED6DCD90281E5');
    // Changed behind Filestore's back: reconciled, and the newer (longer, lower-case) sequencer kept.
    await raw('seq.txt', 'theirs, longer');
    expect(await reconcilePath(core, event('seq.txt', { sequencer: '0055aed6dcd90281e501' }))).toMatchObject({ result: { updated: 1 } });
    expect(await findSequencer(core.pool, t.mount.id, 'seq.txt')).toBe('0055aed6dcd90281e501');
    // An older event arriving late, and a duplicate: the key is looked at, the stored sequencer stays.
    await reconcilePath(core, event('seq.txt', { sequencer: '0055AED6DCD90281E4FF' }));
    await reconcilePath(core, event('seq.txt', { sequencer: '0055AED6DCD90281E501000' }));
    expect(await findSequencer(core.pool, t.mount.id, 'seq.txt')).toBe('0055aed6dcd90281e501');
    // A key that appeared: its node starts with the event's sequencer.
    await raw('seq-new.txt', 'n');
    await reconcilePath(core, event('seq-new.txt', { sequencer: '00AA' }));
    expect(await findSequencer(core.pool, t.mount.id, 'seq-new.txt')).toBe('00AA');
    // A key deleted behind Filestore's back: MISSING, carrying the delete event's sequencer.
    const s3 = await sharedS3();
    const { DeleteObjectCommand } = await import('@aws-sdk/client-s3');
    await s3.client.send(new DeleteObjectCommand({ Bucket: t.mount.bucket as string, Key: `${t.mount.prefix}seq-new.txt` }));
    expect(await reconcilePath(core, event('seq-new.txt', { sequencer: '00AB' }), {}, { s3MissingGraceMs: 5 })).toMatchObject({ result: { missing: 1 } });
    expect(await findLiveByPath(core.pool, t.mount.id, 'seq-new.txt')).toMatchObject({ consistencyState: 'MISSING', sequencer: '00AB' });
  });

  it('audits and commands leave a stored sequencer as it is; a move clears it (sequencers order one key\'s events)', async () => {
    await put('stay.txt', 's');
    await put('moving.txt', 'm');
    await reconcilePath(core, event('stay.txt', { sequencer: '01' }));
    await reconcilePath(core, event('moving.txt', { sequencer: '02' }));
    await raw('stay.txt', 'changed behind its back');
    const audit = await reconcilePath(core, { mountId: t.mount.id, path: '', reason: 'audit', recursive: true, hash: false }, {}, { s3MissingGraceMs: 5 });
    expect(audit.outcome).toBe('succeeded');
    expect(await findLiveByPath(core.pool, t.mount.id, 'stay.txt')).toMatchObject({ sizeBytes: 23, sequencer: '01' });
    await put('stay.txt', 'overwritten through Filestore');
    expect(await findSequencer(core.pool, t.mount.id, 'stay.txt')).toBe('01');
    await core.orchestrator.move(t.mount.id, { path: 'moving.txt', targetPath: 'moved.txt' });
    expect(await findSequencer(core.pool, t.mount.id, 'moved.txt')).toBeNull();
  });

  it('refuses a sequencer that is not hex, or on a local mount, before recording anything', async () => {
    const local = await createTestMount(core, 'local');
    const jobs = async () => Number((await core.pool.query('SELECT count(*) AS n FROM filestore.reconciliation_jobs')).rows[0].n);
    const before = await jobs();
    await expect(reconcilePath(core, event('x.txt', { sequencer: 'not-hex' }))).rejects.toMatchObject({ code: 'VALIDATION_ERROR' });
    const onLocal = reconcilePath(core, { mountId: local.mount.id, path: 'x.txt', reason: 'drift', recursive: false, hash: false, sequencer: '01' });
    await expect(onLocal).rejects.toBeInstanceOf(FilestoreError);
    await expect(onLocal).rejects.toMatchObject({ code: 'VALIDATION_ERROR' });
    expect(await jobs()).toBe(before);
    await local.cleanup();
  });
});
