import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findJob } from '../shared/catalogue/jobs.ts';
import { markInconsistent } from '../shared/catalogue/reconcile-writes.ts';
import { reconcilePath, type PathReconciliation } from '../shared/reconcile/reconcile-path.ts';
import type { RunLimits } from '../shared/reconcile/types.ts';
import type { Filestore } from '../shared/runtime.ts';
import { expectExactRollups } from './support/assertions.ts';
import { createTestMount, sharedS3, startFilestore, stopS3, type TestMount } from './support/filestore.ts';
import { putRawKey, rawKeys } from './support/s3.ts';

/**
 * A full audit given a deadline or an abort signal stops at a checkpoint (shared/reconcile/
 * reconciler.ts, RunLimits) and the next run continues after it: what the audit Lambda does
 * with its time budget. Split into many runs (a deadline already past, checkpoints every 3
 * entries), it must end exactly as one uninterrupted audit of the same history does.
 */

/** Out-of-band changes, the same on either kind of storage. */
interface Storage {
  write(p: string, bytes: string): Promise<void>;
  remove(p: string): Promise<void>;
}

function localStorage(t: TestMount): Storage {
  const abs = (p: string) => path.join(t.root as string, p);
  return {
    async write(p, bytes) {
      await mkdir(path.dirname(abs(p)), { recursive: true });
      await writeFile(abs(p), bytes);
    },
    remove: (p) => rm(abs(p), { recursive: true, force: true }),
  };
}

async function s3Storage(t: TestMount): Promise<Storage> {
  const s3 = await sharedS3();
  const bucket = t.mount.bucket as string;
  const key = (p: string) => `${t.mount.prefix}${p}`;
  return {
    write: (p, bytes) => putRawKey(s3.client, bucket, key(p), bytes),
    async remove(p) {
      const keys = (await rawKeys(s3.client, bucket, key(p))).filter((k) => k === key(p) || k.startsWith(`${key(p)}/`));
      if (keys.length > 0) await s3.client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.map((Key) => ({ Key })) } }));
    },
  };
}

const audit = (mountId: string) => ({ mountId, path: '', reason: 'audit' as const, recursive: true, hash: false });

