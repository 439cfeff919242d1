/**
 * Errors the Filestore client throws. Every one extends FilestoreClientError, so
 * `catch (e) { if (e instanceof FilestoreClientError) … }` separates Filestore's answers
 * from bugs in the calling code.
 */
import type { ErrorCode as ServerErrorCode } from '../errors.ts';
import type { CommandAccepted } from './types.ts';

/**
 * The stable codes the server documents (SPEC §4; the server's own list, shared/errors.ts), and
 * the client's own UNEXPECTED_RESPONSE: the server answered something that is not a Filestore
 * error body (a proxy page, a truncated download). A newer server may send others.
 */
export type KnownErrorCode = ServerErrorCode | 'UNEXPECTED_RESPONSE';

/** A known code, or any other string a newer server sends (`string & {}` keeps editor completion). */
export type ErrorCode = KnownErrorCode | (string & {});

/** Base class of everything the client throws on purpose. */
export class FilestoreClientError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FilestoreClientError';
  }
}

/** Thrown when the server answers with an error: `{"error":{"code","message","details?"}}` and its HTTP status. */
export class FilestoreApiError extends FilestoreClientError {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;
  /** The server's X-Correlation-Id of the failed request: quote it when reading the server log. */
  readonly correlationId: string | undefined;

  constructor(o: { code: ErrorCode; status: number; message: string; details?: Record<string, unknown> | undefined; correlationId?: string | undefined }) {
    super(o.message);
    this.name = 'FilestoreApiError';
    this.code = o.code;
    this.status = o.status;
    this.details = o.details;
    this.correlationId = o.correlationId;
  }
}

/**
 * Thrown when a command on a local mount was dispatched to the agent that owns it and outlasted
 * the server's wait (202): it goes on there. Send the same command again with `idempotencyKey`
 * to get its result (a replay), or follow `journalEntry` in GET /v1/journal.
 */
export class FilestoreCommandPendingError extends FilestoreClientError {
  readonly agentId: string;
  readonly idempotencyKey: string;
  /** The command's journal entry so far; null while it waits in the agent's queue. */
  readonly journalEntry: CommandAccepted['journalEntry'];

  constructor(accepted: CommandAccepted) {
    super(accepted.message);
    this.name = 'FilestoreCommandPendingError';
    this.agentId = accepted.agentId;
    this.idempotencyKey = accepted.idempotencyKey;
    this.journalEntry = accepted.journalEntry;
  }
}

/**
 * Thrown when no answer came back: nothing listens at the URL, the name does not resolve,
 * or the connection broke and the request could not safely be sent again.
 */
export class FilestoreUnreachableError extends FilestoreClientError {
  readonly url: string;
  /** The network error code behind it (ECONNREFUSED, ENOTFOUND, ECONNRESET…), when known. */
  readonly networkCode: string | undefined;

  constructor(url: string, networkCode: string | undefined, cause: unknown) {
    super(
      networkCode === undefined || isUnreachable(networkCode)
        ? `cannot reach Filestore at ${url}: is it running? start it with \`npm start\`, or set FILESTORE_URL`
        : `lost the connection to Filestore at ${url} before it answered (${networkCode}); a command may or may not have been applied: send it again with the same Idempotency-Key to find out`,
      { cause },
    );
    this.name = 'FilestoreUnreachableError';
    this.url = url;
    this.networkCode = networkCode;
  }
}

// Errors that mean the server never saw the request: sending it again is pointless right now.
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);

/** The first network error code found on a fetch failure (undici nests them in `cause`, sometimes in an AggregateError). */
export function networkErrorCode(err: unknown, depth = 0): string | undefined {
  if (!err || typeof err !== 'object' || depth > 5) return undefined;
  const e = err as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string' && e.code !== 'ERR_INVALID_ARG_TYPE') return e.code;
  if (Array.isArray(e.errors)) {
    for (const inner of e.errors) {
      const code = networkErrorCode(inner, depth + 1);
      if (code) return code;
    }
  }
  return networkErrorCode(e.cause, depth + 1);
}

/** True when a fetch failure means nothing is listening (as opposed to a connection lost mid-request). */
export const isUnreachable = (code: string | undefined): boolean => code !== undefined && UNREACHABLE.has(code);

/** Reads an error response into a FilestoreApiError, whatever its body holds. */
export async function apiErrorFrom(res: Response): Promise<FilestoreApiError> {
  const correlationId = res.headers.get('x-correlation-id') ?? undefined;
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
    const e = body.error;
    if (e && typeof e.code === 'string' && typeof e.message === 'string') {
      const details = e.details && typeof e.details === 'object' ? (e.details as Record<string, unknown>) : undefined;
      return new FilestoreApiError({ code: e.code, status: res.status, message: e.message, details, correlationId });
    }
  } catch {
    // not JSON: described below
  }
  const snippet = text.replace(/\s+/g, ' ').trim().slice(0, 200);
  return new FilestoreApiError({
    code: 'UNEXPECTED_RESPONSE',
    status: res.status,
    message: `HTTP ${res.status} ${res.statusText}${snippet ? `: ${snippet}` : ''} (not a Filestore error body; is FILESTORE_URL pointing at Filestore?)`,
    correlationId,
  });
}
