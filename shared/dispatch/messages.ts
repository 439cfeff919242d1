import { FilestoreError, type ErrorCode } from '../errors.ts';
import type { CommandResult } from '../orchestrator/context.ts';

/** SPEC §6: the queue through which commands for an agent's local mounts reach it. */
export const commandQueueName = (agentId: string): string => `filestore-commands-${agentId}`;

/** The orchestrator commands that travel through the queue (file bytes never do: see files routes). */
export type OrchestratorCommand = 'mkdir' | 'move' | 'copy' | 'delete' | 'updateMetadata';
/**
 * What travels through the queue: the orchestrator's commands; `checkMountRoot` — a local
 * root about to be registered for the agent, looked at on its host (POST /v1/mounts; input
 * `{rootPath, accessMode}`; mountId ""), which changes nothing; and `resolveEntry` — an admin's
 * resolution of a pending entry of the agent's mount (POST /v1/journal/:id/resolve; input
 * `{entryId}`, the admin as the context's principal), judged from the agent's disk.
 */
export type DispatchedCommand = OrchestratorCommand | 'checkMountRoot' | 'resolveEntry';
export const DISPATCHED_COMMANDS: readonly DispatchedCommand[] = ['mkdir', 'move', 'copy', 'delete', 'updateMetadata', 'checkMountRoot', 'resolveEntry'];

/**
 * One BullMQ job: everything the agent needs to run the command as the caller asked it,
 * signed by the API process that queued it (signing.ts): the agent runs nothing else.
 */
export interface CommandMessage {
  command: DispatchedCommand;
  /** The mount's id (not its key: a key may be reassigned while the job waits). */
  mountId: string;
  input: Record<string, unknown>;
  context: {
    principal?: string | undefined;
    correlationId?: string | undefined;
    /** Always set: a job run again after its agent died replays or completes the first run. */
    idempotencyKey: string;
  };
  /** The agent it is for: a message copied onto another agent's queue is refused there. */
  agentId: string;
  /** Milliseconds since the epoch (the sender's clock) after which the agent refuses to run it. */
  expiresAt: number;
  /** HMAC-SHA256 (base64url) of everything above, keyed from FILESTORE_COMMAND_SECRET. */
  signature: string;
}

export type UnsignedCommand = Omit<CommandMessage, 'signature'>;

export interface WireError {
  code: string;
  message: string;
  details?: Record<string, unknown> | undefined;
}

/**
 * The job's return value. A command that failed is a *completed* job carrying the error:
 * BullMQ's failed state would keep only a message string, and a retry by BullMQ is never
 * wanted (the caller decides, with its Idempotency-Key).
 */
export type CommandReply = ({ ok: true; result: CommandResult } | { ok: false; error: WireError }) & {
  /** HMAC-SHA256 (base64url) of the reply and the job it answers, by the agent (signing.ts). */
  mac?: string | undefined;
};

/** The agent's error as the same FilestoreError (code, status, message, details) on the caller's side. */
export function errorFromWire(e: WireError): FilestoreError {
  const err = new FilestoreError(e.code as ErrorCode, e.message, e.details);
  // A code this process does not know (an agent of a newer version): still an error, never a success.
  return Number.isInteger(err.status) ? err : new FilestoreError('INTERNAL', e.message, { ...e.details, agentCode: e.code });
}
