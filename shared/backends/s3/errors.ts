import { backendMessage } from '../errors.ts';
import { FilestoreError, type ErrorCode } from '../../errors.ts';

/**
 * Errors of the S3 backend. Every failure leaves this module as a FilestoreError whose message
 * names the mount-relative path and, for storage failures, the S3 error name. The SDK's own
 * message, request headers and credentials never reach a caller.
 */

/** What the SDK puts on a service exception; read defensively, the shape is not a contract. */
interface SdkErrorShape {
  name?: unknown;
  Code?: unknown;
  $metadata?: { httpStatusCode?: unknown; requestId?: unknown };
  $fault?: unknown;
}

function shapeOf(err: unknown): SdkErrorShape {
  return typeof err === 'object' && err !== null ? (err as SdkErrorShape) : {};
}

/** The S3 error code ("NoSuchKey", "SlowDown", …) or the SDK's error name. */
export function s3ErrorName(err: unknown): string {
  const e = shapeOf(err);
  if (typeof e.Code === 'string') return e.Code;
  if (typeof e.name === 'string') return e.name;
  return 'unknown';
}

function httpStatusOf(err: unknown): number | undefined {
  const status = shapeOf(err).$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

/** True when the SDK produced this error (a service response or a transport failure). */
export function isSdkError(err: unknown): boolean {
  const e = shapeOf(err);
  return e.$metadata !== undefined || e.$fault !== undefined;
}

/**
 * True when S3 says the key is absent. HEAD responses carry no body, so the SDK can only name
 * them "NotFound" from the 404 status; a missing bucket looks the same on HEAD, and is caught
 * by the first request that has a body.
 */
export function isNotFound(err: unknown): boolean {
  const name = s3ErrorName(err);
  if (name === 'NoSuchBucket') return false;
  return name === 'NoSuchKey' || name === 'NotFound' || httpStatusOf(err) === 404;
}

/** True when the server does not implement an operation (S3-compatible servers and emulators). */
export function isNotImplemented(err: unknown): boolean {
  const name = s3ErrorName(err);
  const status = httpStatusOf(err);
  return name === 'NotImplemented' || status === 501 || status === 405;
}

function describe(code: ErrorCode, path: string, s3Name?: string): string {
  return (
    backendMessage(code, path) ??
    (s3Name === 'NoSuchBucket'
      ? `the bucket of this mount does not exist; check the mount's bucket and region`
      : `S3 failed on ${JSON.stringify(path)} (${s3Name ?? 'unknown error'}); retry, and check the bucket and credentials if it persists`)
  );
}

/** A FilestoreError with the standard message for `code` about `path`. */
export function s3Fail(code: ErrorCode, path: string, op: string): FilestoreError {
  return new FilestoreError(code, describe(code, path), { path, op });
}

/**
 * Turns an SDK error (or a FilestoreError, passed through) into a FilestoreError about `path`:
 * an absent key is NOT_FOUND, anything else STORAGE_ERROR carrying the S3 error name and status.
 */
export function s3Error(err: unknown, path: string, op: string): FilestoreError {
  if (err instanceof FilestoreError) return err;
  if (isNotFound(err)) return s3Fail('NOT_FOUND', path, op);
  const s3Name = s3ErrorName(err);
  const details: Record<string, unknown> = { path, op, s3Error: s3Name };
  const status = httpStatusOf(err);
  if (status !== undefined) details.httpStatus = status;
  if (status === 507 || STORAGE_FULL.has(s3Name)) {
    return new FilestoreError('INSUFFICIENT_STORAGE', `the storage of this mount is full or over its quota (${s3Name}) writing ${JSON.stringify(path)}; free space or raise the quota, then send the command again`, details);
  }
  return new FilestoreError('STORAGE_ERROR', describe('STORAGE_ERROR', path, s3Name), details);
}

/** What S3-compatible servers answer when they are out of space or over a quota (MinIO: 507 XMinioStorageFull; Ceph RGW: QuotaExceeded). */
const STORAGE_FULL = new Set(['XMinioStorageFull', 'QuotaExceeded', 'InsufficientStorage']);

/**
 * For failures while streaming a caller's body: SDK errors are mapped, anything else (the
 * caller's own stream failing, an aborted request) is rethrown as it came so the caller sees
 * its own error rather than a storage one.
 */
export function uploadError(err: unknown, path: string, op: string): unknown {
  if (err instanceof FilestoreError || isSdkError(err)) return s3Error(err, path, op);
  return err;
}
