import type { Pool } from '../db/pool.ts';
import { CLAIM_SETTINGS_SQL, claimBatchSql, claimedBatchOf, fillClaimedData, markPublishedSql, RELAY_LOCKED_SETTING } from '../catalogue/outbox.ts';
import { defaultMetrics } from '../metrics/prom.ts';
import type { FilestoreMetrics } from '../metrics/metrics.ts';
import type { EventBus } from './bus.ts';

// Transaction-scoped advisory lock: one relay publishes at a time across all processes,
// which is what keeps publication in sequence order.
export const RELAY_LOCK = 4_242_002;
/** How far a pass's claims grow while each comes back full (see `pass`). */
const BACKLOG_FACTOR = 8;

export interface RelayOptions {
  pool: Pool;
  bus: EventBus;
  /** Fallback poll interval; commits in this process nudge the relay. */
  intervalMs?: number;
  /** How long a nudge waits so that commits arriving together are published in one batch. */
  batchWindowMs?: number;
  batchSize?: number;
  /**
   * A pass refused the relay lock (another process is publishing, perhaps from a snapshot
   * taken before this process's commit): it tries again after this long, doubling while it
   * keeps being refused, never later than the poll interval (default 20 ms).
   */
  retryMs?: number;
  onError?: (err: unknown) => void;
  /** Where filestore_outbox_lag_seconds is set (default: defaultMetrics()). */
  metrics?: FilestoreMetrics | undefined;
}

/**
 * Publishes committed outbox rows to the bus, at least once and in sequence order: the
 * claim (seq, and published_at = when the bus accepted the batch) is written and committed
 * only after the bus accepted it, so a crash or a failed publication in between republishes
 * rather than loses, and no row is marked published that the bus did not take. Every
 * committed row is claimable at once (no wait for unrelated transactions; the ordering
 * argument is at `claimBatch`).
 *
 * When passes run: at start and every `intervalMs` (rows committed by processes without a
 * relay, or whose relay is gone), within `batchWindowMs` of a nudge (this process's commits),
 * and, when a pass was refused the relay lock, again after `retryMs` (doubling up to
 * `intervalMs` while refused): the process holding the lock may have claimed from a snapshot
 * taken before our commit, and our rows would otherwise wait for the next tick. A pass that
 * gets the lock publishes until a claim comes back short of the batch size: it leaves no row
 * behind that was committed when its last claim began (later ones: see `pass`).
 */
export class OutboxRelay {
  private timer: NodeJS.Timeout | null = null;
  private pendingNudge: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private refusals = 0;
  private running: Promise<void> | null = null;
  private again = false;
  private started = false;
  private stopped = false;

  private readonly metrics: FilestoreMetrics;
  /** An outbox insert went through this relay's pool since the last complete flush (see `flushWritten`). */
  private written = false;
  /** Publication passes run (claims tried), for those who check that a flush was skipped. */
  passes = 0;
  /** The last claim's mark and COMMIT, still on its way (flushWritten does not wait for it; the next claim does). */
  private marking: Promise<void> | null = null;

  constructor(private readonly o: RelayOptions) {
    this.metrics = o.metrics ?? defaultMetrics();
    watchOutboxWrites(o.pool, () => (this.written = true));
  }

  /** Runs the loop: passes on the poll, on nudges and after refusals (long-running processes). */
  start(): void {
    this.started = true;
    this.stopped = false;
    const tick = () => {
      this.runPass();
      if (!this.stopped) this.timer = setTimeout(tick, this.o.intervalMs ?? 500);
    };
    tick();
  }

  /**
   * Asks for a publication pass within the batch window; passes never overlap. A relay that was
   * never started (a Lambda's core) sets no timer: its process publishes with `flush` instead.
   */
  nudge(): void {
    if (!this.started || this.stopped || this.pendingNudge) return;
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
    this.running = this.pass()
      .then(({ refused }) => {
        if (refused) this.retryLater();
        else this.refusals = 0;
      })
      .catch((err) => this.o.onError?.(err))
      .finally(() => {
        this.running = null;
        if (this.again) {
          this.again = false;
          this.runPass();
        }
      });
  }

