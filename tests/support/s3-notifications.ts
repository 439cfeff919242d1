import { randomBytes, randomUUID } from 'node:crypto';
import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { CreateQueueCommand, GetQueueAttributesCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { S3Proxy, S3Write } from './s3-proxy.ts';
import { TEST_S3_CREDENTIALS, TEST_S3_REGION } from './s3.ts';

/**
 * S3 event notifications for fauxqs, which accepts PutBucketNotificationConfiguration and
 * sends nothing. In front of it, the S3 proxy reports each successful write (PutObject,
 * CopyObject, CompleteMultipartUpload, DeleteObject, DeleteObjects); the bridge turns it into
 * what S3 would send to an SQS queue: one message per object change, `{"Records":[…]}` with
 * the key form-URL-encoded, eTag and size (HEAD right after the write), and a sequencer that
 * increases per key (one counter, hex of varying length and case) — or, with shape
 * 'eventbridge', the EventBridge event an S3 → EventBridge → SQS rule delivers (key as stored).
 *
 * The queue has a DLQ (RedrivePolicy maxReceiveCount). Switches make delivery as unkind as
 * SQS and S3 may be: duplicate, reorder (hold, then release shuffled), delay, drop, TestEvents.
 */
export interface NotificationSwitches {
  /** Probability that a message is sent twice. */
  duplicate: number;
  /** Probability that a message is never sent (the audit must find what it said). */
  drop: number;
  /** Each message waits a random 0..delayMs before it is sent. */
  delayMs: number;
  /** Hold messages until release(), which sends them shuffled. */
  reorder: boolean;
  /** Probability of an s3:TestEvent sent beside a message. */
  testEvents: number;
  shape: 'direct' | 'eventbridge';
}

export interface S3Notifications {
  sqs: SQSClient;
  queueUrl: string;
  queueArn: string;
  dlqUrl: string;
  configure(switches: Partial<NotificationSwitches>): void;
  /** Sends the held messages (reorder): shuffled, or newest first ('reverse'). */
  release(order?: 'shuffle' | 'reverse'): Promise<void>;
  injectTestEvent(bucket?: string): Promise<void>;
  /** Resolves when every message scheduled so far has been sent (held ones excepted). */
  settled(): Promise<void>;
  readonly counts: { sent: number; dropped: number; duplicated: number; held: number };
  stop(): Promise<void>;
}

export interface NotificationOptions {
  proxy: S3Proxy;
  /** The emulator (S3 and SQS share it): the bridge HEADs objects there and creates its queues. */
  endpoint: string;
  s3: S3Client;
  /** Seconds a received message stays invisible (default 1: failed records come back fast). */
  visibilityTimeout?: number;
  /** Receives before a message moves to the DLQ (default 3). */
  maxReceiveCount?: number;
  random?: () => number;
  switches?: Partial<NotificationSwitches>;
}

const DEFAULTS: NotificationSwitches = { duplicate: 0, drop: 0, delayMs: 0, reorder: false, testEvents: 0, shape: 'direct' };

export async function startS3Notifications(o: NotificationOptions): Promise<S3Notifications> {
  const sqs = new SQSClient({ endpoint: o.endpoint, region: TEST_S3_REGION, credentials: TEST_S3_CREDENTIALS });
  const name = `s3-events-${randomBytes(4).toString('hex')}`;
  const dlqUrl = (await sqs.send(new CreateQueueCommand({ QueueName: `${name}-dlq` }))).QueueUrl as string;
  const dlqArn = await queueArn(sqs, dlqUrl);
  const queueUrl = (
    await sqs.send(
      new CreateQueueCommand({
        QueueName: name,
        Attributes: {
          VisibilityTimeout: String(o.visibilityTimeout ?? 1),
          RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: o.maxReceiveCount ?? 3 }),
        },
      }),
    )
  ).QueueUrl as string;
  const arn = await queueArn(sqs, queueUrl);
  const random = o.random ?? Math.random;
  let switches: NotificationSwitches = { ...DEFAULTS, ...o.switches };
  let counter = BigInt(Date.now()) * 1000n;
  const held: string[] = [];
  const inFlight = new Set<Promise<unknown>>();
  const counts = { sent: 0, dropped: 0, duplicated: 0, held: 0 };

  const track = (p: Promise<unknown>) => {
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  };
  const send = async (body: string) => {
    await sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: body }));
    counts.sent++;
  };
  // Per key increasing (one counter for all keys), hex of varying length and case: S3 only
  // promises that sequencers of one key compare in order after right-padding with zeros.
  const nextSequencer = () => {
    counter += 1n + BigInt(Math.floor(random() * 16));
    const base = counter.toString(16).padStart(16, '0');
    const tail = randomBytes(4).toString('hex').slice(0, Math.floor(random() * 5));
    return [...base + tail].map((c) => (random() < 0.5 ? c.toUpperCase() : c)).join('');
  };
  const emit = (body: string) => {
    if (random() < switches.drop) {
      counts.dropped++;
      return;
    }
    const copies = random() < switches.duplicate ? 2 : 1;
    if (copies === 2) counts.duplicated++;
    for (let i = 0; i < copies; i++) {
      if (switches.reorder) {
        held.push(body);
        counts.held++;
        continue;
      }
      const wait = switches.delayMs > 0 ? Math.floor(random() * switches.delayMs) : 0;
      track((wait > 0 ? new Promise((r) => setTimeout(r, wait)) : Promise.resolve()).then(() => send(body)));
    }
    if (random() < switches.testEvents) track(send(testEvent('any-bucket')));
  };

  const onWrite = (w: S3Write) => {
    for (const change of changesOf(w)) {
      const sequencer = nextSequencer(); // taken now: the order the emulator applied the writes in
      const shape = switches.shape;
      track(
        (async () => {
          const head = change.removed ? null : await headObject(o.s3, change.bucket, change.key);
          emit(shape === 'direct' ? directBody(change, sequencer, head) : eventBridgeBody(change, sequencer, head));
        })(),
      );
    }
  };
  o.proxy.afterWrite(onWrite);

  return {
    sqs,
    queueUrl,
    queueArn: arn,
    dlqUrl,
    configure(s) {
      switches = { ...switches, ...s };
    },
    async release(order = 'shuffle') {
      const bodies = order === 'reverse' ? held.splice(0).reverse() : held.splice(0).map((b) => ({ b, k: random() })).sort((x, y) => x.k - y.k).map((x) => x.b);
      for (const b of bodies) await send(b);
    },
    async injectTestEvent(bucket = 'any-bucket') {
      await send(testEvent(bucket));
    },
    async settled() {
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
    counts,
    async stop() {
      o.proxy.afterWrite(null);
      await Promise.allSettled([...inFlight]);
      sqs.destroy();
    },
  };
}

