import type { Queryable } from '../db/pool.ts';

/**
 * Long polls of reconciliation jobs (`GET /v1/reconcile/jobs/:id?waitMs=`): a request for a
 * job still queued or running is answered once the job has settled, not up to a client's poll
 * interval later. However many requests wait, one small query every POLL_MS asks which of
 * their jobs have settled (or are gone), and only while any request waits: a job may run in
 * another process (an agent, a Lambda), so the catalogue's row is what says it ended.
 */
const POLL_MS = 20;

/**
 * The jobs this process settles itself (its reconcile worker: `npm start`, the agent) wake the
 * requests waiting for them at once, without waiting for the next look.
 */
const settledHere = new Set<(id: number) => void>();
export function announceSettled(id: number): void {
  for (const wake of settledHere) wake(id);
}
/** After a failed look (the database away), the next one waits this long; the waits end at their time anyway. */
const RETRY_MS = 250;

export class JobWaits {
  private readonly waiting = new Map<number, Set<() => void>>();
  private timer: NodeJS.Timeout | null = null;
  private looking = false;
  private closed = false;
  private readonly wake = (id: number): void => {
    for (const done of [...(this.waiting.get(id) ?? [])]) done();
  };

  constructor(
    private readonly q: Queryable,
    private readonly pollMs = POLL_MS,
  ) {
    settledHere.add(this.wake);
  }

  /**
   * Resolves once job `id` is no longer queued or running (or its row is gone), after `ms` at
   * the latest, or at once when the waits are closed. It says nothing itself: the caller reads
   * the row again.
   */
  settled(id: number, ms: number): Promise<void> {
    if (this.closed || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      let waiters = this.waiting.get(id);
      if (!waiters) this.waiting.set(id, (waiters = new Set()));
      const set = waiters;
      const done = (): void => {
        clearTimeout(timeout);
        set.delete(done);
        if (set.size === 0 && this.waiting.get(id) === set) this.waiting.delete(id);
        resolve();
      };
      const timeout = setTimeout(done, ms);
      set.add(done);
      this.schedule(this.pollMs);
    });
  }

  /** Ends every wait now (the process is stopping: each request answers with the job as it is). */
  close(): void {
    this.closed = true;
    settledHere.delete(this.wake);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const set of [...this.waiting.values()]) for (const done of [...set]) done();
  }

  private schedule(ms: number): void {
    if (this.timer !== null || this.looking || this.closed || this.waiting.size === 0) return;
    this.timer = setTimeout(() => void this.look(), ms);
  }

  private async look(): Promise<void> {
    this.timer = null;
    this.looking = true;
    let next = this.pollMs;
    try {
      const ids = [...this.waiting.keys()];
      const { rows } = await this.q.query<{ id: string | number }>(
        `SELECT id FROM filestore.reconciliation_jobs WHERE id = ANY($1::bigint[]) AND status IN ('queued', 'running')`,
        [ids],
      );
      const open = new Set(rows.map((r) => Number(r.id)));
      for (const id of ids) {
        if (!open.has(id)) this.wake(id);
      }
    } catch {
      next = RETRY_MS;
    } finally {
      this.looking = false;
      this.schedule(next);
    }
  }
}
