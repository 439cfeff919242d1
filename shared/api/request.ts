import type { Readable } from 'node:stream';
import { FilestoreError } from '../errors.ts';
import { MAX_JSON_DEPTH, tooDeep } from '../json-value.ts';

/** Helpers for reading what a request carries beyond its schemas: JSON bodies, cursors, headers. */

/** JSON bodies are small; anything bigger is a mistake (file bytes go through PUT /v1/files). */
export const MAX_JSON_BODY = 1024 * 1024;

export async function readJsonBody(body: Readable | null, contentType: string | undefined): Promise<unknown> {
  if (!body) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > MAX_JSON_BODY) throw new FilestoreError('PAYLOAD_TOO_LARGE', `JSON bodies are limited to ${MAX_JSON_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return undefined;
  // Required, not assumed: a browser sends text/plain and form bodies cross-site without a CORS
  // preflight, application/json never (https://fetch.spec.whatwg.org/#cors-safelisted-request-header).
  if (!contentType || !/^\s*application\/([^;\s]+\+)?json\s*(;|$)/i.test(contentType)) {
    throw new FilestoreError(
      'UNSUPPORTED_MEDIA_TYPE',
      `this route takes a JSON body: send it with Content-Type: application/json${contentType ? `, not ${contentType.slice(0, 100)}` : ''}`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new FilestoreError('VALIDATION_ERROR', 'body: not valid JSON');
  }
  // Bounded before anything walks it recursively (validation, fingerprints, JSON.stringify).
  const deep = tooDeep(value);
  if (deep !== null) throw new FilestoreError('VALIDATION_ERROR', `body.${deep}: JSON bodies may nest at most ${MAX_JSON_DEPTH} levels deep`);
  return value;
}

/** Opaque keyset cursors: the sort key of the last item, base64url-encoded. */
export const encodeCursor = (key: string | number): string => Buffer.from(JSON.stringify(key)).toString('base64url');

export function decodeCursor<T extends string | number>(cursor: string | undefined, type: 'string' | 'number'): T | undefined {
  if (cursor === undefined) return undefined;
  try {
    const value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (typeof value === type) return value as T;
  } catch {
    // fall through
  }
  throw new FilestoreError('VALIDATION_ERROR', 'cursor: not a cursor this route returned; pass nextCursor back unchanged');
}

/** Fetch limit + 1 rows, return limit of them and the cursor of the next page. */
export function pageOf<T>(rows: T[], limit: number, key: (row: T) => string | number): { items: T[]; nextCursor: string | null } {
  if (rows.length <= limit) return { items: rows, nextCursor: null };
  const items = rows.slice(0, limit);
  return { items, nextCursor: encodeCursor(key(items[items.length - 1] as T)) };
}

/** `If-Match: 3` or `If-Match: "3"`: the version the caller expects (0 = must not exist). */
export function ifMatchVersion(header: string | undefined): number | undefined {
  if (header === undefined || header === '') return undefined;
  const m = /^\s*"?(\d{1,15})"?\s*$/.exec(header);
  if (!m) throw new FilestoreError('VALIDATION_ERROR', 'If-Match: expected a node version number, e.g. If-Match: 3 (0 = must not exist yet)');
  return Number(m[1]);
}

/** X-Checksum-Sha256 as 64 hex digits or base64 (the form S3 uses); returned as lowercase hex. */
export function checksumSha256(header: string | undefined): string | undefined {
  if (header === undefined || header === '') return undefined;
  const h = header.trim();
  if (/^[0-9a-fA-F]{64}$/.test(h)) return h.toLowerCase();
  if (/^[A-Za-z0-9+/]{43}=$/.test(h)) return Buffer.from(h, 'base64').toString('hex');
  throw new FilestoreError('VALIDATION_ERROR', 'X-Checksum-Sha256: expected the sha256 of the body as 64 hex digits or base64');
}

const KEY = /^[\x21-\x7e]{1,255}$/;

/** Idempotency-Key: 1–255 visible ASCII characters (a UUID is typical). */
export function idempotencyKey(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (!KEY.test(header)) throw new FilestoreError('VALIDATION_ERROR', 'Idempotency-Key: 1 to 255 visible ASCII characters, e.g. a UUID');
  return header;
}
