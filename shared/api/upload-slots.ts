import { FilestoreError } from '../errors.ts';

/**
 * How many uploads may run their commands at once. An upload holds a database connection (and
 * its path locks, which live on that connection) while its bytes go to storage — at the
 * client's pace for a streamed one — so without a bound a crowd of uploads takes the whole
 * pool and every other route waits. Half the pool by default: uploads never hold the other
 * half, which the rest of the API shares with whatever else the process runs on the pool (an
 * agent's command and reconcile workers, relay, maintenance). A streamed upload beyond the
 * bound is refused at once (503 with Retry-After) rather than queued: a queue would only move
 * the crowd of slow clients from the pool to the process. A small upload, its body already in
 * memory, waits its turn instead (`acquire`): it is done in milliseconds once it has a slot.
 */
export class UploadSlots {
  /** Slots held (streams and small commands). */
  private used = 0;
  /** Slots held or waited for by streamed uploads (take). */
  private streaming = 0;
  /** Small commands waiting for a slot (acquire), first come first served. */
  private readonly waiting: Array<() => void> = [];

  /** `spare`: the extra slot small commands get while streams hold every slot (0 or 1). */
  constructor(
    readonly limit: number,
    private readonly spare: 0 | 1 = 1,
  ) {}

  /** Half of a pool of `poolSize` connections (at least one); the spare only where it still leaves another connection free. */
  static forPool(poolSize: number): UploadSlots {
    const limit = Math.max(1, Math.floor(poolSize / 2));
    return new UploadSlots(limit, poolSize - limit > 1 ? 1 : 0);
  }

  /**
   * A slot for a streamed upload, and its release (idempotent). UNAVAILABLE when every slot is
   * held by streamed uploads (a crowd of slow or stalled ones: refused at once, never queued).
   * Slots held by small commands (`acquire`) are only waited for: they are done in milliseconds.
   */
  async take(): Promise<() => void> {
    if (this.streaming >= this.limit) {
      throw new FilestoreError('UNAVAILABLE', `${this.limit} uploads are already streaming into this server; send this one again in a moment`, {
        retryAfterSeconds: 1,
        resource: 'upload slots',
      });
    }
    this.streaming++;
    const release = await this.acquire();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.streaming--; // first: the release's grant sees the capacity without this stream
      release();
    };
  }

  /**
   * Waits for a slot (first come, first served) and returns its release (idempotent): for a
   * command whose body is already in memory (a small upload read whole). It holds no
   * connection while it waits; the caller bounds the bytes waiting. While streamed uploads
   * hold every slot (stalled clients), one spare slot keeps small commands moving, one at a
   * time: so commands never hold more than half the pool, plus that one.
   */
  acquire(): Promise<() => void> {
    return new Promise((resolve) => {
      this.waiting.push(() => resolve(this.releaser()));
      this.grant();
    });
  }

  private capacity(): number {
    return this.limit + (this.streaming >= this.limit ? this.spare : 0);
  }

  private grant(): void {
    while (this.waiting.length > 0 && this.used < this.capacity()) {
      this.used++;
      (this.waiting.shift() as () => void)();
    }
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used--;
      this.grant();
    };
  }
}
