import { WaitingError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { RedisHealth } from '../redis/health.ts';
import { getMount } from '../catalogue/mounts.ts';
import { findEntry } from '../catalogue/journal.ts';
import { assertLocalRootReachable, assertNoOverlap } from '../mounts/mount-checks.ts';
import type { CommandResult } from '../orchestrator/context.ts';
import type { Pool } from '../db/pool.ts';
import { FilestoreError, asFilestoreError } from '../errors.ts';
import type { FilestoreMetrics } from '../metrics/metrics.ts';
import type { Orchestrator } from '../orchestrator/orchestrator.ts';
import { AgentUnavailableError } from './errors.ts';
import { DISPATCHED_COMMANDS, commandQueueName, type CommandMessage, type CommandReply } from './messages.ts';
import { executesHere } from '../orchestrator/ownership.ts';
import type { CommandRouter } from './router.ts';
import { MISSING_SECRET_MESSAGE, type RejectionReason } from './signing.ts';

export interface CommandWorkerOptions {
  /** Commands run at once (default 4); commands on overlapping paths still serialise on their path locks. */
  concurrency?: number | undefined;
  /** BullMQ's job lock, renewed at half this while the agent runs (default 30 000 ms). */
  lockDurationMs?: number | undefined;
  /** How often stalled jobs (lock expired: their agent died) are looked for and queued again (default 30 000 ms). */
  stalledIntervalMs?: number | undefined;
  /** Times a job may be run again after its agent died before it fails for good (default 5). */
  maxStalledCount?: number | undefined;
  /** The clock a command's expiry is checked against (default Date.now; tests move it). */
  now?: (() => number) | undefined;
  /** Tolerated clock difference between the signing API process and this agent (default 30 s). */
  clockSkewMs?: number | undefined;
  log?: ((line: string) => void) | undefined;
}

export interface CommandWorker {
  readonly queueName: string;
  /**
   * Takes no more jobs, at once (this agent lost its id: the agent holding it now may be on
   * another host, with another disk): running ones go on; a job taken in the same moment goes
   * back to the queue unrun, for the holder of the id. close() still follows.
   */
  stopTaking(): Promise<void>;
  /** Stops taking jobs and waits for the running ones (BullMQ's graceful close), then disconnects. */
  close(): Promise<void>;
}

/** What the worker needs of a Filestore. */
export interface CommandWorkerDeps {
  pool: Pool;
  orchestrator: Orchestrator;
  /**
   * The router's Redis, prefix, signer and TTL (FILESTORE_COMMAND_TTL_MS): the worker consumes
   * (and verifies) what the catalogue's routers send, refusing expiries further ahead than the TTL.
   */
  commands: Pick<CommandRouter, 'redisUrl' | 'queuePrefix' | 'signer' | 'commandTtlMs'>;
  /** Where rejected commands are counted (filestore_security_events_total). */
  metrics?: Pick<FilestoreMetrics, 'securityEvents'> | undefined;
}

/**
 * Consumes `filestore-commands-<agentId>` (SPEC §6): runs each command with the orchestrator
 * and replies with its result or error. A job whose agent died mid-command is found stalled
 * (its lock expired) and runs again on the next worker — with the caller's Idempotency-Key,
 * so the orchestrator replays the first run, or resolves its pending journal entry (recovery)
 * and completes it: a command is applied once. Only commands signed for this agent with
 * FILESTORE_COMMAND_SECRET and not expired run (signing.ts); anything else is answered with an
 * error and logged as a security event. In inline mode nothing is dispatched, so there is
 * nothing to consume.
 */
export async function startCommandWorker(core: CommandWorkerDeps, agentId: string, o: CommandWorkerOptions = {}): Promise<CommandWorker> {
  const queueName = commandQueueName(agentId);
  if (core.commands.redisUrl === 'inline') return { queueName, stopTaking: async () => {}, close: async () => {} };
  const signer = core.commands.signer;
  if (!signer) throw new FilestoreError('CONFIG_ERROR', MISSING_SECRET_MESSAGE);
  const log = o.log ?? (() => {});
  const now = o.now ?? Date.now;
  let taking = true;
  const run = async (job: Job<unknown, CommandReply>, token?: string): Promise<CommandReply> => {
    if (!taking) {
      // Fetched as the worker was told to stop taking: back to the queue, untouched.
      await job.moveToWait(token);
      throw new WaitingError();
    }
    const prefix = core.commands.queuePrefix;
    const verdict = signer.verify(job.data, { agentId, queuePrefix: prefix, now: now(), skewMs: o.clockSkewMs, ttlMs: core.commands.commandTtlMs });
    // Signed with the secret the command verified with (its sender has it), over the job it answers.
    const reply = (r: CommandReply) => signer.signReply(r, { agentId, queuePrefix: prefix, jobId: String(job.id) }, verdict.key);
    if (verdict.ok) return reply(await runDispatched(core, agentId, verdict.message, log));
    // Never the secret, the signature or the payload: the job id finds the rest in Redis. The
    // id is whoever wrote the job's choice: quoted, so it cannot forge log lines.
    log(`security: rejected dispatched command on ${queueName}, job ${JSON.stringify(String(job.id))}: ${verdict.reason} (${verdict.detail})`);
    core.metrics?.securityEvents.inc({ kind: `command_${verdict.reason}` });
    const ranBefore = job.stalledCounter > 0 || job.attemptsStarted > 1;
    return reply({ ok: false, error: rejection(agentId, verdict.reason, ranBefore).toJSON() });
  };
  // An outage is logged once (its blocking duplicate reports through the worker's error event).
  const health = new RedisHealth('command worker', log);
  const connection = health.watch(new Redis(core.commands.redisUrl, { maxRetriesPerRequest: null }));
  const worker = new Worker<unknown, CommandReply>(queueName, run, {
    connection,
    prefix: core.commands.queuePrefix,
    concurrency: o.concurrency ?? 4,
    lockDuration: o.lockDurationMs ?? 30_000,
    stalledInterval: o.stalledIntervalMs ?? 30_000,
    maxStalledCount: o.maxStalledCount ?? 5,
  });
  worker.on('error', (e) => {
    if (!health.explains(e)) log(`command worker ${queueName}: ${e.message}`);
  });
  await worker.waitUntilReady();
  let closing: Promise<void> | null = null;
  let pausing: Promise<void> | null = null;
  return {
    queueName,
    stopTaking() {
      taking = false;
      // Without waiting for running jobs: the blocking fetch may still hand one over (see run).
      pausing ??= worker.pause(true);
      return pausing;
    },
    close() {
      closing ??= (async () => {
        await worker.close();
        await connection.quit().catch(() => {});
      })();
      return closing;
    },
  };
}

/**
 * What the sender of a refused command reads. A genuine sender meets "forged" only when its
 * secret differs from the agent's, "future" when its FILESTORE_COMMAND_TTL_MS (or clock)
 * differs, and "expired" when the command waited too long. An expired job that BullMQ had
 * started before (it runs a job again after a stall) may have changed storage in that run:
 * the answer says so, and the same Idempotency-Key gets the outcome the journal recorded.
 */
function rejection(agentId: string, reason: RejectionReason, ranBefore: boolean): FilestoreError {
  if (reason === 'expired') {
    const what = ranBefore
      ? `the command expired before agent "${agentId}" could run it again (BullMQ runs a job again when its agent stopped answering mid-command): nothing ran now, but that earlier run may have changed storage; send it again with the same Idempotency-Key for the outcome the journal recorded`
      : `the command expired while it waited in agent "${agentId}"'s queue and was not run; send it again with the same Idempotency-Key (if this keeps happening, raise FILESTORE_COMMAND_TTL_MS or check that the clocks of API hosts and agents agree)`;
    return new FilestoreError('INTERRUPTED', what, { agentId, reason });
  }
  if (reason === 'future') {
    return new FilestoreError(
      'CONFIG_ERROR',
      `agent "${agentId}" refused the command: its expiry is further ahead than this agent accepts; give API processes and agents the same FILESTORE_COMMAND_TTL_MS, and check that their clocks agree`,
      { agentId, reason },
    );
  }
  return new FilestoreError(
    'CONFIG_ERROR',
    `agent "${agentId}" refused the command: it is ${reason === 'forged' ? 'not signed with a secret the agent knows' : 'not a command message'}; give API processes and agents the same FILESTORE_COMMAND_SECRET`,
    { agentId, reason },
  );
}

/** Runs one dispatched command, already verified; every outcome is a reply (errors as {code, message, details}). */
export async function runDispatched(core: CommandWorkerDeps, agentId: string, m: CommandMessage, log: (line: string) => void = () => {}): Promise<CommandReply> {
  try {
    if (!DISPATCHED_COMMANDS.includes(m.command)) throw new FilestoreError('VALIDATION_ERROR', `unknown command "${String(m.command)}"`);
    if (m.command === 'checkMountRoot') {
      // A root about to be registered for this agent: the rules that need its disk, here (mount-checks.ts).
      const rootPath = String(m.input.rootPath);
      await assertNoOverlap(core.pool, rootPath, agentId, true);
      await assertLocalRootReachable(rootPath, m.input.accessMode === 'ro' ? 'ro' : 'rw');
      return { ok: true, result: {} as CommandResult };
    }
    if (m.command === 'resolveEntry') {
      // Only this agent's disk can tell; the entry must be of the mount the message names.
      const entry = await findEntry(core.pool, Number(m.input.entryId));
      if (!entry || entry.mountId !== m.mountId) throw new FilestoreError('NOT_FOUND', `no journal entry ${String(m.input.entryId)} on mount ${m.mountId}`);
      const mine = await getMount(core.pool, m.mountId);
      if (!executesHere(agentId, mine)) throw new AgentUnavailableError(`mount "${mine.key}" now belongs to agent "${String(mine.agentId)}", not "${agentId}"; resolve it again`, { agentId: mine.agentId });
      const resolved = await core.orchestrator.resolvePending(entry.id, m.context.principal ?? null);
      return { ok: true, result: resolved as unknown as CommandResult };
    }
    // Read fresh: a mount reassigned while the job waited is no longer ours to touch.
    const mount = await getMount(core.pool, m.mountId);
    if (!executesHere(agentId, mount)) {
      throw new AgentUnavailableError(`mount "${mount.key}" now belongs to agent "${String(mount.agentId)}", not "${agentId}"; send the command again`, {
        agentId: mount.agentId,
        mountId: mount.id,
      });
    }
    return { ok: true, result: await core.orchestrator[m.command](m.mountId, m.input, m.context) };
  } catch (err) {
    if (!(err instanceof FilestoreError)) log(`command ${m.command} on mount ${m.mountId} failed: ${(err as Error).message}`);
    return { ok: false, error: asFilestoreError(err).toJSON() };
  }
}
