import { BackendRegistry, type S3Defaults } from './backends/registry.ts';
import { MemoryReadThroughCache, RedisReadThroughCache, type ReadThroughCache } from './cache/read-through.ts';
import { CatalogueReader } from './catalogue/reader.ts';
import { DEFAULT_OUTBOX_RETENTION_MS } from './catalogue/outbox-retention.ts';
import { createPool, type Pool } from './db/pool.ts';
import { migrate } from './db/migrate.ts';
import { InlineEventBus, RedisEventBus, type EventBus } from './events/bus.ts';
import { reportedOutage } from './redis/health.ts';
import { withoutRepeats } from './repeated-log.ts';
import { maintenancePass, type MaintenanceOptions, type MaintenanceReport } from './maintenance.ts';
import { OutboxRelay } from './events/relay.ts';
import type { OrchestratorHooks } from './orchestrator/context.ts';
import { Orchestrator } from './orchestrator/orchestrator.ts';
import { defaultMetrics } from './metrics/prom.ts';
import type { FilestoreMetrics } from './metrics/metrics.ts';
import { createReconcileQueue } from './queues/create-reconcile-queue.ts';
import { catalogueQueuePrefix } from './queues/prefix.ts';
import type { ReconcileQueue } from './reconcile/queue.ts';
import type { SqsQueueSetup } from './queues/sqs-queue.ts';
import { createReconciler } from './reconcile/reconciler.ts';
import type { ProcessIdentity } from './orchestrator/ownership.ts';
import { CommandRouter, dispatchSigner } from './dispatch/router.ts';

export interface FilestoreOptions {
  databaseUrl: string;
  /** redis://… or 'inline' (in-process events and cache: one process only). */
  redisUrl: string;
  /** Connections of the pool (default 20; a Lambda's core: 1-2). */
  poolSize?: number | undefined;
  /** How long a caller waits for a connection of a busy pool before 503 UNAVAILABLE (default 10 000 ms). */
  poolAcquireTimeoutMs?: number | undefined;
  cacheTtlSeconds?: number | undefined;
  s3?: S3Defaults | undefined;
  hooks?: OrchestratorHooks | undefined;
  /** createFilestore: apply migrations first (default true). wireFilestore never does. */
  migrate?: boolean | undefined;
  /** Resolve pending journal entries in maintenance passes (startServices' timer, `maintain`; default true). */
  recover?: boolean | undefined;
  /** Publish the outbox from this process (default true). */
  relay?: boolean | undefined;
  /** startServices: how often the maintenance pass runs (default 30 000 ms). */
  maintenanceIntervalMs?: number | undefined;
  /** FILESTORE_OUTBOX_RETENTION: published events older than this are deleted by the maintenance step (default 7 days). */
  outboxRetentionMs?: number | undefined;
  log?: ((line: string) => void) | undefined;
  /** Where executor, outbox and HTTP metrics are counted (default: the process-wide registry). */
  metrics?: FilestoreMetrics | undefined;
  /** The reconciliation queue: where requests go, and whether this process runs the jobs. */
  reconcile?: ReconcileSetup | undefined;
  /**
   * Which local mounts this process executes (see orchestrator/ownership.ts): an agent id (its
   * own mounts and unassigned ones; others go to their agent's command queue), null (an
   * API-only process: no local mount), or unset (default: every mount runs here).
   */
  agentId?: ProcessIdentity;
  /** How long a command dispatched to another agent is waited for before 202 (default 25 000 ms). */
  commandWaitMs?: number | undefined;
  /** FILESTORE_COMMAND_TTL_MS: how long a dispatched command stays valid in its agent's queue (default 15 min). */
  commandTtlMs?: number | undefined;
  /**
   * FILESTORE_COMMAND_SECRET (the first signs, all verify): required with Redis when this
   * process may dispatch commands (an agent id or null) or runs an agent's command worker.
   */
  commandSecrets?: readonly string[] | undefined;
  /** false: this process never dispatches commands to agents, so commandSecrets may be absent (CommandRouterOptions.dispatches). */
  dispatches?: boolean | undefined;
  /** FILESTORE_QUEUE_PREFIX: BullMQ prefix of this catalogue's queues (default `filestore:<catalogue id>`). */
  queuePrefix?: string | undefined;
}

