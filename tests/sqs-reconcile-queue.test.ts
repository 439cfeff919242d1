import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CreateQueueCommand, DeleteMessageCommand, DeleteQueueCommand, GetQueueAttributesCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { Queue } from 'bullmq';
import { interceptLocalhostDns } from 'fauxqs';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditHandler } from '../lambdas/audit.ts';
import { createReconcileHandler } from '../lambdas/reconcile.ts';
import { closeLambdaCore } from '../lambdas/support/core.ts';
import { enqueueJob, findJob } from '../shared/catalogue/jobs.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { acquire, lockKey, pathLocks, release } from '../shared/catalogue/locks.ts';
import { bullJobId } from '../shared/queues/bullmq-queue.ts';
import { tryLockJobRun } from '../shared/reconcile/job-run-lock.ts';
import { SqsReconcileQueue } from '../shared/queues/sqs-queue.ts';
import { startTestServer, type TestServer } from './support/api.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { sharedS3, stopS3, uniqueKey } from './support/filestore.ts';
import { lambdaContext } from './support/lambda-context.ts';
import { putRawKey, TEST_S3_CREDENTIALS, TEST_S3_REGION } from './support/s3.ts';

/**
 * The reconcile queue in AWS (no long-running worker): POST /v1/reconcile for an S3 mount
 * records the job row and sends a message to the SQS queue (FILESTORE_RECONCILE_QUEUE_URL);
 * lambdas/reconcile.ts, fed SQS batches as Lambda's event source mapping feeds it, runs the job.
 * SQS retries (visibility timeout) and redrives to the DLQ after maxReceiveCount deliveries;
 * the row counts the attempts. Local mounts' jobs still go to their agent's BullMQ queue.
 * The poller below is what the event source mapping does: receive, call, delete what did not fail.
 */

const MAX_RECEIVES = 5;
const fixture = JSON.parse(readFileSync(new URL('./fixtures/lambda/sqs-reconcile.json', import.meta.url), 'utf8')) as SQSEvent;

let sqs: SQSClient;
let queueUrl: string;
let dlqUrl: string;
let server: TestServer;
let redis: Redis;
let restoreDns: (() => void) | undefined;
const queueName = `rq-${randomBytes(4).toString('hex')}`;
// No backoff: a failed message is visible again at once (in AWS: 2 s, doubling).
const handler = createReconcileHandler({ backoffMs: 0, reconciler: { s3MissingGraceMs: 5 } });
const lookAgainAtOnce = createReconcileHandler({ backoffMs: 0, busyRetrySeconds: 0, reconciler: { s3MissingGraceMs: 5 } });
const failingListing = createReconcileHandler({
  backoffMs: 0,
  reconciler: {
    s3MissingGraceMs: 5,
    // A listing that fails before its first entry.
    wrapWalk: async function* () {
      throw new Error('listing failed');
    },
  },
});

beforeAll(async () => {
  const s3 = await sharedS3();
  sqs = new SQSClient({ endpoint: s3.endpoint, region: TEST_S3_REGION, credentials: TEST_S3_CREDENTIALS });
  const name = `filestore-reconcile-${randomBytes(4).toString('hex')}`;
  dlqUrl = (await sqs.send(new CreateQueueCommand({ QueueName: `${name}-dlq` }))).QueueUrl as string;
  const dlqArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ['QueueArn'] }))).Attributes?.QueueArn as string;
  const created = (
    await sqs.send(
      new CreateQueueCommand({
        QueueName: name,
        Attributes: { VisibilityTimeout: '60', RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: String(MAX_RECEIVES) }) },
      }),
    )
  ).QueueUrl as string;
  // fauxqs names queues sqs.<region>.localhost:<port>/…; the Lambda's client (no endpoint of its own) goes where the URL says.
  queueUrl = created;
  restoreDns = interceptLocalhostDns();
  Object.assign(process.env, {
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: 'inline',
    FILESTORE_RECONCILE_QUEUE_URL: queueUrl,
    AWS_REGION: TEST_S3_REGION,
    AWS_ACCESS_KEY_ID: TEST_S3_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_S3_CREDENTIALS.secretAccessKey,
    POWERTOOLS_LOG_LEVEL: process.env.LOG_LEVEL ?? 'ERROR',
    POWERTOOLS_METRICS_DISABLED: 'true',
  });
  // The API as the API Lambda wires it: S3 mounts' jobs to SQS, local mounts' to BullMQ.
  server = await startTestServer({ auth: false, filestore: { reconcile: { consume: false, queueName, sqs: { queueUrl, client: sqs } } } });
  redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 3 });
});

