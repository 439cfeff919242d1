import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Mount } from '../../catalogue/types.ts';
import { FilestoreError } from '../../errors.ts';
import { normalizePath } from '../../paths.ts';
import type { S3Defaults } from '../registry.ts';
import type { WriteResult } from '../types.ts';
import { createS3Client } from './client.ts';
import { copyObject, DEFAULT_COPY_PART_BYTES, MAX_SINGLE_COPY_BYTES } from './copy.ts';
import { isNotFound, s3Error, s3Fail } from './errors.ts';
import { assertNoFileAncestor, dirExists, fileStat, headFile, type S3Mount } from './inspect.ts';
import { S3Keys } from './keys.ts';
import { DEFAULT_UPLOAD_PART_BYTES } from './upload.ts';

/**
 * Transfers between a client and S3 that bypass the process (the API Lambda carries 6 MB at
 * most): presigned GETs of a mount's files, presigned PUTs to a command's staging key, and the
 * server-side steps that commit such a staged upload as S3Executor.writeFile commits its own.
 */
export class S3DirectTransfers {
  private readonly m: S3Mount;
  private readonly signer: S3Client;

  constructor(mount: Mount, defaults: S3Defaults) {
    if (mount.kind !== 's3' || !mount.bucket) throw new FilestoreError('VALIDATION_ERROR', `mount "${mount.key}" is not an S3 mount`);
    const region = mount.region ?? defaults.region ?? 'us-east-1';
    const endpoint = mount.endpoint ?? defaults.endpoint;
    // URLs are signed without the SDK's default CRC checksum: one computed here (over no body)
    // would make S3 refuse the client's bytes (aws-sdk-js-v3 presigned PutObject + flexible checksums).
    this.signer = new S3Client({
      region,
      ...(endpoint !== undefined ? { endpoint, forcePathStyle: true } : {}),
      ...(defaults.credentials !== undefined ? { credentials: defaults.credentials } : {}),
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    this.m = {
      client: createS3Client({ region, endpoint, credentials: defaults.credentials }),
      bucket: mount.bucket,
      keys: new S3Keys(mount.prefix),
      multipartCopyThresholdBytes: MAX_SINGLE_COPY_BYTES,
      copyPartSizeBytes: DEFAULT_COPY_PART_BYTES,
      uploadPartSizeBytes: DEFAULT_UPLOAD_PART_BYTES,
    };
  }

  /** The one staging key a presigned upload of command `stagingId` writes (named after its journal entry). */
  uploadKey(stagingId: string): string {
    return `${this.m.keys.stagingPrefixOf(stagingId)}upload`;
  }

  /** A GET URL of the file at `path`, valid `expiresInSeconds`; a Range header sent with it is honoured by S3. */
  presignGet(path: string, expiresInSeconds: number): Promise<string> {
    const command = new GetObjectCommand({ Bucket: this.m.bucket, Key: this.m.keys.fileKey(normalizePath(path)) });
    return getSignedUrl(this.signer, command, { expiresIn: expiresInSeconds });
  }

  /** A PUT URL for `key`; Content-Length is signed, so S3 refuses a body of another size. */
  presignPut(key: string, sizeBytes: number, expiresInSeconds: number): Promise<string> {
    const command = new PutObjectCommand({ Bucket: this.m.bucket, Key: key, ContentLength: sizeBytes, ContentType: 'application/octet-stream' });
    return getSignedUrl(this.signer, command, { expiresIn: expiresInSeconds, signableHeaders: new Set(['content-length']) });
  }

  /** Size of the object at `key`, or null when nothing was put there. */
  async sizeOf(key: string): Promise<number | null> {
    try {
      const head = await this.m.client.send(new HeadObjectCommand({ Bucket: this.m.bucket, Key: key }));
      return head.ContentLength ?? 0;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw s3Error(err, key, 'upload');
    }
  }

  /** sha256 of the object at `key`, read through once. */
  async sha256Of(key: string): Promise<string> {
    try {
      const out = await this.m.client.send(new GetObjectCommand({ Bucket: this.m.bucket, Key: key }));
      const hash = createHash('sha256');
      await pipeline(out.Body as Readable, hash);
      return hash.digest('hex');
    } catch (err) {
      throw s3Error(err, key, 'upload');
    }
  }

  /** Copies the staged object to `path` in one server-side step (recording its sha256, as writes do). */
  async commit(key: string, path: string, sizeBytes: number, sha256: string): Promise<WriteResult> {
    const op = 'write';
    const p = normalizePath(path);
    await assertNoFileAncestor(this.m, p, op);
    if ((await headFile(this.m, p, op)) === null && (await dirExists(this.m, p, op))) throw s3Fail('IS_A_DIRECTORY', p, op);
    await copyObject(this.m.client, {
      bucket: this.m.bucket,
      sourceKey: key,
      targetKey: this.m.keys.fileKey(p),
      sizeBytes,
      metadata: { sha256 },
      multipartThresholdBytes: this.m.multipartCopyThresholdBytes,
      partSizeBytes: this.m.copyPartSizeBytes,
    }).catch((err: unknown) => {
      throw s3Error(err, p, op);
    });
    const head = await headFile(this.m, p, op);
    if (head === null) throw new FilestoreError('STORAGE_ERROR', `${JSON.stringify(p)} vanished right after it was written; retry`, { path: p, op });
    return { ...fileStat(p, head), sha256 };
  }

  /** Removes the staged object; a leftover is only garbage that recovery's discardStaging removes. */
  async remove(key: string): Promise<void> {
    await this.m.client.send(new DeleteObjectCommand({ Bucket: this.m.bucket, Key: key })).catch(() => undefined);
  }
}

const cache = new Map<string, S3DirectTransfers>();

/** One instance (one SDK client) per mount version, as the backend registry keeps backends. */
export function directTransfers(mount: Mount, defaults: S3Defaults): S3DirectTransfers {
  const key = `${mount.id}:${mount.updatedAt.valueOf()}`;
  let d = cache.get(key);
  if (!d) {
    if (cache.size > 100) cache.clear();
    d = new S3DirectTransfers(mount, defaults);
    cache.set(key, d);
  }
  return d;
}
