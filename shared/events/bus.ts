import { EventEmitter } from 'node:events';
import { Redis } from 'ioredis';
import { envelopeJson, type EventEnvelope } from '../catalogue/outbox.ts';
import { RedisHealth } from '../redis/health.ts';

export const EVENTS_CHANNEL = 'filestore:events';

/** Where published events go: Redis pub/sub, or an in-process emitter in inline mode. */
export interface EventBus {
  publish(events: EventEnvelope[]): Promise<void>;
  /** Returns an unsubscribe function. */
  subscribe(handler: (event: EventEnvelope) => void): Promise<() => void>;
  /**
   * Whether a publication now reaches anyone who reads the events' data. Absent (Redis: the
   * subscribers are other processes): always. The relay claims without the data when it is false.
   */
  listening?(): boolean;
  close(): Promise<void>;
}

export class InlineEventBus implements EventBus {
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  async publish(events: EventEnvelope[]): Promise<void> {
    for (const e of events) this.emitter.emit('event', e);
  }

  listening(): boolean {
    return this.emitter.listenerCount('event') > 0;
  }

  /** A handler that throws is isolated: it never fails publication (as with Redis pub/sub). */
  async subscribe(handler: (event: EventEnvelope) => void): Promise<() => void> {
    const safe = (e: EventEnvelope) => {
      try {
        handler(e);
      } catch {
        // the subscriber's own bug; the event was delivered
      }
    };
    this.emitter.on('event', safe);
    return () => this.emitter.off('event', safe);
  }

  async close(): Promise<void> {
    this.emitter.removeAllListeners();
  }
}

/**
 * Redis pub/sub on `filestore:events`; one JSON envelope per message. An outage is logged once
 * per connection (RedisHealth); a publication that fails meanwhile rejects with a
 * RedisUnavailableError (the relay keeps the events and tries again).
 */
export class RedisEventBus implements EventBus {
  private readonly publisher: Redis;
  private subscriber: Redis | null = null;
  private readonly handlers = new Set<(event: EventEnvelope) => void>();
  private readonly publisherHealth: RedisHealth;

  constructor(
    private readonly url: string,
    private readonly log: (line: string) => void = () => {},
  ) {
    this.publisherHealth = new RedisHealth('events publisher', log);
    this.publisher = this.publisherHealth.watch(new Redis(url, { maxRetriesPerRequest: 3, lazyConnect: false }));
  }

  async publish(events: EventEnvelope[]): Promise<void> {
    if (events.length === 0) return;
    const pipeline = this.publisher.pipeline();
    for (const e of events) pipeline.publish(EVENTS_CHANNEL, envelopeJson(e));
    try {
      const results = await pipeline.exec();
      const failed = results?.find(([err]) => err);
      if (failed) throw failed[0];
    } catch (err) {
      throw this.publisherHealth.unavailable(err, 'events not published');
    }
  }

  async subscribe(handler: (event: EventEnvelope) => void): Promise<() => void> {
    if (!this.subscriber) {
      this.subscriber = new RedisHealth('events subscriber', this.log).watch(new Redis(this.url, { maxRetriesPerRequest: null }));
      this.subscriber.on('message', (_channel: string, message: string) => {
        if (this.handlers.size === 0) return; // nobody listens now: not even parsed
        const event = JSON.parse(message) as EventEnvelope;
        for (const h of this.handlers) {
          try {
            h(event);
          } catch {
            // a throwing subscriber must not starve the others
          }
        }
      });
      await this.subscriber.subscribe(EVENTS_CHANNEL);
    }
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  async close(): Promise<void> {
    this.handlers.clear();
    await Promise.allSettled([this.publisher.quit(), this.subscriber?.quit()]);
  }
}
