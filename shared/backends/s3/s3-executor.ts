import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeleteObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { FilestoreError } from '../../errors.ts';
import { ancestorsOf, comparePaths, joinPath, normalizePath, parentOf, STAGING_DIR } from '../../paths.ts';
import type { Backend, ByteRange, EntryStat, HashedFile, ListOptions, OpenedFile, RangeRequest, WriteOptions, WriteResult } from '../types.ts';
import { createS3Client } from './client.ts';
import { copyObject, DEFAULT_COPY_PART_BYTES, MAX_SINGLE_COPY_BYTES, MIN_PART_BYTES } from './copy.ts';
import { s3Error, s3ErrorName, s3Fail, uploadError } from './errors.ts';
import {
  assertNoFileAncestor,
  dirExists,
  directoryStat,
  fileStat,
  headFile,
  putMarker,
  statEntry,
  type S3Mount,
} from './inspect.ts';
import { S3Keys } from './keys.ts';
import { anyKeyUnder, listPages, listPagesFanOut, type RawEntry } from './listing.ts';
import { PathOrderedListing, type ListedItem } from './path-order.ts';
import { escapePath, SkippedNames, skippedTrailer, skipReasonOf } from '../skipped.ts';
import { openObject } from './read.ts';
import { discardStagingObjects } from './staging.ts';
import { deleteEntry, transfer } from './tree.ts';
import { DEFAULT_UPLOAD_PART_BYTES, uploadStream } from './upload.ts';

export interface S3ExecutorOptions {
  bucket: string;
  /** Mount prefix inside the bucket ("tenant1" or "tenant1/"); "" = the whole bucket. */
  prefix?: string;
  region?: string;
  /** An S3-compatible server; addressed path-style unless forcePathStyle says otherwise. */
  endpoint?: string;
  forcePathStyle?: boolean;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** A ready client (tests, shared connection pools); region/endpoint/credentials are then ignored. */
  client?: S3Client;
  /** Attempts per request including the first (default 6); see client.ts. */
  maxAttempts?: number;
  /** Objects above this size are copied with UploadPartCopy (default and maximum 5 GiB). */
  multipartCopyThresholdBytes?: number;
  /** Part size of streamed uploads (default 8 MiB, minimum 5 MiB). */
  partSizeBytes?: number;
  /** Part size of multipart copies (default 512 MiB, minimum 5 MiB). */
  copyPartSizeBytes?: number;
}

/**
 * Backend over an S3 bucket/prefix (SPEC §2): key = mount prefix + path; directories are
 * implicit prefixes, made visible when empty by a zero-byte "dir/" marker.
 *
 * Every write goes to a staging object `<prefix>.filestore-staging/<stagingId>.<random>` first,
 * is hashed on the way, and reaches its path through one server-side CopyObject that also records
 * the sha256 as `x-amz-meta-sha256`. So a checksum mismatch never touches the target, and the
 * target changes in one step (S3 never shows a partly written object). The cost is one
 * server-side copy per write.
 *
 * Where S3 and a file system disagree: a file key "a" and keys under "a/" can coexist; the
 * file wins (stat, list). Copies and moves of trees are key-by-key, not atomic (see tree.ts).
 * Incomplete multipart uploads of a crashed write are aborted by discardStaging; a bucket
 * lifecycle rule `AbortIncompleteMultipartUpload` is still advisable for anything missed.
 */
export class S3Executor implements Backend {
  readonly kind = 's3' as const;
  private readonly m: S3Mount;

  constructor(options: S3ExecutorOptions) {
    if (options.bucket === '') throw new FilestoreError('CONFIG_ERROR', 'an S3 mount needs a bucket');
    const partSize = options.partSizeBytes ?? DEFAULT_UPLOAD_PART_BYTES;
    const copyPartSize = options.copyPartSizeBytes ?? DEFAULT_COPY_PART_BYTES;
    if (partSize < MIN_PART_BYTES || copyPartSize < MIN_PART_BYTES) {
      throw new FilestoreError('CONFIG_ERROR', 'S3 part sizes must be at least 5 MiB (the S3 minimum for all parts but the last)');
    }
    const threshold = options.multipartCopyThresholdBytes ?? MAX_SINGLE_COPY_BYTES;
    if (!(threshold >= 0)) throw new FilestoreError('CONFIG_ERROR', 'multipartCopyThresholdBytes must be a non-negative number');
    this.m = {
      client:
        options.client ??
        createS3Client({
          region: options.region,
          endpoint: options.endpoint,
          forcePathStyle: options.forcePathStyle,
          credentials: options.credentials,
          maxAttempts: options.maxAttempts,
        }),
      bucket: options.bucket,
      keys: new S3Keys(options.prefix),
      multipartCopyThresholdBytes: threshold,
      copyPartSizeBytes: copyPartSize,
      uploadPartSizeBytes: partSize,
    };
  }

  async stat(path: string): Promise<EntryStat | null> {
    return statEntry(this.m, normalizePath(path), 'stat');
  }

  async *list(dir: string, options: ListOptions = {}): AsyncIterable<EntryStat> {
    for await (const batch of this.listBatches(dir, options)) yield* batch;
  }

