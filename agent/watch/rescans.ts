import type { Mount } from '../../shared/catalogue/index.ts';
import type { Filestore } from '../../shared/index-runtime.ts';

/**
 * Full rescans of one watched mount (a reconcile job, reason `audit`, path `""`, recursive):
 * at start (the catch-up), after a watcher problem or a burst that may have overflowed the
 * kernel's queue, and when the mount root comes back. At most one request per cooldown: later
 * ones wait for its end and are merged into one, never dropped; one still waiting at close is
 * sent then. A request the queue refuses (database unreachable) is tried again.
 */
export class RescanRequests {
  private lastAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** A request was waiting out its cooldown when the watcher began to close. */
  private waiting = false;
  private readonly inflight = new Set<Promise<unknown>>();
  /** Requests sent (tried) so far. */
  count = 0;

  constructor(
    private readonly core: Filestore,
    private readonly mount: Mount,
    private readonly cooldownMs: number,
    private readonly log: (line: string) => void,
  ) {}

  /** A full rescan now, or at the end of the cooldown if one was requested recently (never dropped). */
  request(why: string): void {
    if (this.closed || this.timer) return;
    const wait = this.lastAt + this.cooldownMs - Date.now();
    if (wait <= 0) {
      this.track(this.send(why));
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      this.track(this.send(why));
    }, wait);
    this.timer.unref?.();
  }

  /**
   * A full rescan now, whatever the cooldown, replacing one waiting out its cooldown: for a
   * root that was gone (or is another directory) coming back, after which a rescan held back by
   * an earlier request (the watcher's error as the root went) would leave the catalogue behind
   * for the rest of the cooldown. A root back after a run of failed looks (EIO, ESTALE: a
   * network filesystem's hiccup) uses `request`: a flapping root must not cost an audit each time.
   */
  immediately(why: string): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.track(this.send(why));
  }

  /** A full rescan now, whatever the cooldown (the catch-up at start), awaited; none once the watcher is closing. */
  async now(why: string): Promise<void> {
    if (this.closed) return;
    await this.send(why);
  }

  /** No new requests from now on (the watcher is closing); one still waiting out its cooldown is sent by `close`. */
  stop(): void {
    if (this.closed) return;
    this.closed = true;
    this.waiting = this.timer !== null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Stops, sends the request that was waiting out its cooldown rather than lose it, and waits for those in flight. */
  async close(): Promise<void> {
    this.stop();
    if (this.waiting) {
      this.waiting = false;
      await this.send('pending at close');
    }
    await Promise.allSettled([...this.inflight]);
  }

  private async send(why: string): Promise<void> {
    this.lastAt = Date.now();
    this.count++;
    try {
      await this.core.reconcile.enqueue({ mountId: this.mount.id, path: '', reason: 'audit', recursive: true, hash: false });
    } catch (err) {
      this.log(`watcher ${this.mount.key}: rescan (${why}) could not be requested: ${(err as Error).message}; retrying`);
      if (!this.closed) {
        this.lastAt = Date.now();
        this.request(why);
      }
    }
  }

  private track(p: Promise<unknown>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }
}
