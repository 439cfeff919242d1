/**
 * Every error a user can meet carries a stable `code`, an HTTP status and a message that
 * says what to do. Messages never carry stack traces or secrets.
 */
export type ErrorCode =
  | 'INVALID_PATH'
  | 'PATH_ESCAPES_MOUNT'
  | 'SYMLINK_IN_PATH'
  | 'VALIDATION_ERROR'
  | 'NOT_FOUND'
  | 'MOUNT_NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'NOT_A_DIRECTORY'
  | 'IS_A_DIRECTORY'
  | 'DIRECTORY_NOT_EMPTY'
  | 'MOVE_INTO_SELF'
  | 'VERSION_MISMATCH'
  | 'IDEMPOTENCY_CONFLICT'
  | 'MOUNT_READ_ONLY'
  | 'MOUNT_PAUSED'
  /** In AWS, an S3 mount outside the stack's configured ones (403): add it to the stack's s3Mounts and redeploy. */
  | 'MOUNT_NOT_CONFIGURED'
  | 'CHECKSUM_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'UPLOAD_INCOMPLETE'
  | 'UPLOAD_EXPIRED'
  | 'UPLOAD_IN_PROGRESS'
  | 'UPLOAD_CHANGED'
  | 'UPLOAD_CANCELLED'
  | 'STORAGE_ERROR'
  | 'INTERRUPTED'
  /** The agent that owns the local mount is not running (503): retry later. */
  | 'AGENT_UNAVAILABLE'
  | 'CONFIG_ERROR'
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'METHOD_NOT_ALLOWED'
  | 'RANGE_NOT_SATISFIABLE'
  | 'PAYLOAD_TOO_LARGE'
  | 'NOT_IMPLEMENTED'
  /** A JSON body sent without Content-Type: application/json (415). */
  | 'UNSUPPORTED_MEDIA_TYPE'
  /** A cross-site request, or a Host that is not loopback, while authentication is off (403). */
  | 'ORIGIN_NOT_ALLOWED'
  /** The request body stopped arriving for longer than the server's idle timeout (408). */
  | 'REQUEST_TIMEOUT'
  /** The event stream cannot resume from a point older than the outbox keeps (410): start from now. */
  | 'RESUME_POINT_EXPIRED'
  | 'AGENT_ID_IN_USE'
  /** The storage is full (507): free space, then send the command again. */
  | 'INSUFFICIENT_STORAGE'
  /** A service Filestore needs (PostgreSQL, Redis) or a limited resource is not available now (503, Retry-After). */
  | 'UNAVAILABLE'
  /** POST /v1/journal/:id/resolve of an entry already succeeded or failed (409). */
  | 'JOURNAL_ENTRY_NOT_PENDING'
  /** POST /v1/journal/:id/resolve of an entry a live process still runs (409): it ends by itself. */
  | 'JOURNAL_ENTRY_IN_PROGRESS'
  /** POST /v1/journal/:id/resolve of another agent's local mount (409): resolve it through that agent. */
  | 'RESOLVE_ON_AGENT'
  /** POST /v1/mounts: the local root does not exist (400). */
  | 'MOUNT_ROOT_NOT_FOUND'
  /** POST /v1/mounts: the local root is not a directory (400). */
  | 'MOUNT_ROOT_NOT_DIRECTORY'
  /** POST /v1/mounts (or PATCH giving it to another agent): the local root is, holds or sits in another local mount's root on the same host — the same agent's, or either unassigned (409). */
  | 'MOUNT_OVERLAP'
  /** POST /v1/mounts: the server cannot use the root or list the bucket/prefix (422); "check": false skips this. */
  | 'MOUNT_UNREACHABLE'
  /** DELETE /v1/mounts/:id while commands run on the mount (409). */
  | 'MOUNT_BUSY'
  | 'INTERNAL';

const STATUS: Record<ErrorCode, number> = {
  INVALID_PATH: 400,
  PATH_ESCAPES_MOUNT: 400,
  SYMLINK_IN_PATH: 400,
  VALIDATION_ERROR: 400,
  NOT_FOUND: 404,
  MOUNT_NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  NOT_A_DIRECTORY: 409,
  IS_A_DIRECTORY: 409,
  DIRECTORY_NOT_EMPTY: 409,
  MOVE_INTO_SELF: 409,
  VERSION_MISMATCH: 409,
  IDEMPOTENCY_CONFLICT: 409,
  MOUNT_READ_ONLY: 409,
  MOUNT_PAUSED: 409,
  // A deployment's rule, not the mount's state: the caller cannot clear it through the API.
  MOUNT_NOT_CONFIGURED: 403,
  CHECKSUM_MISMATCH: 422,
  SIZE_MISMATCH: 422,
  UPLOAD_INCOMPLETE: 409,
  UPLOAD_EXPIRED: 410,
  UPLOAD_IN_PROGRESS: 409,
  UPLOAD_CHANGED: 409,
  UPLOAD_CANCELLED: 410,
  STORAGE_ERROR: 502,
  INTERRUPTED: 503,
  AGENT_UNAVAILABLE: 503,
  CONFIG_ERROR: 500,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  METHOD_NOT_ALLOWED: 405,
  RANGE_NOT_SATISFIABLE: 416,
  PAYLOAD_TOO_LARGE: 413,
  NOT_IMPLEMENTED: 501,
  UNSUPPORTED_MEDIA_TYPE: 415,
  ORIGIN_NOT_ALLOWED: 403,
  REQUEST_TIMEOUT: 408,
  RESUME_POINT_EXPIRED: 410,
  AGENT_ID_IN_USE: 409,
  INSUFFICIENT_STORAGE: 507,
  UNAVAILABLE: 503,
  // Pending journal entries resolved by an admin, mounts checked when added, removed.
  JOURNAL_ENTRY_NOT_PENDING: 409,
  JOURNAL_ENTRY_IN_PROGRESS: 409,
  RESOLVE_ON_AGENT: 409,
  MOUNT_ROOT_NOT_FOUND: 400,
  MOUNT_ROOT_NOT_DIRECTORY: 400,
  MOUNT_OVERLAP: 409,
  MOUNT_UNREACHABLE: 422,
  MOUNT_BUSY: 409,
  INTERNAL: 500,
};

