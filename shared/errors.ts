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
  | 'CHECKSUM_MISMATCH'
  | 'STORAGE_ERROR'
  | 'INTERRUPTED'
  | 'AGENT_UNAVAILABLE'
  | 'CONFIG_ERROR'
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'METHOD_NOT_ALLOWED'
  | 'RANGE_NOT_SATISFIABLE'
  | 'PAYLOAD_TOO_LARGE'
  | 'NOT_IMPLEMENTED'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'ORIGIN_NOT_ALLOWED'
  | 'REQUEST_TIMEOUT'
  | 'RESUME_POINT_EXPIRED'
  | 'AGENT_ID_IN_USE'
  | 'INSUFFICIENT_STORAGE'
  | 'UNAVAILABLE'
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
  CHECKSUM_MISMATCH: 422,
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

/** Turns anything thrown into a FilestoreError without leaking internals. */
export function asFilestoreError(err: unknown): FilestoreError {
  if (err instanceof FilestoreError) return err;
  const e = err as { code?: string; message?: string } | undefined;
  return new FilestoreError('INTERNAL', 'internal error; see the server log', {
    cause: typeof e?.code === 'string' ? e.code : 'unknown',
  });
}
