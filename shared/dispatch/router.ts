import { randomUUID } from 'node:crypto';
import { Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { findAgent, isAlive, type Agent } from '../catalogue/agents.ts';
import { findByIdempotencyKey, type JournalEntry } from '../catalogue/journal.ts';
import type { Mount } from '../catalogue/types.ts';
import type { Pool } from '../db/pool.ts';
import { FilestoreError } from '../errors.ts';
import { RedisHealth } from '../redis/health.ts';
import type { CommandContext, CommandResult } from '../orchestrator/context.ts';
import type { Orchestrator } from '../orchestrator/orchestrator.ts';
import { AgentUnavailableError } from './errors.ts';
import { commandQueueName, errorFromWire, type CommandMessage, type CommandReply, type DispatchedCommand, type OrchestratorCommand } from './messages.ts';
import { executesHere, type ProcessIdentity } from '../orchestrator/ownership.ts';
import { CommandSigner, DEFAULT_COMMAND_TTL_MS, MISSING_SECRET_MESSAGE } from './signing.ts';

export interface CommandRouterOptions {
  pool: Pool;
  orchestrator: Orchestrator;
  /** Mount lookups by id or key (the catalogue reader: cached for a few seconds). */
  mounts: { mount(idOrKey: string): Promise<Mount> };
  /** redis://… or 'inline' (one process: every command runs here). */
  redisUrl: string;
  /** BullMQ prefix of the catalogue's queues (queues/prefix.ts); the agents' command workers use the same. */
  queuePrefix?: string | undefined;
  identity: ProcessIdentity;
  /** The longest a caller waits for a dispatched command before 202 (default 25 s, under API Gateway's 30 s). */
  waitMs?: number | undefined;
  /** Signs dispatched commands (FILESTORE_COMMAND_SECRET); required when this process may dispatch (see dispatchSigner). */
  signer?: CommandSigner | null | undefined;
  /**
   * false: this process never dispatches a command to an agent (a Lambda other than the API),
   * so it may go without a signer; a dispatch is then refused with CONFIG_ERROR. Default true.
   */
  dispatches?: boolean | undefined;
  /** FILESTORE_COMMAND_TTL_MS: how long a dispatched command may wait in the agent's queue before the agent refuses it (default 15 min). */
  commandTtlMs?: number | undefined;
  log?: ((line: string) => void) | undefined;
}

/** How a command ended for the caller: its result, or accepted (still running on the agent). */
export type RoutedCommand = { status: 200; result: CommandResult } | { status: 202; accepted: AcceptedCommand };

/** The 202 body: where to find the outcome of a command that outlasted the wait. */
export interface AcceptedCommand {
  status: 'accepted';
  agentId: string;
  /** Send the same command again with this Idempotency-Key to get its result once it is done. */
  idempotencyKey: string;
  /** The command's journal entry so far; null while the agent has not started it. */
  journalEntry: Omit<JournalEntry, 'requestFingerprint'> | null;
  message: string;
}

/** Where a mount's commands run and its bytes are served. */
export type MountLocation = { here: true } | { here: false; mount: Mount; agent: Agent };

export interface RouteOptions {
  /** Wait at most this long (capped by the router's own wait), e.g. from `Prefer: wait=N`. */
  waitMs?: number | undefined;
}

export const DEFAULT_COMMAND_WAIT_MS = 25_000;
// Finished jobs are only a trace (the journal is the record), kept long enough for a late waiter.
const KEEP_COMPLETED = { age: 3600, count: 10_000 };
const KEEP_FAILED = { age: 24 * 3600, count: 10_000 };

/**
 * The signer of a process's dispatched commands: from its secrets (FILESTORE_COMMAND_SECRET),
 * or null when it can do without — inline (one process), or no identity (it runs every mount
 * itself). A process that may dispatch through Redis and has no secret is a CONFIG_ERROR.
 */
export function dispatchSigner(identity: ProcessIdentity, redisUrl: string, secrets: readonly string[] | undefined, dispatches = true): CommandSigner | null {
  if (secrets && secrets.length > 0) return new CommandSigner(secrets);
  if (dispatches && redisUrl !== 'inline' && identity !== undefined) throw new FilestoreError('CONFIG_ERROR', MISSING_SECRET_MESSAGE);
  return null;
}

interface AgentQueue {
  queue: Queue<CommandMessage, CommandReply>;
  events: QueueEvents;
  eventsConnection: Redis;
  ready: Promise<unknown>;
}

/**
 * The orchestrator's commands, run where the mount lives (SPEC §4, §6): here for S3 mounts
 * and the local mounts this process owns; otherwise as a job on the owning agent's queue
 * `filestore-commands-<agentId>`, waiting for its reply (QueueEvents) up to the wait, then
 * answering 202 with the journal entry. The job always carries an Idempotency-Key (the
 * caller's, or a generated one), so a job that BullMQ runs again after its agent died mid-
 * command replays or completes the first run instead of applying it twice. Each job is signed
 * (signing.ts): the agent runs only what a holder of FILESTORE_COMMAND_SECRET queued for it,
 * within its expiry. In inline mode there is one process: everything runs here.
 */
export class CommandRouter {
  readonly redisUrl: string;
  /** Where the command queues live in Redis: the catalogue's prefix (undefined: BullMQ's `bull`). */
  readonly queuePrefix: string | undefined;
  readonly identity: ProcessIdentity;
  /** Signs what this router queues; the agent's command worker verifies with the same secrets. */
  readonly signer: CommandSigner | null;
  /** How long a command it queues stays valid; the agent's worker refuses expiries further ahead. */
  readonly commandTtlMs: number;
  private readonly waitMs: number;
  private readonly log: (line: string) => void;
  private readonly queues = new Map<string, AgentQueue>();
  private connection: Redis | null = null;
  /** The sending connection's reachability: an outage is logged once, not per retry or call. */
  private readonly health: RedisHealth;
  private closing: Promise<void> | null = null;

  constructor(private readonly o: CommandRouterOptions) {
    this.redisUrl = o.redisUrl;
    this.queuePrefix = o.queuePrefix;
    this.identity = o.identity;
    this.signer = o.signer ?? null;
    if (!this.signer && o.dispatches !== false && o.redisUrl !== 'inline' && o.identity !== undefined) throw new FilestoreError('CONFIG_ERROR', MISSING_SECRET_MESSAGE);
    this.waitMs = o.waitMs ?? DEFAULT_COMMAND_WAIT_MS;
    this.commandTtlMs = o.commandTtlMs ?? DEFAULT_COMMAND_TTL_MS;
    this.log = o.log ?? (() => {});
    this.health = new RedisHealth('command queue', this.log);
  }

  mkdir(mountId: string, input: Record<string, unknown>, ctx: CommandContext = {}, o: RouteOptions = {}): Promise<RoutedCommand> {
    return this.run('mkdir', mountId, input, ctx, o);
  }

  move(mountId: string, input: Record<string, unknown>, ctx: CommandContext = {}, o: RouteOptions = {}): Promise<RoutedCommand> {
    return this.run('move', mountId, input, ctx, o);
  }

  copy(mountId: string, input: Record<string, unknown>, ctx: CommandContext = {}, o: RouteOptions = {}): Promise<RoutedCommand> {
    return this.run('copy', mountId, input, ctx, o);
  }

  delete(mountId: string, input: Record<string, unknown>, ctx: CommandContext = {}, o: RouteOptions = {}): Promise<RoutedCommand> {
    return this.run('delete', mountId, input, ctx, o);
  }

  updateMetadata(mountId: string, input: Record<string, unknown>, ctx: CommandContext = {}, o: RouteOptions = {}): Promise<RoutedCommand> {
    return this.run('updateMetadata', mountId, input, ctx, o);
  }

  /**
   * Here, or the owning agent — alive, else AGENT_UNAVAILABLE. A process that runs everything
   * (no identity, or inline) answers "here" without a lookup.
   */
  async locate(mountRef: string): Promise<MountLocation> {
    if (this.identity === undefined || this.redisUrl === 'inline') return { here: true };
    const mount = await this.o.mounts.mount(mountRef);
    if (executesHere(this.identity, mount)) return { here: true };
    if (mount.agentId === null) {
      throw new AgentUnavailableError(
        `local mount "${mount.key}" is assigned to no agent, and this process has no local disks; assign it to the agent on its host (PATCH /v1/mounts/${mount.key} with {"agentId": …})`,
        { mountId: mount.id },
      );
    }
    return { here: false, mount, agent: await this.liveAgent(mount, mount.agentId) };
  }

  /**
   * Has agent `agentId` look at a local root about to be registered for it (POST /v1/mounts):
   * only its host sees that disk. Resolves when the root is usable there; otherwise the agent's
   * error (MOUNT_ROOT_NOT_FOUND, MOUNT_OVERLAP on its real paths, …). An agent that is not alive,
   * or does not answer within the wait, is 503 AGENT_UNAVAILABLE naming `check: false`.
   */
  async checkMountRoot(agentId: string, newMount: { key: string; rootPath: string; accessMode: 'rw' | 'ro' }): Promise<void> {
    this.requireSigner('checkMountRoot');
    const pending = { id: '', key: newMount.key } as Mount;
    const skip = 'or register it without the check (CLI --no-check, API "check": false)';
    let agent: Agent;
    try {
      agent = await this.liveAgent(pending, agentId);
    } catch (err) {
      if (err instanceof AgentUnavailableError) throw new AgentUnavailableError(`${err.message}; it checks the root of a mount it is to own: start it, ${skip}`, err.details);
      throw err;
    }
    const routed = await this.dispatch(agent, pending, 'checkMountRoot', { rootPath: newMount.rootPath, accessMode: newMount.accessMode }, { idempotencyKey: `check-${randomUUID()}` }, {});
    if (routed.status === 202) {
      throw new AgentUnavailableError(`agent "${agentId}" did not check the root ${newMount.rootPath} within ${this.waitMs} ms; retry, ${skip}`, { agentId });
    }
  }

  /**
   * Has the agent that owns `mount` resolve its pending journal entry `entryId` (only its host
   * sees the disk): the entry as recorded, or the agent's error. An agent not alive is 503
   * AGENT_UNAVAILABLE; one that does not answer within the wait, 503 AGENT_UNAVAILABLE too
   * (its resolution goes on: look at the entry again).
   */
  async resolveOnAgent(mount: Mount, entryId: number, principal: string | null): Promise<JournalEntry> {
    this.requireSigner('resolveEntry');
    const agent = await this.liveAgent(mount, mount.agentId as string);
    const ctx = { principal: principal ?? undefined, idempotencyKey: `resolve-${randomUUID()}` };
    const routed = await this.dispatch(agent, mount, 'resolveEntry', { entryId }, ctx, {});
    if (routed.status === 202) {
      throw new AgentUnavailableError(`agent "${agent.id}" is still resolving journal entry ${entryId}; look at it again (filestore journal --pending)`, { agentId: agent.id, journalEntryId: entryId });
    }
    return routed.result as unknown as JournalEntry;
  }

  /** Stops waiting (waiting callers get INTERRUPTED: the command itself goes on) and disconnects. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const all = [...this.queues.values()];
      this.queues.clear();
      await Promise.allSettled(all.map(async (q) => {
        await q.events.close();
        await q.queue.close();
        await q.eventsConnection.quit();
      }));
      await this.connection?.quit().catch(() => {});
    })();
    return this.closing;
  }

  private async run(command: OrchestratorCommand, mountRef: string, input: Record<string, unknown>, ctx: CommandContext, o: RouteOptions): Promise<RoutedCommand> {
    const where = await this.locate(mountRef);
    if (where.here) return { status: 200, result: await this.o.orchestrator[command](mountRef, input, ctx) };
    this.requireSigner(command);
    return this.dispatch(where.agent, where.mount, command, input, ctx, o);
  }

  /** A process built without a signer (dispatches: false) refuses to dispatch, before anything is queued. */
  private requireSigner(command: DispatchedCommand): void {
    if (this.signer) return;
    throw new FilestoreError(
      'CONFIG_ERROR',
      `this process dispatches no commands to agents (it has no FILESTORE_COMMAND_SECRET): ${command} on a local mount goes through the API, whose function holds the secret`,
    );
  }

  private async dispatch(
    agent: Agent,
    mount: Mount,
    command: DispatchedCommand,
    input: Record<string, unknown>,
    ctx: CommandContext,
    o: RouteOptions,
  ): Promise<RoutedCommand> {
    const idempotencyKey = ctx.idempotencyKey ?? `dispatch-${randomUUID()}`;
    const message: CommandMessage = (this.signer as CommandSigner).sign({
      command,
      mountId: mount.id,
      input,
      context: { principal: ctx.principal, correlationId: ctx.correlationId, idempotencyKey },
      agentId: agent.id,
      expiresAt: Date.now() + this.commandTtlMs,
    }, this.queuePrefix);
    const q = await this.queueFor(agent.id);
    const job = await q.queue.add(command, message);
    const jobId = job.id as string;
    // BullMQ treats a ttl of 0 as "no limit": the shortest wait is 1 ms.
    const waitMs = Math.max(1, Math.min(o.waitMs ?? this.waitMs, this.waitMs));
    let reply: CommandReply | null;
    try {
      reply = this.verified(agent.id, jobId, await job.waitUntilFinished(q.events, waitMs));
    } catch (err) {
      if (err instanceof FilestoreError) throw err;
      if (this.closing) throw shuttingDown();
      // The wait expired, or the job failed in BullMQ (stalled too often): its state says which.
      reply = await this.settled(q.queue, agent.id, jobId);
    }
    if (!reply) return this.accepted(agent, mount, command, ctx.principal ?? null, idempotencyKey);
    if (reply.ok) return { status: 200, result: reply.result };
    throw errorFromWire(reply.error);
  }

  /**
   * The job's return value as the agent's reply: signed by it over this job (signing.ts), or
   * refused. Whoever can write to Redis can complete a job with any value; that must not
   * become the command's reported outcome.
   */
  private verified(agentId: string, jobId: string, value: unknown): CommandReply {
    const reply = (this.signer as CommandSigner).verifyReply(value, { agentId, queuePrefix: this.queuePrefix, jobId });
    if (reply) return reply;
    this.log(`security: the reply to dispatched command ${JSON.stringify(jobId)} on ${commandQueueName(agentId)} does not verify`);
    throw new FilestoreError(
      'CONFIG_ERROR',
      `the reply to the command on agent "${agentId}"'s queue does not verify with this process's FILESTORE_COMMAND_SECRET: the agent has another secret (give API processes and agents the same one), ` +
        'or something else that can write to Redis answered it. Whether the command ran is unknown: look for it in GET /v1/journal, or send it again with the same Idempotency-Key',
      { agentId, jobId },
    );
  }

  /** The reply of a finished job, or null while it waits or runs. */
  private async settled(queue: Queue<CommandMessage, CommandReply>, agentId: string, jobId: string): Promise<CommandReply | null> {
    const job = await queue.getJob(jobId);
    const state = job ? await job.getState() : 'unknown';
    if (state === 'completed' && job) return this.verified(agentId, jobId, job.returnvalue);
    if (state === 'failed' && job) {
      throw new FilestoreError('INTERRUPTED', `the agent could not finish the command (${job.failedReason}); send it again with the same Idempotency-Key`);
    }
    return null;
  }

  private async accepted(agent: Agent, mount: Mount, command: DispatchedCommand, principal: string | null, idempotencyKey: string): Promise<RoutedCommand> {
    const entry = await findByIdempotencyKey(this.o.pool, principal, idempotencyKey);
    // Only this command's entry: a key reused for another request names someone else's.
    const own = entry && entry.command === command && entry.mountId === mount.id ? entry : null;
    let journalEntry: AcceptedCommand['journalEntry'] = null;
    if (own) {
      const { requestFingerprint: _, ...shown } = own;
      journalEntry = shown;
    }
    return {
      status: 202,
      accepted: {
        status: 'accepted',
        agentId: agent.id,
        idempotencyKey,
        journalEntry,
        message: own
          ? `agent "${agent.id}" is still running the command (journal entry ${own.id}); follow GET /v1/journal?mountId=${mount.id}, or send it again with Idempotency-Key ${idempotencyKey} for its result`
          : `the command waits in agent "${agent.id}"'s queue; send it again with Idempotency-Key ${idempotencyKey} for its result`,
      },
    };
  }

  private async liveAgent(mount: Mount, agentId: string): Promise<Agent> {
    const { agent, now } = await findAgent(this.o.pool, agentId);
    const details = { agentId, mountId: mount.id };
    if (!agent) {
      throw new AgentUnavailableError(
        `agent "${agentId}", which owns mount "${mount.key}", has never registered; start it (filestore agent with FILESTORE_AGENT_ID=${agentId})`,
        details,
      );
    }
    if (!isAlive(agent, now)) {
      throw new AgentUnavailableError(
        agent.stoppedAt
          ? `agent "${agentId}", which owns mount "${mount.key}", stopped at ${agent.stoppedAt.toISOString()}; start it again, then retry`
          : `agent "${agentId}", which owns mount "${mount.key}", has sent no heartbeat since ${agent.heartbeatAt.toISOString()}; check that it runs and reaches PostgreSQL, then retry`,
        { ...details, heartbeatAt: agent.heartbeatAt.toISOString() },
      );
    }
    return agent;
  }

  private async queueFor(agentId: string): Promise<AgentQueue> {
    if (this.closing) throw shuttingDown();
    let q = this.queues.get(agentId);
    if (!q) {
      const name = commandQueueName(agentId);
      this.connection ??= this.health.watch(new Redis(this.redisUrl, { maxRetriesPerRequest: 3 }));
      const queue = new Queue<CommandMessage, CommandReply>(name, {
        connection: this.connection,
        prefix: this.queuePrefix,
        defaultJobOptions: { attempts: 1, removeOnComplete: KEEP_COMPLETED, removeOnFail: KEEP_FAILED },
      });
      queue.on('error', (e) => {
        if (!this.health.explains(e)) this.log(`command queue ${name}: ${e.message}`);
      });
      // QueueEvents reads with a blocking XREAD: it needs a connection of its own.
      const eventsHealth = new RedisHealth(`command queue events ${agentId}`, this.log);
      const eventsConnection = eventsHealth.watch(new Redis(this.redisUrl, { maxRetriesPerRequest: null }));
      const events = new QueueEvents(name, { connection: eventsConnection, prefix: this.queuePrefix });
      events.on('error', (e) => {
        if (!eventsHealth.explains(e)) this.log(`command queue events ${name}: ${e.message}`);
      });
      q = { queue, events, eventsConnection, ready: events.waitUntilReady() };
      this.queues.set(agentId, q);
    }
    try {
      await q.ready;
    } catch (err) {
      this.queues.delete(agentId);
      await Promise.allSettled([q.events.close(), q.queue.close(), q.eventsConnection.quit()]);
      throw err;
    }
    return q;
  }
}

const shuttingDown = () =>
  new FilestoreError('INTERRUPTED', 'this process is shutting down; send the command again with the same Idempotency-Key for its result');

