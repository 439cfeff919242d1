import {
  DeleteObjectsCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { StorageError } from '../../errors.ts';
import { compareBytes } from './keys.ts';

/** One object or common prefix of a listing, with its key relative to the listed prefix. */
export type RawEntry =
  | { type: 'object'; key: string; sizeBytes: number; lastModified: Date | null; etag: string | null }
  | { type: 'prefix'; key: string };

/** DeleteObjects takes at most 1,000 keys (https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html). */
export const DELETE_BATCH = 1000;

/** Strips the quotes S3 puts around ETags. */
export function bareEtag(etag: string | undefined): string | null {
  return etag === undefined ? null : etag.replace(/^"|"$/g, '');
}

/**
 * Pages of ListObjectsV2 below `prefix`, each page's objects and common prefixes merged into
 * key order. S3 returns keys in UTF-8 binary order and pages follow each other in that order;
 * an object that goes backwards would silently break every consumer that relies on the order
 * (ordered listings), so it fails loudly instead.
 */
export async function* listPages(
  client: S3Client,
  bucket: string,
  prefix: string,
  options: { delimiter?: string | undefined; maxKeys?: number | undefined; startAfter?: string | undefined } = {},
): AsyncGenerator<RawEntry[]> {
  let token: string | undefined;
  let last: string | null = null;
  do {
    const out = await client.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        Prefix: prefix,
        ContinuationToken: token,
        ...(options.delimiter !== undefined ? { Delimiter: options.delimiter } : {}),
        ...(options.maxKeys !== undefined ? { MaxKeys: options.maxKeys } : {}),
        ...(options.startAfter !== undefined && token === undefined ? { StartAfter: options.startAfter } : {}),
      }),
    );
    const page: RawEntry[] = [];
    for (const o of out.Contents ?? []) {
      if (o.Key === undefined || !o.Key.startsWith(prefix)) continue;
      page.push({
        type: 'object',
        key: o.Key.slice(prefix.length),
        sizeBytes: o.Size ?? 0,
        lastModified: o.LastModified ?? null,
        etag: bareEtag(o.ETag),
      });
    }
    for (const p of out.CommonPrefixes ?? []) {
      if (p.Prefix === undefined || !p.Prefix.startsWith(prefix)) continue;
      page.push({ type: 'prefix', key: p.Prefix.slice(prefix.length) });
    }
    page.sort((a, b) => compareBytes(a.key, b.key));
    const fresh: RawEntry[] = [];
    for (const entry of page) {
      if (last !== null && compareBytes(entry.key, last) <= 0) {
        // A common prefix repeated on the next page carries nothing new (some S3-compatible
        // servers derive the continuation token from the last object, not the last prefix).
        if (entry.type === 'prefix') continue;
        throw new StorageError('S3 listed keys out of order; the server is not S3-compatible enough for Filestore', {
          s3Error: 'ListingOutOfOrder',
        });
      }
      fresh.push(entry);
      last = entry.key;
    }
    if (fresh.length > 0) yield fresh;
    token = out.IsTruncated === true ? out.NextContinuationToken : undefined;
  } while (token !== undefined);
}

/** True when at least one key starts with `prefix` (ListObjectsV2 with MaxKeys=1). */
export async function anyKeyUnder(client: S3Client, bucket: string, prefix: string): Promise<boolean> {
  const out = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, MaxKeys: 1 }));
  return (out.KeyCount ?? out.Contents?.length ?? 0) > 0;
}

/**
 * Deletes keys in batches of 1,000. DeleteObjects answers 200 even when some keys failed and
 * lists them under Errors, so a non-empty Errors array is a failure of the whole call.
 */
export async function deleteKeys(client: S3Client, bucket: string, keys: readonly string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += DELETE_BATCH) {
    const batch = keys.slice(i, i + DELETE_BATCH);
    const out = await client.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
      }),
    );
    const errors = out.Errors ?? [];
    if (errors.length > 0) {
      const first = errors[0];
      throw new StorageError(`S3 could not delete ${errors.length} of ${batch.length} objects; retry the command`, {
        s3Error: first?.Code ?? 'unknown',
        failedKeys: errors.length,
      });
    }
  }
}

/**
 * The same pages as a recursive `listPages` of `prefix` (keys in byte order, relative to
 * `prefix`), fetched several "directories" at a time: the top level is listed with a
 * delimiter, and the keys below each common prefix — a contiguous range of the recursive
 * listing — by requests of their own, started up to `concurrency` prefixes ahead of the one
 * being consumed (one page buffered each). A plain recursive listing is one request after
 * another, each waiting for the previous page's continuation token.
 */
export async function* listPagesFanOut(
  client: S3Client,
  bucket: string,
  prefix: string,
  options: { concurrency?: number | undefined } = {},
): AsyncGenerator<RawEntry[]> {
  const concurrency = options.concurrency ?? 4;
  type Listing = { first: Promise<IteratorResult<RawEntry[]>>; rest: AsyncGenerator<RawEntry[]> };
  type Segment = { objects: RawEntry[] } | { sub: string; listing: Listing | null };
  const open = (sub: string): Listing => {
    const rest = listPages(client, bucket, prefix + sub);
    const first = rest.next();
    void first.catch(() => {}); // awaited when its turn comes
    return { first, rest };
  };
  const queue: Segment[] = [];
  const top = listPages(client, bucket, prefix, { delimiter: '/' });
  let topDone = false;
  const prefixesQueued = () => queue.reduce((n, s) => n + ('sub' in s ? 1 : 0), 0);
  try {
    for (;;) {
      // Read the top level far enough to know the next `concurrency` prefixes.
      while (!topDone && prefixesQueued() < concurrency) {
        const r = await top.next();
        if (r.done) {
          topDone = true;
          break;
        }
        let objects: RawEntry[] = [];
        for (const e of r.value) {
          if (e.type === 'object') {
            objects.push(e);
            continue;
          }
          if (objects.length > 0) queue.push({ objects });
          objects = [];
          queue.push({ sub: e.key, listing: null });
        }
        if (objects.length > 0) queue.push({ objects });
      }
      let started = 0;
      for (const s of queue) {
        if (started >= concurrency) break;
        if ('sub' in s) {
          s.listing ??= open(s.sub);
          started++;
        }
      }
      const head = queue.shift();
      if (!head) return;
      if ('objects' in head) {
        yield head.objects;
        continue;
      }
      const listing = head.listing ?? open(head.sub);
      for (let r = await listing.first; !r.done; r = await listing.rest.next()) {
        yield r.value.map((e) => ({ ...e, key: head.sub + e.key }));
      }
    }
  } finally {
    for (const s of queue) if ('sub' in s && s.listing) void s.listing.rest.return(undefined).catch(() => {});
    void top.return(undefined).catch(() => {});
  }
}