afterAll(async () => {
  await closeLambdaCore();
  await server?.close();
  redis?.disconnect();
  sqs?.destroy();
  await stopS3();
  restoreDns?.();
});

async function s3Mount(o: { endpoint?: string } = {}) {
  const s3 = await sharedS3();
  const bucket = await s3.createBucket();
  const mount = await createMount(server.core.pool, { key: uniqueKey('s3'), kind: 's3', bucket, prefix: '', endpoint: o.endpoint ?? s3.endpoint, region: TEST_S3_REGION });
  return { mount, bucket, client: s3.client };
}

const postReconcile = async (body: Record<string, unknown>) => {
  const res = await fetch(`${server.url}/v1/reconcile`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status).toBe(202);
  return (await res.json()) as { id: number; status: string };
};

const receive = async (url: string) =>
  (await sqs.send(new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 0, MessageSystemAttributeNames: ['All'] }))).Messages ?? [];

/** One poll of the event source mapping: a batch of what is visible, the handler, deletes of what did not fail. */
async function poll(h = handler): Promise<{ records: SQSRecord[]; response: SQSBatchResponse | null }> {
  const messages = await receive(queueUrl);
  if (messages.length === 0) return { records: [], response: null };
  const template = fixture.Records[0] as SQSRecord;
  const records: SQSRecord[] = messages.map((m) => ({
    ...template,
    messageId: m.MessageId as string,
    receiptHandle: m.ReceiptHandle as string,
    body: m.Body as string,
    md5OfBody: m.MD5OfBody as string,
    attributes: { ...template.attributes, ...(m.Attributes as Record<string, string>) },
  }));
  const response = await h({ Records: records }, lambdaContext({ remainingMs: 15 * 60_000 }));
  const failed = new Set(response.batchItemFailures.map((f) => f.itemIdentifier));
  for (const r of records) if (!failed.has(r.messageId)) await sqs.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: r.receiptHandle }));
  return { records, response };
}

const bodies = (records: SQSRecord[]) => records.map((r) => JSON.parse(r.body) as { rowId: number });

