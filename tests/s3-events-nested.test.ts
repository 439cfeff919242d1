import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import type { SQSEvent } from 'aws-lambda';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { handler } from '../lambdas/s3-events.ts';
import { closeLambdaCore } from '../lambdas/support/core.ts';
import { logger } from '../lambdas/support/powertools.ts';
import { createMount, updateMount } from '../shared/catalogue/mounts.ts';
import { findLiveByPath } from '../shared/catalogue/nodes.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { reconcilePath } from '../shared/reconcile/reconcile-path.ts';
import { processS3Events, type S3EventSummary } from '../shared/reconcile/s3-events/process.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { sharedS3, startFilestore, stopS3, uniqueKey } from './support/filestore.ts';
import { lambdaContext } from './support/lambda-context.ts';
import { startS3Notifications, type S3Notifications } from './support/s3-notifications.ts';
import { startS3Proxy, type S3Proxy } from './support/s3-proxy.ts';
import { putRawKey, rawKeys, testS3Client } from './support/s3.ts';
import { createSqsPoller, type SqsPoller } from './support/sqs-poller.ts';

/**
 * Nested S3 mounts of one bucket (an outer one of the whole bucket, an inner one of "tenant/")
 * and paused mounts, as the S3-event handler and the audit see them.
 */
const fixture = (name: string) => JSON.parse(readFileSync(new URL(`./fixtures/lambda/${name}`, import.meta.url), 'utf8')) as SQSEvent;
const sqsEvent = (bodies: string[]): SQSEvent => {
  const template = fixture('s3-sqs-put.json').Records[0] as SQSEvent['Records'][number];
  return { Records: bodies.map((body, i) => ({ ...template, messageId: `msg-${i}`, body })) };
};
const eventBody = (bucket: string, key: string, sequencer: string, eventName = 'ObjectCreated:Put') =>
  JSON.stringify({ Records: [{ eventVersion: '2.1', eventSource: 'aws:s3', eventName, s3: { bucket: { name: bucket }, object: { key, sequencer } } }] });

