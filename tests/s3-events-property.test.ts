import { Readable } from 'node:stream';
import { CopyObjectCommand, DeleteObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handler } from '../lambdas/s3-events.ts';
import { logger } from '../lambdas/support/powertools.ts';
import { closeLambdaCore } from '../lambdas/support/core.ts';
import { copySource } from '../shared/backends/s3/keys.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { FilestoreError } from '../shared/errors.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { reconcilePath } from '../shared/reconcile/reconcile-path.ts';
import { processS3Events } from '../shared/reconcile/s3-events/process.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { sharedS3, startFilestore, stopS3, uniqueKey } from './support/filestore.ts';
import { startS3Notifications, type S3Notifications } from './support/s3-notifications.ts';
import { startS3Proxy, type S3Proxy } from './support/s3-proxy.ts';
import { putRawKey, testS3Client } from './support/s3.ts';
import { createSqsPoller, type SqsPoller } from './support/sqs-poller.ts';

/**
 * Random S3 operations — out of band (put, overwrite, delete, copy) and Filestore's own (write,
 * delete through the orchestrator) — whose notifications arrive shuffled, duplicated and
 * delayed, and are processed between the operations (a `deliver` step, or a poller running
 * in the background the whole time, so a HEAD meets writes made after its event): once the
 * queue is drained the catalogue holds exactly what the bucket holds, size and ETag of every
 * key, without an audit. Contents are random and often as short as the one before, so a lost
 * same-size overwrite shows as a wrong ETag. With notifications dropped, one audit makes them
 * equal. Seeded: FILESTORE_PROPERTY_SEED replays a run (fast-check prints the seed and path).
 */
type Op =
  | { op: 'put'; key: number; bytes: Uint8Array }
  | { op: 'delete'; key: number }
  | { op: 'copy'; from: number; key: number }
  | { op: 'own-write'; key: number; bytes: Uint8Array }
  | { op: 'own-delete'; key: number }
  | { op: 'deliver' };

const KEYS = ['k0.txt', 'k 1+.txt', 'd/k2.txt', 'd/k%3.txt', 'd/e/k4.txt'];
const key = fc.nat(KEYS.length - 1);
// Mostly 0-3 bytes: overwrites of the same size with other bytes are common.
const bytes = fc.oneof({ weight: 3, arbitrary: fc.uint8Array({ maxLength: 3 }) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }) });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('put' as const), key, bytes }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), key }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('copy' as const), from: key, key }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('own-write' as const), key, bytes }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('own-delete' as const), key }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('deliver' as const) }) },
);
type Delivery = { duplicate: number; delayMs: number; reorder: boolean; background: boolean; seed: number };
const deliveryArb: fc.Arbitrary<Delivery> = fc.record({
  duplicate: fc.double({ min: 0, max: 0.6, noNaN: true }),
  delayMs: fc.integer({ min: 0, max: 60 }),
  reorder: fc.boolean(),
  background: fc.boolean(),
  seed: fc.integer(),
});
const SEED = Number(process.env.FILESTORE_PROPERTY_SEED ?? 20261206);

