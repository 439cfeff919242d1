import { auditAges } from '../catalogue/mounts.ts';
import type { Queryable } from '../db/pool.ts';
import type { FilestoreMetrics } from '../metrics/metrics.ts';

/** Which mounts a tick audits: all active mounts (the default), or narrowed. */
export interface AuditSelection {
  /** Only local mounts owned by this agent (FILESTORE_AGENT_ID). */
  agentId?: string | undefined;
  /** Only these mounts (tests; a process serving a known set). */
  mountIds?: readonly string[] | undefined;
}

/**
 * Sets filestore_audit_age_seconds{mount} for the selected active mounts (SPEC §7: time since
 * the mount's last finished audit, measured from when that audit began) and returns their keys.
 * The audit Lambda calls it before it publishes; long-running processes through refreshAuditAges.
 */
export async function recordAuditAges(q: Queryable, metrics: FilestoreMetrics, select: AuditSelection = {}): Promise<Set<string>> {
  const ages = await auditAges(q, select);
  for (const { key, seconds } of ages) metrics.auditAge.set({ mount: key }, seconds);
  return new Set(ages.map((a) => a.key));
}

/**
 * filestore_audit_age_seconds{mount} of every S3 mount, as the maintenance Lambda publishes it
 * each minute (the stack's AuditAge-<key> alarms read it; docs/deploy.md, runbooks): an active
 * mount's age as recordAuditAges measures it (since registration when never audited), and 0
 * for a paused one — nothing is expected of a paused mount, and publishing it keeps "no data"
 * meaning the pipeline is broken. Returns the keys of each kind.
 */
export async function recordS3AuditAges(q: Queryable, metrics: FilestoreMetrics): Promise<{ active: string[]; paused: string[] }> {
  const { rows } = await q.query<{ key: string; state: string; seconds: number }>(
    `SELECT key, state, greatest(0, extract(epoch FROM now() - coalesce(audited_at, created_at)))::float8 AS seconds
       FROM filestore.mounts WHERE kind = 's3' AND state IN ('active', 'paused') ORDER BY key`,
  );
  const out = { active: [] as string[], paused: [] as string[] };
  for (const { key, state, seconds } of rows) {
    const paused = state === 'paused';
    metrics.auditAge.set({ mount: key }, paused ? 0 : seconds);
    (paused ? out.paused : out.active).push(key);
  }
  return out;
}

export interface AuditAgeRefreshOptions {
  pool: Queryable;
  metrics: FilestoreMetrics;
  select?: AuditSelection | undefined;
  /** Default 15 s, as the reconcile backlog gauge. */
  intervalMs?: number | undefined;
  /** Hears the first failed measurement of an outage (not every one while it lasts). */
  onError?: ((e: Error) => void) | undefined;
}

/**
 * Keeps the gauge current in a process that schedules audits (the agent, npm start, the
 * reconcile worker): at once, then every interval. A mount removed, paused or handed to another
 * agent stops being reported here. Returns the stopper.
 */
export function refreshAuditAges(o: AuditAgeRefreshOptions): () => void {
  let stopped = false;
  let failing = false;
  let reported = new Set<string>();
  const refresh = () => {
    recordAuditAges(o.pool, o.metrics, o.select)
      .then((keys) => {
        for (const key of reported) if (!keys.has(key)) o.metrics.auditAge.remove({ mount: key });
        reported = keys;
        failing = false;
      })
      .catch((e: Error) => {
        if (!stopped && !failing) o.onError?.(e);
        failing = true;
      });
  };
  refresh();
  const timer = setInterval(refresh, o.intervalMs ?? 15_000);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
