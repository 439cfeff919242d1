import { CopyObjectCommand, DeleteObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handler } from '../lambdas/s3-events.ts';
import { logger } from '../lambdas/support/powertools.ts';
import { closeLambdaCore } from '../lambdas/support/core.ts';
import { copySource } from '../shared/backends/s3/keys.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { reconcilePath } from '../shared/reconcile/reconcile-path.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { sharedS3, startFilestore, stopS3, uniqueKey } from './support/filestore.ts';
import { startS3Notifications, type S3Notifications } from './support/s3-notifications.ts';
import { startS3Proxy, type S3Proxy } from './support/s3-proxy.ts';
import { putRawKey, testS3Client } from './support/s3.ts';
import { createSqsPoller, type SqsPoller } from './support/sqs-poller.ts';

/**
 * Random out-of-band S3 operations (put, overwrite, delete, copy) whose notifications arrive
 * shuffled, duplicated and delayed: once the queue is drained the catalogue holds exactly what
 * the bucket holds, without an audit. With notifications dropped, one audit makes them equal.
 */
type Op = { op: 'put'; key: number; size: number } | { op: 'delete'; key: number } | { op: 'copy'; from: number; key: number };

const KEYS = ['k0.txt', 'k 1+.txt', 'd/k2.txt', 'd/k%3.txt', 'd/e/k4.txt'];
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('put' as const), key: fc.nat(KEYS.length - 1), size: fc.nat(40) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), key: fc.nat(KEYS.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('copy' as const), from: fc.nat(KEYS.length - 1), key: fc.nat(KEYS.length - 1) }) },
);
type Delivery = { duplicate: number; delayMs: number; reorder: boolean; seed: number };
const deliveryArb: fc.Arbitrary<Delivery> = fc.record({ duplicate: fc.double({ min: 0, max: 0.6, noNaN: true }), delayMs: fc.integer({ min: 0, max: 150 }), reorder: fc.boolean(), seed: fc.integer() });

describe('S3 events, property: the catalogue converges on the bucket', () => {
  let fs: Filestore;
  let proxy: S3Proxy;
  let bridge: S3Notifications;
  let poller: SqsPoller;
  let raw: S3Client;
  let rng = mulberry32(1);
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
    fs = await startFilestore({ recover: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } });
    raw = testS3Client(proxy.endpoint);
    bridge = await startS3Notifications({ proxy, endpoint: s3.endpoint, s3: s3.client, visibilityTimeout: 1, maxReceiveCount: 5, random: () => rng() });
    poller = createSqsPoller({ sqs: bridge.sqs, queueUrl: bridge.queueUrl, queueArn: bridge.queueArn, handler, pollIntervalMs: 20 });
  });
  afterAll(async () => {
    await bridge?.stop();
    await closeLambdaCore();
    await fs?.close();
    await proxy?.stop();
    await stopS3();
    process.env = saved;
  });

  async function apply(bucket: string, ops: Op[]): Promise<void> {
    for (const o of ops) {
      const key = `tenant/${KEYS[o.key]}`;
      if (o.op === 'put') await putRawKey(raw, bucket, key, 'x'.repeat(o.size));
      else if (o.op === 'delete') await raw.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
      else await raw.send(new CopyObjectCommand({ Bucket: bucket, Key: key, CopySource: copySource(bucket, `tenant/${KEYS[o.from]}`) })).catch(() => undefined); // source absent: S3 refuses, no event
    }
  }
  async function bucketView(bucket: string): Promise<Array<[string, number]>> {
    const out = await raw.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'tenant/' }));
    return (out.Contents ?? []).map((o) => [(o.Key as string).slice('tenant/'.length), o.Size ?? 0] as [string, number]).sort((a, b) => (a[0] < b[0] ? -1 : 1));
  }
  async function catalogueView(mount: Mount): Promise<Array<[string, number]>> {
    const { rows } = await fs.pool.query<{ path: string; size: string }>(
      `SELECT path, size_bytes AS size FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'file' AND consistency_state = 'ACTIVE'`,
      [mount.id],
    );
    return rows.map((r) => [r.path, Number(r.size)] as [string, number]).sort((a, b) => (a[0] < b[0] ? -1 : 1));
  }
  async function run(ops: Op[], delivery: Delivery, drop: number): Promise<{ bucket: string; mount: Mount }> {
    rng = mulberry32(delivery.seed);
    const s3 = await sharedS3();
    const bucket = await s3.createBucket();
    const mount = await createMount(fs.pool, { key: uniqueKey('prop'), kind: 's3', bucket, prefix: 'tenant/', endpoint: proxy.endpoint, region: 'us-east-1' });
    bridge.configure({ duplicate: delivery.duplicate, delayMs: delivery.delayMs, reorder: delivery.reorder, drop, testEvents: 0.1 });
    await apply(bucket, ops);
    await bridge.settled();
    await bridge.release();
    await poller.drain({ before: () => bridge.settled() });
    return { bucket, mount };
  }

  it('shuffled, duplicated, delayed events: equal once drained, no audit', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 12 }), deliveryArb, async (ops, delivery) => {
        const { bucket, mount } = await run(ops, delivery, 0);
        expect(await catalogueView(mount)).toEqual(await bucketView(bucket));
        const { rows } = await fs.pool.query(`SELECT 1 FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND reason <> 's3_event'`, [mount.id]);
        expect(rows).toEqual([]);
      }),
      { numRuns: 30 },
    );
  });

  it('with events dropped: equal after one audit', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 12 }), deliveryArb, async (ops, delivery) => {
        const { bucket, mount } = await run(ops, delivery, 0.4);
        const audit = await reconcilePath(fs, { mountId: mount.id, path: '', reason: 'audit', recursive: true, hash: false }, {}, { s3MissingGraceMs: 10 });
        expect(audit.outcome).toBe('succeeded');
        expect(await catalogueView(mount)).toEqual(await bucketView(bucket));
      }),
      { numRuns: 20 },
    );
  });
});

/** A seeded generator, so a failing run's delivery (drops, duplicates, delays) replays with its seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
