import type { Queryable } from '../db/pool.ts';
import { eventsAfter, lastPublishedSeq, type EventEnvelope } from '../catalogue/outbox.ts';
import { prunedThrough } from '../catalogue/outbox-retention.ts';
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
 *
 * It follows only while someone listens: a process serving no stream (an agent during a
 * burst of 10,000 discoveries, say) neither reads the outbox again nor wakes for every bus
 * message. The first listener starts it at the latest published event, the last one stops it.
 */
export class OutboxTail {
  private position = 0;
  /** Each listener, and what it is told when events after the position were pruned unread. */
  private readonly listeners = new Map<(e: EventEnvelope) => void, ((prunedThrough: number) => void) | undefined>();
  private wanted = 0;
  private fetching: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retries = 0;
  private started = false;
  private stopped = false;
  /** Set while following (listeners present); its promise settles once the position is current. */
  private following: Promise<void> | null = null;
  /** Counts follow/idle transitions: a follow() overtaken by idle() undoes what it set up. */
  private round = 0;
  /** True once the current round follows (position current): only then are events read and handed out. */
  private ready = false;

  constructor(private readonly o: OutboxTailOptions) {}

  /** The sequence number of the last event handed to listeners. */
  get seq(): number {
    return this.position;
  }

  /** Ready to take listeners (following begins with the first). */
  async start(): Promise<void> {
    this.started = true;
  }

  stop(): void {
    this.stopped = true;
    this.listeners.clear();
    this.idle();
  }

  /**
   * Listeners get every event after the current position, in sequence order. Resolves once
   * the tail follows, `seq` then being the latest published event (or later).
   *
   * When the tail finds that events after its position were pruned before it read them (it
   * was stalled for longer than FILESTORE_OUTBOX_RETENTION), a listener with `onExpired` is
   * removed and told the pruned watermark instead of getting the events after the gap (an
   * event stream ends: its reconnect gets 410 RESUME_POINT_EXPIRED); one without it goes on
   * after the gap.
   */
  async subscribe(listener: (e: EventEnvelope) => void, onExpired?: (prunedThrough: number) => void): Promise<() => void> {
    if (!this.started || this.stopped) throw new Error('the event tail is not running');
    this.listeners.set(listener, onExpired);
    const unsubscribe = () => {
      if (this.listeners.delete(listener) && this.listeners.size === 0) this.idle();
    };
    try {
      await (this.following ??= this.follow());
    } catch (err) {
      unsubscribe();
      throw err;
    }
    return unsubscribe;
  }

  private async follow(): Promise<void> {
    const round = ++this.round;
    try {
      const [latest, subscribed] = await Promise.allSettled([lastPublishedSeq(this.o.q), this.o.bus.subscribe((e) => this.wake(e.seq))]);
      // A subscription this round will not use (gone idle meanwhile, or the position unknown) is undone.
      if (subscribed.status === 'fulfilled' && (latest.status === 'rejected' || round !== this.round)) subscribed.value();
      if (latest.status === 'rejected') throw latest.reason;
      if (subscribed.status === 'rejected') throw subscribed.reason;
      if (round !== this.round) return;
      const [position, unsubscribe] = [latest.value, subscribed.value];
      // Everything up to `position` was published before any listener of this round came.
      this.position = Math.max(this.position, position);
      this.wanted = Math.max(this.wanted, this.position);
      this.unsubscribe = unsubscribe;
      this.ready = true;
      this.timer = setInterval(() => this.wake(), this.o.pollMs ?? 1000);
      this.timer.unref();
      this.wake(); // what was published while the bus subscription was being set up
    } catch (err) {
      if (round === this.round) this.following = null;
      throw err;
    }
  }

  /** No listener left: stop following until the next one comes. */
  private idle(): void {
    this.round++;
    this.ready = false;
    if (this.timer) clearInterval(this.timer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.timer = null;
    this.retryTimer = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.following = null;
  }

  /** Reads the outbox now; `seq` (from a bus message) says which event must become visible. */
  wake(seq?: number): void {
    if (!this.ready || this.listeners.size === 0) return;
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

  /** Events up to `pruned` are gone unread: listeners that can be told are, and removed; the rest go on after the gap. */
  private expire(pruned: number): void {
    for (const [listener, onExpired] of [...this.listeners]) {
      if (!onExpired) continue;
      this.listeners.delete(listener);
      try {
        onExpired(pruned);
      } catch (err) {
        this.o.onError?.(err);
      }
    }
    this.position = Math.max(this.position, pruned);
    this.wanted = Math.max(this.wanted, this.position);
    if (this.listeners.size === 0) this.idle();
  }

  private async fetch(): Promise<void> {
    for (;;) {
      if (!this.ready) return; // gone idle: the next round starts from the latest event
      const events = await eventsAfter(this.o.q, this.position, PAGE);
      // Pruning deletes a prefix of the seq order, so a page read in one snapshot that starts
      // right after the position lost nothing. One that starts later may follow a rolled-back
      // claim (its seqs never appear) or events pruned unread: the watermark says which. Read
      // after the page, a prune in between can only end streams early, never hide a gap.
      const first = events[0];
      if (first && first.seq > this.position + 1 && this.ready) {
        const pruned = await prunedThrough(this.o.q);
        if (pruned > this.position && this.ready) this.expire(pruned);
      }
      for (const e of events) {
        // A read that overlapped a change of round may hand back events already behind us.
        if (!this.ready || e.seq <= this.position) continue;
        this.position = e.seq;
        for (const l of this.listeners.keys()) {
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
