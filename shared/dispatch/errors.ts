import { FilestoreError } from '../errors.ts';
import type { Agent } from '../catalogue/agents.ts';

/**
 * Thrown when the agent that owns a local mount cannot take a command or serve its bytes:
 * it never registered, stopped, missed its heartbeats, has no HTTP address, or the mount has
 * no agent at all and this process has no local disks (503, retry later).
 */
export class AgentUnavailableError extends FilestoreError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('AGENT_UNAVAILABLE', message, details);
  }
}

/**
 * Thrown when an agent starts with the id of another agent that is alive (it heartbeated
 * again while this one waited): two processes must never take the same agent's commands.
 */
export class AgentIdInUseError extends FilestoreError {
  constructor(holder: Agent, leaseMs: number) {
    super(
      'AGENT_ID_IN_USE',
      `agent id "${holder.id}" is in use by a running agent on host ${holder.host}${holder.url ? ` (${holder.url})` : ''}, ` +
        `started at ${holder.startedAt.toISOString()}, which heartbeats: give this agent another FILESTORE_AGENT_ID, or stop that one first. ` +
        `(An agent killed without stopping holds its id for ${Math.ceil(leaseMs / 1000)} s after its last heartbeat; a restart waits for that itself.)`,
      { agentId: holder.id, host: holder.host, url: holder.url, heartbeatAt: holder.heartbeatAt.toISOString() },
    );
  }
}
