import os from 'node:os';
import { heartbeat, markStopped, registerAgent, type AgentRegistration } from '../catalogue/agents.ts';
import type { Pool } from '../db/pool.ts';

export interface AgentPresenceOptions {
  id: string;
  version: string;
  /** Default: this machine's host name. */
  host?: string | undefined;
  /** Where this agent's HTTP server is reachable by API processes (file bytes are redirected there). */
  url?: string | null | undefined;
  /** Heartbeat period (default 5 000 ms); the agent counts as gone after three missed. */
  intervalMs?: number | undefined;
  log?: ((line: string) => void) | undefined;
}

export interface AgentPresence {
  readonly id: string;
  /** Stops heartbeating and marks the agent stopped: API processes stop dispatching to it at once. */
  stop(): Promise<void>;
}

export const DEFAULT_HEARTBEAT_MS = 5_000;

/** Registers the agent and heartbeats on a timer until stopped (SPEC §1: agent id, host, version, heartbeat). */
export async function startAgentPresence(pool: Pool, o: AgentPresenceOptions): Promise<AgentPresence> {
  const log = o.log ?? (() => {});
  const registration: AgentRegistration = {
    id: o.id,
    host: o.host ?? os.hostname(),
    version: o.version,
    url: o.url ?? null,
    heartbeatIntervalMs: o.intervalMs ?? DEFAULT_HEARTBEAT_MS,
  };
  await registerAgent(pool, registration);
  let beating: Promise<void> | null = null;
  const beat = async () => {
    // No row to update (deleted) or marked stopped (by an operator): this agent runs, so say so again.
    if (!(await heartbeat(pool, o.id))) {
      await registerAgent(pool, registration);
      log(`agent ${o.id}: registration was missing or marked stopped; registered again`);
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
    stop() {
      stopping ??= (async () => {
        clearInterval(timer);
        await beating;
        await markStopped(pool, o.id);
      })();
      return stopping;
    },
  };
}
