import type { Redis } from 'ioredis';
import { FilestoreError } from '../errors.ts';

/** Seconds a caller is told to wait (Retry-After) when Redis is unreachable. */
export const REDIS_RETRY_AFTER_SECONDS = 5;

/**
 * An operation failed because Redis is unreachable. Its connection's RedisHealth has logged
 * the outage (once), so whoever catches this need not log it again (`reportedOutage`).
 */
export class RedisUnavailableError extends FilestoreError {
  constructor(what: string, kind: string, reason: string) {
    super('UNAVAILABLE', `${what}: Redis (${kind}) is unreachable (${reason}); retry in ${REDIS_RETRY_AFTER_SECONDS} seconds`, {
      service: 'redis',
      retryAfterSeconds: REDIS_RETRY_AFTER_SECONDS,
    });
    this.name = 'RedisUnavailableError';
  }
}

/** True for a failure that is part of a Redis outage already logged by its connection. */
export const reportedOutage = (err: unknown): boolean => err instanceof RedisUnavailableError;

// What ioredis and the network say when Redis cannot be reached (as opposed to a command
// Redis answered with an error): socket errors of a reconnect attempt, a command given up
// after maxRetriesPerRequest reconnects, a command on a closed or unwritable connection.
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);
const CONNECTION_MESSAGES = /^(Connection is closed|Stream isn't writeable|Reached the max retries per request limit)/;

/** True when `err` says Redis cannot be reached now. */
export function isRedisConnectionError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { name?: unknown; code?: unknown; message?: unknown };
  if (e.name === 'MaxRetriesPerRequestError') return true;
  if (typeof e.code === 'string' && CONNECTION_CODES.has(e.code)) return true;
  return typeof e.message === 'string' && CONNECTION_MESSAGES.test(e.message);
}

const reasonOf = (err: unknown): string => {
  const e = err as { code?: unknown; name?: unknown; message?: unknown } | null;
  if (typeof e?.code === 'string') return e.code;
  if (e?.name === 'MaxRetriesPerRequestError') return 'commands given up after retries';
  return typeof e?.message === 'string' ? e.message.replace(/\.$/, '') : String(err);
};

/**
 * Whether one kind of Redis connection of this process (the event publisher, the cache, a
 * queue…) reaches Redis, logged once per change: `redis (<kind>) unreachable (<reason>)` when
 * it goes, `redis (<kind>) reachable again` when it is back. ioredis reports every failed
 * reconnect attempt as an 'error' event (several a second across a process's connections),
 * and an 'error' event nobody listens to is printed as "[ioredis] Unhandled error event": a
 * watched client has a listener, and its attempts go unlogged while the outage lasts. Callers
 * whose operations fail meanwhile ask `explains(err)` before logging a line of their own.
 */
export class RedisHealth {
  private downSince: string | null = null;

  constructor(
    readonly kind: string,
    private readonly log: (line: string) => void = () => {},
  ) {}

  /** False from the first connection error until the connection is ready again. */
  get reachable(): boolean {
    return this.downSince === null;
  }

  /** Listens to a client: its errors say Redis is gone, its 'ready' that it is back. Returns the client. */
  watch<T extends Redis>(client: T): T {
    client.on('error', (err: unknown) => {
      if (!this.failed(err)) this.log(`redis (${this.kind}): ${reasonOf(err)}`);
    });
    client.on('ready', () => this.recovered());
    return client;
  }

  /** An error of a client or an operation: true when it is Redis being unreachable (logged here once per outage). */
  failed(err: unknown): boolean {
    if (!isRedisConnectionError(err)) return false;
    if (this.downSince === null) {
      this.downSince = reasonOf(err);
      this.log(`redis (${this.kind}) unreachable (${this.downSince}); retrying quietly until it answers`);
    }
    return true;
  }

  recovered(): void {
    if (this.downSince === null) return;
    this.downSince = null;
    this.log(`redis (${this.kind}) reachable again`);
  }

  /** True when `err` (of an operation on Redis) is part of an outage, now logged: the caller need not log it again. */
  explains(err: unknown): boolean {
    return this.failed(err);
  }

  /**
   * The same for an operation that also used something else (PostgreSQL): true only while an
   * outage is already known, so a connection error of the other service is not taken for one.
   */
  covers(err: unknown): boolean {
    return this.downSince !== null && isRedisConnectionError(err);
  }

  /** `err` as a RedisUnavailableError about `what` when it is Redis being unreachable; otherwise as it is. */
  unavailable(err: unknown, what: string): unknown {
    return this.failed(err) ? new RedisUnavailableError(what, this.kind, this.downSince ?? reasonOf(err)) : err;
  }
}