describe('S3 events and audits with nested and paused mounts', () => {
  let core: Filestore;
  let proxy: S3Proxy;
  let bridge: S3Notifications;
  let poller: SqsPoller;
  let raw: S3Client;
  let bucket: string;
  let outer: Mount;
  let inner: Mount;
  const saved = { ...process.env };

  beforeAll(async () => {
    const s3 = await sharedS3();
    proxy = await startS3Proxy(s3.endpoint);
    Object.assign(process.env, {
      DATABASE_URL: TEST_DATABASE_URL,
      REDIS_URL: TEST_REDIS_URL,
      FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_REGION: 'us-east-1',
      FILESTORE_S3_MISSING_GRACE_MS: '10',
      POWERTOOLS_LOG_LEVEL: 'ERROR',
      POWERTOOLS_METRICS_DISABLED: 'true',
    });
    logger.setLogLevel('ERROR');
    core = await startFilestore({ recover: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } });
    raw = testS3Client(proxy.endpoint);
    bridge = await startS3Notifications({ proxy, endpoint: s3.endpoint, s3: s3.client, visibilityTimeout: 1, maxReceiveCount: 3 });
    poller = createSqsPoller({ sqs: bridge.sqs, queueUrl: bridge.queueUrl, queueArn: bridge.queueArn, handler, pollIntervalMs: 20 });
  });
  afterAll(async () => {
    await bridge?.stop();
    await closeLambdaCore();
    await core?.close();
    await proxy?.stop();
    await stopS3();
    process.env = saved;
  });
  beforeEach(async () => {
    const s3 = await sharedS3();
    bucket = await s3.createBucket();
    outer = await createMount(core.pool, { key: uniqueKey('outer'), kind: 's3', bucket, prefix: '', endpoint: proxy.endpoint, region: 'us-east-1' });
    inner = await nest();
  });
  const nest = () => createMount(core.pool, { key: uniqueKey('inner'), kind: 's3', bucket, prefix: 'tenant/', endpoint: proxy.endpoint, region: 'us-east-1' });
  const audit = async (m: Mount) =>
    (await reconcilePath(core, { mountId: m.id, path: '', reason: 'audit', recursive: true, hash: false }, {}, { s3MissingGraceMs: 5 })).outcome;
  const active = async (m: Mount) =>
    (await core.pool.query<{ path: string }>(`SELECT path FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND consistency_state = 'ACTIVE' ORDER BY path`, [m.id])).rows.map((r) => r.path);

  /** Every row the mount ever had below the inner mount's staging area, deleted ones too. */
  const stagingRows = async (m: Mount) =>
    (await core.pool.query<{ path: string }>(`SELECT path FROM filestore.nodes WHERE mount_id = $1 AND path LIKE 'tenant/.filestore-staging%'`, [m.id])).rows.map((r) => r.path);
  const process1 = async (bodies: string[]) => {
    let summary: S3EventSummary | undefined;
    const log = { info: (_: string, d: Record<string, unknown>) => void (summary = d as unknown as S3EventSummary), warn: () => undefined };
    const r = await processS3Events(core, sqsEvent(bodies), lambdaContext(), { s3MissingGraceMs: 5, log });
    return { failed: r.batchItemFailures.length, summary: summary as S3EventSummary };
  };

  it("the inner mount's staging key is no file of the outer mount: its event is skipped as staging (reviewer's reproduction)", async () => {
    const key = 'tenant/.filestore-staging/j42.upload'; // a presigned upload's staged bytes of the inner mount
    await putRawKey(raw, bucket, key, 'staged');
    const { failed, summary } = await process1([eventBody(bucket, key, '0A'), eventBody(bucket, 'tenant/.filestore-staging/j42.upload', '0B', 'ObjectRemoved:Delete')]);
    expect(failed).toBe(0);
    expect(summary.skipped).toMatchObject({ staging: 1, outside_mounts: 0 });
    expect(summary.judged).toBe(0);
    expect(await findLiveByPath(core.pool, outer.id, 'tenant/.filestore-staging/j42.upload')).toBeNull();
    expect(await stagingRows(outer)).toEqual([]);
  });

  it("Filestore's writes and presigned uploads through the inner mount leave no trace in the outer mount's staging area (events through SQS)", async () => {
    const drain = async () => {
      await bridge.settled();
      await poller.drain({ before: () => bridge.settled() });
    };
    await core.orchestrator.writeFile(inner.id, { path: 'own.txt' }, Readable.from([Buffer.from('mine')]));
    await core.orchestrator.copy(inner.id, { path: 'own.txt', targetPath: 'copy.txt' });
    // The staged bytes of a presigned upload stay in the bucket until it is completed: their event is processed meanwhile.
    const up = await core.orchestrator.beginUpload(inner.id, { path: 'up.bin', sizeBytes: 6 });
    expect((await fetch(up.url, { method: 'PUT', headers: up.headers, body: 'staged' })).status).toBe(200);
    await drain();
    expect(await stagingRows(outer)).toEqual([]);
    await core.orchestrator.completeUpload(up.entryId);
    await drain();
    expect(await stagingRows(outer)).toEqual([]);
    expect((await findLiveByPath(core.pool, inner.id, 'up.bin'))?.sizeBytes).toBe(6);
    // The written files are in storage below "tenant/", so they are files of the outer mount too.
    expect((await findLiveByPath(core.pool, outer.id, 'tenant/own.txt'))?.consistencyState).toBe('ACTIVE');
    const { rows } = await core.pool.query(`SELECT 1 FROM filestore.reconciliation_jobs WHERE mount_id = $1`, [inner.id]);
    expect(rows).toEqual([]); // the inner mount's own writes: no drift there
  });

  it("the audit of the outer mount leaves the inner mount's staging area out (the inner mount's files are the outer's too)", async () => {
    await putRawKey(raw, bucket, 'tenant/.filestore-staging/j7.upload', 'staged');
    await putRawKey(raw, bucket, 'tenant/data.txt', 'data');
    await putRawKey(raw, bucket, 'top.txt', 'top');
    expect(await audit(outer)).toBe('succeeded');
    expect(await active(outer)).toEqual(['', 'tenant', 'tenant/data.txt', 'top.txt']);
    expect(await stagingRows(outer)).toEqual([]);
    expect(await audit(inner)).toBe('succeeded');
    expect(await active(inner)).toEqual(['', 'data.txt']);
    expect(await rawKeys(raw, bucket, 'tenant/.filestore-staging/')).toEqual(['tenant/.filestore-staging/j7.upload']); // untouched in storage
  });

  it('a mount nested into a catalogued one: the next audit of the outer mount removes what it had of the staging area', async () => {
    const s3 = await sharedS3();
    bucket = await s3.createBucket();
    outer = await createMount(core.pool, { key: uniqueKey('outer'), kind: 's3', bucket, prefix: '', endpoint: proxy.endpoint, region: 'us-east-1' });
    await putRawKey(raw, bucket, 'tenant/.filestore-staging/j8.upload', 'staged');
    expect(await audit(outer)).toBe('succeeded');
    expect(await active(outer)).toContain('tenant/.filestore-staging/j8.upload'); // no nested mount yet: an ordinary path
    await nest();
    expect(await audit(outer)).toBe('succeeded');
    expect(await active(outer)).toEqual(['', 'tenant']);
  });

  it('events of a paused mount are applied (a pause refuses Filestore writes, the catalogue keeps following storage)', async () => {
    await updateMount(core.pool, inner.id, { state: 'paused' });
    await updateMount(core.pool, outer.id, { state: 'paused' });
    await putRawKey(raw, bucket, 'tenant/during-pause.txt', 'changed while paused');
    const { failed, summary } = await process1([eventBody(bucket, 'tenant/during-pause.txt', '0C')]);
    expect(failed).toBe(0);
    expect(summary.skipped).toMatchObject({ outside_mounts: 0 });
    for (const [m, p] of [[inner, 'during-pause.txt'], [outer, 'tenant/during-pause.txt']] as const) {
      const node = await findLiveByPath(core.pool, m.id, p);
      expect(node?.consistencyState).toBe('ACTIVE');
      expect(node?.sizeBytes).toBe(Buffer.byteLength('changed while paused'));
    }
  });
});
