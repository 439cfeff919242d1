import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  UploadPartCopyCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';
import { StorageError } from '../../errors.ts';
import { copySource } from './keys.ts';
import { forEachLimited } from './pool.ts';

/**
 * CopyObject copies at most 5 GiB in one request; larger objects need a multipart upload whose
 * parts are UploadPartCopy byte ranges of the source
 * (https://docs.aws.amazon.com/AmazonS3/latest/userguide/CopyingObjectsExamples.html).
 */
export const MAX_SINGLE_COPY_BYTES = 5 * 1024 ** 3;
export const DEFAULT_COPY_PART_BYTES = 512 * 1024 ** 2;
/** Every part but the last must be at least 5 MiB; an upload has at most 10,000 parts. */
export const MIN_PART_BYTES = 5 * 1024 ** 2;
const MAX_PARTS = 10_000;
const PART_COPY_CONCURRENCY = 4;

export interface CopyObjectRequest {
  bucket: string;
  sourceKey: string;
  targetKey: string;
  /** Size of the source in bytes (from HEAD or a listing); picks single or multipart copy. */
  sizeBytes: number;
  /** ETag of the source as S3 returned it; pins every part to the same version of the source. */
  sourceEtag?: string | undefined;
  /** Replaces the user metadata on the copy; omitted = the copy keeps the source's metadata. */
  metadata?: Record<string, string> | undefined;
  /** Objects above this size are copied in parts (default and maximum 5 GiB). */
  multipartThresholdBytes: number;
  partSizeBytes: number;
}

/** Server-side copy of one object; the target appears whole or not at all, as S3 PUTs do. */
export async function copyObject(client: S3Client, req: CopyObjectRequest): Promise<void> {
  const threshold = Math.min(req.multipartThresholdBytes, MAX_SINGLE_COPY_BYTES);
  if (req.sizeBytes <= threshold) {
    await client.send(
      new CopyObjectCommand({
        Bucket: req.bucket,
        Key: req.targetKey,
        CopySource: copySource(req.bucket, req.sourceKey),
        ...(req.sourceEtag !== undefined ? { CopySourceIfMatch: req.sourceEtag } : {}),
        ...(req.metadata !== undefined
          ? { MetadataDirective: 'REPLACE', Metadata: req.metadata, ContentType: 'application/octet-stream' }
          : { MetadataDirective: 'COPY' }),
      }),
    );
    return;
  }
  await multipartCopy(client, req);
}

/** Byte ranges (inclusive) of the parts of a multipart copy of `size` bytes. */
export function copyPartRanges(size: number, partSizeBytes: number): Array<{ start: number; end: number }> {
  const partSize = Math.max(partSizeBytes, MIN_PART_BYTES, Math.ceil(size / MAX_PARTS));
  const ranges: Array<{ start: number; end: number }> = [];
  for (let start = 0; start < size; start += partSize) {
    ranges.push({ start, end: Math.min(start + partSize, size) - 1 });
  }
  return ranges;
}

async function multipartCopy(client: S3Client, req: CopyObjectRequest): Promise<void> {
  // A multipart upload starts with no metadata: carry the source's over unless told otherwise.
  const head = await client.send(new HeadObjectCommand({ Bucket: req.bucket, Key: req.sourceKey }));
  const sourceEtag = req.sourceEtag ?? head.ETag;
  const created = await client.send(
    new CreateMultipartUploadCommand({
      Bucket: req.bucket,
      Key: req.targetKey,
      ContentType: head.ContentType ?? 'application/octet-stream',
      Metadata: req.metadata ?? head.Metadata ?? {},
    }),
  );
  const uploadId = created.UploadId;
  if (uploadId === undefined) throw new StorageError('S3 did not return an upload id for a multipart copy');
  const size = head.ContentLength ?? req.sizeBytes;
  const ranges = copyPartRanges(size, req.partSizeBytes);
  const parts: CompletedPart[] = new Array(ranges.length);
  try {
    await forEachLimited(ranges, PART_COPY_CONCURRENCY, async ({ start, end }, i) => {
      const out = await client.send(
        new UploadPartCopyCommand({
          Bucket: req.bucket,
          Key: req.targetKey,
          UploadId: uploadId,
          PartNumber: i + 1,
          CopySource: copySource(req.bucket, req.sourceKey),
          CopySourceRange: `bytes=${start}-${end}`,
          ...(sourceEtag !== undefined ? { CopySourceIfMatch: sourceEtag } : {}),
        }),
      );
      const etag = out.CopyPartResult?.ETag;
      if (etag === undefined) throw new StorageError('S3 did not return an ETag for a copied part');
      parts[i] = { PartNumber: i + 1, ETag: etag };
    });
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: req.bucket,
        Key: req.targetKey,
        UploadId: uploadId,
        MultipartUpload: { Parts: parts },
      }),
    );
  } catch (err) {
    // Parts of an abandoned upload are billed until aborted; the copy's own error is what matters.
    await client
      .send(new AbortMultipartUploadCommand({ Bucket: req.bucket, Key: req.targetKey, UploadId: uploadId }))
      .catch(() => undefined);
    throw err;
  }
}
