import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { getMount } from '../catalogue/mounts.ts';
import type { Pool } from '../db/pool.ts';
import { FilestoreError, asFilestoreError } from '../errors.ts';
import type { Orchestrator } from '../orchestrator/orchestrator.ts';
import { AgentUnavailableError } from './errors.ts';
import { DISPATCHED_COMMANDS, commandQueueName, type CommandMessage, type CommandReply } from './messages.ts';
import { executesHere } from './ownership.ts';
import type { CommandRouter } from './router.ts';

export interface CommandWorkerOptions {
  /** Commands run at once (default 4); commands on overlapping paths still serialise on their path locks. */
  concurrency?: number | undefined;
  /** BullMQ's job lock, renewed at half this while the agent runs (default 30 000 ms). */
  lockDurationMs?: number | undefined;
  /** How often stalled jobs (lock expired: their agent died) are looked for and queued again (default 30 000 ms). */
  stalledIntervalMs?: number | undefined;
  /** Times a job may be run again after its agent died before it fails for good (default 5). */
  maxStalledCount?: number | undefined;
  log?: ((line: string) => void) | undefined;
}

export interface CommandWorker {
  readonly queueName: string;
  /** Stops taking jobs and waits for the running ones (BullMQ's graceful close), then disconnects. */
  close(): Promise<void>;
}

/** What the worker needs of a Filestore. */
export interface CommandWorkerDeps {
  pool: Pool;
  orchestrator: Orchestrator;
  /** The router's Redis and prefix: the worker consumes the queue the catalogue's routers send to. */
  commands: Pick<CommandRouter, 'redisUrl' | 'queuePrefix'>;
}

/**
 * Consumes `filestore-commands-<agentId>` (SPEC §6): runs each command with the orchestrator
 * and replies with its result or error. A job whose agent died mid-command is found stalled
 * (its lock expired) and runs again on the next worker — with the caller's Idempotency-Key,
 * so the orchestrator replays the first run, or resolves its pending journal entry (recovery)
 * and completes it: a command is applied once. In inline mode nothing is dispatched, so
 * there is nothing to consume.
 */
export async function startCommandWorker(fs: CommandWorkerDeps, agentId: string, o: CommandWorkerOptions = {}): Promise<CommandWorker> {
  const queueName = commandQueueName(agentId);
  if (fs.commands.redisUrl === 'inline') return { queueName, close: async () => {} };
  const log = o.log ?? (() => {});
  const connection = new Redis(fs.commands.redisUrl, { maxRetriesPerRequest: null });
  connection.on('error', () => {}); // BullMQ reports through the worker's error event
  const worker = new Worker<CommandMessage, CommandReply>(queueName, (job) => runDispatched(fs, agentId, job.data, log), {
    connection,
    prefix: fs.commands.queuePrefix,
    concurrency: o.concurrency ?? 4,
    lockDuration: o.lockDurationMs ?? 30_000,
    stalledInterval: o.stalledIntervalMs ?? 30_000,
    maxStalledCount: o.maxStalledCount ?? 5,
  });
  worker.on('error', (e) => log(`command worker ${queueName}: ${e.message}`));
  await worker.waitUntilReady();
  let closing: Promise<void> | null = null;
  return {
    queueName,
    close() {
      closing ??= (async () => {
        await worker.close();
        await connection.quit().catch(() => {});
      })();
      return closing;
    },
  };
}

/** Runs one dispatched command; every outcome is a reply (errors as {code, message, details}). */
export async function runDispatched(fs: CommandWorkerDeps, agentId: string, m: CommandMessage, log: (line: string) => void = () => {}): Promise<CommandReply> {
  try {
    if (!DISPATCHED_COMMANDS.includes(m.command)) throw new FilestoreError('VALIDATION_ERROR', `unknown command "${String(m.command)}"`);
    // Read fresh: a mount reassigned while the job waited is no longer ours to touch.
    const mount = await getMount(fs.pool, m.mountId);
    if (!executesHere(agentId, mount)) {
      throw new AgentUnavailableError(`mount "${mount.key}" now belongs to agent "${String(mount.agentId)}", not "${agentId}"; send the command again`, {
        agentId: mount.agentId,
        mountId: mount.id,
      });
    }
    return { ok: true, result: await fs.orchestrator[m.command](m.mountId, m.input, m.context) };
  } catch (err) {
    if (!(err instanceof FilestoreError)) log(`command ${m.command} on mount ${m.mountId} failed: ${(err as Error).message}`);
    return { ok: false, error: asFilestoreError(err).toJSON() };
  }
}
