import { randomBytes } from 'node:crypto';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { startFauxqs } from 'fauxqs';
import { compareBytes } from '../../shared/backends/s3/keys.ts';

export const TEST_S3_CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };
export const TEST_S3_REGION = 'us-east-1';

export interface TestS3 {
  /** http://127.0.0.1:<port> of the in-process fauxqs server. */
  endpoint: string;
  /** Creates a bucket (a fresh random name when none is given) and returns its name. */
  createBucket(name?: string): Promise<string>;
  /** A client for out-of-band access (path style, test credentials). */
  client: S3Client;
  stop(): Promise<void>;
}

/** Starts fauxqs (S3 emulator) in-process on a free port, with credentials "test"/"test". */
export async function startS3(): Promise<TestS3> {
  await useS3KeyOrder();
  const server = await startFauxqs({ port: 0, logger: false });
  const endpoint = server.address;
  const client = testS3Client(endpoint);
  return {
    endpoint,
    client,
    async createBucket(name?: string): Promise<string> {
      const bucket = name ?? `fs-${randomBytes(6).toString('hex')}`;
      server.createBucket(bucket);
      return bucket;
    },
    async stop(): Promise<void> {
      client.destroy();
      await server.stop();
    },
  };
}

/** A plain SDK client for `endpoint` with the test credentials. */
export function testS3Client(endpoint: string): S3Client {
  return new S3Client({
    endpoint,
    region: TEST_S3_REGION,
    credentials: TEST_S3_CREDENTIALS,
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

/** Every key of a bucket under `prefix`, in listing order (out-of-band). */
export async function rawKeys(client: S3Client, bucket: string, prefix = ''): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const out = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of out.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
    token = out.IsTruncated === true ? out.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys;
}

/** Out-of-band PutObject of a raw key. */
export async function putRawKey(client: S3Client, bucket: string, key: string, bytes: Buffer | string): Promise<void> {
  await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: Buffer.from(bytes) }));
}

/** Out-of-band GetObject of a raw key; null when absent. */
export async function getRawKey(client: S3Client, bucket: string, key: string): Promise<Buffer | null> {
  try {
    const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from(await (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
  } catch (err) {
    if ((err as { name?: string }).name === 'NoSuchKey') return null;
    throw err;
  }
}

/** Deletes every object of a bucket (test cleanup). */
export async function emptyBucket(client: S3Client, bucket: string): Promise<void> {
  const keys = await rawKeys(client, bucket);
  for (let i = 0; i < keys.length; i += 1000) {
    await client.send(
      new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) } }),
    );
  }
}

interface StoredObject {
  key: string;
}
interface ListOptions {
  prefix?: string;
  delimiter?: string;
  maxKeys?: number;
  startAfter?: string;
  marker?: string;
}
interface ListResult {
  objects: StoredObject[];
  commonPrefixes: string[];
  isTruncated: boolean;
}
interface S3StoreLike {
  buckets: Map<string, Map<string, StoredObject>>;
  listObjects(bucket: string, options?: ListOptions): ListResult;
}

let patched: Promise<void> | undefined;

/**
 * fauxqs 1.x sorts listings with localeCompare ("a" < "B", "_x" < "a") while real S3 returns
 * keys in UTF-8 binary order, and its pagination compares keys with `<=`, so a mixed-case
 * listing even skips keys across pages. Filestore relies on S3's documented order, so the
 * emulator's store is given S3's order here (same algorithm as fauxqs, byte-order comparisons).
 * The store class is not exported; its module is loaded by file URL, which Node resolves to the
 * same module instance fauxqs itself uses.
 */
function useS3KeyOrder(): Promise<void> {
  patched ??= (async () => {
    const dist = new URL('../../node_modules/fauxqs/dist/', import.meta.url);
    const store = (await import(new URL('s3/s3Store.js', dist).href)) as { S3Store: { prototype: S3StoreLike } };
    const errors = (await import(new URL('common/errors.js', dist).href)) as {
      S3Error: new (code: string, message: string, status: number) => Error;
    };
    store.S3Store.prototype.listObjects = function listObjects(this: S3StoreLike, bucket, options = {}) {
      const map = this.buckets.get(bucket);
      if (map === undefined) {
        throw new errors.S3Error('NoSuchBucket', `The specified bucket does not exist: ${bucket}`, 404);
      }
      const prefix = options.prefix ?? '';
      const { delimiter } = options;
      const maxKeys = options.maxKeys ?? 1000;
      const startAfter = options.startAfter ?? options.marker ?? '';
      const all = [...map.values()]
        .filter((o) => o.key.startsWith(prefix))
        .sort((a, b) => compareBytes(a.key, b.key));
      const objects: StoredObject[] = [];
      const prefixes = new Set<string>();
      let count = 0;
      let isTruncated = false;
      for (const obj of all) {
        if (startAfter !== '' && compareBytes(obj.key, startAfter) <= 0) continue;
        if (delimiter) {
          const rest = obj.key.slice(prefix.length);
          const i = rest.indexOf(delimiter);
          if (i >= 0) {
            const common = prefix + rest.slice(0, i + delimiter.length);
            if (startAfter !== '' && compareBytes(common, startAfter) <= 0) continue;
            if (!prefixes.has(common)) {
              if (count >= maxKeys) {
                isTruncated = true;
                break;
              }
              prefixes.add(common);
              count++;
            }
            continue;
          }
        }
        if (count >= maxKeys) {
          isTruncated = true;
          break;
        }
        objects.push(obj);
        count++;
      }
      return { objects, commonPrefixes: [...prefixes].sort(compareBytes), isTruncated };
    };
  })();
  return patched;
}