describe('the reconcile queue on SQS and the reconcile Lambda', () => {
  it('POST /v1/reconcile for an S3 mount records the row and sends one message; the Lambda runs it to succeeded', async () => {
    const { mount, bucket, client } = await s3Mount();
    await putRawKey(client, bucket, 'found/new.txt', 'made behind Filestore');
    const job = await postReconcile({ mountId: mount.key });
    expect(job.status).toBe('queued');

    const { records, response } = await poll();
    expect(bodies(records)).toEqual([{ rowId: job.id, mountId: mount.id, path: '', reason: 'manual' }]);
    expect(response?.batchItemFailures).toEqual([]);
    expect(await findJob(server.core.pool, job.id)).toMatchObject({ status: 'succeeded', attempts: 1, result: expect.objectContaining({ discovered: 2 }) });
    const node = await fetch(`${server.url}/v1/nodes/by-path?mountId=${mount.key}&path=found/new.txt`);
    expect(node.status).toBe(200);
    expect(await receive(queueUrl)).toEqual([]);
  });

  it('a failing job: each attempt a batch item failure counted on the row; its last attempt fails the row and the message goes to the DLQ', async () => {
    const { mount } = await s3Mount();
    const job = await postReconcile({ mountId: mount.key, path: 'sub', recursive: true });
    // The bucket's listing fails part-way each time: a retryable failure.
    await attemptsFail(job.id, failingListing);
    expect(await findJob(server.core.pool, job.id)).toMatchObject({ status: 'failed', attempts: MAX_RECEIVES, error: expect.objectContaining({ retryable: true }) });
  });

  async function attemptsFail(jobId: number, h = handler): Promise<void> {
    for (let attempt = 1; attempt <= MAX_RECEIVES; attempt++) {
      const { records, response } = await poll(h);
      expect(bodies(records).map((b) => b.rowId)).toEqual([jobId]);
      expect(response?.batchItemFailures).toEqual([{ itemIdentifier: records[0]?.messageId }]);
      expect(await findJob(server.core.pool, jobId)).toMatchObject({ attempts: attempt, status: attempt < MAX_RECEIVES ? 'queued' : 'failed' });
    }
    // Its next receive redrives it.
    expect((await poll(h)).records).toEqual([]);
    expect(bodies(await receiveAll(dlqUrl)).map((b) => b.rowId)).toEqual([jobId]);
  }

  it('a row that runs killed on every delivery (longer than the function timeout) ends failed INTERRUPTED once its attempts are spent: not run again, its message deleted, nothing to the DLQ', async () => {
    const { mount, bucket, client } = await s3Mount();
    await putRawKey(client, bucket, 'big/x.txt', 'x');
    const job = await postReconcile({ mountId: mount.key, path: 'big', recursive: true });
    // Every delivery so far claimed the row and was killed mid-run: it says running, all attempts used.
    // (The last went to the DLQ; the sweep sent the row again: the message below.)
    await server.core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'running', attempts = $2 WHERE id = $1`, [job.id, MAX_RECEIVES]);
    const { records, response } = await poll();
    expect(bodies(records).map((b) => b.rowId)).toEqual([job.id]);
    expect(response?.batchItemFailures).toEqual([]);
    expect(await findJob(server.core.pool, job.id)).toMatchObject({
      status: 'failed',
      attempts: MAX_RECEIVES,
      result: null,
      error: expect.objectContaining({ code: 'INTERRUPTED', retryable: false, attempts: MAX_RECEIVES }),
    });
    // Not run: the file the run would have catalogued is not.
    const node = await fetch(`${server.url}/v1/nodes/by-path?mountId=${mount.key}&path=big/x.txt`);
    expect(node.status).toBe(404);
    expect(await receive(queueUrl)).toEqual([]);
    expect(await receiveAll(dlqUrl)).toEqual([]);
    // With an attempt left, the same row is taken over and run.
    const again = await postReconcile({ mountId: mount.key, path: 'big', recursive: true });
    await server.core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'running', attempts = $2 WHERE id = $1`, [again.id, MAX_RECEIVES - 1]);
    expect((await poll()).response?.batchItemFailures).toEqual([]);
    expect(await findJob(server.core.pool, again.id)).toMatchObject({ status: 'succeeded', attempts: MAX_RECEIVES });
  });

  it('a requested full audit while another audit of the mount runs is put off without spending an attempt (not failed into the DLQ), then runs', async () => {
    const { mount, bucket, client } = await s3Mount();
    await putRawKey(client, bucket, 'seen.txt', 'x');
    // The audit Lambda's scheduled audit of the mount runs all along (it holds the engine's audit lock).
    const other = await server.core.pool.connect();
    await other.query('SELECT pg_advisory_lock($1::bigint)', [lockKey('audit', mount.id).toString()]);
    const job = await postReconcile({ mountId: mount.key, path: '', recursive: true });
    try {
      for (let delivery = 1; delivery <= MAX_RECEIVES + 2; delivery++) {
        const { records, response } = await poll(lookAgainAtOnce);
        expect(bodies(records).map((b) => b.rowId)).toEqual([job.id]);
        expect(response?.batchItemFailures).toEqual([]);
        expect(await findJob(server.core.pool, job.id)).toMatchObject({ status: 'queued', attempts: 0 });
      }
    } finally {
      await other.query('SELECT pg_advisory_unlock_all()');
      other.release();
    }
    expect((await poll(lookAgainAtOnce)).response?.batchItemFailures).toEqual([]);
    expect(await findJob(server.core.pool, job.id)).toMatchObject({ status: 'succeeded', attempts: 1, result: expect.objectContaining({ discovered: 1 }) });
    expect(await receive(queueUrl)).toEqual([]);
    expect(await receiveAll(dlqUrl)).toEqual([]);
  });

  it('a pool of one connection is refused with CONFIG_ERROR naming FILESTORE_DB_POOL_SIZE (a full audit holds one for its lock and queries on another)', async () => {
    process.env.FILESTORE_DB_POOL_SIZE = '1';
    await closeLambdaCore();
    try {
      await expect(handler(fixture, lambdaContext())).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_DB_POOL_SIZE') });
    } finally {
      delete process.env.FILESTORE_DB_POOL_SIZE;
      await closeLambdaCore();
    }
  });

  it('sweeps while a row runs send nothing for it: the look-agains of a long run do not multiply', async () => {
    const { mount } = await s3Mount();
    // A queue of its own, swept for this mount only: the catalogue is shared with other tests.
    const url = (await sqs.send(new CreateQueueCommand({ QueueName: `sweep-${randomBytes(4).toString('hex')}` }))).QueueUrl as string;
    const queue = new SqsReconcileQueue({ pool: server.core.pool, mountIds: [mount.id] }, { queueUrl: url, client: sqs });
    const { job } = await queue.enqueue({ mountId: mount.id, path: 'long', reason: 'manual', recursive: true, hash: false });
    const lock = await tryLockJobRun(server.core.pool, job.id); // a run of the row under way
    expect(lock).not.toBeNull();
    try {
      await server.core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'running', attempts = 1, updated_at = now() - interval '1 hour' WHERE id = $1`, [job.id]);
      for (let i = 0; i < 4; i++) expect(await queue.sweep()).toBe(0);
      expect(await waiting(url)).toBe(1); // the message it was enqueued with
    } finally {
      await lock?.release();
    }
    // Its run over (killed: the row still says running), the next sweep sends it once.
    expect(await queue.sweep()).toBe(1);
    expect(await waiting(url)).toBe(2);
    // Settled, so that no other test's sweep sends it.
    await server.core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'cancelled' WHERE id = $1`, [job.id]);
    await sqs.send(new DeleteQueueCommand({ QueueUrl: url }));
  });
  it('an audit queued on SQS runs in many invocations: each stops at a checkpoint and sends its continuation; one row, no attempt spent per stop', async () => {
    const { mount, bucket, client } = await s3Mount();
    for (let i = 0; i < 12; i++) await putRawKey(client, bucket, `d/f${String(i).padStart(2, '0')}.txt`, `x${i}`);
    const job = await postReconcile({ mountId: mount.key });
    // Less than the margin left, a checkpoint every 3 entries.
    const tiny = createReconcileHandler({ backoffMs: 0, marginMs: 60_000, reconciler: { checkpointEvery: 3, batchSize: 2, s3MissingGraceMs: 5 } });
    const seen: number[] = [];
    for (let i = 0; i < 50; i++) {
      const batch = await poll((e, _c) => tiny(e, lambdaContext({ remainingMs: 1_000 })));
      if (batch.records.length === 0) break;
      expect(batch.response?.batchItemFailures).toEqual([]);
      seen.push(...bodies(batch.records).map((b) => b.rowId));
    }
    expect(seen.length).toBeGreaterThan(3);
    expect(new Set(seen)).toEqual(new Set([job.id]));
    expect(await findJob(server.core.pool, job.id)).toMatchObject({ status: 'succeeded', attempts: 1, checkpoint: null, result: expect.objectContaining({ discovered: 13 }) });
  });

  it('a delivery of a job another run holds is put off, not failed: no attempt, no delivery spent; it runs once the holder lets go', async () => {
    const { mount } = await s3Mount();
    const job = await postReconcile({ mountId: mount.key, path: 'x.txt' });
    const held = await tryLockJobRun(server.core.pool, job.id);
    const soon = createReconcileHandler({ backoffMs: 0, busyRetrySeconds: 0 });
    try {
      const { records, response } = await poll(soon);
      expect(bodies(records).map((b) => b.rowId)).toEqual([job.id]);
      expect(response?.batchItemFailures).toEqual([]);
      expect(await findJob(server.core.pool, job.id)).toMatchObject({ status: 'queued', attempts: 0 });
    } finally {
      await held?.release();
    }
    const again = await poll(soon);
    expect(bodies(again.records).map((b) => b.rowId)).toEqual([job.id]);
    expect(again.records[0]?.attributes.ApproximateReceiveCount).toBe('1');
    expect(await findJob(server.core.pool, job.id)).toMatchObject({ status: 'succeeded', attempts: 1 });
    expect(await receive(queueUrl)).toEqual([]);
  });

  it("a run's follow-up job (paths another writer held) goes to SQS too, and runs from there once they are free", async () => {
    const { mount, bucket, client } = await s3Mount();
    await putRawKey(client, bucket, 'docs/a.txt', 'a');
    await putRawKey(client, bucket, 'free.txt', 'free');
    // A command works on docs/a.txt: it holds the path (and docs shared) all through the run.
    const holder = await server.core.pool.connect();
    const locks = pathLocks(mount.id, ['docs/a.txt']);
    await acquire(holder, locks);
    const patient = createReconcileHandler({ backoffMs: 0, reconciler: { lockWaitMs: 50, s3MissingGraceMs: 5 } });
    const job = await postReconcile({ mountId: mount.key });
    let followUp: { id: number } | undefined;
    try {
      const first = await poll(patient);
      expect(bodies(first.records).map((b) => b.rowId)).toEqual([job.id]);
      expect(await findJob(server.core.pool, job.id)).toMatchObject({ status: 'succeeded', result: expect.objectContaining({ deferred: expect.any(Number) }) });
      const { rows } = await server.core.pool.query<{ id: number }>(`SELECT id FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND options ? 'followUp'`, [mount.id]);
      expect(rows).toHaveLength(1);
      followUp = rows[0];
    } finally {
      await release(holder, locks);
      holder.release();
    }
    const second = await poll(patient);
    expect(bodies(second.records).map((b) => b.rowId)).toEqual([followUp?.id]);
    expect(await findJob(server.core.pool, followUp?.id as number)).toMatchObject({ status: 'succeeded', result: expect.objectContaining({ deferred: 0 }) });
    const node = await fetch(`${server.url}/v1/nodes/by-path?mountId=${mount.key}&path=docs/a.txt`);
    expect(node.status).toBe(200);
  });

  it('jobs of S3 mounts left without a message (a send that failed, a message lost) are sent by the next audit invocation, and run', async () => {
    const { mount, bucket, client } = await s3Mount();
    await putRawKey(client, bucket, 'one.txt', '1');
    await putRawKey(client, bucket, 'two.txt', '2');
    // SQS unreachable when the job was requested: recorded, owed its message.
    const unreachable = new SQSClient({ endpoint: 'http://127.0.0.1:9', region: TEST_S3_REGION, credentials: TEST_S3_CREDENTIALS, maxAttempts: 1 });
    const away = new SqsReconcileQueue({ pool: server.core.pool }, { queueUrl, client: unreachable });
    const owed = await away.enqueue({ mountId: mount.id, path: 'one.txt', reason: 'manual', recursive: false, hash: false });
    expect(owed.queuePending).toBe(true);
    unreachable.destroy();
    // A row of the SQS queue whose message was lost long ago (inserted, never sent).
    const lost = (await enqueueJob(server.core.pool, { mountId: mount.id, path: 'two.txt', reason: 'manual', options: { recursive: false, hash: false } }, { transport: 'sqs' })).job;
    await server.core.pool.query(`UPDATE filestore.reconciliation_jobs SET updated_at = now() - interval '1 hour' WHERE id = $1`, [lost.id]);
    expect(await receive(queueUrl)).toEqual([]);

    const audit = await createAuditHandler({ reconciler: { s3MissingGraceMs: 5 } })({ mountId: mount.id }, lambdaContext({ remainingMs: 15 * 60_000 }));
    expect(audit.mounts[0]).toMatchObject({ outcome: 'succeeded' });
    const { records, response } = await poll();
    expect(bodies(records).map((b) => b.rowId).sort((a, b) => a - b)).toEqual([owed.job.id, lost.id]);
    expect(response?.batchItemFailures).toEqual([]);
    for (const id of [owed.job.id, lost.id]) expect(await findJob(server.core.pool, id)).toMatchObject({ status: 'succeeded', attempts: 1 });
  });

  it('records reached once the invocation is out of time are sent on untouched, and run at the next invocation', async () => {
    const { mount } = await s3Mount();
    const a = await postReconcile({ mountId: mount.key, path: 'a.txt' });
    const b = await postReconcile({ mountId: mount.key, path: 'b.txt' });
    // Fewer than the margin left: the first record runs (a run always does), the second waits.
    const late = createReconcileHandler({ backoffMs: 0 });
    const first = await poll((e) => late(e, lambdaContext({ remainingMs: 1_000 })));
    expect(bodies(first.records).map((r) => r.rowId)).toEqual([a.id, b.id]);
    expect(first.response?.batchItemFailures).toEqual([]);
    expect(await findJob(server.core.pool, a.id)).toMatchObject({ status: 'succeeded', attempts: 1 });
    expect(await findJob(server.core.pool, b.id)).toMatchObject({ status: 'queued', attempts: 0 });
    const second = await poll();
    expect(bodies(second.records).map((r) => r.rowId)).toEqual([b.id]);
    expect(second.records[0]?.attributes.ApproximateReceiveCount).toBe('1');
    expect(await findJob(server.core.pool, b.id)).toMatchObject({ status: 'succeeded', attempts: 1 });
  });

  it('a message that names no job is a batch item failure until the DLQ takes it', async () => {
    await sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: 'not a job' }));
    for (let i = 1; i <= MAX_RECEIVES; i++) {
      const { records, response } = await poll();
      expect(records.map((r) => r.body)).toEqual(['not a job']);
      expect(response?.batchItemFailures).toHaveLength(1);
    }
    expect((await poll()).records).toEqual([]);
    expect((await receiveAll(dlqUrl)).map((r) => r.body)).toEqual(['not a job']);
  });

  it("a local mount's job still goes to its agent's BullMQ queue, not to SQS", async () => {
    const agentId = `agent-${randomBytes(3).toString('hex')}`;
    const mount = await createMount(server.core.pool, { key: uniqueKey('local'), kind: 'local', rootPath: `/tmp/${uniqueKey('never-made')}`, agentId }); // a root of its own: the catalogue is shared with other test files, and /tmp would hold their roots
    const job = await postReconcile({ mountId: mount.key });
    const row = await findJob(server.core.pool, job.id);
    const agentQueue = new Queue(`${queueName}-${agentId}`, { connection: redis, prefix: server.core.queuePrefix });
    try {
      const bull = await agentQueue.getJob(bullJobId(row as NonNullable<typeof row>));
      expect(bull?.data).toMatchObject({ rowId: job.id, mountId: mount.id });
      expect(await receive(queueUrl)).toEqual([]);
    } finally {
      await agentQueue.obliterate({ force: true });
      await agentQueue.close();
    }
  });
});

/** Messages of a queue, visible or delayed. */
async function waiting(url: string): Promise<number> {
  const a = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesDelayed', 'ApproximateNumberOfMessagesNotVisible'] }))).Attributes ?? {};
  return Number(a.ApproximateNumberOfMessages ?? 0) + Number(a.ApproximateNumberOfMessagesDelayed ?? 0) + Number(a.ApproximateNumberOfMessagesNotVisible ?? 0);
}

/** Every message of a queue (the DLQ), deleted as read. */
async function receiveAll(url: string): Promise<SQSRecord[]> {
  const out = await receive(url);
  for (const m of out) await sqs.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: m.ReceiptHandle as string }));
  return out.map((m) => ({ body: m.Body as string }) as SQSRecord);
}
