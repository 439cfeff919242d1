import { FilestoreError } from '../errors.ts';

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