  async *listBatches(dir: string, options: ListOptions = {}): AsyncIterable<EntryStat[]> {
    const op = 'list';
    const d = normalizePath(dir);
    const st = await statEntry(this.m, d, op);
    if (st === null) throw s3Fail('NOT_FOUND', d, op);
    if (st.kind !== 'directory') throw s3Fail('NOT_A_DIRECTORY', d, op);
    const base = this.m.keys.dirPrefix(d);
    const ordered = new PathOrderedListing({
      probe: async (rel) => {
        if (d === '' && rel === STAGING_DIR) return false; // hidden like every staging key
        try {
          return await anyKeyUnder(this.m.client, this.m.bucket, `${base}${rel}/`);
        } catch (err) {
          throw s3Error(err, joinPath(d, rel), op);
        }
      },
    });
    // Resuming: every key of a path after `startAfter` sorts after the key "prefix + startAfter"
    // (a path's key is the path, or the path + "/…"), so S3 may start the listing there; a
    // directory re-appearing from a key below it is dropped by the filter.
    const after = options.startAfter;
    const startKey = after === undefined ? undefined : `${this.m.keys.dirPrefix('')}${after}`;
    // A fresh recursive listing fetches several directories' keys at once (same keys, same
    // order). Resuming lists plainly: how a delimited listing treats a StartAfter inside a
    // common prefix differs between S3-compatible servers.
    const pages =
      options.recursive !== true
        ? listPages(this.m.client, this.m.bucket, base, { delimiter: '/', startAfter: startKey })
        : startKey === undefined
          ? listPagesFanOut(this.m.client, this.m.bucket, base)
          : listPages(this.m.client, this.m.bucket, base, { startAfter: startKey });
    const wanted = (e: EntryStat) => after === undefined || comparePaths(e.path, after) > 0;
    const skipped = new SkippedNames();
    try {
      for await (const page of pages) {
        const batch: EntryStat[] = [];
        for (const raw of page) {
          const entry = this.listable(d, raw, skipped);
          if (entry === null) continue;
          for (const item of await ordered.push(entry)) {
            const stat = toStat(d, item);
            if (wanted(stat)) batch.push(stat);
          }
        }
        if (batch.length > 0) yield batch;
      }
    } catch (err) {
      throw s3Error(err, d, op);
    }
    const rest = ordered.finish().map((item) => toStat(d, item)).filter(wanted);
    if (rest.length > 0) yield rest;
    if (skipped.total > 0) yield skippedTrailer(skipped); // see backends/skipped.ts
  }

  async mkdir(path: string, options: { parents: boolean }): Promise<EntryStat> {
    const op = 'mkdir';
    const p = normalizePath(path);
    if (p === '') {
      if (options.parents) return directoryStat('');
      throw s3Fail('ALREADY_EXISTS', p, op);
    }
    const existing = await statEntry(this.m, p, op);
    if (existing !== null) {
      if (existing.kind === 'directory' && options.parents) return existing;
      throw s3Fail('ALREADY_EXISTS', p, op);
    }
    await assertNoFileAncestor(this.m, p, op);
    const ancestors = ancestorsOf(p).filter((a) => a !== '');
    if (!options.parents) {
      const parent = parentOf(p) as string;
      if (parent !== '' && !(await dirExists(this.m, parent, op))) throw s3Fail('NOT_FOUND', parent, op);
    } else {
      // Markers for the ancestors this command creates, so they outlive the target's removal.
      const exists = await Promise.all(ancestors.map((a) => dirExists(this.m, a, op)));
      await Promise.all(ancestors.filter((_, i) => !exists[i]).map((a) => putMarker(this.m, a, op)));
    }
    await putMarker(this.m, p, op);
    return directoryStat(p);
  }

  async writeFile(path: string, body: Readable, options: WriteOptions): Promise<WriteResult> {
    const op = 'write';
    const p = normalizePath(path);
    if (p === '') throw s3Fail('IS_A_DIRECTORY', p, op);
    const stagingKey = this.m.keys.newStagingKey(options.stagingId);
    await assertNoFileAncestor(this.m, p, op);
    if ((await headFile(this.m, p, op)) === null && (await dirExists(this.m, p, op))) {
      throw s3Fail('IS_A_DIRECTORY', p, op);
    }
    let sha256: string;
    try {
      let sizeBytes: number;
      try {
        ({ sha256, sizeBytes } = await uploadStream(
          this.m.client,
          { bucket: this.m.bucket, key: stagingKey },
          body,
          this.m.uploadPartSizeBytes,
        ));
      } catch (err) {
        throw uploadError(err, p, op);
      }
      const expected = options.expectedSha256?.toLowerCase();
      if (expected !== undefined && expected !== sha256) {
        throw new FilestoreError('CHECKSUM_MISMATCH', `the bytes sent for ${JSON.stringify(p)} do not match the expected sha256; nothing was written`, {
          path: p,
          expectedSha256: expected,
          actualSha256: sha256,
        });
      }
      await options.beforeCommit?.({ sha256, sizeBytes });
      await copyObject(this.m.client, {
        bucket: this.m.bucket,
        sourceKey: stagingKey,
        targetKey: this.m.keys.fileKey(p),
        sizeBytes,
        metadata: { sha256 },
        multipartThresholdBytes: this.m.multipartCopyThresholdBytes,
        partSizeBytes: this.m.copyPartSizeBytes,
      }).catch((err: unknown) => {
        throw s3Error(err, p, op);
      });
    } finally {
      // A leftover is only garbage: discardStaging removes it on recovery.
      await this.m.client
        .send(new DeleteObjectCommand({ Bucket: this.m.bucket, Key: stagingKey }))
        .catch(() => undefined);
    }
    const head = await headFile(this.m, p, op);
    if (head === null) {
      throw new FilestoreError('STORAGE_ERROR', `${JSON.stringify(p)} vanished right after it was written; retry`, { path: p, op });
    }
    return { ...fileStat(p, head), sha256 };
  }