describe.each(['local', 's3'] as const)('an audit on %s given a deadline or an abort', (kind) => {
  let core: Filestore;
  beforeAll(async () => {
    // Requests are recorded, not consumed: each run is the test's own call.
    core = await startFilestore({ redisUrl: 'inline', recover: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } });
  });
  afterAll(async () => {
    await core?.close();
    await stopS3();
  });

  /** A mount with a catalogued tree, then changed behind Filestore's back: changes, deletions, new files, a kind change, a drift signal. */
  async function drifted(): Promise<TestMount> {
    const t = await createTestMount(core, kind);
    const m = t.mount.id;
    const put = (p: string, bytes: string) => core.orchestrator.writeFile(m, { path: p }, Readable.from([Buffer.from(bytes)]));
    const two = (i: number) => String(i).padStart(2, '0');
    for (let i = 0; i < 10; i++) await put(`a/f${two(i)}.txt`, `a${i}`);
    for (let i = 0; i < 10; i++) await put(`b/g${two(i)}.txt`, `b${i}`);
    for (let i = 0; i < 5; i++) await put(`c/deep/h${two(i)}.txt`, `c${i}`);
    for (let i = 0; i < 5; i++) await put(`top${i}.txt`, `t${i}`);
    const s = kind === 'local' ? localStorage(t) : await s3Storage(t);
    for (const p of ['a/f01.txt', 'b/g05.txt', 'top3.txt']) await s.write(p, 'rewritten, longer than before');
    for (const p of ['a/f07.txt', 'b/g02.txt', 'c/deep/h04.txt', 'top1.txt']) await s.remove(p);
    for (const p of ['a/new1.txt', 'b/new2.txt', 'n/x1.txt', 'n/x2.txt', 'zz.txt']) await s.write(p, 'new');
    await s.remove('top4.txt');
    await s.write('top4.txt/inner.txt', 'a directory now');
    await markInconsistent(core.pool, m, 'top2.txt', 'watcher');
    return t;
  }

  const marker = async () => Number((await core.pool.query<{ id: string }>('SELECT coalesce(max(id), 0) AS id FROM filestore.outbox')).rows[0]?.id);
  const nodesOf = async (mountId: string) =>
    (
      await core.pool.query(
        `SELECT path, kind, size_bytes::int AS size, consistency_state AS state, version FROM filestore.nodes
          WHERE mount_id = $1 AND deleted_at IS NULL ORDER BY path COLLATE "C"`,
        [mountId],
      )
    ).rows;
  /** The mount's events after `after`, as what they say (ids and times aside), each once. */
  const eventsOf = async (mountId: string, after: number) => {
    const { rows } = await core.pool.query<{ type: string; data: { path?: string; node?: { path: string }; change?: string; reason?: string } }>(
      `SELECT type, data FROM filestore.outbox WHERE mount_id = $1 AND id > $2 ORDER BY id`,
      [mountId, after],
    );
    const said = rows.map((r) => `${r.type} ${r.data.node?.path ?? r.data.path} ${r.data.change ?? ''} ${r.data.reason ?? ''}`);
    return { all: said, distinct: [...new Set(said)].sort() };
  };

  it('split across many runs (tiny budget, tiny pages) it ends exactly as one uninterrupted audit: same nodes, states, events', async () => {
    const whole = await drifted();
    const split = await drifted();
    const since = await marker();

    const once = await reconcilePath(core, audit(whole.mount.id), {}, { s3MissingGraceMs: 5 });
    expect(once.outcome).toBe('succeeded');

    const runs: PathReconciliation[] = [];
    const checkpoints: string[] = [];
    for (let i = 0; i < 100; i++) {
      // Alternately a deadline already past and an aborted signal: each run stops at its first checkpoint.
      const limits: RunLimits = i % 2 === 0 ? { deadline: Date.now() - 1 } : { signal: AbortSignal.abort() };
      const r = await reconcilePath(core, audit(split.mount.id), limits, { checkpointEvery: 3, batchSize: 2, s3MissingGraceMs: 5 });
      runs.push(r);
      if (r.outcome !== 'stopped') break;
      // Stopped cleanly: the checkpoint saved, the job waiting to continue, no attempt spent, nothing MISSING yet.
      const row = await findJob(core.pool, r.job.id);
      expect(row).toMatchObject({ status: 'queued', attempts: 0, error: null });
      expect(row?.checkpoint?.after).toBe(r.result?.stopped?.after);
      checkpoints.push(row?.checkpoint?.after as string);
      expect((await nodesOf(split.mount.id)).filter((n) => n.state === 'MISSING')).toEqual([]);
    }
    expect(runs.length).toBeGreaterThan(8);
    expect(runs.at(-1)?.outcome).toBe('succeeded');
    // One job, continued each time after the last checkpoint (which only moves forward).
    expect(new Set(runs.map((r) => r.job.id)).size).toBe(1);
    expect(runs.slice(1).every((r) => r.coalesced)).toBe(true);
    const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
    for (let i = 1; i < checkpoints.length; i++) expect(byteOrder(checkpoints[i - 1] as string, checkpoints[i] as string)).toBeLessThan(0);
    const last = await findJob(core.pool, runs[0]!.job.id);
    expect(last).toMatchObject({ status: 'succeeded', checkpoint: null });

    expect(await nodesOf(split.mount.id)).toEqual(await nodesOf(whole.mount.id));
    expect((await nodesOf(split.mount.id)).filter((n) => n.state === 'MISSING').map((n) => n.path)).toEqual(['a/f07.txt', 'b/g02.txt', 'c/deep/h04.txt', 'top1.txt']);
    const splitEvents = await eventsOf(split.mount.id, since);
    const wholeEvents = await eventsOf(whole.mount.id, since);
    expect(splitEvents.distinct).toEqual(wholeEvents.distinct);
    expect(wholeEvents.distinct.length).toBeGreaterThan(10);
    const counts = (r: PathReconciliation) => ({ ...r.result, skipped: 0, skippedByReason: undefined, skippedSample: undefined });
    expect(counts(runs.at(-1)!)).toEqual(counts(once));
    const { rows } = await core.pool.query('SELECT count(*)::int AS n FROM filestore.audit_missing_candidates WHERE job_id = $1', [runs[0]!.job.id]);
    expect(rows[0].n).toBe(0);
    await expectExactRollups(core, split.mount.id);
    await expectExactRollups(core, whole.mount.id);
    await Promise.all([whole.cleanup(), split.cleanup()]);
  });

  it('without a deadline or an abort, an audit given checkpoints runs to its end in one run', async () => {
    const t = await drifted();
    const r = await reconcilePath(core, audit(t.mount.id), { signal: new AbortController().signal, deadline: Date.now() + 3_600_000 }, { checkpointEvery: 3, s3MissingGraceMs: 5 });
    expect(r.outcome).toBe('succeeded');
    expect(r.result?.stopped).toBeUndefined();
    expect(r.result).toMatchObject({ missing: 4 });
    await t.cleanup();
  });
});