interface ObjectChange {
  bucket: string;
  key: string;
  removed: boolean;
  eventName: string;
  reason: string;
}

/** The object changes of one accepted write (nothing for bucket-level calls, parts, aborts, tagging). */
export function changesOf(w: S3Write): ObjectChange[] {
  const u = new URL(w.url, 'http://proxy');
  const [, bucket = '', ...rest] = u.pathname.split('/');
  const key = decodeURIComponent(rest.join('/'));
  const q = u.searchParams;
  const one = (removed: boolean, eventName: string, reason: string): ObjectChange[] => (key === '' ? [] : [{ bucket, key, removed, eventName, reason }]);
  if (w.method === 'PUT') {
    if (q.has('partNumber') || q.has('tagging') || q.has('acl') || key === '') return [];
    return w.requestHeaders['x-amz-copy-source'] !== undefined ? one(false, 'ObjectCreated:Copy', 'CopyObject') : one(false, 'ObjectCreated:Put', 'PutObject');
  }
  if (w.method === 'POST' && q.has('uploadId')) return one(false, 'ObjectCreated:CompleteMultipartUpload', 'CompleteMultipartUpload');
  if (w.method === 'DELETE' && !q.has('uploadId')) return one(true, 'ObjectRemoved:Delete', 'DeleteObject');
  if (w.method === 'POST' && q.has('delete')) {
    const asked = xmlValues(String(w.requestBody ?? ''), /<Object>[\s\S]*?<Key>([\s\S]*?)<\/Key>[\s\S]*?<\/Object>/g);
    const refused = new Set(xmlValues(String(w.responseBody ?? ''), /<Error>[\s\S]*?<Key>([\s\S]*?)<\/Key>[\s\S]*?<\/Error>/g));
    return asked.filter((k) => !refused.has(k)).map((k) => ({ bucket, key: k, removed: true, eventName: 'ObjectRemoved:Delete', reason: 'DeleteObject' }));
  }
  return [];
}

