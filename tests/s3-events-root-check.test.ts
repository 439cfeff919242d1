/**
 * A batch of S3 events for new objects lists its bucket (the look at the root every run makes)
 * only when the mount has not been found healthy within the last ROOT_CHECK_FRESH_MS: a LIST
 * request costs 12.5 times a HEAD on S3's bill (one per batch of ten new objects cost more
 * than their ten HEADs), and the healthy mark was a write of the mount's row that every
 * concurrent invocation for the mount made, each waiting for the one before it to commit.
 */
import type { SQSEvent } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMount } from '../shared/catalogue/mounts.ts';
import { processS3Events } from '../shared/reconcile/s3-events/process.ts';
import type { Filestore } from '../shared/runtime.ts';
import { sharedS3, stopS3, uniqueKey, wireTestFilestore } from './support/filestore.ts';
import { formEncodeKey } from './support/s3-notifications.ts';
import { startS3Proxy, type S3Proxy } from './support/s3-proxy.ts';
import { putRawKey } from './support/s3.ts';

describe('S3 events: the look at the bucket before a batch is applied', () => {
  let core: Filestore;
  let s3: Awaited<ReturnType<typeof sharedS3>>;
  let proxy: S3Proxy;
  let seq = 0x5000;

  beforeAll(async () => {
    s3 = await sharedS3();
    proxy = await startS3Proxy(s3.endpoint);
    core = await wireTestFilestore();
  });
  afterAll(async () => {
    await core?.close();
    await proxy?.stop();
    await stopS3();
  });

  /** New objects written outside Filestore, and their batch of events. */
  async function newObjects(bucket: string, names: string[]): Promise<SQSEvent> {
    for (const n of names) await putRawKey(s3.client, bucket, `tenant/${n}`, `outside ${n}`);
    return {
      Records: names.map((n, i) => ({
        messageId: `m-${seq}-${i}`,
        receiptHandle: `r-${i}`,
        body: JSON.stringify({ Records: [{ eventVersion: '2.1', eventSource: 'aws:s3', eventName: 'ObjectCreated:Put', s3: { bucket: { name: bucket }, object: { key: formEncodeKey(`tenant/${n}`), sequencer: (seq++).toString(16).toUpperCase() } } }] }),
        attributes: { ApproximateReceiveCount: '1', SentTimestamp: '0', SenderId: 't', ApproximateFirstReceiveTimestamp: '0' },
        messageAttributes: {},
        md5OfBody: '',
        eventSource: 'aws:sqs',
        eventSourceARN: 'arn:aws:sqs:us-east-1:000000000000:t',
        awsRegion: 'us-east-1',
      })),
    };
  }

  it('lists the bucket and marks the mount healthy once a minute, not once a batch; every object is catalogued', async () => {
    const bucket = await s3.createBucket();
    const mount = await createMount(core.pool, { key: uniqueKey('s3root'), kind: 's3', bucket, prefix: 'tenant/', endpoint: proxy.endpoint, region: 'us-east-1' });
    const lists = () => proxy.requests.filter((r) => r.method === 'GET' && r.url.startsWith(`/${bucket}/?`) && r.url.includes('list-type=2')).length;
    const health = async () => (await core.pool.query<{ health: string; at: Date | null }>('SELECT health, health_checked_at AS at FROM filestore.mounts WHERE id = $1', [mount.id])).rows[0];
    const live = async () => (await core.pool.query<{ path: string }>(`SELECT path FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'file' ORDER BY path`, [mount.id])).rows.map((r) => r.path);

    // The first batch: the bucket's root is looked at (keys directly below the root: applied together).
    expect((await processS3Events(core, await newObjects(bucket, ['a0.txt', 'a1.txt', 'a2.txt']), undefined, { retryDelaysMs: [] })).batchItemFailures).toEqual([]);
    const first = await health();
    expect(first?.health).toBe('healthy');
    const listed = lists();
    expect(listed).toBeGreaterThan(0);

    // The next batches within the minute: no LIST, the mount's row left as it was.
    for (const names of [['b0.txt', 'b1.txt', 'b2.txt'], ['c0.txt', 'c1.txt']]) {
      expect((await processS3Events(core, await newObjects(bucket, names), undefined, { retryDelaysMs: [] })).batchItemFailures).toEqual([]);
    }
    expect(lists()).toBe(listed);
    expect((await health())?.at).toEqual(first?.at);
    expect(await live()).toEqual(['a0.txt', 'a1.txt', 'a2.txt', 'b0.txt', 'b1.txt', 'b2.txt', 'c0.txt', 'c1.txt']);

    // A minute later: looked at again, and the mark renewed.
    await core.pool.query(`UPDATE filestore.mounts SET health_checked_at = now() - interval '61 seconds' WHERE id = $1`, [mount.id]);
    expect((await processS3Events(core, await newObjects(bucket, ['d0.txt', 'd1.txt']), undefined, { retryDelaysMs: [] })).batchItemFailures).toEqual([]);
    expect(lists()).toBe(listed + 1);
    const renewed = await health();
    expect(renewed?.health).toBe('healthy');
    expect((renewed?.at as Date).getTime()).toBeGreaterThan((first?.at as Date).getTime());

    // Recorded unhealthy (another process's look failed): the next batch looks for itself.
    await core.pool.query(`UPDATE filestore.mounts SET health = 'unhealthy', health_reason = 'test', health_checked_at = now() WHERE id = $1`, [mount.id]);
    expect((await processS3Events(core, await newObjects(bucket, ['e0.txt']), undefined, { retryDelaysMs: [] })).batchItemFailures).toEqual([]);
    expect(lists()).toBe(listed + 2);
    expect((await health())?.health).toBe('healthy');
    expect(await live()).toContain('e0.txt');
  });
});
