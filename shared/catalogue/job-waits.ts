import type { Queryable } from '../db/pool.ts';

/**
 * Long polls of reconciliation jobs (`GET /v1/reconcile/jobs/:id?waitMs=`): a request for a
 * job still queued or running is answered once the job has settled, not up to a client's poll
 * interval later. However many requests wait, one small query every POLL_MS asks which of
 * their jobs have settled (or are gone), and only while any request waits: a job may run in
 * another process (an agent, a Lambda), so the catalogue's row is what says it ended. A job
 * this process's own reconcile worker settles wakes its waits at once (announceSettled).
 */
const POLL_MS = 20;
/** After a failed look (the database away), the next one waits this long; the waits end at their time anyway. */
const RETRY_MS = 250;

/** The waits of this process by catalogue (its pool): only those of the catalogue a job is in are woken. */
const settledHere = new Map<Queryable, Set<(id: number) => void>>();

/** Job `id` of the catalogue behind `q` has just been settled by this process (its reconcile worker). */
export function announceSettled(q: Queryable, id: number): void {
  for (const wake of settledHere.get(q) ?? []) wake(id);
}

export class JobWaits {
  private readonly waiting = new Map<number, Set<() => void>>();
  private timer: NodeJS.Timeout | null = null;
  private looking = false;
  private closed = false;
  private readonly wake = (id: number): void => {
    for (const done of [...(this.waiting.get(id) ?? [])]) done();
  };

  /**
   * `o.hold` false: every wait ends at once (the API Lambda: a held request would keep a
   * function instance busy and its catalogue polled for each waiting client; the CLI then asks
   * at its own pace).
   */
  constructor(
    private readonly q: Queryable,
    private readonly o: { pollMs?: number; hold?: boolean } = {},
  ) {}

  /** Whether a wait can last (false: closed, or not held, and every wait ends at once). */
  get holds(): boolean {
    return !this.closed && this.o.hold !== false;
  }

  /**
   * Resolves once job `id` is no longer queued or running (or its row is gone), after `ms` at
   * the latest, or at once when the waits are closed or not held. It says nothing itself: the
   * caller reads the row again.
   */
  settled(id: number, ms: number): Promise<void> {
    if (!this.holds || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      if (this.waiting.size === 0) this.listen(true);
      let waiters = this.waiting.get(id);
      if (!waiters) this.waiting.set(id, (waiters = new Set()));
      const set = waiters;
      const done = (): void => {
        clearTimeout(timeout);
        set.delete(done);
        if (set.size === 0 && this.waiting.get(id) === set) this.waiting.delete(id);
        if (this.waiting.size === 0) this.idle();
        resolve();
      };
      const timeout = setTimeout(done, ms);
      set.add(done);
      this.schedule(this.o.pollMs ?? POLL_MS);
    });
  }

  /** Ends every wait now (the process is stopping: each request answers with the job as it is). */
  close(): void {
    this.closed = true;
    for (const set of [...this.waiting.values()]) for (const done of [...set]) done();
    this.idle();
  }

  /** No request waits: no look scheduled, no wake registered. */
  private idle(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.listen(false);
  }

  private listen(on: boolean): void {
    let wakes = settledHere.get(this.q);
    if (on) {
      if (!wakes) settledHere.set(this.q, (wakes = new Set()));
      wakes.add(this.wake);
    } else if (wakes) {
      wakes.delete(this.wake);
      if (wakes.size === 0) settledHere.delete(this.q);
    }
  }

  private schedule(ms: number): void {
    if (this.timer !== null || this.looking || this.closed || this.waiting.size === 0) return;
    this.timer = setTimeout(() => void this.look(), ms);
  }

  private async look(): Promise<void> {
    this.timer = null;
    const ids = [...this.waiting.keys()];
    if (ids.length === 0) return;
    this.looking = true;
    let next = this.o.pollMs ?? POLL_MS;
    try {
      const { rows } = await this.q.query<{ id: string | number }>(
        `SELECT id FROM filestore.reconciliation_jobs WHERE id = ANY($1::bigint[]) AND status IN ('queued', 'running')`,
        [ids],
      );
      const open = new Set(rows.map((r) => Number(r.id)));
      for (const id of ids) if (!open.has(id)) this.wake(id);
    } catch {
      next = RETRY_MS;
    } finally {
      this.looking = false;
      this.schedule(next);
    }
  }
}