  /** One timer at a time, its delay doubling with each refusal in a row: bounded, never a busy loop. */
  private retryLater(): void {
    if (this.stopped || this.retryTimer) return;
    const interval = this.o.intervalMs ?? 500;
    const delay = Math.min(interval, (this.o.retryMs ?? 20) * 2 ** Math.min(this.refusals, 16));
    this.refusals++;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.runPass();
    }, delay);
  }

  /** Publishes until nothing committed is left; returns the number published (0 when another relay holds the lock). */
  async drain(): Promise<number> {
    return (await this.pass()).published;
  }

  /**
   * Publishes every row committed before the call, whether or not the loop runs: a pass refused
   * the lock is tried again (after `retryMs`, doubling) for up to `patienceMs`, since the
   * process holding it may have claimed from a snapshot taken before those rows committed.
   * Returns the number this call published; past the patience, what is left waits for the next
   * relay pass anywhere (a long-running relay's poll, the maintenance pass).
   */
  async flush(patienceMs = 5_000): Promise<number> {
    return (await this.flushAll(patienceMs)).published;
  }

  /**
   * `flush`, only when this process wrote to the outbox since the last flush that completed:
   * what a Lambda calls before it returns. An invocation that committed no event costs no
   * round trip (a flush is five). Rows another process committed are not this one's to
   * publish: their writer flushes them, or the maintenance pass does. A flush that failed or
   * gave up waiting for the lock leaves the mark set, so the next call tries again. Returns
   * once the bus took the events; their rows' mark as published is on its way (publishOnce's
   * `markLater`; `settled()` waits for it).
   */
  async flushWritten(patienceMs = 5_000): Promise<number> {
    if (!this.written) return 0;
    // Cleared before the pass's claim takes its snapshot: an insert from now on marks it again.
    this.written = false;
    try {
      const { published, complete } = await this.flushAll(patienceMs, true);
      if (!complete) this.written = true;
      return published;
    } catch (err) {
      this.written = true;
      throw err;
    }
  }

  private async flushAll(patienceMs: number, markLater = false): Promise<{ published: number; complete: boolean }> {
    const until = performance.now() + patienceMs;
    let total = 0;
    for (let refusals = 0; ; refusals++) {
      const { published, refused } = await this.pass(markLater);
      total += published;
      if (!refused || performance.now() >= until) return { published: total, complete: !refused };
      const delay = Math.min(this.o.intervalMs ?? 500, (this.o.retryMs ?? 20) * 2 ** Math.min(refusals, 16));
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(delay, until - performance.now()))));
    }
  }

  private async pass(markLater = false): Promise<{ published: number; refused: boolean }> {
    const base = this.o.batchSize ?? 500;
    let limit = base;
    let total = 0;
    for (;;) {
      const asked = limit;
      const n = await this.publishOnce(asked, markLater);
      if (n === null) return { published: total, refused: true };
      total += n;
      // A backlog (a discovery commits thousands of events a second): each full claim doubles
      // the next one's size, up to BACKLOG_FACTOR × batchSize, so the backlog costs fewer
      // claims (a transaction with a synchronous commit each). Order is the claim's: unchanged.
      limit = Math.min(asked * 2, base * BACKLOG_FACTOR);
      // A claim short of the limit took every row committed when it began. What commits
      // after that is its writer's to announce: this process's commits nudge (a running
      // pass is followed by another), another process's relay tries until it gets the lock,
      // and the poll catches the rest. (Claiming again until a claim came back empty cost
      // every pass a second transaction of five statements: during an audit, most of the
      // relay's statements.)
      if (n < asked) {
        // A pass that found nothing to publish: the relay is idle, so its lag is 0.
        if (total === 0) this.metrics.recordOutboxPublished([]);
        return { published: total, refused: false };
      }
    }
  }

  /**
   * One claim: the number of events published, or null when another relay holds the lock.
   * `markLater` (flushWritten: a Lambda about to return): the batch's mark and COMMIT are sent
   * once the bus took it, and not waited for. The events have left; what is left is
   * bookkeeping, which PostgreSQL does whether or not the container is frozen once the
   * statement is sent, and which keeps the relay lock until it commits (no other relay claims
   * these rows meanwhile). The next claim of this relay waits for it first. Should it fail,
   * the rows stay unpublished and are published again (at least once: a duplicate, never a
   * loss), by this container's next flush or by the maintenance pass.
   */
  private async publishOnce(limit: number, markLater = false): Promise<number | null> {
    await this.marking;
    this.passes++;
    const client = await this.o.pool.connect();
    let handedOff = false;
    try {
      // One round trip: BEGIN, the try-lock (a try, never a wait: a relay queued on a lock
      // would only add a waiter) in a statement of its own whose result is kept as a
      // transaction-local setting, the claim's settings, then the claim, which takes rows only
      // when that setting says the lock is held. The claim must take its snapshot after the lock
      // is held, or it could see rows the previous holder published as still unpublished: in
      // READ COMMITTED each statement of a simple-protocol query takes its own snapshot when it
      // starts, after the lock's statement ended. Refused, the claim is empty (no seq drawn).
      // Everything is transaction-local: gone with the COMMIT or ROLLBACK.
      // Nobody listening in this process (an inline bus without subscribers: no SSE stream
      // open): the claim leaves the events' data where it is. A discovery's 100k events were
      // read back (~70 MB of JSON) only to be handed to no one. A subscriber arriving before
      // the batch is published gets it with its data, read then (fillClaimedData).
      const withData = this.o.bus.listening?.() ?? true;
      const results = (await client.query(
        `BEGIN; SELECT set_config('${RELAY_LOCKED_SETTING}', pg_try_advisory_xact_lock(${RELAY_LOCK})::text, true) AS locked; ${CLAIM_SETTINGS_SQL}; ${claimBatchSql(limit, withData)}`,
      )) as unknown as Array<{ rows: unknown[] }>;
      if ((results[1]?.rows[0] as { locked?: string } | undefined)?.locked !== 'true') {
        await client.query('ROLLBACK');
        return null;
      }
      const batch = claimedBatchOf(results.at(-1)?.rows ?? []); // the claim: the last statement
      if (batch.events.length === 0) {
        await client.query('COMMIT');
        return 0;
      }
      if (!withData && (this.o.bus.listening?.() ?? true)) await fillClaimedData(client, batch);
      await this.o.bus.publish(batch.events);
      this.metrics.recordOutboxPublished(batch.events);
      // Marked published now that the bus took the batch, in the round trip of the COMMIT.
      const marked = client.query(`${markPublishedSql(batch)}; COMMIT`);
      if (!markLater) {
        await marked;
        return batch.events.length;
      }
      handedOff = true;
      this.marking = marked.then(
        () => {
          this.marking = null;
          client.release();
        },
        async (err: unknown) => {
          await client.query('ROLLBACK').catch(() => {});
          this.marking = null;
          this.written = true; // not marked: this container's next flush publishes them again
          client.release();
          this.o.onError?.(err);
        },
      );
      return batch.events.length;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      if (!handedOff) client.release();
    }
  }

  /** The last claim's mark, once it is committed (flushWritten does not wait for it). */
  async settled(): Promise<void> {
    await this.marking;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.pendingNudge) clearTimeout(this.pendingNudge);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.pendingNudge = null;
    this.retryTimer = null;
    await this.running;
    await this.marking;
  }
}

const OUTBOX_INSERT = /\binsert\s+into\s+filestore\.outbox\b/i;

/**
 * Calls `onWrite` whenever a statement inserting into the outbox is sent on a connection of
 * `pool`. Watched at the connection, not at each writer (appendEvents, the journal's own
 * insert, whatever comes next): a writer that forgot to say so would leave its events
 * unpublished when a Lambda returns. An insert rolled back still counts: one flush too many,
 * never one too few.
 */
function watchOutboxWrites(pool: Pool, onWrite: () => void): void {
  if (typeof (pool as { on?: unknown }).on !== 'function') return;
  const watched = new WeakSet<object>();
  pool.on('acquire', (c) => {
    if (watched.has(c)) return;
    watched.add(c);
    const query = c.query.bind(c) as (...args: unknown[]) => unknown;
    (c as { query: unknown }).query = (...args: unknown[]) => {
      const first = args[0] as string | { text?: unknown } | undefined;
      const text = typeof first === 'string' ? first : typeof first?.text === 'string' ? first.text : '';
      if (OUTBOX_INSERT.test(text)) onWrite();
      return query(...args);
    };
  });
}
