import { Readable, pipeline } from 'node:stream';
import { GetObjectCommand, type GetObjectCommandOutput } from '@aws-sdk/client-s3';
import { FilestoreError } from '../../errors.ts';
import { exactLength } from '../exact-length.ts';
import { assertRangeRequest, rangeNotSatisfiable, resolveRange } from '../range.ts';
import type { OpenedFile, RangeRequest } from '../types.ts';
import { isNotFound, s3Error, s3ErrorName, s3Fail } from './errors.ts';
import { dirExists, headFile, type S3Mount } from './inspect.ts';
import { bareEtag } from './listing.ts';

/**
 * One GetObject of `path` (optionally a range): the size, ETag and bytes all come from that
 * answer, which is one version of the object however it is overwritten meanwhile, never
 * from a HEAD beside it. The stream holds exactly ContentLength bytes or fails.
 */
export async function openObject(m: S3Mount, p: string, range: RangeRequest | undefined, op: string): Promise<OpenedFile> {
  if (p === '') throw s3Fail('IS_A_DIRECTORY', p, op);
  if (range !== undefined) assertRangeRequest(range);
  let out: GetObjectCommandOutput;
  try {
    out = await get(m, p, range);
  } catch (err) {
    if (isNotFound(err)) throw s3Fail((await dirExists(m, p, op)) ? 'IS_A_DIRECTORY' : 'NOT_FOUND', p, op);
    if (range === undefined || s3ErrorName(err) !== 'InvalidRange') throw s3Error(err, p, op);
    // 416: the range is past the end (RANGE_NOT_SATISFIABLE with the size a HEAD finds), or
    // a suffix longer than the object, which S3 serves whole but some compatible servers
    // refuse: asked again as the explicit range it means.
    const head = await headFile(m, p, op);
    if (head === null) throw s3Fail('NOT_FOUND', p, op);
    const resolved = resolveRange(range, head.ContentLength ?? 0);
    try {
      out = await get(m, p, resolved);
    } catch (again) {
      if (s3ErrorName(again) === 'InvalidRange') throw rangeNotSatisfiable(head.ContentLength ?? 0);
      throw s3Error(again, p, op);
    }
  }
  const body = out.Body;
  const length = out.ContentLength;
  if (!(body instanceof Readable) || length === undefined) {
    if (body instanceof Readable) body.destroy();
    throw new FilestoreError('STORAGE_ERROR', `S3 returned no byte stream of known length for ${JSON.stringify(p)}; retry`, { path: p, op });
  }
  const part = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(out.ContentRange ?? '');
  const etag = bareEtag(out.ETag);
  const mtime = out.LastModified ?? null;
  const stream = exactLength(length, JSON.stringify(p));
  // Errors reach the reader through `stream`; a reader that stops early releases the connection.
  pipeline(body, stream, () => {});
  return {
    sizeBytes: part ? Number(part[3]) : length,
    mtime,
    ctime: null,
    etag,
    validator: etag ?? `${length}-${mtime?.getTime() ?? ''}`,
    range: part ? { start: Number(part[1]), end: Number(part[2]) } : null,
    length,
    stream,
  };
}

function get(m: S3Mount, p: string, range: RangeRequest | undefined): Promise<GetObjectCommandOutput> {
  const header = range === undefined ? undefined : 'suffixLength' in range ? `bytes=-${range.suffixLength}` : `bytes=${range.start}-${range.end ?? ''}`;
  return m.client.send(new GetObjectCommand({ Bucket: m.bucket, Key: m.keys.fileKey(p), ...(header ? { Range: header } : {}) }));
}
