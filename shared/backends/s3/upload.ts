import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

export const DEFAULT_UPLOAD_PART_BYTES = 8 * 1024 ** 2;
/**
 * Parts in flight per upload. lib-storage buffers at most queueSize × partSize bytes, so a write
 * costs 16 MiB of memory by default whatever the file size.
 */
const UPLOAD_QUEUE_SIZE = 2;

export interface StreamedUpload {
  sha256: string;
  sizeBytes: number;
}

/**
 * Streams `body` to `key` and returns the sha256 and size of the bytes sent, computed on the way.
 * Bodies up to one part go up as one PutObject, larger ones as a multipart upload
 * (lib-storage `Upload`); each part is a buffered request body, so the SDK can retry it.
 * On failure lib-storage aborts the multipart upload, and the caller's stream is destroyed so
 * nothing keeps reading from it.
 */
export async function uploadStream(
  client: S3Client,
  target: { bucket: string; key: string },
  body: Readable,
  partSizeBytes: number,
): Promise<StreamedUpload> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      sizeBytes += chunk.length;
      callback(null, chunk);
    },
  });
  const upload = new Upload({
    client,
    params: { Bucket: target.bucket, Key: target.key, Body: meter, ContentType: 'application/octet-stream' },
    partSize: partSizeBytes,
    queueSize: UPLOAD_QUEUE_SIZE,
    leavePartsOnError: false,
  });
  const piping = pipeline(body, meter);
  const uploading = upload.done();
  // Both are awaited below; these keep a second rejection from going unhandled.
  piping.catch(() => undefined);
  uploading.catch(() => undefined);
  try {
    await Promise.all([uploading, piping]);
  } catch (err) {
    meter.destroy();
    body.destroy();
    await upload.abort().catch(() => undefined);
    throw err;
  }
  return { sha256: hash.digest('hex'), sizeBytes };
}
