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
  /** The random token of the process that holds the id (null: registered by an older version). */
  instance: string | null;
}

export interface AgentRegistration {
  id: string;
  host: string;
  version: string;
  url?: string | null | undefined;
  heartbeatIntervalMs: number;
  /** This process's random token: heartbeats and the clean stop touch only its own row. */
  instance?: string | null | undefined;
}

/** What a heartbeat found: renewed, or why not (no row; marked stopped; the id held by another instance). */
export type HeartbeatOutcome = 'ok' | 'missing' | 'stopped' | 'taken';

/** An agent is alive while its last heartbeat is younger than this many intervals. */
export const HEARTBEAT_TTL_INTERVALS = 3;

const COLUMNS = `id, host, version, url, heartbeat_interval_ms AS "heartbeatIntervalMs", started_at AS "startedAt",
  heartbeat_at AS "heartbeatAt", stopped_at AS "stoppedAt", instance`;

const UPSERT = `INSERT INTO filestore.agents AS a (id, host, version, url, heartbeat_interval_ms, instance)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (id) DO UPDATE
        SET host = EXCLUDED.host, version = EXCLUDED.version, url = EXCLUDED.url,
            heartbeat_interval_ms = EXCLUDED.heartbeat_interval_ms, instance = EXCLUDED.instance,
            started_at = now(), heartbeat_at = now(), stopped_at = NULL`;

const values = (a: AgentRegistration) => [a.id, a.host, a.version, a.url ?? null, a.heartbeatIntervalMs, a.instance ?? null];

/** Registers an agent whatever holds its id (tests, tools): started and heartbeat now, not stopped. Agents claim theirs with claimAgentId. */
export async function registerAgent(q: Queryable, a: AgentRegistration): Promise<Agent> {
  const { rows } = await q.query<Agent>(`${UPSERT} RETURNING ${COLUMNS}`, values(a));
  return rows[0] as Agent;
}

/**
 * Registers an agent unless another live instance holds its id, in one statement: the id is
 * taken from a row that is stopped, is this instance's, or has not heartbeated within the
 * lease (default: three of the holder's intervals, the time API processes keep counting it
 * alive). Otherwise the holder is returned, with the database's clock.
 */
export async function claimAgentId(q: Queryable, a: AgentRegistration, leaseMs?: number): Promise<{ agent: Agent } | { holder: Agent; now: Date }> {
  const { rows } = await q.query<Agent>(
    `${UPSERT}
      WHERE a.stopped_at IS NOT NULL OR a.instance IS NOT DISTINCT FROM EXCLUDED.instance
         OR a.heartbeat_at < now() - make_interval(secs => coalesce($7::float8, a.heartbeat_interval_ms * ${HEARTBEAT_TTL_INTERVALS}) / 1000)
     RETURNING ${COLUMNS}`,
    [...values(a), leaseMs ?? null],
  );
  if (rows[0]) return { agent: rows[0] };
  const { agent: holder, now } = await findAgent(q, a.id);
  // Gone between the two statements (deleted by hand): claim again.
  if (!holder) return claimAgentId(q, a, leaseMs);
  return { holder, now };
}

/** Records that the agent `instance` is alive; otherwise says why not (register again, or another instance holds the id). */
export async function heartbeat(q: Queryable, id: string, instance: string | null): Promise<HeartbeatOutcome> {
  const { rows } = await q.query<{ beat: boolean; present: boolean; stopped: boolean; ours: boolean }>(
    `WITH beat AS (
       UPDATE filestore.agents SET heartbeat_at = now()
        WHERE id = $1 AND instance IS NOT DISTINCT FROM $2 AND stopped_at IS NULL RETURNING 1)
     SELECT EXISTS (SELECT 1 FROM beat) AS beat, a.id IS NOT NULL AS present,
            a.stopped_at IS NOT NULL AS stopped, a.instance IS NOT DISTINCT FROM $2 AS ours
       FROM (SELECT 1) one LEFT JOIN filestore.agents a ON a.id = $1`,
    [id, instance],
  );
  const r = rows[0] as { beat: boolean; present: boolean; stopped: boolean; ours: boolean };
  if (r.beat) return 'ok';
  if (!r.present) return 'missing';
  // Stopped by another instance (its clean stop) counts as taken too: this instance no longer holds the id.
  return r.ours ? 'stopped' : 'taken';
}

/**
 * A clean shutdown: other processes stop dispatching to it at once instead of after the
 * heartbeat TTL. With `instance`, only while that instance holds the id: a process that lost
 * its id to another marks nothing.
 */
export async function markStopped(q: Queryable, id: string, instance?: string | null): Promise<void> {
  if (instance === undefined) await q.query(`UPDATE filestore.agents SET stopped_at = now() WHERE id = $1`, [id]);
  else await q.query(`UPDATE filestore.agents SET stopped_at = now() WHERE id = $1 AND instance IS NOT DISTINCT FROM $2`, [id, instance]);
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
    instance: r.instance === null || r.instance === undefined ? null : String(r.instance),
  };
}
