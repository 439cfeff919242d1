import { FilestoreError } from '../errors.ts';

/**
 * Thrown by a reconciliation that must stop. `retryable` tells the queue whether another
 * attempt can help (a listing error, a lost connection) or not (an unhealthy mount stays
 * unhealthy until someone acts; a mass-missing audit waits for a person to look).
 */
export class ReconcileError extends FilestoreError {
  constructor(
    message: string,
    readonly retryable: boolean,
    details?: Record<string, unknown>,
  ) {
    super('STORAGE_ERROR', message, details);
    this.name = 'ReconcileError';
  }
}

/** The mount's root is gone or unreadable (unmounted disk, revoked credentials): nothing is marked MISSING. */
export class MountUnhealthyError extends ReconcileError {
  constructor(reason: string, o: { message?: string; retryable?: boolean } = {}) {
    super(o.message ?? `the mount's root cannot be read (${reason}); nothing was marked MISSING`, o.retryable ?? false, { health: 'unhealthy', reason });
    this.name = 'MountUnhealthyError';
  }
}

/**
 * The mount's root is a readable directory, but not the one the catalogue was audited against
 * (or it changed while the job ran): nothing is judged below it. Retryable: a full audit may
 * accept the new root meanwhile (shared/catalogue/root-identity.ts).
 */
export class RootReplacedError extends MountUnhealthyError {
  constructor(reason: string) {
    super(reason, { message: `${reason}; nothing was marked MISSING`, retryable: true });
    this.name = 'RootReplacedError';
  }
}

/** An audit that would mark more than FILESTORE_MAX_MISSING_RATIO of a mount MISSING stops and reports. */
export class MassMissingError extends ReconcileError {
  constructor(wouldMiss: number, total: number, ratio: number) {
    super(
      `the audit would mark ${wouldMiss} of ${total} nodes MISSING (more than ${ratio * 100}%); nothing was marked — check the mount, or raise FILESTORE_MAX_MISSING_RATIO`,
      false,
      { wouldMiss, total, maxRatio: ratio },
    );
    this.name = 'MassMissingError';
  }
}

/** The scan failed part-way (a listing error): updates applied so far stand, nothing was marked MISSING. */
export class ScanFailedError extends ReconcileError {
  constructor(message: string, details?: Record<string, unknown>) {
    super(`the storage scan failed part-way (${message}); nothing was marked MISSING`, true, details);
    this.name = 'ScanFailedError';
  }
}

/**
 * A full audit that found another audit of its mount running (the mount's audit lock held):
 * thrown at once, before any work. Not a failure: the queues put the job back as queued
 * without spending an attempt (the worker's outcome `deferred`) and try it again later, holding
 * neither a worker slot nor a connection meanwhile.
 */
export class AuditBusyError extends ReconcileError {
  constructor(mountKey: string, mountId: string) {
    super(`an audit of mount "${mountKey}" is already running`, true, { mountId });
    this.name = 'AuditBusyError';
  }
}