/** Base class of every error Filestore reports to a caller. */
export class FilestoreError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'FilestoreError';
    this.code = code;
    this.status = STATUS[code];
    this.details = details;
  }

  /** The JSON body of an error response and of a failed journal entry. */
  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

/** Thrown when a path breaks the rules of SPEC §2. */
export class InvalidPathError extends FilestoreError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('INVALID_PATH', message, details);
  }
}

/** Thrown when a node or path does not exist (in the catalogue or on storage). */
export class NotFoundError extends FilestoreError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('NOT_FOUND', message, details);
  }
}

/** Thrown when the storage backend fails for a reason that is not the caller's fault. */
export class StorageError extends FilestoreError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('STORAGE_ERROR', message, details);
  }
}

/** Seconds a caller is told to wait (Retry-After) when the catalogue database is unreachable. */
export const CATALOGUE_RETRY_AFTER_SECONDS = 5;

// How node-postgres and the network report a database that went away or cannot take a
// connection now: socket errors, pg's own messages (pg/lib/client.js, pg-pool), and SQLSTATE
// class 08 (connection exception) except 08P01, 57P01–57P03 (admin/crash shutdown, cannot
// connect now), 53300 (too many connections). 08P01 (protocol_violation: a malformed message,
// e.g. a wrong parameter count) is a bug on our side, an INTERNAL with its stack, not an
// outage. Socket errors count only with a socket's syscall: a caller's request stream that
// breaks (an aborted upload) is ECONNRESET without one.
const CONNECT_ERRNOS = new Set(['ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const SOCKET_SYSCALLS = new Set(['connect', 'getaddrinfo', 'read', 'write']);
const PG_CONNECTION_MESSAGES = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Client was closed and is not queryable|Query read timeout)/;

/** The reason (an errno, a SQLSTATE or pg's message) when `err` says the database cannot be reached now; otherwise null. */
export function databaseUnreachable(err: unknown, depth = 0): string | null {
  if (typeof err !== 'object' || err === null || depth > 3) return null;
  const e = err as { code?: unknown; message?: unknown; cause?: unknown; syscall?: unknown };
  if (typeof e.code === 'string') {
    if (/^08...$|^57P0[123]$|^53300$/.test(e.code) && e.code !== '08P01') return e.code;
    if (typeof e.syscall === 'string' && SOCKET_SYSCALLS.has(e.syscall) && (CONNECT_ERRNOS.has(e.code) || e.code === 'ECONNRESET' || e.code === 'EPIPE')) return e.code;
  }
  if (typeof e.message === 'string' && PG_CONNECTION_MESSAGES.test(e.message)) return e.message.toLowerCase().split(/[.(]/)[0]?.trim() ?? 'connection lost';
  // Node reports a host with several addresses, all refused, as an AggregateError of them.
  const first = (err as { errors?: unknown }).errors;
  return databaseUnreachable(Array.isArray(first) ? first[0] : e.cause, depth + 1);
}

// How ioredis fails a command while Redis cannot be reached (its connection errors are events).
const REDIS_GONE = /^(Connection is closed|Stream isn't writeable|Reached the max retries per request limit)/;

/** Turns anything thrown into a FilestoreError without leaking internals. */
export function asFilestoreError(err: unknown): FilestoreError {
  if (err instanceof FilestoreError) return err;
  const unreachable = databaseUnreachable(err);
  if (unreachable !== null) {
    return new FilestoreError('UNAVAILABLE', `the catalogue database (PostgreSQL) is unreachable or refuses connections now; retry in ${CATALOGUE_RETRY_AFTER_SECONDS} seconds`, {
      cause: unreachable,
      retryAfterSeconds: CATALOGUE_RETRY_AFTER_SECONDS,
    });
  }
  const message = (err as { message?: unknown } | null)?.message;
  if (typeof message === 'string' && REDIS_GONE.test(message)) {
    return new FilestoreError('UNAVAILABLE', `Redis (queues and events) is unreachable now; retry in ${CATALOGUE_RETRY_AFTER_SECONDS} seconds`, {
      cause: 'redis unreachable',
      retryAfterSeconds: CATALOGUE_RETRY_AFTER_SECONDS,
    });
  }
  const e = err as { code?: string; message?: string } | undefined;
  return new FilestoreError('INTERNAL', 'internal error; see the server log', {
    cause: typeof e?.code === 'string' ? e.code : 'unknown',
  });
}
