import type { Backend, FileVersion, OpenedFile, RangeRequest } from '../backends/types.ts';
import { FilestoreError } from '../errors.ts';
import type { ApiResponse } from './route.ts';

/** What the catalogue recorded of the file being downloaded (fields of the node's JSON view). */
export interface RecordedFile {
  path: string;
  version: number;
  sizeBytes: number;
  sha256: string | null;
  /** Local: the mtime the record (and so its sha256) was taken with; an ISO string from the view. */
  mtime: string | Date | null;
  /** S3: the ETag the record was taken with. */
  etag: string | null;
}

/**
 * A download (GET /v1/files): headers and bytes from one opened version of the file, so the
 * Content-Length, Content-Range and ETag describe exactly the bytes sent, whatever happens to
 * the file meanwhile (a stream that cannot send them all is cut, see OpenedFile).
 */
export async function download(backend: Backend, node: RecordedFile, headers: Record<string, string | undefined>): Promise<ApiResponse> {
  const asked = parseRange(headers.range);
  const ifRange = asked === undefined ? undefined : headers['if-range'];
  let opened: OpenedFile;
  try {
    opened = await openRecorded(backend, node.path, asked);
  } catch (err) {
    if (ifRange === undefined || !(err instanceof FilestoreError && err.code === 'RANGE_NOT_SATISFIABLE')) throw err;
    // Evaluated before Range (RFC 9110 §13.1.5): a range meant for another version is no 416.
    opened = await openRecorded(backend, node.path, undefined);
    if (ifRangeHolds(ifRange, downloadEtag(node, opened))) {
      opened.stream.destroy();
      throw err;
    }
  }
  if (opened.range !== null && ifRange !== undefined && !ifRangeHolds(ifRange, downloadEtag(node, opened))) {
    // The client holds part of another version: it gets this one whole, never a piece to splice on.
    opened.stream.destroy();
    opened = await openRecorded(backend, node.path, undefined);
  }
  const h: Record<string, string> = {
    'content-type': 'application/octet-stream',
    'accept-ranges': 'bytes',
    'content-length': String(opened.length),
    etag: downloadEtag(node, opened),
    'x-filestore-version': String(node.version),
  };
  if (opened.mtime) h['last-modified'] = opened.mtime.toUTCString();
  if (opened.range === null) return { status: 200, headers: h, stream: opened.stream };
  h['content-range'] = `bytes ${opened.range.start}-${opened.range.end}/${opened.sizeBytes}`;
  return { status: 206, headers: h, stream: opened.stream };
}

/**
 * A single `Range: bytes=…` (RFC 9110 §14.1.2); undefined means "send it all": no header,
 * several ranges, or a form we ignore as the RFC allows. Whether it is satisfiable depends on
 * the size of the version opened (Backend.open).
 */
export function parseRange(header: string | undefined): RangeRequest | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  // Beyond 2^53 a number only means "past any file" (start) or "to the end" (end, suffix).
  const n = (digits: string) => Math.min(Number(digits), Number.MAX_SAFE_INTEGER);
  if (m[1] === '') return { suffixLength: n(m[2] as string) };
  const start = n(m[1] as string);
  if (m[2] === '') return { start };
  const end = n(m[2] as string);
  return end < start ? undefined : { start, end };
}

/**
 * The ETag of the version being sent. The recorded sha256, as a strong tag, only when this is
 * the version it was recorded for: the same size, and the same mtime (local) or S3 ETag.
 * Otherwise (drift the catalogue has not caught up with, a rewrite under way) a weak tag
 * naming the version read, `W/"<validator>"`: a hash of other bytes is never served as this
 * body's. ctime is not recorded, so a rewrite that keeps the size and puts mtime back goes
 * unseen here until a hash audit, as it does for drift detection (docs/api.md).
 */
export function downloadEtag(node: RecordedFile, v: FileVersion): string {
  const recordedHere =
    node.sizeBytes === v.sizeBytes &&
    (v.etag !== null ? node.etag === v.etag : node.mtime !== null && v.mtime !== null && new Date(node.mtime).getTime() === v.mtime.getTime());
  return node.sha256 !== null && recordedHere ? `"${node.sha256}"` : `W/"${v.validator}"`;
}

/** If-Range holds only for the strong ETag being sent; a weak tag or a date never does (RFC 9110 §13.1.5). */
function ifRangeHolds(header: string, etag: string): boolean {
  return !etag.startsWith('W/') && header.trim() === etag;
}

/** Opens the catalogued file; gone from storage (or no longer a file there, or behind a symlink) is NOT_FOUND until reconciled. */
async function openRecorded(backend: Backend, path: string, range: RangeRequest | undefined): Promise<OpenedFile> {
  try {
    return await (range === undefined ? backend.open(path) : backend.open(path, range));
  } catch (err) {
    if (err instanceof FilestoreError && GONE.has(err.code)) {
      throw new FilestoreError('NOT_FOUND', `"${path}" is catalogued but gone from storage; it will be reconciled`);
    }
    throw err;
  }
}

// What recovery also takes for "absent" (orchestrator/recovery.ts): the catalogued file is no longer
// reachable as a file at its path, whatever took its place (a directory, a file above it, a symlink).
const GONE = new Set(['NOT_FOUND', 'IS_A_DIRECTORY', 'NOT_A_DIRECTORY', 'SYMLINK_IN_PATH']);
