import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { FilestoreError } from '../errors.ts';

/**
 * A request body that fails with REQUEST_TIMEOUT when its bytes stop arriving: the clock runs
 * only while the reader waits for bytes (it asked, and nothing is buffered), so a slow
 * consumer — an S3 part upload, a busy disk — never counts against the client, and a slow
 * client that keeps sending is never cut, however long the whole body takes.
 */
export class IdleTimeoutBody extends Readable {
  private waiting = false;
  private timer: NodeJS.Timeout | undefined;
  private ended = false;
  private discarding = false;

  constructor(
    private readonly source: IncomingMessage,
    private readonly idleMs: number,
  ) {
    super();
    // Failures reach whoever reads (pipeline, for await); a body nobody reads must not crash the process.
    this.on('error', () => {});
    source.on('data', (chunk: Buffer) => {
      this.waiting = false;
      if (this.discarding) return;
      if (!this.push(chunk)) source.pause();
    });
    source.on('end', () => {
      this.ended = true;
      this.stopClock();
      if (!this.discarding) this.push(null);
    });
    source.on('error', (err) => this.destroy(err));
    // A client that goes away mid-body: the reader fails rather than waiting for ever.
    source.on('close', () => {
      if (!this.ended) this.destroy(Object.assign(new Error('the client closed the connection before sending the whole body'), { code: 'ECONNRESET' }));
    });
    source.pause();
  }

  override _read(): void {
    this.startClock();
    this.source.resume();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.stopClock();
    callback(err);
  }

  /**
   * Reads and drops whatever the client still sends once the answer is decided (as node:http
   * does for an unread body, so a client still sending gets the answer rather than a broken
   * pipe), cutting the connection if the bytes stop arriving.
   */
  discardRest(): void {
    if (this.ended || this.discarding || this.source.destroyed) return;
    this.discarding = true;
    this.startClock();
    this.source.on('data', () => this.startClock());
    this.source.resume();
  }

  private startClock(): void {
    this.waiting = true;
    if (this.timer) this.timer.refresh();
    else this.timer = setTimeout(() => this.expired(), this.idleMs).unref();
  }

  private stopClock(): void {
    this.waiting = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private expired(): void {
    this.timer = undefined;
    if (!this.waiting || this.ended) return;
    if (this.discarding) {
      this.source.destroy();
      return;
    }
    this.destroy(
      new FilestoreError('REQUEST_TIMEOUT', `no bytes of the request body arrived for ${this.idleMs} ms; send the request again (with the same Idempotency-Key)`, {
        idleTimeoutMs: this.idleMs,
      }),
    );
  }
}
