import { HeadObjectCommand, PutObjectCommand, type HeadObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import { ancestorsOf, parentOf } from '../../paths.ts';
import type { EntryStat } from '../types.ts';
import { isNotFound, s3Error, s3Fail } from './errors.ts';
import type { S3Keys } from './keys.ts';
import { anyKeyUnder, bareEtag } from './listing.ts';

/** What every S3 operation of one mount needs. */
export interface S3Mount {
  client: S3Client;
  bucket: string;
  keys: S3Keys;
  multipartCopyThresholdBytes: number;
  copyPartSizeBytes: number;
  uploadPartSizeBytes: number;
}

/** HeadObject on the exact key of `path`: never a prefix match, so "ab" does not make "a" exist. */
export async function headFile(m: S3Mount, path: string, op: string): Promise<HeadObjectCommandOutput | null> {
  try {
    return await m.client.send(new HeadObjectCommand({ Bucket: m.bucket, Key: m.keys.fileKey(path) }));
  } catch (err) {
    if (isNotFound(err)) return null;
    throw s3Error(err, path, op);
  }
}

/** A directory exists when its marker or any key below it exists; the root always exists. */
export async function dirExists(m: S3Mount, path: string, op: string): Promise<boolean> {
  if (path === '') return true;
  try {
    return await anyKeyUnder(m.client, m.bucket, m.keys.dirPrefix(path));
  } catch (err) {
    throw s3Error(err, path, op);
  }
}

export function fileStat(path: string, head: HeadObjectCommandOutput): EntryStat {
  return {
    path,
    kind: 'file',
    sizeBytes: head.ContentLength ?? 0,
    mode: null,
    uid: null,
    gid: null,
    mtime: head.LastModified ?? null,
    etag: bareEtag(head.ETag),
    symlinkTarget: null,
  };
}

export function directoryStat(path: string): EntryStat {
  // Null mtime even with a marker: listings cannot see markers of direct children, and a
  // stat must agree with a listing or reconciliation would see drift that is not there.
  return { path, kind: 'directory', sizeBytes: 0, mode: null, uid: null, gid: null, mtime: null, etag: null, symlinkTarget: null };
}

/**
 * The entry at `path`. A file key wins over keys below "path/" when both exist (S3 allows it,
 * a file system does not): the path is reported as that file.
 */
export async function statEntry(m: S3Mount, path: string, op: string): Promise<EntryStat | null> {
  if (path === '') return directoryStat('');
  const head = await headFile(m, path, op);
  if (head !== null) return fileStat(path, head);
  return (await dirExists(m, path, op)) ? directoryStat(path) : null;
}

/** NOT_A_DIRECTORY when any ancestor of `path` is a file (an exact key), checked in parallel. */
export async function assertNoFileAncestor(m: S3Mount, path: string, op: string): Promise<void> {
  const ancestors = ancestorsOf(path).filter((a) => a !== '');
  const heads = await Promise.all(ancestors.map((a) => headFile(m, a, op)));
  const i = heads.findIndex((h) => h !== null);
  if (i !== -1) throw s3Fail('NOT_A_DIRECTORY', ancestors[i] as string, op);
}

/** Writes the zero-byte "dir/" marker of `path`. */
export async function putMarker(m: S3Mount, path: string, op: string): Promise<void> {
  try {
    await m.client.send(new PutObjectCommand({ Bucket: m.bucket, Key: m.keys.markerKey(path), Body: '', ContentLength: 0 }));
  } catch (err) {
    throw s3Error(err, path, op);
  }
}

/**
 * After removing `path`, keeps its parent directory visible: on S3 a directory without a marker
 * vanishes with its last key, where a file system would keep it.
 */
export async function keepParentVisible(m: S3Mount, path: string, op: string): Promise<void> {
  const parent = parentOf(path);
  if (parent === null || parent === '') return;
  if (await dirExists(m, parent, op)) return;
  // A file key at the parent's path shadowed the directory; do not put keys under it.
  if ((await headFile(m, parent, op)) === null) await putMarker(m, parent, op);
}
