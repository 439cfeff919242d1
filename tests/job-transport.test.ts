import { randomUUID } from 'node:crypto';
import { CreateQueueCommand, DeleteMessageCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createAuditHandler } from '../lambdas/audit.ts';
import { closeLambdaCore } from '../lambdas/support/core.ts';
import { enqueueJob, findJob, type ReconcileJobRow } from '../shared/catalogue/jobs.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import { BullMqReconcileQueue, bullJobId, type ReconcileMessage } from '../shared/queues/bullmq-queue.ts';
import { RoutedReconcileQueue, SqsReconcileQueue } from '../shared/queues/sqs-queue.ts';
import { reconcilePath } from '../shared/reconcile/reconcile-path.ts';
import type { ReconcileRequest } from '../shared/reconcile/types.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { createTestMount, sharedS3, startFilestore, stopS3, uniqueKey } from './support/filestore.ts';
import { lambdaContext } from './support/lambda-context.ts';
import { startS3Proxy } from './support/s3-proxy.ts';
import { putRawKey, TEST_S3_CREDENTIALS, TEST_S3_REGION } from './support/s3.ts';
import { eventually, scriptedHandler } from './support/scripted-handler.ts';

/**
 * Each reconciliation row records what carries its queue message (`transport`): BullMQ
 * consumers (agents, `npm start`) re-add and run only rows of BullMQ ('redis'), the SQS sweep
 * (the audit Lambda's) sends only rows of the SQS queue ('sqs'). Without it, an agent's sweep
 * re-added S3 mounts' SQS jobs and audits the audit Lambda stopped between two runs, and ran
 * them itself (it may have no access to the bucket).
 */

const PREFIX = `fstest-${randomUUID().slice(0, 8)}`;
let core: Filestore;
let sqs: SQSClient;
let queueUrl: string;
let redis: Redis;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  const s3 = await sharedS3();
  sqs = new SQSClient({ endpoint: s3.endpoint, region: TEST_S3_REGION, credentials: TEST_S3_CREDENTIALS });
  queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: `transport-${randomUUID().slice(0, 8)}`, Attributes: { VisibilityTimeout: '60' } }))).QueueUrl as string;
  // The audit Lambda's container core reads these (no SQS queue: the audit runs all the same).
  Object.assign(process.env, {
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: 'inline',
    AWS_REGION: TEST_S3_REGION,
    AWS_ACCESS_KEY_ID: TEST_S3_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_S3_CREDENTIALS.secretAccessKey,
    POWERTOOLS_LOG_LEVEL: 'ERROR',
    POWERTOOLS_METRICS_DISABLED: 'true',
  });
  core = await startFilestore({ redisUrl: 'inline', relay: false, recover: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } });
  redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 3 });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});
afterAll(async () => {
  await closeLambdaCore();
  await core?.close();
  redis?.disconnect();
  sqs?.destroy();
  await stopS3();
});

const request = (mountId: string, path: string, extra: Partial<ReconcileRequest> = {}): ReconcileRequest => ({ mountId, path, reason: 'drift', recursive: false, hash: false, ...extra });
const row = async (id: number) => (await findJob(core.pool, id)) as ReconcileJobRow;
const owed = async (id: number) => (await core.pool.query<{ owed: boolean }>('SELECT queue_owed AS owed FROM filestore.reconciliation_jobs WHERE id = $1', [id])).rows[0]?.owed;

/** A BullMQ reconcile queue of this test (its own name, this file's prefix) over `mountIds`, and a view of its Redis queue. */
function bullmq(mountIds: string[], name = `transport-${randomUUID().slice(0, 8)}`) {
  const queue = new BullMqReconcileQueue(TEST_REDIS_URL, { pool: core.pool, metrics: new PromMetrics({ collectDefaults: false }), name, prefix: PREFIX, mountIds, sweepIntervalMs: 50, backoffMs: 5 });
  const view = new Queue<ReconcileMessage>(name, { connection: redis, prefix: PREFIX });
  cleanups.push(async () => {
    await queue.close();
    await view.obliterate({ force: true }).catch(() => {});
    await view.close();
  });
  return { queue, view, stateOf: (r: ReconcileJobRow) => view.getJobState(bullJobId(r)) };
}

