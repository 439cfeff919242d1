import type { FilestoreError } from '../errors.ts';

// An outage answers every request UNAVAILABLE: the log says so once, then at most once per
// interval with how many answers it stands for, instead of a line per request.
const UNAVAILABLE_LOG_INTERVAL_MS = 60_000;

/**
 * What the server log says about a request that failed: the stack of an unexpected failure
 * (the caller only sees INTERNAL and the correlation id), one line per full storage (an
 * operator must free space; the caller was told so), and the unavailability of a service
 * the request needed, collapsed while it lasts. Other errors are the caller's business.
 */
export function createFailureLog(log: (line: string) => void): (what: string, err: unknown, e: FilestoreError) => void {
  let unavailableLoggedAt = Number.NEGATIVE_INFINITY;
  let unanswered = 0; // UNAVAILABLE answers since the last line
  return (what, err, e) => {
    if (e.code === 'INTERNAL') log(`${what} failed: ${(err as Error)?.stack ?? String(err)}`);
    else if (e.code === 'INSUFFICIENT_STORAGE') log(`${what} failed, storage full: ${e.message} (${String(e.details?.errno ?? e.details?.s3Error ?? 'no space')})`);
    else if (e.code === 'UNAVAILABLE') {
      const now = performance.now();
      if (now - unavailableLoggedAt < UNAVAILABLE_LOG_INTERVAL_MS) {
        unanswered++;
        return;
      }
      const more = unanswered > 0 ? `; ${unanswered} more such answers since the last line` : '';
      unavailableLoggedAt = now;
      unanswered = 0;
      log(`${what} answered 503 UNAVAILABLE: ${e.message} (${String(e.details?.cause ?? 'unknown')})${more}`);
    }
  };
}
