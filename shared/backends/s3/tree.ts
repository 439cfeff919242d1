import { DeleteObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { FilestoreError } from '../../errors.ts';
import { isSameOrDescendant } from '../../paths.ts';
import type { EntryStat } from '../types.ts';
import { copyObject } from './copy.ts';
import { s3Error, s3Fail } from './errors.ts';
import { assertNoFileAncestor, keepParentVisible, statEntry, type S3Mount } from './inspect.ts';
import { deleteKeys, listPages } from './listing.ts';
import { forEachLimited } from './pool.ts';

/**
 * Copy, move and delete on S3. S3 has no rename and no directories: a move is a server-side
 * copy of every key followed by a delete of the source, a tree is every key under "dir/".
 * Non-guarantee: a tree copy or move is not atomic; readers can see a partly copied target, and
 * a move that fails after its copy leaves both trees (repeating it then reports ALREADY_EXISTS).
 */

/** Keys copied at once within a tree (S3 sustains thousands of requests per second per prefix). */
const TREE_COPY_CONCURRENCY = 8;

/** Copies (or moves) a file or tree, with the target rules of Backend.copy / Backend.move. */
export async function transfer(
  m: S3Mount,
  from: string,
  to: string,
  options: { overwrite: boolean; move: boolean },
): Promise<void> {
  const op = options.move ? 'move' : 'copy';
  const src = await statEntry(m, from, op);
  if (src === null) throw s3Fail('NOT_FOUND', from, op);
  if (src.kind === 'directory' && isSameOrDescendant(to, from)) throw s3Fail('MOVE_INTO_SELF', from, op);
  if (from === to) {
    // A file onto itself: nothing to do when replacing is allowed, as rename(2) does.
    if (!options.overwrite) throw s3Fail('ALREADY_EXISTS', to, op);
    return;
  }
  if (isSameOrDescendant(from, to)) {
    // The target is a directory holding the source: it exists, and replacing it would delete the source.
    if (!options.overwrite) throw s3Fail('ALREADY_EXISTS', to, op);
    throw new FilestoreError('MOVE_INTO_SELF', `${JSON.stringify(to)} contains ${JSON.stringify(from)} and cannot be replaced by it`, { path: from, targetPath: to, op });
  }
  await assertNoFileAncestor(m, to, op);
  const dst = await statEntry(m, to, op);
  if (dst !== null) {
    if (!options.overwrite) throw s3Fail('ALREADY_EXISTS', to, op);
    // A file over a file is replaced atomically by the copy itself; anything else goes first.
    if (dst.kind === 'directory' || src.kind === 'directory') await removeEntry(m, dst, op);
  }
  if (src.kind === 'file') {
    try {
      await copyObject(m.client, {
        bucket: m.bucket,
        sourceKey: m.keys.fileKey(from),
        targetKey: m.keys.fileKey(to),
        sizeBytes: src.sizeBytes,
        multipartThresholdBytes: m.multipartCopyThresholdBytes,
        partSizeBytes: m.copyPartSizeBytes,
      });
    } catch (err) {
      throw s3Error(err, from, op);
    }
  } else {
    await copyTree(m, from, to, op);
  }
  if (options.move) {
    await removeEntry(m, src, op);
    await keepParentVisible(m, from, op);
  }
}

/**
 * Copies every key under "from/" (markers included) to the same place under "to/", page by page,
 * so memory stays at one listing page. On failure the partial target is removed.
 */
async function copyTree(m: S3Mount, from: string, to: string, op: string): Promise<void> {
  const srcPrefix = m.keys.dirPrefix(from);
  const dstPrefix = m.keys.dirPrefix(to);
  try {
    for await (const page of listPages(m.client, m.bucket, srcPrefix)) {
      await forEachLimited(page, TREE_COPY_CONCURRENCY, async (entry) => {
        if (entry.type !== 'object') return;
        await copyObject(m.client, {
          bucket: m.bucket,
          sourceKey: srcPrefix + entry.key,
          targetKey: dstPrefix + entry.key,
          sizeBytes: entry.sizeBytes,
          multipartThresholdBytes: m.multipartCopyThresholdBytes,
          partSizeBytes: m.copyPartSizeBytes,
        });
      });
    }
  } catch (err) {
    await deletePrefix(m, dstPrefix).catch(() => undefined);
    throw s3Error(err, from, op);
  }
}

/** Deletes the file or tree `entry` as it was just stat'ed. */
async function removeEntry(m: S3Mount, entry: EntryStat, op: string): Promise<void> {
  try {
    if (entry.kind === 'file') {
      await m.client.send(new DeleteObjectCommand({ Bucket: m.bucket, Key: m.keys.fileKey(entry.path) }));
    } else {
      await deletePrefix(m, m.keys.dirPrefix(entry.path));
    }
  } catch (err) {
    throw s3Error(err, entry.path, op);
  }
}

/**
 * Deletes every key under `prefix` with paginated listing and DeleteObjects batches of 1,000.
 * Deleting the keys of a page does not disturb the continuation token of the next one.
 * The staging area is left alone (it lies under the mount prefix, i.e. under the root).
 */
async function deletePrefix(m: S3Mount, prefix: string): Promise<void> {
  const staging = m.keys.stagingPrefix;
  for await (const page of listPages(m.client, m.bucket, prefix)) {
    const keys: string[] = [];
    for (const entry of page) {
      const key = prefix + entry.key;
      if (entry.type === 'object' && !key.startsWith(staging)) keys.push(key);
    }
    await deleteKeys(m.client, m.bucket, keys);
  }
}

/** Backend.delete: a file, an empty directory, or (recursive) a tree. */
export async function deleteEntry(m: S3Mount, path: string, recursive: boolean): Promise<void> {
  const op = 'delete';
  if (path === '') {
    throw new FilestoreError('VALIDATION_ERROR', 'the mount root cannot be deleted; delete its entries instead', { path, op });
  }
  const st = await statEntry(m, path, op);
  if (st === null) throw s3Fail('NOT_FOUND', path, op);
  if (st.kind === 'directory' && !recursive) {
    const marker = m.keys.markerKey(path);
    try {
      // The marker, if any, sorts first under "dir/": two keys tell whether anything else is there.
      const out = await m.client.send(new ListObjectsV2Command({ Bucket: m.bucket, Prefix: marker, MaxKeys: 2 }));
      if ((out.Contents ?? []).some((o) => o.Key !== marker)) throw s3Fail('DIRECTORY_NOT_EMPTY', path, op);
      await m.client.send(new DeleteObjectCommand({ Bucket: m.bucket, Key: marker }));
    } catch (err) {
      throw s3Error(err, path, op);
    }
  } else {
    await removeEntry(m, st, op);
  }
  await keepParentVisible(m, path, op);
}
