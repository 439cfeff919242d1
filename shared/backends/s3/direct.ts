import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { FilestoreError } from '../../errors.ts';
import { normalizePath } from '../../paths.ts';
import type { MountStorage, S3Defaults } from '../registry.ts';
import type { WriteResult } from '../types.ts';
import { createS3Client } from './client.ts';
import { copyObject, DEFAULT_COPY_PART_BYTES, MAX_SINGLE_COPY_BYTES } from './copy.ts';
import { isNotFound, s3Error, s3ErrorName, s3Fail } from './errors.ts';
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

  /** `maxAttempts`: per request (default the backend's); the staging sweep tries each mount briefly. */
  constructor(mount: MountStorage, defaults: S3Defaults, maxAttempts?: number) {
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
      client: createS3Client({ region, endpoint, credentials: defaults.credentials, maxAttempts }),
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

  /**
   * A PUT URL for `key`. Content-Length is signed, so S3 refuses a body of another size; so is
   * `If-None-Match: *`, so S3 refuses a second PUT while the first one's object is there (the
   * client must send both headers: `uploadHeaders`). Complete pins the version it checked by
   * ETag anyway (an S3-compatible server may ignore the condition; fauxqs 1.9 does).
   */
  presignPut(key: string, sizeBytes: number, expiresInSeconds: number): Promise<string> {
    const command = new PutObjectCommand({ Bucket: this.m.bucket, Key: key, ContentLength: sizeBytes, ContentType: 'application/octet-stream', IfNoneMatch: '*' });
    return getSignedUrl(this.signer, command, { expiresIn: expiresInSeconds, signableHeaders: new Set(['content-length', 'if-none-match']) });
  }

  /** Size and ETag of the object at `key`, or null when nothing was put there. */
  async stat(key: string): Promise<{ sizeBytes: number; etag: string } | null> {
    try {
      const head = await this.m.client.send(new HeadObjectCommand({ Bucket: this.m.bucket, Key: key }));
      return { sizeBytes: head.ContentLength ?? 0, etag: head.ETag ?? '' };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw s3Error(err, key, 'upload');
    }
  }

  /** sha256 of the version `etag` of the object at `key` (UPLOAD_CHANGED when another version is there now). */
  async sha256Of(key: string, etag: string): Promise<string> {
    try {
      const out = await this.m.client.send(new GetObjectCommand({ Bucket: this.m.bucket, Key: key, IfMatch: etag }));
      const hash = createHash('sha256');
      await pipeline(out.Body as Readable, hash);
      return hash.digest('hex');
    } catch (err) {
      throw changedOr(err, key);
    }
  }

  /**
   * Copies version `etag` of the staged object to `path` in one server-side step (recording its
   * sha256, as writes do); UPLOAD_CHANGED, with nothing copied, when another version is there now.
   * Uploads are at most 5 GiB (limits.ts MAX_UPLOAD_BYTES), so this is always one CopyObject.
   */
  async commit(key: string, path: string, sizeBytes: number, sha256: string, etag: string): Promise<WriteResult> {
    const op = 'write';
    const p = normalizePath(path);
    await assertNoFileAncestor(this.m, p, op);
    if ((await headFile(this.m, p, op)) === null && (await dirExists(this.m, p, op))) throw s3Fail('IS_A_DIRECTORY', p, op);
    await copyObject(this.m.client, {
      bucket: this.m.bucket,
      sourceKey: key,
      targetKey: this.m.keys.fileKey(p),
      sizeBytes,
      sourceEtag: etag,
      metadata: { sha256 },
      multipartThresholdBytes: this.m.multipartCopyThresholdBytes,
      partSizeBytes: this.m.copyPartSizeBytes,
    }).catch((err: unknown) => {
      throw isPreconditionFailed(err) ? changed(key) : s3Error(err, p, op);
    });
    const head = await headFile(this.m, p, op);
    if (head === null) throw new FilestoreError('STORAGE_ERROR', `${JSON.stringify(p)} vanished right after it was written; retry`, { path: p, op });
    return { ...fileStat(p, head), sha256 };
  }

  /** Removes the staged object; a leftover is only garbage that the upload staging sweep removes. */
  async remove(key: string): Promise<void> {
    await this.m.client.send(new DeleteObjectCommand({ Bucket: this.m.bucket, Key: key })).catch(() => undefined);
  }

  /**
   * One page (up to `limit`) of the mount's staging keys after key `after`, with the journal entry
   * each is named after (`j<id>.<anything>`; other names are not ours to judge); `next`: where
   * the following page starts, absent after the last.
   */
  async stagingKeys(limit: number, after?: string): Promise<{ keys: Array<{ key: string; entryId: number }>; next?: string | undefined }> {
    const prefix = this.m.keys.stagingPrefix;
    const out = await this.m.client
      .send(new ListObjectsV2Command({ Bucket: this.m.bucket, Prefix: prefix, MaxKeys: limit, ...(after !== undefined ? { StartAfter: after } : {}) }))
      .catch((err: unknown) => {
        throw s3Error(err, prefix, 'sweep');
      });
    const keys: Array<{ key: string; entryId: number }> = [];
    for (const o of out.Contents ?? []) {
      const m = o.Key === undefined ? null : /^j([1-9][0-9]{0,15})\./.exec(o.Key.slice(prefix.length));
      if (m && o.Key !== undefined) keys.push({ key: o.Key, entryId: Number(m[1]) });
    }
    return { keys, next: out.IsTruncated === true ? out.Contents?.at(-1)?.Key : undefined };
  }

  /** Deletes `key`; a failure is thrown (the sweep counts it and tries again next pass). */
  async delete(key: string): Promise<void> {
    await this.m.client.send(new DeleteObjectCommand({ Bucket: this.m.bucket, Key: key })).catch((err: unknown) => {
      throw s3Error(err, key, 'sweep');
    });
  }
}

const isPreconditionFailed = (err: unknown): boolean =>
  s3ErrorName(err) === 'PreconditionFailed' || (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode === 412;

const changed = (_key: string): FilestoreError =>
  new FilestoreError(
    'UPLOAD_CHANGED',
    'the uploaded bytes were replaced (a second PUT to the upload URL) while the upload was being completed; nothing was written: start a new upload',
  );

const changedOr = (err: unknown, key: string): FilestoreError => (isPreconditionFailed(err) ? changed(key) : s3Error(err, key, 'upload'));

const cache = new Map<string, S3DirectTransfers>();

/** One instance (one SDK client) per mount version, as the backend registry keeps backends. */
export function directTransfers(mount: MountStorage, defaults: S3Defaults, maxAttempts?: number): S3DirectTransfers {
  const key = `${mount.id}:${mount.updatedAt.valueOf()}:${maxAttempts ?? ''}`;
  let d = cache.get(key);
  if (!d) {
    if (cache.size > 100) cache.clear();
    d = new S3DirectTransfers(mount, defaults, maxAttempts);
    cache.set(key, d);
  }
  return d;
}
