import type { Queryable } from '../db/pool.ts';
import { eventsAfter, lastPublishedSeq, type EventEnvelope } from '../catalogue/outbox.ts';
import type { EventBus } from './bus.ts';

export interface OutboxTailOptions {
  q: Queryable;
  bus: EventBus;
  /** Safety-net poll when no bus message arrives (default 1000 ms). */
  pollMs?: number | undefined;
  onError?: ((err: unknown) => void) | undefined;
}

const PAGE = 500;
// A bus message is published before the relay commits its sequence numbers, so the row
// it announces can be invisible for a moment: look again this often, this many times.
const RETRY_MS = 20;
const RETRIES = 50;

/**
 * Follows published events in sequence order by reading the outbox, woken by the bus. The
 * outbox, not the bus, is the source: sequence numbers are committed by one relay at a time
 * in increasing order, so reading `seq > position` never skips an event, whereas a pub/sub
 * message can be missed by a subscriber that connects a moment too late. One tail per
 * process feeds every event stream.
 */
export class OutboxTail {
  private position = 0;
  private readonly listeners = new Set<(e: EventEnvelope) => void>();
  private wanted = 0;
  private fetching: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retries = 0;

  constructor(private readonly o: OutboxTailOptions) {}

  /** The sequence number of the last event handed to listeners. */
  get seq(): number {
    return this.position;
  }

  async start(): Promise<void> {
    this.position = await lastPublishedSeq(this.o.q);
    this.unsubscribe = await this.o.bus.subscribe((e) => this.wake(e.seq));
    this.timer = setInterval(() => this.wake(), this.o.pollMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.unsubscribe?.();
    this.listeners.clear();
  }

  /** Listeners get every event after the current position, in sequence order. */
  subscribe(listener: (e: EventEnvelope) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reads the outbox now; `seq` (from a bus message) says which event must become visible. */
  wake(seq?: number): void {
    if (seq !== undefined) {
      if (seq <= this.position) return;
      if (seq > this.wanted) this.wanted = seq;
    }
    if (this.fetching) {
      this.again = true;
      return;
    }
    this.fetching = this.fetch()
      .catch((err: unknown) => this.o.onError?.(err))
      .finally(() => {
        this.fetching = null;
        if (this.again) {
          this.again = false;
          this.wake();
        } else if (this.wanted > this.position) {
          this.retryLater();
        } else {
          this.retries = 0;
        }
      });
  }

  private retryLater(): void {
    if (this.retryTimer || this.retries >= RETRIES) {
      if (this.retries >= RETRIES) this.wanted = this.position; // a rolled-back claim: its numbers never appear
      return;
    }
    this.retries++;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.wake();
    }, RETRY_MS);
    this.retryTimer.unref();
  }

  private async fetch(): Promise<void> {
    for (;;) {
      const events = await eventsAfter(this.o.q, this.position, PAGE);
      for (const e of events) {
        this.position = e.seq;
        for (const l of this.listeners) {
          try {
            l(e);
          } catch (err) {
            this.o.onError?.(err);
          }
        }
      }
      if (events.length < PAGE) return;
    }
  }
}