export interface ReconcileSetup {
  /** Run jobs in this process (default: true in inline mode, where nothing else can; false otherwise). */
  consume?: boolean | undefined;
  concurrency?: number | undefined;
  maxMissingRatio?: number | undefined;
  s3MissingGraceMs?: number | undefined;
  /** This process's agent: local mounts owned by another agent are not reconciled here. */
  agentId?: string | undefined;
  /** Queue name and the mounts whose leftover jobs this consumer adopts at start (tests isolate themselves). */
  queueName?: string | undefined;
  mountIds?: readonly string[] | undefined;
  /** 'inline' runs jobs in-process even when Redis carries events (tests). Default: the Redis URL. */
  queueRedisUrl?: string | undefined;
  /** FILESTORE_RECONCILE_QUEUE_URL (AWS): S3 mounts' jobs go to this SQS queue (the reconcile Lambda's); local mounts' stay on the queue above. */
  sqs?: SqsQueueSetup | undefined;
}

/**
 * The core wired together: what `npm start`, the agent, the Lambdas and tests all run. Built by
 * `wireFilestore` (nothing running on its own); `startServices` adds the loops of long-running
 * processes; `createFilestore` does both.
 */
export interface Filestore {
  pool: Pool;
  orchestrator: Orchestrator;
  reader: CatalogueReader;
  bus: EventBus;
  cache: ReadThroughCache;
  /** Publishes the outbox: its loop runs once `startServices` started it; `flushOutbox` works either way. */
  relay: OutboxRelay | null;
  backends: BackendRegistry;
  metrics: FilestoreMetrics;
  /** Reconciliation requests (POST /v1/reconcile, drift signals, audits). */
  reconcile: ReconcileQueue;
  /** The commands of the API: run here, or dispatched to the agent that owns the mount. */
  commands: CommandRouter;
  /** BullMQ prefix of this catalogue's queues: every producer and consumer of the catalogue uses it. */
  queuePrefix: string;
  /** After a commit that changed a mount outside the orchestrator (reconciliation): cache and relay. */
  changed(mountId: string): Promise<void>;
  /**
   * One maintenance pass (maintenance.ts): publish what the outbox owes, resolve the pending
   * journal entries this process may judge, compact rollups, prune the outbox. The maintenance
   * Lambda calls it once per invocation; long-running processes run it on their timer.
   */
  maintain(options?: MaintenanceOptions): Promise<MaintenanceReport>;
  /**
   * Publishes the outbox rows committed so far (0 without a relay). A Lambda calls it before
   * it returns: its container may be frozen next, and nothing else of it runs until then.
   */
  flushOutbox(): Promise<number>;
  /** Stops what `startServices` started, drains the consumers and the relay, closes every connection. */
  close(): Promise<void>;
}

/**
 * The core wired, nothing started: no migrations, no timers, no recovery sweep, no consumer, a
 * relay that publishes only when asked (`flushOutbox`, `maintain`). What a Lambda builds once
 * per container (pool of 1-2: `poolSize`). It opens the pool (one query: the catalogue's queue
 * prefix, so the catalogue must be migrated) and, with Redis, the event bus's publisher, the
 * cache's connection and the reconcile queue as a producer; after `close()` nothing of it keeps
 * the process alive.
 */
