import { FilestoreError } from '../errors.ts';

/**
 * How many request bodies may stream into storage at once. An upload holds a database
 * connection (and its path locks, which live on that connection) while its bytes arrive at
 * the client's pace, so without a bound a crowd of slow or stalled uploads takes the whole
 * pool and every other route waits. Half the pool by default: uploads never hold the other
 * half, which the rest of the API shares with whatever else the process runs on the pool (an
 * agent's command and reconcile workers, relay, maintenance). Beyond the bound an upload is
 * refused at once (503 with Retry-After)
 * rather than queued: a queue would only move the crowd from the pool to the process.
 */
export class UploadSlots {
  private used = 0;

  constructor(readonly limit: number) {}

  /** Half of a pool of `poolSize` connections (at least one). */
  static forPool(poolSize: number): UploadSlots {
    return new UploadSlots(Math.max(1, Math.floor(poolSize / 2)));
  }

  /** Takes a slot and returns its release (idempotent); UNAVAILABLE when every slot is taken. */
  take(): () => void {
    if (this.used >= this.limit) {
      throw new FilestoreError('UNAVAILABLE', `${this.limit} uploads are already streaming into this server; send this one again in a moment`, {
        retryAfterSeconds: 1,
        resource: 'upload slots',
      });
    }
    this.used++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used--;
    };
  }
}
