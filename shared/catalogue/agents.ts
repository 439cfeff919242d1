import type { Queryable } from '../db/pool.ts';

/** An on-prem agent as registered in `filestore.agents`. */
export interface Agent {
  id: string;
  host: string;
  version: string;
  /** Where its HTTP server (the streamed file routes of its mounts) is reachable; null: none. */
  url: string | null;
  heartbeatIntervalMs: number;
  startedAt: Date;
  heartbeatAt: Date;
  /** Set by a clean shutdown; cleared when it registers again. */
  stoppedAt: Date | null;
}

export interface AgentRegistration {
  id: string;
  host: string;
  version: string;
  url?: string | null | undefined;
  heartbeatIntervalMs: number;
}

/** An agent is alive while its last heartbeat is younger than this many intervals. */
export const HEARTBEAT_TTL_INTERVALS = 3;

const COLUMNS = `id, host, version, url, heartbeat_interval_ms AS "heartbeatIntervalMs", started_at AS "startedAt",
  heartbeat_at AS "heartbeatAt", stopped_at AS "stoppedAt"`;

/** Registers (or re-registers, after a restart) an agent: started and heartbeat now, not stopped. */
export async function registerAgent(q: Queryable, a: AgentRegistration): Promise<Agent> {
  const { rows } = await q.query<Agent>(
    `INSERT INTO filestore.agents (id, host, version, url, heartbeat_interval_ms)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (id) DO UPDATE
        SET host = EXCLUDED.host, version = EXCLUDED.version, url = EXCLUDED.url,
            heartbeat_interval_ms = EXCLUDED.heartbeat_interval_ms,
            started_at = now(), heartbeat_at = now(), stopped_at = NULL
     RETURNING ${COLUMNS}`,
    [a.id, a.host, a.version, a.url ?? null, a.heartbeatIntervalMs],
  );
  return rows[0] as Agent;
}

/** Records that the agent is alive; false when it has no row (deleted: register it again) or was marked stopped. */
export async function heartbeat(q: Queryable, id: string): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE filestore.agents SET heartbeat_at = now() WHERE id = $1 AND stopped_at IS NULL`,
    [id],
  );
  return rowCount === 1;
}

/** A clean shutdown: other processes stop dispatching to it at once instead of after the heartbeat TTL. */
export async function markStopped(q: Queryable, id: string): Promise<void> {
  await q.query(`UPDATE filestore.agents SET stopped_at = now() WHERE id = $1`, [id]);
}

/** One agent (null when never registered) and the database's clock: liveness is judged on one clock, whatever the hosts' skew. */
export async function findAgent(q: Queryable, id: string): Promise<{ agent: Agent | null; now: Date }> {
  const { rows } = await q.query<Agent & { now: Date }>(
    `SELECT now() AS now, a.* FROM (SELECT 1) one LEFT JOIN (SELECT ${COLUMNS} FROM filestore.agents WHERE id = $1) a ON true`,
    [id],
  );
  const { now, ...agent } = rows[0] as Agent & { now: Date };
  return { agent: agent.id === null ? null : agent, now };
}

/** Every registered agent, by id, with the database's clock. */
export async function listAgents(q: Queryable): Promise<{ agents: Agent[]; now: Date }> {
  const { rows } = await q.query<{ now: Date; agents: Agent[] | null }>(
    `SELECT now() AS now, (SELECT json_agg(a ORDER BY a.id) FROM (SELECT ${COLUMNS} FROM filestore.agents) a) AS agents`,
  );
  const r = rows[0] as { now: Date; agents: Record<string, unknown>[] | null };
  return { agents: (r.agents ?? []).map(reviveAgent), now: r.now };
}

/** True when the agent runs: not stopped, and heard from within `ttlMs` (default: three heartbeat intervals). */
export function isAlive(agent: Agent, now: Date, ttlMs = agent.heartbeatIntervalMs * HEARTBEAT_TTL_INTERVALS): boolean {
  return agent.stoppedAt === null && now.getTime() - agent.heartbeatAt.getTime() <= ttlMs;
}

// json_agg gives timestamps as strings.
function reviveAgent(r: Record<string, unknown>): Agent {
  const date = (v: unknown) => (v === null || v === undefined ? null : new Date(String(v)));
  return {
    id: String(r.id),
    host: String(r.host),
    version: String(r.version),
    url: r.url === null ? null : String(r.url),
    heartbeatIntervalMs: Number(r.heartbeatIntervalMs),
    startedAt: date(r.startedAt) as Date,
    heartbeatAt: date(r.heartbeatAt) as Date,
    stoppedAt: date(r.stoppedAt),
  };
}