function xmlValues(xml: string, re: RegExp): string[] {
  return [...xml.matchAll(re)].map((m) =>
    (m[1] ?? '')
      .replace(/&#x([0-9a-fA-F]+);/g, (_, h: string) => String.fromCodePoint(parseInt(h, 16)))
      .replace(/&#([0-9]+);/g, (_, d: string) => String.fromCodePoint(Number(d)))
      .replace(/&lt;/g, '<')
      .replace(/&gt;/g, '>')
      .replace(/&quot;/g, '"')
      .replace(/&apos;/g, "'")
      .replace(/&amp;/g, '&'),
  );
}

/** As S3 encodes keys in notifications: an HTML form's encoding (space as `+`), `/` kept. */
export function formEncodeKey(key: string): string {
  return encodeURIComponent(key).replace(/%20/g, '+').replace(/%2F/g, '/');
}

async function headObject(s3: S3Client, bucket: string, key: string): Promise<{ size: number; etag: string } | null> {
  try {
    const h = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return { size: h.ContentLength ?? 0, etag: (h.ETag ?? '').replace(/"/g, '') };
  } catch {
    return null; // gone again already: S3 still reports the write, without knowing more here
  }
}

function directBody(c: ObjectChange, sequencer: string, head: { size: number; etag: string } | null): string {
  const object = c.removed ? { key: formEncodeKey(c.key), sequencer } : { key: formEncodeKey(c.key), size: head?.size ?? 0, eTag: head?.etag ?? '', sequencer };
  return JSON.stringify({
    Records: [
      {
        eventVersion: '2.1',
        eventSource: 'aws:s3',
        awsRegion: TEST_S3_REGION,
        eventTime: new Date().toISOString(),
        eventName: c.eventName,
        userIdentity: { principalId: 'AWS:AIDAFAUXQSBRIDGE' },
        // An IPv6 requester: what Powertools' schema refuses and ours must not.
        requestParameters: { sourceIPAddress: '2001:db8::1' },
        responseElements: { 'x-amz-request-id': randomBytes(8).toString('hex').toUpperCase(), 'x-amz-id-2': randomBytes(16).toString('base64') },
        s3: {
          s3SchemaVersion: '1.0',
          configurationId: 'filestore-s3-events',
          bucket: { name: c.bucket, ownerIdentity: { principalId: 'A3NL1KOZZKExample' }, arn: `arn:aws:s3:::${c.bucket}` },
          object,
        },
      },
    ],
  });
}

function eventBridgeBody(c: ObjectChange, sequencer: string, head: { size: number; etag: string } | null): string {
  return JSON.stringify({
    version: '0',
    id: randomUUID(),
    'detail-type': c.removed ? 'Object Deleted' : 'Object Created',
    source: 'aws.s3',
    account: '000000000000',
    time: new Date().toISOString(),
    region: TEST_S3_REGION,
    resources: [`arn:aws:s3:::${c.bucket}`],
    detail: {
      version: '0',
      bucket: { name: c.bucket },
      object: c.removed ? { key: c.key, sequencer } : { key: c.key, size: head?.size ?? 0, etag: head?.etag ?? '', sequencer },
      'request-id': randomBytes(8).toString('hex').toUpperCase(),
      requester: '000000000000',
      'source-ip-address': '2001:db8::1',
      reason: c.reason,
      ...(c.removed ? { 'deletion-type': 'Permanently Deleted' } : {}),
    },
  });
}

function testEvent(bucket: string): string {
  return JSON.stringify({ Service: 'Amazon S3', Event: 's3:TestEvent', Time: new Date().toISOString(), Bucket: bucket, RequestId: randomBytes(8).toString('hex'), HostId: randomBytes(16).toString('base64') });
}

async function queueArn(sqs: SQSClient, url: string): Promise<string> {
  const out = await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['QueueArn'] }));
  return out.Attributes?.QueueArn as string;
}
