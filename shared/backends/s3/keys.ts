import { comparePaths } from '../../paths.ts';
import { randomBytes } from 'node:crypto';
import { FilestoreError } from '../../errors.ts';
import { STAGING_DIR } from '../../paths.ts';

/**
 * Where a mount's paths live in its bucket (SPEC §2): key = mount prefix + path. Directories
 * are implicit prefixes ("dir/"); a zero-byte "dir/" marker keeps an empty directory visible.
 */
export class S3Keys {
  /** "" or a prefix ending with "/". */
  readonly prefix: string;

  constructor(prefix: string | undefined) {
    this.prefix = normalizeMountPrefix(prefix ?? '');
  }

  /** The object key of a file at `path` (never the root). */
  fileKey(path: string): string {
    return this.prefix + path;
  }

  /** The prefix every key below directory `path` starts with; the mount prefix for the root. */
  dirPrefix(path: string): string {
    return path === '' ? this.prefix : `${this.prefix}${path}/`;
  }

  /** The zero-byte object that marks directory `path` as existing while it has no other keys. */
  markerKey(path: string): string {
    return this.dirPrefix(path);
  }

  /** Prefix of Filestore's staging objects; hidden from listings, never reachable through a path. */
  get stagingPrefix(): string {
    return `${this.prefix}${STAGING_DIR}/`;
  }

  /**
   * The staging objects of one command: `<stagingId>.<random>`. "." is outside the id alphabet,
   * so the prefix of one id never matches another id's objects; the random part keeps a retried
   * write from colliding with the leftovers of an earlier attempt.
   */
  stagingPrefixOf(stagingId: string): string {
    assertStagingId(stagingId);
    return `${this.stagingPrefix}${stagingId}.`;
  }

  /** A fresh staging key for one write of command `stagingId`. */
  newStagingKey(stagingId: string): string {
    return this.stagingPrefixOf(stagingId) + randomBytes(8).toString('hex');
  }

  /** The mount-relative remainder of a key below the mount prefix. */
  relative(key: string): string {
    return key.slice(this.prefix.length);
  }
}

/**
 * "tenant1", "/tenant1/" and "tenant1/" all mean the prefix "tenant1/"; "" is the whole bucket.
 * Empty, "." and ".." segments are refused: they would make keys that no path maps back to.
 */
export function normalizeMountPrefix(input: string): string {
  let p = input;
  while (p.startsWith('/')) p = p.slice(1);
  while (p.endsWith('/')) p = p.slice(0, -1);
  if (p === '') return '';
  for (const segment of p.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw new FilestoreError('CONFIG_ERROR', `S3 mount prefix ${JSON.stringify(input)} has an empty, "." or ".." segment`);
    }
  }
  return `${p}/`;
}

/**
 * The x-amz-copy-source value for a key. The header must be URL-encoded
 * (https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html#API_CopyObject_RequestSyntax);
 * "/" is kept so the bucket/key split stays readable.
 */
export function copySource(bucket: string, key: string): string {
  return `${bucket}/${encodeURIComponent(key).replace(/%2F/g, '/')}`;
}


/** Same alphabet as the local backend, so an id valid on one mount is valid on every mount. */
const STAGING_ID = /^[A-Za-z0-9_-]{1,128}$/;

function assertStagingId(stagingId: string): void {
  if (!STAGING_ID.test(stagingId)) {
    throw new FilestoreError('VALIDATION_ERROR', 'stagingId must be 1-128 characters of A-Z, a-z, 0-9, "_" or "-"', {
      stagingId: stagingId.slice(0, 140),
    });
  }
}

/** Byte order of UTF-8 strings (kept under its old name for the S3 listing code). */
export const compareBytes = comparePaths;
