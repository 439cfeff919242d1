import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { claimAgentId, findAgent, heartbeat, HEARTBEAT_TTL_INTERVALS, markStopped, type Agent, type AgentRegistration } from '../catalogue/agents.ts';
import { createPool, type Pool } from '../db/pool.ts';
import { AgentIdInUseError } from './errors.ts';

export interface AgentPresenceOptions {
  id: string;
  version: string;
  /** Default: this machine's host name. */
  host?: string | undefined;
  /** Where this agent's HTTP server is reachable by API processes (file bytes are redirected there). */
  url?: string | null | undefined;
  /** Heartbeat period (default 5 000 ms); the agent counts as gone after three missed. */
  intervalMs?: number | undefined;
  /**
   * How long an id stays with an agent that stopped heartbeating without stopping (killed):
   * a restart waits at most this long for it. Default: three of that agent's intervals (15 s).
   */
  leaseMs?: number | undefined;
  /**
   * Another instance took this agent's id (this one had not heartbeated within its lease: a
   * network partition, a frozen process): it no longer holds it. The heartbeat stops; the
   * caller should stop taking work.
   */
  onSuperseded?: ((holder: Agent) => void) | undefined;
  log?: ((line: string) => void) | undefined;
}

export interface AgentPresence {
  readonly id: string;
  /** This process's random token in the registration. */
  readonly instance: string;
  /** Records where this agent's HTTP server is reachable, once it listens. */
  advertise(url: string | null): Promise<void>;
  /** Stops heartbeating and marks the agent stopped (if this instance still holds the id): API processes stop dispatching to it at once. */
  stop(): Promise<void>;
}

export const DEFAULT_HEARTBEAT_MS = 5_000;

/**
 * Claims the agent id and heartbeats on a timer until stopped (SPEC §1: agent id, host,
 * version, heartbeat). One live agent per id: while another instance heartbeats under the id,
 * the claim waits for one more of its heartbeats and then fails with AGENT_ID_IN_USE; an
 * instance that stopped heartbeating (killed) loses the id once its lease has run out, so a
 * restart after a SIGKILL waits at most that long. Given a database URL rather than a pool,
 * the presence uses a small pool of its own: heartbeats must not queue behind a busy agent's
 * commands, or a busy agent would look dead.
 */
export async function startAgentPresence(db: Pool | { databaseUrl: string }, o: AgentPresenceOptions): Promise<AgentPresence> {
  const own = 'databaseUrl' in db ? createPool(db.databaseUrl, 2) : null;
  const pool = own ?? (db as Pool);
  const log = o.log ?? (() => {});
  const registration: AgentRegistration = {
    id: o.id,
    host: o.host ?? os.hostname(),
    version: o.version,
    url: o.url ?? null,
    heartbeatIntervalMs: o.intervalMs ?? DEFAULT_HEARTBEAT_MS,
    instance: randomUUID(),
  };
  const instance = registration.instance as string;
  try {
    await claim(pool, registration, o.leaseMs, log);
  } catch (err) {
    await own?.end().catch(() => {});
    throw err;
  }
  let superseded = false;
  let beating: Promise<void> | null = null;
  // The timer runs until the caller has been told: a beat that fails half way (a transient
  // error looking up the holder) or finds the holder gone tries again at the next tick, so an
  // agent never goes on working without a heartbeat and without having been told.
  const beat = async () => {
    if (superseded) return;
    const outcome = await heartbeat(pool, o.id, instance);
    if (outcome === 'ok') return;
    if (outcome !== 'taken') {
      // No row (deleted) or marked stopped (by an operator): this agent runs, so say so again —
      // unless another instance has taken the id meanwhile.
      const r = await claimAgentId(pool, registration, o.leaseMs);
      if ('agent' in r) {
        log(`agent ${o.id}: registration was missing or marked stopped; registered again`);
        return;
      }
    }
    const { agent: holder } = await findAgent(pool, o.id);
    // Deleted in between: the next beat finds no row and claims the id again.
    if (!holder || superseded) return;
    superseded = true;
    log(`agent ${o.id}: another instance took this agent id (host ${holder.host}, ${holder.url ?? 'no url'}); this one stops taking work`);
    try {
      o.onSuperseded?.(holder);
    } finally {
      clearInterval(timer);
    }
  };
  const timer = setInterval(() => {
    beating ??= beat()
      .catch((e: Error) => log(`agent ${o.id}: heartbeat failed: ${e.message}`))
      .finally(() => {
        beating = null;
      });
  }, registration.heartbeatIntervalMs);
  timer.unref();
  let stopping: Promise<void> | null = null;
  return {
    id: o.id,
    instance,
    async advertise(url) {
      registration.url = url;
      await pool.query(`UPDATE filestore.agents SET url = $3 WHERE id = $1 AND instance = $2`, [o.id, instance, url]);
    },
    stop() {
      stopping ??= (async () => {
        clearInterval(timer);
        await beating;
        try {
          await markStopped(pool, o.id, instance);
        } finally {
          await own?.end().catch(() => {});
        }
      })();
      return stopping;
    },
  };
}

/**
 * Takes the id, or waits while its holder might be dead: if the holder heartbeats again it is
 * alive (AGENT_ID_IN_USE, within about one of its intervals); if its lease runs out first, the
 * id is ours.
 */
async function claim(pool: Pool, registration: AgentRegistration, leaseMs: number | undefined, log: (line: string) => void): Promise<void> {
  let first: Agent | null = null;
  for (;;) {
    const r = await claimAgentId(pool, registration, leaseMs);
    if ('agent' in r) {
      if (first) log(`agent ${registration.id}: took over the id from instance ${first.instance ?? '?'} on ${first.host}, silent since ${first.heartbeatAt.toISOString()}`);
      return;
    }
    const { holder, now } = r;
    if (first && (holder.heartbeatAt.getTime() !== first.heartbeatAt.getTime() || holder.instance !== first.instance)) {
      throw new AgentIdInUseError(holder, leaseMs ?? holder.heartbeatIntervalMs * HEARTBEAT_TTL_INTERVALS);
    }
    const lease = leaseMs ?? holder.heartbeatIntervalMs * HEARTBEAT_TTL_INTERVALS;
    if (!first) {
      first = holder;
      log(
        `agent ${registration.id}: the id is registered to another instance on ${holder.host} (last heartbeat ${holder.heartbeatAt.toISOString()}); ` +
          `waiting up to ${Math.ceil(lease / 1000)} s for it to heartbeat (it runs) or not (it was killed)`,
      );
    }
    // Until the holder's lease runs out (database clock), looking a few times per interval.
    const left = holder.heartbeatAt.getTime() + lease - now.getTime();
    await new Promise((resolve) => setTimeout(resolve, Math.max(10, Math.min(left + 10, holder.heartbeatIntervalMs / 4, 1_000))));
  }
}