export async function wireFilestore(o: FilestoreOptions): Promise<Filestore> {
  const log = o.log ?? (() => {});
  // Before anything is opened: a process that would dispatch unsigned commands does not start.
  const signer = dispatchSigner(o.agentId, o.redisUrl, o.commandSecrets, o.dispatches ?? true);
  const pool = createPool(o.databaseUrl, o.poolSize ?? 20, { acquireTimeoutMs: o.poolAcquireTimeoutMs });
  let queuePrefix: string;
  try {
    queuePrefix = o.queuePrefix ?? (await catalogueQueuePrefix(pool));
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
  const inline = o.redisUrl === 'inline';
  const bus: EventBus = inline ? new InlineEventBus() : new RedisEventBus(o.redisUrl, log);
  const cache: ReadThroughCache = inline ? new MemoryReadThroughCache() : new RedisReadThroughCache(o.redisUrl, o.cacheTtlSeconds, log);
  // A Redis outage is logged once by the connection that meets it, not per failed operation;
  // a relay failing every pass (PostgreSQL away) logs the same line once a minute.
  const logRepeats = withoutRepeats(log);
  const metrics = o.metrics ?? defaultMetrics();
  const relay = o.relay === false ? null : new OutboxRelay({ pool, bus, metrics, onError: (e) => logUnlessReported(logRepeats, 'outbox relay')(e as Error) });
  const backends = new BackendRegistry(o.s3, { metrics });
  const changed = async (mountId: string) => {
    relay?.nudge();
    await cache.invalidateMount(mountId).catch(logUnlessReported(logRepeats, 'cache invalidation failed'));
  };
  const orchestrator = new Orchestrator({ pool, backends, hooks: o.hooks, afterCommit: changed, identity: o.agentId });
  const reader = new CatalogueReader(pool, cache);
  const commands = new CommandRouter({ pool, orchestrator, mounts: reader, redisUrl: o.redisUrl, queuePrefix, identity: o.agentId, waitMs: o.commandWaitMs, commandTtlMs: o.commandTtlMs, signer, dispatches: o.dispatches, log });

  const r = o.reconcile ?? {};
  const reconcile = createReconcileQueue(r.queueRedisUrl ?? o.redisUrl, {
    pool,
    metrics,
    log,
    name: r.queueName,
    prefix: queuePrefix,
    mountIds: r.mountIds,
    agentId: r.consume ? r.agentId : undefined,
    sqs: r.sqs,
  });
  const maintenance = { pool, orchestrator, relay, recover: o.recover !== false, outboxRetentionMs: o.outboxRetentionMs ?? DEFAULT_OUTBOX_RETENTION_MS, log };

  return {
    pool,
    orchestrator,
    reader,
    bus,
    cache,
    relay,
    backends,
    metrics,
    changed,
    reconcile,
    commands,
    queuePrefix,
    maintain: (options) => maintenancePass(maintenance, options),
    flushOutbox: async () => (relay ? relay.flush() : 0),
    async close() {
      await commands.close().catch((e: Error) => log(`command router: ${e.message}`));
      await reconcile.close().catch((e: Error) => log(`reconcile queue: ${e.message}`));
      await relay?.stop();
      await relay?.drain().catch(() => 0);
      await Promise.allSettled([bus.close(), cache.close()]);
      await pool.end();
    },
  };
}

/** What `startServices` reads (a FilestoreOptions does). */
export type ServiceOptions = Pick<FilestoreOptions, 'redisUrl' | 'maintenanceIntervalMs' | 'reconcile' | 'log'>;

/**
 * Adds what long-running processes (`npm start`, the agent, the reconcile worker) run to a
 * wired core: a maintenance pass now and every `maintenanceIntervalMs` (recovery sweep, rollup
 * compaction, outbox pruning), the relay's loop, and the reconcile consumer when
 * `reconcile.consume` says so (default: in inline mode). The core's `close()` stops them first.
 * Returns the same core.
 */
export async function startServices(core: Filestore, o: ServiceOptions): Promise<Filestore> {
  const log = o.log ?? (() => {});
  // A background loop failing every pass (PostgreSQL away) logs the same line once a minute.
  const logRepeats = withoutRepeats(log);
  // The relay's loop publishes; a pass that also did would only be refused the relay's lock.
  let passing: Promise<void> | null = null;
  const pass = (o: { upkeep?: boolean } = {}) => {
    passing ??= core
      .maintain({ publish: false, ...o })
      .then(
        () => {},
        (e: Error) => logRepeats(`maintenance: ${e.message}`),
      )
      .finally(() => {
        passing = null;
      });
    return passing;
  };
  // The first pass is waited for before the process serves: no VACUUM in it (the timer's next).
  await pass({ upkeep: false });
  core.relay?.start();
  const timer = setInterval(() => void pass(), o.maintenanceIntervalMs ?? 30_000);
  timer.unref();
  const closeCore = core.close;
  core.close = async () => {
    clearInterval(timer);
    await passing;
    await closeCore();
  };

  const r = o.reconcile ?? {};
  if (r.consume ?? (r.queueRedisUrl ?? o.redisUrl) === 'inline') {
    const handler = createReconciler(core, { maxMissingRatio: r.maxMissingRatio, s3MissingGraceMs: r.s3MissingGraceMs, agentId: r.agentId });
    await core.reconcile.start(handler, { concurrency: r.concurrency });
  }
  return core;
}

/**
 * The whole core of a long-running process (and of most tests): migrations unless
 * `migrate: false`, `wireFilestore`, then `startServices`.
 */
export async function createFilestore(o: FilestoreOptions): Promise<Filestore> {
  dispatchSigner(o.agentId, o.redisUrl, o.commandSecrets); // refused before the migrations run
  if (o.migrate !== false) await migrate(o.databaseUrl, o.log ?? (() => {}));
  const core = await wireFilestore(o);
  try {
    return await startServices(core, o);
  } catch (err) {
    await core.close().catch(() => {});
    throw err;
  }
}

function logUnlessReported(log: (line: string) => void, what: string): (e: Error) => void {
  return (e) => {
    if (!reportedOutage(e)) log(`${what}: ${e.message}`);
  };
}
