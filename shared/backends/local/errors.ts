import { backendMessage } from '../errors.ts';
import { FilestoreError, type ErrorCode } from '../../errors.ts';

/**
 * Errors of the local backend. Every failure leaves this module as a FilestoreError whose
 * message names the mount-relative path only: absolute host paths are an operator detail a
 * caller must not see.
 */

const ERRNO_TO_CODE: Record<string, ErrorCode> = {
  ENOENT: 'NOT_FOUND',
  EEXIST: 'ALREADY_EXISTS',
  ENOTDIR: 'NOT_A_DIRECTORY',
  EISDIR: 'IS_A_DIRECTORY',
  ENOTEMPTY: 'DIRECTORY_NOT_EMPTY',
  // O_NOFOLLOW on a symlink reports ELOOP: somebody put a link where we refuse to follow one.
  ELOOP: 'SYMLINK_IN_PATH',
  // No space left, or the user's quota used up: retrying changes nothing until space is freed.
  ENOSPC: 'INSUFFICIENT_STORAGE',
  EDQUOT: 'INSUFFICIENT_STORAGE',
};

function describe(code: ErrorCode, path: string): string {
  if (code === 'INSUFFICIENT_STORAGE') {
    return `the disk of this mount is full (no space or quota left) writing ${JSON.stringify(path)}; free space on it, then send the command again`;
  }
  return backendMessage(code, path) ?? `the local disk failed on ${JSON.stringify(path)}; retry, and check the agent log if it persists`;
}

/** The errno of a Node fs error, or undefined for anything else. */
export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Turns a Node fs error (or a FilestoreError, passed through) into a FilestoreError about `path`. */
export function fsError(err: unknown, path: string, op: string): FilestoreError {
  if (err instanceof FilestoreError) return err;
  const errno = errnoOf(err);
  const code: ErrorCode = (errno !== undefined ? ERRNO_TO_CODE[errno] : undefined) ?? 'STORAGE_ERROR';
  return new FilestoreError(code, describe(code, path), { path, op, errno: errno ?? 'unknown' });
}

/** A FilestoreError with the standard message for `code` about `path`. */
export function localError(code: ErrorCode, path: string, op: string): FilestoreError {
  return new FilestoreError(code, describe(code, path), { path, op });
}

/** Thrown when a resolved path turns out to lie outside the mount root (defence in depth). */
export function escapesMount(path: string, op: string): FilestoreError {
  return new FilestoreError(
    'PATH_ESCAPES_MOUNT',
    `${JSON.stringify(path)} resolves outside the mount root; the tree changed under Filestore, check for symlinks`,
    { path, op },
  );
}

/** Seconds a caller is told to wait (Retry-After) while a mount's root is not reachable. */
export const ROOT_RETRY_AFTER_SECONDS = 10;

/**
 * A root that is gone, not a directory or not readable (a disk unmounted, a directory renamed
 * away): a condition an operator ends, so a retryable 503 that leaves an Idempotency-Key
 * usable, not a configuration error. It names the root (details.rootPath too, which is how
 * api/host-paths.ts knows to hide it from callers without filestore:admin).
 */
export function rootUnreachable(rootPath: string, err: unknown): FilestoreError {
  const errno = errnoOf(err) ?? 'unknown';
  const why = errno === 'ENOENT' || errno === 'ENOTDIR' ? 'missing or not a directory: removed, renamed or unmounted?' : errno;
  return new FilestoreError('UNAVAILABLE', `the mount's root ${rootPath} is not reachable now (${why}); retry when it is back`, {
    rootPath,
    cause: errno,
    retryAfterSeconds: ROOT_RETRY_AFTER_SECONDS,
  });
}
