import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { CopyObjectCommand, DeleteObjectCommand, DeleteObjectsCommand, type S3Client } from '@aws-sdk/client-s3';
import { ReceiveMessageCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import type { SQSEvent } from 'aws-lambda';
import { lockPathsForWrite } from '../shared/catalogue/reconcile-writes.ts';
import { pathOfKey } from '../shared/reconcile/s3-events/keys.ts';
import { newestPerKey } from '../shared/reconcile/s3-events/newest.ts';
import { decodeEventKey, parseNotification } from '../shared/reconcile/s3-events/schema.ts';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { handler } from '../lambdas/s3-events.ts';
import { closeLambdaCore } from '../lambdas/support/core.ts';
import { logger } from '../lambdas/support/powertools.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { findLiveByPath } from '../shared/catalogue/nodes.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { copySource } from '../shared/backends/s3/keys.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { sharedS3, startFilestore, stopS3, uniqueKey, wireTestFilestore } from './support/filestore.ts';
import { processS3Events } from '../shared/reconcile/s3-events/process.ts';
import { lambdaContext } from './support/lambda-context.ts';
import { startS3Notifications, type S3Notifications } from './support/s3-notifications.ts';
import { startS3Proxy, type S3Proxy } from './support/s3-proxy.ts';
import { putRawKey, rawKeys, testS3Client } from './support/s3.ts';
import { createSqsPoller, type SqsPoller } from './support/sqs-poller.ts';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.ts';

/**
 * The S3-event Lambda (lambdas/s3-events.ts) end to end: writes to fauxqs through the S3 proxy
 * become S3-shaped notifications on a fauxqs queue (tests/support/s3-notifications.ts), a
 * poller hands them to the handler as Lambda's event source mapping does and deletes only what
 * it did not report failed. The handler's core reaches PostgreSQL through a TCP proxy a test
 * can take down.
 */
const sqsEvent = (bodies: string[]): SQSEvent => {
  const template = fixture('s3-sqs-put.json').Records[0] as SQSEvent['Records'][number];
  return { Records: bodies.map((body, i) => ({ ...template, messageId: `msg-${i}`, body })) };
};
const putBody = (bucket: string, key: string, sequencer: string) =>
  JSON.stringify({ Records: [{ eventVersion: '2.1', eventSource: 'aws:s3', eventName: 'ObjectCreated:Put', requestParameters: { sourceIPAddress: '::1' }, s3: { bucket: { name: bucket }, object: { key, sequencer } } }] });

describe('S3 event records: parsing, keys, sequencers (no I/O)', () => {
  it('decodes direct-shape keys: + is a space, then percent-decoding; a stray % is refused', () => {
    expect(decodeEventKey('a+b%2Bc%20d%3A%23%3F%E2%82%AC/x')).toBe('a b+c d:#?€/x');
    expect(() => decodeEventKey('100%')).toThrow(expect.objectContaining({ code: 'VALIDATION_ERROR' }));
  });

  it('accepts the TestEvent, IPv6 requesters and the EventBridge shape (its key taken as stored); refuses anything else', () => {
    expect(parseNotification(JSON.stringify({ Service: 'Amazon S3', Event: 's3:TestEvent', Bucket: 'b' }))).toEqual({ kind: 'test' });
    expect(parseNotification(putBody('b', 'x+y.txt', '0A'))).toEqual({ kind: 'changes', changes: [{ bucket: 'b', key: 'x y.txt', change: 'created', sequencer: '0A', eventName: 'ObjectCreated:Put' }] });
    const bridged = JSON.parse(fixture('eventbridge-sqs-object-deleted.json').Records[0]?.body as string) as { detail: { object: { key: string } } };
    bridged.detail.object.key = 'x+y %41.txt';
    expect(parseNotification(JSON.stringify(bridged))).toMatchObject({ changes: [{ key: 'x+y %41.txt', change: 'deleted' }] });
    for (const bad of ['not json', '{}', '{"Records":[{"eventName":"ObjectCreated:Put"}]}', '{"Records":[{"eventName":"x","s3":{"bucket":{"name":"b"},"object":{"key":"k","sequencer":"zz"}}}]}']) {
      expect(() => parseNotification(bad), bad).toThrow(expect.objectContaining({ code: 'VALIDATION_ERROR' }));
    }
  });

  it('maps keys below a mount prefix to canonical paths, skipping staging keys and keys no path maps to', () => {
    expect(pathOfKey('dir/file.txt')).toBe('dir/file.txt');
    expect(pathOfKey('dir/')).toBe('dir');
    expect(pathOfKey('.filestore-staging/abc.123')).toBe('staging');
    for (const k of ['', 'a//b', './a', 'a/../b', 'e\u0301.txt', 'tab\there']) expect(pathOfKey(k), k).toBe('not_a_path');
  });

  it('keeps the newest event per key: upper-cased, right-padded with 0, equal = duplicate', () => {
    const newest = newestPerKey([
      { path: 'a', change: 'created', sequencer: '00ff' },
      { path: 'a', change: 'deleted', sequencer: '00FF01' },
      { path: 'a', change: 'created', sequencer: '00FF0' },
      { path: 'b', change: 'created', sequencer: undefined },
      { path: 'b', change: 'deleted', sequencer: '01' },
    ]);
    expect(newest.get('a')).toEqual({ path: 'a', change: 'deleted', sequencer: '00FF01' });
    expect(newest.get('b')?.sequencer).toBe('01');
  });
});

const fixture = (name: string): SQSEvent => JSON.parse(readFileSync(new URL(`./fixtures/lambda/${name}`, import.meta.url), 'utf8')) as SQSEvent;

describe('S3-event Lambda', () => {
  let core: Filestore;
  let proxy: S3Proxy;
  let pg: TcpProxy;
  let bridge: S3Notifications;
  let poller: SqsPoller;
  let raw: S3Client;
  let mount: Mount;
  let bucket: string;
  const saved = { ...process.env };

  beforeAll(async () => {
    const s3 = await sharedS3();
    proxy = await startS3Proxy(s3.endpoint);
    const db = new URL(TEST_DATABASE_URL);
    pg = await startTcpProxy({ host: db.hostname, port: Number(db.port || 5432) });
    db.port = String(pg.port);
    Object.assign(process.env, {
      DATABASE_URL: db.toString(),
      REDIS_URL: TEST_REDIS_URL,
      FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_REGION: 'us-east-1',
      FILESTORE_S3_MISSING_GRACE_MS: '20',
      POWERTOOLS_LOG_LEVEL: 'ERROR',
      POWERTOOLS_METRICS_DISABLED: 'true',
    });
    logger.setLogLevel('ERROR');
    core = await startFilestore({ recover: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } });
    raw = testS3Client(proxy.endpoint);
    bridge = await startS3Notifications({ proxy, endpoint: s3.endpoint, s3: s3.client, visibilityTimeout: 1, maxReceiveCount: 2 });
    poller = createSqsPoller({ sqs: bridge.sqs, queueUrl: bridge.queueUrl, queueArn: bridge.queueArn, handler });
  });
  afterAll(async () => {
    await bridge?.stop();
    await closeLambdaCore();
    await core?.close();
    await proxy?.stop();
    await pg?.close();
    await stopS3();
    process.env = saved;
  });
  let failedBefore = 0;
  beforeEach(async () => {
    failedBefore = poller.stats.failed;
    bridge.configure({ duplicate: 0, drop: 0, delayMs: 0, reorder: false, testEvents: 0, shape: 'direct' });
    const s3 = await sharedS3();
    bucket = await s3.createBucket();
    mount = await createMount(core.pool, { key: uniqueKey('s3ev'), kind: 's3', bucket, prefix: 'tenant/', endpoint: proxy.endpoint, region: 'us-east-1' });
  });

  const key = (p: string) => `tenant/${p}`;
  const put = (p: string, bytes: string) => putRawKey(raw, bucket, key(p), bytes);
  const unlink = async (p: string) => void (await raw.send(new DeleteObjectCommand({ Bucket: bucket, Key: key(p) })));
  const drain = async () => {
    await bridge.settled();
    await poller.drain({ before: () => bridge.settled() });
  };
  const node = (p: string) => findLiveByPath(core.pool, mount.id, p);
  const outbox = async (type: string) =>
    (await core.pool.query<{ path: string }>(`SELECT COALESCE(data->>'path', data->'node'->>'path') AS path FROM filestore.outbox WHERE mount_id = $1 AND type = $2 ORDER BY id`, [mount.id, type])).rows.map((r) => r.path);
  const jobs = async () => (await core.pool.query(`SELECT path, reason FROM filestore.reconciliation_jobs WHERE mount_id = $1`, [mount.id])).rows;
  /** Live files of the catalogue that storage should hold (MISSING ones are known gone). */
  const catalogued = async () =>
    (await core.pool.query<{ path: string; size: string }>(`SELECT path, size_bytes AS size FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'file' AND consistency_state <> 'MISSING' ORDER BY path COLLATE "C"`, [mount.id])).rows.map((r) => r.path);
  const stored = async () => (await rawKeys(raw, bucket, 'tenant/')).map((k) => k.slice('tenant/'.length)).sort();

  it('catalogues keys with spaces, +, %, :, #, ? and unicode from their form-URL-encoded records', async () => {
    const names = ['a b.txt', 'c++ notes.md', '100% sure.txt', 'at 10:47:07.log', 'issue #12.txt', 'why?.txt', 'café/naïve ü 雪.txt', 'plus+and space.txt'];
    for (const n of names) await put(n, `bytes of ${n}`);
    await drain();
    for (const n of names) expect(await node(n), n).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: Buffer.byteLength(`bytes of ${n}`) });
    expect((await node('a b.txt'))?.sequencer).toMatch(/^[0-9a-fA-F]+$/);
    expect(poller.stats.failed - failedBefore).toBe(0);
  });

  it("Filestore's own writes change nothing (no drift, no reconcile job, version untouched): only their sequencers are stored", async () => {
    await core.orchestrator.writeFile(mount.id, { path: 'own/a.txt' }, Readable.from([Buffer.from('mine')]));
    await core.orchestrator.writeFile(mount.id, { path: 'own/b.txt' }, Readable.from([Buffer.from('mine too')]));
    await core.orchestrator.copy(mount.id, { path: 'own/a.txt', targetPath: 'own/c.txt' });
    await core.orchestrator.delete(mount.id, { path: 'own/b.txt' });
    await core.orchestrator.move(mount.id, { path: 'own/c.txt', targetPath: 'own/moved.txt' });
    await core.orchestrator.mkdir(mount.id, { path: 'own/empty' });
    await drain();
    expect(await node('own/moved.txt')).toMatchObject({ consistencyState: 'ACTIVE', lastDriftDetectedAt: null });
    expect(await node('own/empty')).toMatchObject({ kind: 'directory', consistencyState: 'ACTIVE', lastDriftDetectedAt: null });
    const a = await node('own/a.txt');
    expect(a).toMatchObject({ consistencyState: 'ACTIVE', version: 1, lastDriftDetectedAt: null, lastReconciledAt: null });
    expect(a?.sequencer).not.toBeNull();
    expect(await node('own/c.txt')).toBeNull();
    expect(await node('own/b.txt')).toBeNull();
    expect(await outbox('filestore.drift.detected')).toEqual([]);
    expect(await outbox('filestore.node.reconciled')).toEqual([]);
    expect(await jobs()).toEqual([]);
    expect(poller.stats.failed - failedBefore).toBe(0);
  });

  it('duplicates and reordered events of the same keys settle on what the bucket holds', async () => {
    bridge.configure({ duplicate: 1, reorder: true });
    await put('d.txt', 'one');
    await put('d.txt', 'two, longer');
    await put('e.txt', 'e');
    await unlink('e.txt');
    await put('e.txt', 'e again');
    await bridge.settled();
    await bridge.release('shuffle');
    await drain();
    expect(await node('d.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 11 });
    expect(await node('e.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 7 });
    expect(await catalogued()).toEqual(await stored());
  });

  it('a create/delete pair delivered delete first: the late create is older than the stored sequencer and changes nothing', async () => {
    await core.orchestrator.writeFile(mount.id, { path: 'pair.txt' }, Readable.from([Buffer.from('tracked')]));
    await drain();
    bridge.configure({ reorder: true });
    await put('pair.txt', 'overwritten outside');
    await bridge.settled();
    await unlink('pair.txt');
    await bridge.settled();
    await bridge.release('reverse');
    await drain();
    expect(await node('pair.txt')).toMatchObject({ consistencyState: 'MISSING' });
    expect(await outbox('filestore.node.missing')).toEqual(['pair.txt']);
    // A put then delete of an untracked key, delete first: nothing is catalogued.
    await put('fleeting.txt', 'f');
    await bridge.settled();
    await unlink('fleeting.txt');
    await bridge.settled();
    await bridge.release('reverse');
    await drain();
    expect(await node('fleeting.txt')).toBeNull();
  });

  it('an event for an object already gone again catalogues nothing', async () => {
    bridge.configure({ reorder: true });
    await put('gone.txt', 'here for a moment');
    await bridge.settled();
    bridge.configure({ drop: 1 });
    await unlink('gone.txt');
    await bridge.settled();
    bridge.configure({ drop: 0 });
    await bridge.release();
    await drain();
    expect(await node('gone.txt')).toBeNull();
    expect(await outbox('filestore.node.reconciled')).toEqual([]);
  });

  it('copies and DeleteObjects outside Filestore are reported and applied', async () => {
    await put('src.txt', 'source');
    await raw.send(new CopyObjectCommand({ Bucket: bucket, Key: key('copy.txt'), CopySource: copySource(bucket, key('src.txt')) }));
    await put('x 1.txt', 'x');
    await put('x+2.txt', 'x');
    await drain();
    expect(await node('copy.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 6 });
    await raw.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: [{ Key: key('x 1.txt') }, { Key: key('x+2.txt') }] } }));
    await drain();
    expect(await node('x 1.txt')).toMatchObject({ consistencyState: 'MISSING' });
    expect(await node('x+2.txt')).toMatchObject({ consistencyState: 'MISSING' });
  });

  it('staging keys and keys outside every mount are acknowledged and left alone', async () => {
    await putRawKey(raw, bucket, 'tenant/.filestore-staging/abc.123', 'staged');
    await putRawKey(raw, bucket, 'elsewhere/file.txt', 'not ours');
    await putRawKey(raw, bucket, 'tenant//double.txt', 'no path maps here');
    await drain();
    const { rows } = await core.pool.query(`SELECT path FROM filestore.nodes WHERE mount_id = $1 AND path <> ''`, [mount.id]);
    expect(rows).toEqual([]);
    expect(await outbox('filestore.drift.detected')).toEqual([]);
    expect(poller.stats.failed - failedBefore).toBe(0);
  });

  it('an s3:TestEvent is acknowledged and does nothing', async () => {
    await bridge.injectTestEvent(bucket);
    await drain();
    expect(poller.stats.failed - failedBefore).toBe(0);
    const r = await handler(fixture('s3-sqs-test-event.json'), lambdaContext());
    expect(r).toEqual({ batchItemFailures: [] });
  });

  it('the EventBridge shape (keys not encoded) is applied like the direct one', async () => {
    bridge.configure({ shape: 'eventbridge' });
    await put('eb dir/a+b c.txt', 'bridged');
    await drain();
    expect(await node('eb dir/a+b c.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 7 });
    await unlink('eb dir/a+b c.txt');
    await drain();
    expect(await node('eb dir/a+b c.txt')).toMatchObject({ consistencyState: 'MISSING' });
  });

  it("AWS's sample records (an IPv6 requester, encoded key) and EventBridge events are handled by the exported handler", async () => {
    const path = 'reports/Q3 summary (2026): draft#1.txt';
    await put(path, 'hello');
    await bridge.settled();
    const rebucket = (e: SQSEvent) => {
      for (const r of e.Records) r.body = r.body.replaceAll('amzn-s3-demo-bucket', bucket);
      return e;
    };
    const ok = { batchItemFailures: [] };
    expect(await handler(rebucket(fixture('s3-sqs-put.json')), lambdaContext())).toEqual(ok);
    expect(await node(path)).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 5, sequencer: '0055AED6DCD90281E5' });
    // A newer event of the same object (EventBridge shape): as recorded, its sequencer stored.
    expect(await handler(rebucket(fixture('eventbridge-sqs-object-created.json')), lambdaContext())).toEqual(ok);
    expect(await node(path)).toMatchObject({ consistencyState: 'ACTIVE', version: 1, sequencer: '00617F08299329D189' });
    // The older put delivered again: dropped without a look (storage changed meanwhile, unseen).
    await put(path, 'changed since, unseen');
    expect(await handler(rebucket(fixture('s3-sqs-put.json')), lambdaContext())).toEqual(ok);
    expect(await node(path)).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 5, sequencer: '00617F08299329D189' });
    await unlink(path);
    expect(await handler(rebucket(fixture('eventbridge-sqs-object-deleted.json')), lambdaContext())).toEqual(ok);
    expect(await node(path)).toMatchObject({ consistencyState: 'MISSING', sequencer: '00617F0829932E11FF' });
    expect(await handler(rebucket(fixture('s3-sqs-delete.json')), lambdaContext())).toEqual(ok);
    expect(await node(path)).toMatchObject({ consistencyState: 'MISSING', sequencer: '00617F0829932E11FF' });
    await drain();
  });

  it('a poison record is reported failed alone and ends in the DLQ; its batch neighbours are applied', async () => {
    await bridge.sqs.send(new SendMessageCommand({ QueueUrl: bridge.queueUrl, MessageBody: '{"Records":[{"not":"an S3 record"}]}' }));
    await put('neighbour.txt', 'n');
    await drain();
    expect(await node('neighbour.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
    const dlq = await bridge.sqs.send(new ReceiveMessageCommand({ QueueUrl: bridge.dlqUrl, MaxNumberOfMessages: 10 }));
    expect((dlq.Messages ?? []).map((m) => m.Body)).toEqual(['{"Records":[{"not":"an S3 record"}]}']);
  });

  it('PostgreSQL unreachable: every record of the batch fails, none is lost; they are applied once it is back', async () => {
    await closeLambdaCore(); // a warm container: the core is built, then the database goes away
    await handler(fixture('s3-sqs-test-event.json'), lambdaContext());
    await put('while-down/1.txt', 'one');
    await put('while-down/2.txt', 'two');
    await bridge.settled();
    await pg.down();
    const thrownBefore = poller.stats.thrown;
    const deletedBefore = poller.stats.deleted;
    expect(await poller.pollOnce()).toBe(2);
    expect(poller.stats.thrown).toBe(thrownBefore + 1);
    expect(poller.stats.deleted).toBe(deletedBefore);
    await pg.up();
    await drain();
    expect(await node('while-down/1.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
    expect(await node('while-down/2.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
  });
  it('events of one key repeated in a batch are judged and reconciled once, with the newest sequencer', async () => {
    await put('hot.txt', 'hot');
    const sequencers = ['F29', 'F2A0', 'f2a', 'F2A01', 'F1']; // F2A0 = f2a: one event twice; F2A01 the newest
    const r = await handler(sqsEvent(sequencers.map((q) => putBody(bucket, 'tenant/hot.txt', q))), lambdaContext());
    expect(r).toEqual({ batchItemFailures: [] });
    expect(await jobs()).toEqual([{ path: 'hot.txt', reason: 's3_event' }]);
    expect(await node('hot.txt')).toMatchObject({ consistencyState: 'ACTIVE', sequencer: 'F2A01' });
    await bridge.settled();
    await drain(); // the bridge's own (older) records of the put: dropped
    expect(await jobs()).toHaveLength(1);
  });

  it("a key a command holds stays unjudged: after the in-invocation retries its record alone fails, and it is applied when redelivered", async () => {
    await core.orchestrator.writeFile(mount.id, { path: 'held.txt' }, Readable.from([Buffer.from('v1')]));
    await put('held.txt', 'rewritten outside');
    await put('free.txt', 'free');
    await bridge.settled();
    const event = sqsEvent([putBody(bucket, 'tenant/held.txt', 'F0000000000000001'), putBody(bucket, 'tenant/free.txt', 'F0000000000000002')]);
    const client = await core.pool.connect();
    try {
      await client.query('BEGIN');
      await lockPathsForWrite(client, mount.id, ['held.txt']);
      expect(await handler(event, lambdaContext())).toEqual({ batchItemFailures: [{ itemIdentifier: 'msg-0' }] });
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
    expect(await node('held.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 2 });
    expect(await node('free.txt')).toMatchObject({ consistencyState: 'ACTIVE' });
    expect(await handler({ Records: [event.Records[0] as SQSEvent['Records'][number]] }, lambdaContext())).toEqual({ batchItemFailures: [] });
    expect(await node('held.txt')).toMatchObject({ consistencyState: 'ACTIVE', sizeBytes: 17, sequencer: 'F0000000000000001' });
    await drain();
  });
  it('a core with a pool of one connection is refused with CONFIG_ERROR naming FILESTORE_DB_POOL_SIZE (an inline reconciliation needs two)', async () => {
    const small = await wireTestFilestore({ poolSize: 1 });
    try {
      await expect(processS3Events(small, fixture('s3-sqs-put.json'), lambdaContext())).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_DB_POOL_SIZE') });
    } finally {
      await small.close();
    }
  });
});
