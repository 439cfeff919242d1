import { getNextMillis, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { RedisHealth } from '../redis/health.ts';
import { mountsDueForAudit, type ReconcileJobRow } from '../catalogue/jobs.ts';
import type { Queryable } from '../db/pool.ts';
import type { FilestoreMetrics } from '../metrics/metrics.ts';
import { refreshAuditAges, type AuditSelection } from './audit-age.ts';
import { FilestoreError } from '../errors.ts';
import { RECONCILE_QUEUE, type ReconcileQueue } from './queue.ts';

export type { AuditSelection };

export interface AuditSchedulerOptions {
  pool: Queryable;
  /** Where audits are enqueued. */
  queue: ReconcileQueue;
  /** FILESTORE_AUDIT_CRON: a cron pattern (5 fields, or 6 with seconds first). */
  cron: string;
  /** IANA time zone of the pattern (default: the process's). */
  tz?: string | undefined;
  /** 'inline': a timer in this process; otherwise a BullMQ job scheduler on that Redis. */
  redisUrl: string;
  /** Redis key prefix of the scheduler's queue; default: the reconcile queue's (the catalogue's, see queues/prefix.ts). */
  prefix?: string | undefined;
  /** Name of the BullMQ queue the scheduler's ticks go through (default `filestore-reconcile-audits`). */
  name?: string | undefined;
  select?: AuditSelection | undefined;
  /** Where filestore_audit_age_seconds{mount} of the selected mounts is kept current (none: not reported). */
  metrics?: FilestoreMetrics | undefined;
  log?: ((line: string) => void) | undefined;
}

export interface AuditScheduler {
  /** Stops firing in this process (a BullMQ scheduler stays in Redis for the other processes). */
  close(): Promise<void>;
}

export interface AuditTick {
  enqueued: ReconcileJobRow[];
  /** Keys of mounts whose audit request joined one already waiting. */
  joined: string[];
}

/**
 * One audit tick: a full audit (`path: ''`, recursive, reason `audit`) of every selected
 * active mount, except those with an audit running right now. A waiting audit absorbs the
 * new request (coalescing), so a mount never has more than one audit queued; the engine's
 * per-mount advisory lock makes sure only one runs, across processes.
 */
export async function enqueueAudits(pool: Queryable, queue: ReconcileQueue, select: AuditSelection = {}): Promise<AuditTick> {
  const due = await mountsDueForAudit(pool, select);
  const tick: AuditTick = { enqueued: [], joined: [] };
  for (const mount of due) {
    const r = await queue.enqueue({ mountId: mount.id, path: '', reason: 'audit', recursive: true, hash: false });
    if (r.coalesced) tick.joined.push(mount.key);
    else tick.enqueued.push(r.job);
  }
  return tick;
}

/** When `cron` fires next after `from` (epoch ms); throws CONFIG_ERROR for a pattern cron-parser rejects. */
export function nextAuditAt(cron: string, from: number = Date.now(), tz?: string): number {
  let next: number | undefined;
  try {
    next = getNextMillis(from, { pattern: cron, tz });
  } catch (err) {
    throw new FilestoreError('CONFIG_ERROR', `FILESTORE_AUDIT_CRON "${cron}" is not a cron pattern (${(err as Error).message}); e.g. "0 3 * * *" for 03:00 daily`);
  }
  if (next === undefined) throw new FilestoreError('CONFIG_ERROR', `FILESTORE_AUDIT_CRON "${cron}" never fires`);
  return next;
}

/**
 * Starts periodic audits. With Redis, a BullMQ job scheduler (`upsertJobScheduler`, one per
 * selection, shared by every process that starts it with the same selection: upserting is
 * idempotent and a tick is taken by one process), consumed here. Inline, a timer re-armed
 * from the same cron parser. Changing the pattern and restarting updates the scheduler;
 * removing FILESTORE_AUDIT_CRON does not delete it from Redis (ticks wait for a consumer).
 */
export async function startAuditScheduler(o: AuditSchedulerOptions): Promise<AuditScheduler> {
  nextAuditAt(o.cron, Date.now(), o.tz); // a bad pattern stops the start with a clear message
  const log = o.log ?? (() => {});
  const select = o.select ?? {};
  const tick = async (selection: AuditSelection) => {
    const t = await enqueueAudits(o.pool, o.queue, selection);
    if (t.enqueued.length + t.joined.length > 0) {
      log(`audit: ${t.enqueued.length} audit(s) queued${t.joined.length ? `, ${t.joined.length} joined one already waiting` : ''}`);
    }
    return { enqueued: t.enqueued.map((j) => j.id), joined: t.joined };
  };
  const scheduler = o.redisUrl === 'inline' ? startTimer(o, () => tick(select), log) : await startBullScheduler(o, select, tick, log);
  if (!o.metrics) return scheduler;
  const stopAges = refreshAuditAges({ pool: o.pool, metrics: o.metrics, select, onError: (e) => log(`audit: audit age not measured: ${e.message}`) });
  return {
    async close() {
      stopAges();
      await scheduler.close();
    },
  };
}

function startTimer(o: AuditSchedulerOptions, tick: () => Promise<unknown>, log: (line: string) => void): AuditScheduler {
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<unknown> | null = null;
  let stopped = false;
  // setTimeout holds at most ~24.8 days; a longer wait is taken in steps.
  const MAX_WAIT = 24 * 3600_000;
  const arm = (at: number) => {
    if (stopped) return;
    const wait = at - Date.now();
    timer = setTimeout(() => {
      if (wait > MAX_WAIT) return arm(at);
      running = tick()
        .catch((e: Error) => log(`audit: tick failed: ${e.message}`))
        .finally(() => {
          running = null;
          arm(nextAuditAt(o.cron, Math.max(Date.now(), at), o.tz));
        });
    }, Math.max(0, Math.min(wait, MAX_WAIT)));
    timer.unref();
  };
  arm(nextAuditAt(o.cron, Date.now(), o.tz));
  return {
    async close() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}

async function startBullScheduler(
  o: AuditSchedulerOptions,
  select: AuditSelection,
  tick: (selection: AuditSelection) => Promise<unknown>,
  log: (line: string) => void,
): Promise<AuditScheduler> {
  const name = o.name ?? `${RECONCILE_QUEUE}-audits`;
  // An outage is logged once per connection, not per reconnect attempt or failed call.
  const health = new RedisHealth('audit scheduler', log);
  const workerHealth = new RedisHealth('audit scheduler worker', log);
  const connection = health.watch(new Redis(o.redisUrl, { maxRetriesPerRequest: 3 }));
  const workerConnection = workerHealth.watch(new Redis(o.redisUrl, { maxRetriesPerRequest: null }));
  // Under the catalogue's prefix: another catalogue on this Redis has its own scheduler and worker.
  const prefix = o.prefix ?? o.queue.prefix;
  const queue = new Queue<TickData>(name, { connection, prefix });
  queue.on('error', (e) => {
    if (!health.explains(e)) log(`audit scheduler: ${e.message}`);
  });
  // The selection travels in the tick: whichever process takes it audits what the scheduler's owner asked for.
  const worker = new Worker<TickData>(name, async (job) => tick({ agentId: job.data.agentId, mountIds: job.data.mountIds }), {
    connection: workerConnection,
    prefix,
    concurrency: 1,
  });
  worker.on('error', (e) => {
    if (!workerHealth.explains(e)) log(`audit scheduler: ${e.message}`);
  });
  try {
    await queue.upsertJobScheduler(
      schedulerId(select),
      { pattern: o.cron, tz: o.tz },
      {
        name: 'audit',
        data: { agentId: select.agentId, mountIds: select.mountIds ? [...select.mountIds] : undefined },
        opts: { attempts: 3, backoff: { type: 'exponential', delay: 5_000 }, removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } },
      },
    );
  } catch (err) {
    await worker.close();
    await queue.close();
    await Promise.allSettled([connection.quit(), workerConnection.quit()]);
    throw err;
  }
  return {
    async close() {
      await worker.close();
      await queue.close();
      await Promise.allSettled([connection.quit(), workerConnection.quit()]);
    },
  };
}

interface TickData {
  agentId?: string | undefined;
  mountIds?: string[] | undefined;
}

// Processes with the same selection share one scheduler; a different selection gets its own.
function schedulerId(select: AuditSelection): string {
  const parts = ['audit'];
  if (select.agentId !== undefined) parts.push(`agent_${select.agentId}`);
  if (select.mountIds) parts.push(`mounts_${[...select.mountIds].sort().join('.')}`);
  return parts.join('-');
}