describe('S3 events, property: the catalogue converges on the bucket', () => {
  let core: Filestore;
  let proxy: S3Proxy;
  let bridge: S3Notifications;
  let poller: SqsPoller;
  let second: SqsPoller;
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
    core = await startFilestore({ recover: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } });
    raw = testS3Client(proxy.endpoint);
    bridge = await startS3Notifications({ proxy, endpoint: s3.endpoint, s3: s3.client, visibilityTimeout: 1, maxReceiveCount: 5, random: () => rng() });
    poller = createSqsPoller({ sqs: bridge.sqs, queueUrl: bridge.queueUrl, queueArn: bridge.queueArn, handler, pollIntervalMs: 20 });
    // A second container of the handler (its own pool): one container runs one invocation at a
    // time, two containers run theirs at once, on the same queue.
    second = createSqsPoller({ sqs: bridge.sqs, queueUrl: bridge.queueUrl, queueArn: bridge.queueArn, handler: (e, c) => processS3Events(core, e, c, { s3MissingGraceMs: 10 }) });
  });
  afterAll(async () => {
    await bridge?.stop();
    await closeLambdaCore();
    await core?.close();
    await proxy?.stop();
    await stopS3();
    process.env = saved;
  });

  async function apply(bucket: string, mount: Mount, ops: Op[], delivery: Delivery): Promise<void> {
    for (const o of ops) {
      if (o.op === 'deliver') {
        await bridge.settled();
        if (delivery.reorder) await bridge.release();
        await second.pollOnce();
        continue;
      }
      const path = KEYS[o.key] as string;
      const key = `tenant/${path}`;
      if (o.op === 'put') await putRawKey(raw, bucket, key, Buffer.from(o.bytes));
      else if (o.op === 'delete') await raw.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
      else if (o.op === 'copy') await raw.send(new CopyObjectCommand({ Bucket: bucket, Key: key, CopySource: copySource(bucket, `tenant/${KEYS[o.from]}`) })).catch(() => undefined); // source absent: S3 refuses, no event
      // Filestore's own: refused when the catalogue does not have the file yet (NOT_FOUND) or is behind
      // (a precondition); what matters is that the catalogue ends as the bucket, whatever was refused.
      else if (o.op === 'own-write') await core.orchestrator.writeFile(mount.id, { path }, Readable.from([Buffer.from(o.bytes)])).catch(refusal);
      else await core.orchestrator.delete(mount.id, { path }).catch(refusal);
    }
  }
  /** Per file key: path, size and ETag (quotes stripped). A "dir/" marker (Filestore's delete leaves one for the parent) is a directory. */
  async function bucketView(bucket: string): Promise<Array<[string, number, string]>> {
    const out = await raw.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'tenant/' }));
    const files = (out.Contents ?? []).filter((o) => !(o.Key as string).endsWith('/'));
    return sorted(files.map((o) => [(o.Key as string).slice('tenant/'.length), o.Size ?? 0, bare(o.ETag)]));
  }
  async function catalogueView(mount: Mount): Promise<Array<[string, number, string]>> {
    const { rows } = await core.pool.query<{ path: string; size: string; etag: string | null }>(
      `SELECT path, size_bytes AS size, etag FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'file' AND consistency_state = 'ACTIVE'`,
      [mount.id],
    );
    return sorted(rows.map((r) => [r.path, Number(r.size), bare(r.etag)]));
  }
  async function run(ops: Op[], delivery: Delivery, drop: number): Promise<{ bucket: string; mount: Mount }> {
    rng = mulberry32(delivery.seed);
    const s3 = await sharedS3();
    const bucket = await s3.createBucket();
    const mount = await createMount(core.pool, { key: uniqueKey('prop'), kind: 's3', bucket, prefix: 'tenant/', endpoint: proxy.endpoint, region: 'us-east-1' });
    bridge.configure({ duplicate: delivery.duplicate, delayMs: delivery.delayMs, reorder: delivery.reorder, drop, testEvents: 0.1 });
    if (delivery.background) poller.start();
    try {
      await apply(bucket, mount, ops, delivery);
    } finally {
      await poller.stop();
    }
    await bridge.settled();
    await bridge.release();
    await poller.drain({ before: () => bridge.settled() });
    return { bucket, mount };
  }

  it('shuffled, duplicated, delayed events: equal once drained, no audit', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 14 }), deliveryArb, async (ops, delivery) => {
        const { bucket, mount } = await run(ops, delivery, 0);
        expect(await catalogueView(mount)).toEqual(await bucketView(bucket));
        const { rows } = await core.pool.query(`SELECT 1 FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND reason <> 's3_event'`, [mount.id]);
        expect(rows).toEqual([]);
      }),
      { numRuns: 25, seed: SEED },
    );
  }, 60_000);

  it('with events dropped: equal after one audit', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 12 }), deliveryArb, async (ops, delivery) => {
        const { bucket, mount } = await run(ops, delivery, 0.4);
        const audit = await reconcilePath(core, { mountId: mount.id, path: '', reason: 'audit', recursive: true, hash: false }, {}, { s3MissingGraceMs: 10 });
        expect(audit.outcome).toBe('succeeded');
        expect(await catalogueView(mount)).toEqual(await bucketView(bucket));
      }),
      { numRuns: 10, seed: SEED + 1 },
    );
  }, 60_000);
});

function refusal(err: unknown): void {
  if (!(err instanceof FilestoreError) || !REFUSALS.has(err.code)) throw err;
}
const REFUSALS = new Set(['NOT_FOUND']);
const bare = (etag: string | null | undefined) => (etag ?? '').replace(/"/g, '');
const sorted = <T extends [string, ...unknown[]]>(rows: T[]): T[] => rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));

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
