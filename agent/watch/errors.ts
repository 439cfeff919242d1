import { FilestoreError, type ErrorCode } from '../../shared/index.ts';

/**
 * Errors of the watcher subsystem. They reuse the stable codes of shared/errors.ts (the set is
 * closed there); `details.watchError` tells the watcher-specific reason apart.
 */
export type WatchErrorReason = 'INVALID_OPTIONS' | 'NOT_A_LOCAL_MOUNT' | 'START_FAILED' | 'WATCH_LIMIT';

/** Base class: a watcher could not be configured or started. */
export class WatchError extends FilestoreError {
  constructor(code: ErrorCode, reason: WatchErrorReason, message: string, details: Record<string, unknown> = {}) {
    super(code, message, { watchError: reason, ...details });
    this.name = 'WatchError';
  }
}

/** Thrown when watcher options are invalid (unknown backend, negative debounce…): fix the configuration. */
export class WatchOptionsError extends WatchError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('CONFIG_ERROR', 'INVALID_OPTIONS', message, details);
  }
}

/** Thrown when a watcher is asked for a mount that is not a local directory (S3 drift comes from bucket events). */
export class NotALocalMountError extends WatchError {
  constructor(mountKey: string) {
    super('CONFIG_ERROR', 'NOT_A_LOCAL_MOUNT', `mount "${mountKey}" is not a local mount: only local mounts are watched`, { mount: mountKey });
  }
}

/**
 * Thrown when a backend could not start watching a mount. `WATCH_LIMIT` when the kernel's
 * inotify budget ran out: raise fs.inotify.max_user_watches or use the parcel backend
 * (see agent/watch/README.md).
 */
export class WatchStartError extends WatchError {
  constructor(mountKey: string, cause: { message?: string; code?: string }, limit: boolean) {
    super(
      'STORAGE_ERROR',
      limit ? 'WATCH_LIMIT' : 'START_FAILED',
      limit
        ? `watching mount "${mountKey}" ran out of inotify watches: raise fs.inotify.max_user_watches or use the parcel watcher`
        : `watching mount "${mountKey}" failed: ${cause.message ?? 'unknown error'}`,
      { mount: mountKey, cause: cause.code ?? 'unknown' },
    );
  }
}
