import { clearQueueOwed, isOpenJob, openJobs, owedJobs, type JobToSend } from '../catalogue/jobs.ts';
import type { Pool } from '../db/pool.ts';

/** What the resender needs of the BullMQ queue: a row's message, in the queue its mount routes to. */
export interface ResendTarget {
  pool: Pool;
  /** The mounts whose rows this process looks after (undefined: all). */
  mountIds: readonly string[] | undefined;
  /** Adds the row's message (BullMQ ignores an add of a job id it holds, whatever its state). */
  add(row: JobToSend): Promise<unknown>;
  /** The BullMQ state of the row's message ('unknown' when there is none). */
  stateOf(row: JobToSend): Promise<string>;
  /** Removes the row's finished message, so that it can be added again. */
  remove(row: JobToSend): Promise<unknown>;
  /** True when `err` is part of a Redis outage already reported (not worth a line of its own). */
  outage(err: unknown): boolean;
  log(line: string): void;
}

// Rows read and held at once: a page of a walk by id, never the whole set.
const PAGE = 1_000;
// Messages sent (or states asked) at once: commands on one connection are pipelined.
const AT_ONCE = 50;

/**
 * Makes sure every open reconciliation row of transport `redis` has its BullMQ message (rows
 * the SQS queue carries are the Lambdas': openJobs and owedJobs never return them), in two ways:
 *
 * - `sendOwed`: rows recorded while Redis was unreachable are marked `queue_owed`; they are
 *   read from a partial index holding only them (nothing owed, one index probe), page by page
 *   by id, sent and unmarked. Run when a connection is ready again, after a row is marked
 *   while Redis is back already, and by consumers every sweep: whoever is up sends what a
 *   process that stopped recorded.
 * - `sweep`: what no mark covers — a crash between a row's insert and its add, a flushed
 *   Redis, a message that failed in BullMQ while its row stayed open. One page of open rows
 *   per call, resuming after the last id of the previous page and starting over at the end,
 *   so that rows legitimately waiting (a backlog, an offline agent's queue) never keep the
 *   look from the rows behind them.
 *
 * A row sent by two processes at once gets one message: its BullMQ job id is derived from the
 * row, and BullMQ drops an add of an id it holds.
 */
export class ReconcileResender {
  private sending: Promise<void> | null = null;
  private sendAgain = false;
  private sweeping: Promise<void> | null = null;
  /** Where the next sweep page starts (the last id the previous one saw; 0: from the start). */
  private cursor = 0;

  constructor(private readonly t: ResendTarget) {}

  /** Sends every owed row; a call while a pass runs makes it run once more (a row marked meanwhile). */
  sendOwed(): Promise<void> {
    if (this.sending) {
      this.sendAgain = true;
      return this.sending;
    }
    this.sending = (async () => {
      do {
        this.sendAgain = false;
        await this.sendOwedPass();
      } while (this.sendAgain);
    })()
      .catch((e: Error) => {
        if (!this.t.outage(e)) this.t.log(`reconcile queue: rows recorded while Redis was unreachable not queued yet: ${e.message}`);
      })
      .finally(() => {
        this.sending = null;
      });
    return this.sending;
  }

  private async sendOwedPass(): Promise<void> {
    let after = 0;
    let sent = 0;
    for (;;) {
      const rows = await owedJobs(this.t.pool, { mountIds: this.t.mountIds, afterId: after, limit: PAGE });
      if (rows.length === 0) break;
      // A row settled meanwhile needs no message: it is only unmarked.
      const open = rows.filter((r) => isOpenJob(r.status));
      const { done, failure } = await this.each(open, (r) => this.t.add(r));
      await clearQueueOwed(this.t.pool, [...rows.filter((r) => !open.includes(r)).map((r) => r.id), ...done]);
      sent += done.length;
      if (failure !== undefined) throw failure; // the rest stay owed: the next 'ready' or sweep
      if (rows.length < PAGE) break;
      after = (rows[rows.length - 1] as JobToSend).id;
    }
    if (sent > 0) this.t.log(`reconcile queue: sent ${sent} job(s) recorded while Redis was unreachable`);
  }

  /** One page of the walk through open rows idle for `idleMs`: re-adds those whose message is missing or finished. */
  sweep(idleMs: number): Promise<void> {
    if (this.sweeping) return this.sweeping;
    this.sweeping = (async () => {
      const rows = await openJobs(this.t.pool, { mountIds: this.t.mountIds, idleMs, limit: PAGE, afterId: this.cursor });
      this.cursor = rows.length < PAGE ? 0 : (rows[rows.length - 1] as JobToSend).id;
      const { done, failure } = await this.each(rows, async (row) => {
        const state = await this.t.stateOf(row);
        if (state === 'completed' || state === 'failed') await this.t.remove(row);
        else if (state !== 'unknown') return false; // waiting, delayed, active: on its way
        await this.t.add(row);
        return true;
      });
      await clearQueueOwed(this.t.pool, done);
      if (done.length > 0) this.t.log(`reconcile queue: ${done.length} job(s) found in the catalogue without a queue message were queued again`);
      if (failure !== undefined) throw failure;
    })()
      .catch((e: Error) => {
        if (!this.t.outage(e)) this.t.log(`reconcile queue: sweep failed: ${e.message}`);
      })
      .finally(() => {
        this.sweeping = null;
      });
    return this.sweeping;
  }

  /** Waits for a pass in progress (a queue closing). */
  async settled(): Promise<void> {
    await Promise.all([this.sending, this.sweeping]);
  }

  /**
   * Runs `fn` on the rows, AT_ONCE at a time, until one fails: the ids `fn` did something for
   * (it returned anything but false) and the first failure.
   */
  private async each(rows: readonly JobToSend[], fn: (row: JobToSend) => Promise<unknown>): Promise<{ done: number[]; failure?: unknown }> {
    const done: number[] = [];
    for (let i = 0; i < rows.length; i += AT_ONCE) {
      const chunk = rows.slice(i, i + AT_ONCE);
      const results = await Promise.allSettled(chunk.map((r) => fn(r)));
      let failure: unknown;
      results.forEach((r, k) => {
        if (r.status === 'fulfilled') {
          if (r.value !== false) done.push((chunk[k] as JobToSend).id);
        } else failure ??= r.reason;
      });
      if (failure !== undefined) return { done, failure };
    }
    return { done };
  }
}
