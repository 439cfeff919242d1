import type { Pool } from '../db/pool.ts';
import { claimBatch } from '../catalogue/outbox.ts';
import { defaultMetrics, type FilestoreMetrics } from '../metrics/metrics.ts';
import type { EventBus } from './bus.ts';

// Transaction-scoped advisory lock: one relay publishes at a time across all processes,
// which is what keeps publication in sequence order.
const RELAY_LOCK = 4_242_002;

export interface RelayOptions {
  pool: Pool;
  bus: EventBus;
  /** Fallback poll interval; commits in this process nudge the relay. */
  intervalMs?: number;
  /** How long a nudge waits so that commits arriving together are published in one batch. */
  batchWindowMs?: number;
  batchSize?: number;
  onError?: (err: unknown) => void;
  /** Where filestore_outbox_lag_seconds is set (default: defaultMetrics()). */
  metrics?: FilestoreMetrics | undefined;
}

/**
 * Publishes committed outbox rows to the bus, at least once and in sequence order: the
 * claim (published_at, seq) commits only after the bus accepted the batch, so a crash in
 * between republishes rather than loses.
 */
export class OutboxRelay {
  private timer: NodeJS.Timeout | null = null;
  private pendingNudge: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;

  private readonly metrics: FilestoreMetrics;

  constructor(private readonly o: RelayOptions) {
    this.metrics = o.metrics ?? defaultMetrics();
  }

  start(): void {
    this.stopped = false;
    const tick = () => {
      this.runPass();
      if (!this.stopped) this.timer = setTimeout(tick, this.o.intervalMs ?? 500);
    };
    tick();
  }

  /** Asks for a publication pass within the batch window; passes never overlap. */
  nudge(): void {
    if (this.stopped || this.pendingNudge) return;
    this.pendingNudge = setTimeout(() => {
      this.pendingNudge = null;
      this.runPass();
    }, this.o.batchWindowMs ?? 5);
  }

  private runPass(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.drain()
      .then(() => {})
      .catch((err) => this.o.onError?.(err))
      .finally(() => {
        this.running = null;
        if (this.again) {
          this.again = false;
          this.runPass();
        }
      });
  }

  /** Publishes until nothing committed is left; returns the number published. */
  async drain(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.publishOnce();
      total += n;
      if (n === 0) {
        // A pass that found nothing to publish: the relay is idle, so its lag is 0.
        if (total === 0) this.metrics.recordOutboxPublished([]);
        return total;
      }
    }
  }

  private async publishOnce(): Promise<number> {
    const client = await this.o.pool.connect();
    try {
      await client.query('BEGIN');
      // Its own statement: the claim must take its snapshot after the lock is held, or it
      // could see rows the previous holder published as still unpublished.
      const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_xact_lock($1) AS locked', [RELAY_LOCK]);
      if (!rows[0]?.locked) {
        await client.query('ROLLBACK');
        return 0;
      }
      const batch = await claimBatch(client, this.o.batchSize ?? 500);
      if (batch.length > 0) {
        await this.o.bus.publish(batch);
        this.metrics.recordOutboxPublished(batch);
      }
      await client.query('COMMIT');
      return batch.length;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.pendingNudge) clearTimeout(this.pendingNudge);
    this.pendingNudge = null;
    await this.running;
  }
}
