import { AbortMultipartUploadCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { STAGING_DIR } from '../../paths.ts';
import { isNotFound, isNotImplemented, s3Error } from './errors.ts';
import type { S3Mount } from './inspect.ts';
import { deleteKeys, listPages } from './listing.ts';

/**
 * Recovery of a command that died mid-write: its staging objects
 * (`<prefix>.filestore-staging/<stagingId>.<random>`) are deleted and its multipart uploads still
 * in progress are aborted, since their parts are stored (and billed) until then
 * (https://docs.aws.amazon.com/AmazonS3/latest/userguide/abort-mpu.html). Safe to repeat.
 */
export async function discardStagingObjects(m: S3Mount, stagingId: string): Promise<void> {
  const prefix = m.keys.stagingPrefixOf(stagingId);
  try {
    for await (const page of listPages(m.client, m.bucket, prefix)) {
      await deleteKeys(m.client, m.bucket, page.map((e) => prefix + e.key));
    }
    await abortUploads(m, prefix);
  } catch (err) {
    throw s3Error(err, STAGING_DIR, 'discardStaging');
  }
}

/** Aborts the in-progress multipart uploads under `prefix`; a server without the API has none to find. */
async function abortUploads(m: S3Mount, prefix: string): Promise<void> {
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  for (;;) {
    let out;
    try {
      out = await m.client.send(
        new ListMultipartUploadsCommand({ Bucket: m.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
      );
    } catch (err) {
      if (isNotImplemented(err)) return;
      throw err;
    }
    for (const u of out.Uploads ?? []) {
      if (u.Key === undefined || u.UploadId === undefined || !u.Key.startsWith(prefix)) continue;
      await m.client
        .send(new AbortMultipartUploadCommand({ Bucket: m.bucket, Key: u.Key, UploadId: u.UploadId }))
        .catch((err: unknown) => {
          if (!isNotFound(err)) throw err; // NoSuchUpload: completed or aborted meanwhile
        });
    }
    keyMarker = out.NextKeyMarker;
    uploadIdMarker = out.NextUploadIdMarker;
    // A server that does not page properly must not loop forever.
    if (out.IsTruncated !== true || (keyMarker === undefined && uploadIdMarker === undefined)) return;
  }
}