  async open(path: string, range?: RangeRequest): Promise<OpenedFile> {
    return openObject(this.m, normalizePath(path), range, 'read');
  }

  async read(path: string, range?: ByteRange): Promise<Readable> {
    try {
      return (await this.open(path, range)).stream;
    } catch (err) {
      // Past the end a file system read gives no bytes, and so does this backend.
      if (err instanceof FilestoreError && err.code === 'RANGE_NOT_SATISFIABLE') return Readable.from([]);
      throw err;
    }
  }

  /** One GetObject answer is one version of the object: its hash can never mix two. */
  async hash(path: string): Promise<HashedFile> {
    const p = normalizePath(path);
    const { stream, range: _range, length: _length, ...version } = await openObject(this.m, p, undefined, 'hash');
    const hash = createHash('sha256');
    try {
      await pipeline(stream, hash);
    } catch (err) {
      throw s3Error(err, p, 'hash');
    }
    return { ...version, sha256: hash.digest('hex') };
  }

  async move(from: string, to: string, options: { overwrite: boolean }): Promise<void> {
    await transfer(this.m, normalizePath(from), normalizePath(to), { overwrite: options.overwrite, move: true });
  }

  async copy(from: string, to: string, options: { overwrite: boolean }): Promise<void> {
    await transfer(this.m, normalizePath(from), normalizePath(to), { overwrite: options.overwrite, move: false });
  }

  async delete(path: string, options: { recursive: boolean }): Promise<void> {
    await deleteEntry(this.m, normalizePath(path), options.recursive);
  }

  /**
   * UNAVAILABLE when no credentials can be found for the mount (none configured, none in the
   * environment, profile or role): every request would fail before it is sent, so a command is
   * journaled failed at once instead of reaching apply, where storage could not be asked what
   * happened and the entry would stay pending. The SDK's provider caches what it found.
   */
  async ready(): Promise<void> {
    try {
      await this.m.client.config.credentials();
    } catch (err) {
      const name = s3ErrorName(err);
      throw new FilestoreError(
        'UNAVAILABLE',
        `S3 mount of bucket "${this.m.bucket}" has no credentials: the server found none (${name}); configure them on the server (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role) and retry`,
        { cause: 'no S3 credentials', bucket: this.m.bucket },
      );
    }
  }

  async discardStaging(stagingId: string): Promise<void> {
    await discardStagingObjects(this.m, stagingId);
  }

  /**
   * Leaves out the staging area and keys that are no canonical path ("a//b", NFD names, control
   * characters): the catalogue cannot address them. Their longest canonical ancestor ("a" of
   * "a//b") still exists as a directory, as stat says, so the entry shrinks to that prefix.
   * Such keys are counted in `skipped` (the staging area is Filestore's own, not counted).
   */
  private listable(dir: string, entry: RawEntry, skipped: SkippedNames): RawEntry | null {
    const isDir = entry.key.endsWith('/');
    const rel = isDir ? entry.key.slice(0, -1) : entry.key;
    const path = joinPath(dir, rel);
    if (rel === '' || isCanonical(path)) return entry;
    if (path !== STAGING_DIR && !path.startsWith(`${STAGING_DIR}/`)) skipped.add(skipReasonOf(path), () => escapePath(path));
    const segments = rel.split('/');
    let valid = '';
    for (const segment of segments.slice(0, -1)) {
      const next = valid === '' ? segment : `${valid}/${segment}`;
      if (!isCanonical(joinPath(dir, next))) break;
      valid = next;
    }
    return valid === '' ? null : { type: 'prefix', key: `${valid}/` };
  }
}

function isCanonical(path: string): boolean {
  try {
    return normalizePath(path) === path;
  } catch {
    return false; // INVALID_PATH, including the reserved top-level staging directory
  }
}

function toStat(dir: string, item: ListedItem): EntryStat {
  return {
    path: joinPath(dir, item.path),
    kind: item.kind,
    sizeBytes: item.sizeBytes,
    mode: null,
    uid: null,
    gid: null,
    mtime: item.mtime,
    etag: item.etag,
    symlinkTarget: null,
  };
}