/**
 * The SQS producer of this file's queue (its sweep limited to `mountIds`: other files' rows are
 * theirs), or of one that does not exist (every send fails).
 */
function sqsQueue(o: { broken?: boolean; mountIds?: string[] } = {}) {
  return new SqsReconcileQueue({ pool: core.pool, mountIds: o.mountIds }, { queueUrl: o.broken ? `${queueUrl}-gone` : queueUrl, client: sqs });
}

/**
 * Rows that have sat still longer than a BullMQ sweep waits (30 s), not as long as an SQS sweep
 * does by default (20 min: another file's audit Lambda would send them to its queue).
 */
const age = (ids: number[]) => core.pool.query(`UPDATE filestore.reconciliation_jobs SET updated_at = now() - interval '1 minute' WHERE id = ANY ($1::bigint[])`, [ids]);
/** Ends the test's open rows: an owed SQS row left open is any SQS sweep's to send (another file's audit Lambda's too). */
const settleOpen = (mountId: string) => cleanups.push(() => core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'cancelled', queue_owed = false WHERE mount_id = $1 AND status IN ('queued', 'running')`, [mountId]));
const SWEEP_IDLE_MS = 30_000;

/** Row ids of the messages on this file's SQS queue, deleted as read. */
async function drainSqs(): Promise<number[]> {
  const ids: number[] = [];
  for (;;) {
    const out = (await sqs.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }))).Messages ?? [];
    if (out.length === 0) return ids;
    for (const m of out) {
      ids.push((JSON.parse(m.Body as string) as { rowId: number }).rowId);
      await sqs.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: m.ReceiptHandle as string }));
    }
  }
}

describe('the transport of a reconciliation row', () => {
  it("a BullMQ consumer's sweep neither re-adds nor runs open SQS rows of an S3 mount (sent, or owed their message); BullMQ rows beside them are re-added and run as before", async () => {
    const { mount } = await createTestMount(core, 's3');
    settleOpen(mount.id);
    const sent = await sqsQueue().enqueue(request(mount.id, 'lambda.txt'));
    const pending = await sqsQueue({ broken: true }).enqueue(request(mount.id, 'owed.txt'));
    expect(pending.queuePending).toBe(true);
    expect(await owed(pending.job.id)).toBe(true);
    // A BullMQ row whose process died between its insert and its add.
    const orphan = (await enqueueJob(core.pool, { mountId: mount.id, path: 'orphan.txt', reason: 'drift', options: { recursive: false, hash: false } })).job;
    await age([sent.job.id, pending.job.id, orphan.id]);
    expect((await drainSqs()).filter((id) => id === sent.job.id)).toEqual([sent.job.id]);

    const h = scriptedHandler();
    const consumer = bullmq([mount.id]);
    await consumer.queue.start(h.handler);
    expect(await eventually(async () => ((await row(orphan.id)).status === 'succeeded' ? true : undefined), 'the BullMQ orphan to run')).toBe(true);
    // A later orphan is found by a periodic sweep, which saw the SQS rows too.
    const later = (await enqueueJob(core.pool, { mountId: mount.id, path: 'later.txt', reason: 'drift', options: { recursive: false, hash: false } })).job;
    await age([later.id]);
    await eventually(async () => ((await row(later.id)).status === 'succeeded' ? true : undefined), 'the later orphan to run');

    expect(h.calls.map((c) => c.jobId)).toEqual([orphan.id, later.id]);
    for (const r of [sent.job, pending.job]) {
      expect(await consumer.stateOf(r)).toBe('unknown');
      expect(await row(r.id)).toMatchObject({ status: 'queued', attempts: 0 });
    }
    expect(await owed(pending.job.id)).toBe(true); // still the SQS sweep's to send

    // The SQS sweep sends its own rows (owed, and idle), not a BullMQ row of an S3 mount.
    const stray = (await enqueueJob(core.pool, { mountId: mount.id, path: 'stray.txt', reason: 'drift', options: { recursive: false, hash: false } })).job;
    await age([stray.id]);
    await sqsQueue({ mountIds: [mount.id] }).sweep(SWEEP_IDLE_MS);
    const swept = await drainSqs();
    expect(swept).toEqual(expect.arrayContaining([sent.job.id, pending.job.id]));
    expect(swept).not.toContain(stray.id);
    expect(await owed(pending.job.id)).toBe(false);
  });

  it("a BullMQ producer's owed-send (its Redis connection ready) sends owed BullMQ rows, not owed SQS rows", async () => {
    const { mount } = await createTestMount(core, 's3');
    settleOpen(mount.id);
    const pending = await sqsQueue({ broken: true }).enqueue(request(mount.id, 'owed.txt'));
    expect(pending.queuePending).toBe(true);
    // Recorded by a BullMQ producer while Redis was unreachable.
    const bullOwed = (await enqueueJob(core.pool, { mountId: mount.id, path: 'bull-owed.txt', reason: 'drift', options: { recursive: false, hash: false } }, { queueOwed: true })).job;

    const producer = bullmq([mount.id]); // never started: only its 'ready' handler sends
    await eventually(async () => ((await producer.stateOf(bullOwed)) === 'waiting' ? true : undefined), 'the owed BullMQ row to be sent');
    await eventually(async () => ((await owed(bullOwed.id)) === false ? true : undefined), 'the owed BullMQ row to be unmarked');
    expect(await producer.stateOf(pending.job)).toBe('unknown');
    expect(await owed(pending.job.id)).toBe(true);
  });

  it('an audit the audit Lambda stopped at a checkpoint is left to its next invocation, whether it made the row or adopted one a BullMQ producer queued', async () => {
    const s3 = await sharedS3();
    const bucket = await s3.createBucket();
    const mount = await createMount(core.pool, { key: uniqueKey('s3'), kind: 's3', bucket, prefix: '', endpoint: s3.endpoint, region: TEST_S3_REGION });
    for (let i = 0; i < 12; i++) await putRawKey(s3.client, bucket, `f${String(i).padStart(2, '0')}.txt`, `${i}`);
    const otherBucket = await s3.createBucket();
    const other = await createMount(core.pool, { key: uniqueKey('s3'), kind: 's3', bucket: otherBucket, prefix: '', endpoint: s3.endpoint, region: TEST_S3_REGION });
    for (let i = 0; i < 12; i++) await putRawKey(s3.client, otherBucket, `g${String(i).padStart(2, '0')}.txt`, `${i}`);
    // Less than the margin left: each invocation stops at its first checkpoint (every 3 entries).
    const audit = createAuditHandler({ reconciler: { checkpointEvery: 3, batchSize: 2, s3MissingGraceMs: 5 } });

    // Made by the audit Lambda.
    const made = (await audit({ mountId: mount.id }, lambdaContext({ remainingMs: 1_000 }))).mounts[0];
    expect(made).toMatchObject({ outcome: 'stopped' });
    // Queued on BullMQ (a scheduler's audit, with its message waiting), then taken by the audit Lambda.
    const h = scriptedHandler();
    const name = `transport-${randomUUID().slice(0, 8)}`;
    const producer = bullmq([other.id], name);
    const queued = await producer.queue.enqueue({ mountId: other.id, path: '', reason: 'audit', recursive: true, hash: false });
    expect(await producer.stateOf(queued.job)).toBe('waiting');
    const adopted = (await audit({ mountId: other.id }, lambdaContext({ remainingMs: 1_000 }))).mounts[0];
    expect(adopted).toMatchObject({ outcome: 'stopped', jobId: queued.job.id });

    const ids = [made?.jobId as number, queued.job.id];
    const before = await Promise.all(ids.map(row));
    await age(ids);
    // A consumer (an agent) over both mounts: its start sweep, its periodic sweeps, and the
    // delivery of the adopted row's message.
    const consumer = bullmq([mount.id, other.id], name);
    await consumer.queue.start(h.handler);
    await eventually(async () => (['completed', 'unknown'].includes(await consumer.stateOf(queued.job)) ? true : undefined), 'the BullMQ message to be delivered');
    // Another BullMQ row of the first mount, found by a periodic sweep: the sweeps went past the audits.
    const orphan = (await enqueueJob(core.pool, { mountId: mount.id, path: 'f00.txt', reason: 'drift', options: { recursive: false, hash: false } })).job;
    await age([orphan.id]);
    await eventually(async () => ((await row(orphan.id)).status === 'succeeded' ? true : undefined), 'the BullMQ orphan to run');

    expect(h.calls.map((c) => c.jobId)).toEqual([orphan.id]);
    expect(await consumer.stateOf(before[0] as ReconcileJobRow)).toBe('unknown');
    for (const [i, id] of ids.entries()) {
      const b = before[i] as ReconcileJobRow;
      expect(await row(id)).toMatchObject({ status: 'queued', attempts: b.attempts, checkpoint: b.checkpoint });
    }
    // The next invocations continue them.
    const whole = createAuditHandler({ reconciler: { s3MissingGraceMs: 5 } });
    expect((await whole({ mountId: mount.id }, lambdaContext({ remainingMs: 15 * 60_000 }))).mounts[0]).toMatchObject({ jobId: ids[0], outcome: 'succeeded' });
    expect((await whole({ mountId: other.id }, lambdaContext({ remainingMs: 15 * 60_000 }))).mounts[0]).toMatchObject({ jobId: ids[1], outcome: 'succeeded' });
  });

  it('reconcilePath records the transport its core routes the mount to: its row, open while the run goes on (or after it was killed), is the SQS sweep’s in AWS, not an agent’s', async () => {
    const s3 = await sharedS3();
    const bucket = await s3.createBucket();
    await putRawKey(s3.client, bucket, 'a.txt', 'a');
    await putRawKey(s3.client, bucket, 'b.txt', 'b');
    // Storage answers nothing until released: the inline runs hang mid-flight, as in a Lambda killed at its timeout.
    const proxy = await startS3Proxy(s3.endpoint);
    let release = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    proxy.beforeForward(() => gate);
    cleanups.push(async () => (release(), proxy.stop()));
    const mount = await createMount(core.pool, { key: uniqueKey('s3'), kind: 's3', bucket, prefix: '', endpoint: proxy.endpoint, region: TEST_S3_REGION });
    settleOpen(mount.id);
    const routed = { ...core, reconcile: new RoutedReconcileQueue(core.pool, sqsQueue(), core.reconcile) };
    const inAws = reconcilePath(routed, request(mount.id, 'a.txt', { reason: 's3_event' }));
    const onPrem = reconcilePath(core, request(mount.id, 'b.txt', { reason: 's3_event' }));
    const open = await eventually(async () => {
      const { rows } = await core.pool.query<ReconcileJobRow>(`SELECT id, path, created_at AS "createdAt" FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND status = 'running' ORDER BY path`, [mount.id]);
      return rows.length === 2 ? rows : undefined;
    }, 'both runs to start');
    const [a, b] = open as [ReconcileJobRow, ReconcileJobRow];
    await age([a.id, b.id]);

    // A BullMQ consumer's sweep re-adds the on-prem row (its delivery waits for the run), not the AWS one.
    const consumer = bullmq([mount.id]);
    await consumer.queue.start(scriptedHandler().handler);
    await eventually(async () => ((await consumer.stateOf(b)) !== 'unknown' ? true : undefined), 'the on-prem row to be re-added');
    expect(await consumer.stateOf(a)).toBe('unknown');
    // While the runs go on (their run locks held) the SQS sweep sends neither: each run's end settles its row.
    const sweeper = sqsQueue({ mountIds: [mount.id] });
    expect(await sweeper.sweep(SWEEP_IDLE_MS)).toBe(0);
    expect(await drainSqs()).toEqual([]);

    release();
    expect(await inAws).toMatchObject({ outcome: 'succeeded', job: { id: a.id } });
    expect(await onPrem).toMatchObject({ outcome: 'succeeded', job: { id: b.id } });
    await consumer.queue.close();
    // Killed mid-run instead (the row left running, its run lock gone with the session): the SQS
    // sweep sends the AWS row (the reconcile Lambda takes it over), not the on-prem one.
    await core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'running', finished_at = NULL WHERE id = ANY ($1::bigint[])`, [[a.id, b.id]]);
    await age([a.id, b.id]);
    await sweeper.sweep(SWEEP_IDLE_MS);
    const swept = await drainSqs();
    expect(swept).toContain(a.id);
    expect(swept).not.toContain(b.id);
  });
});
