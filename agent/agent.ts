import os from 'node:os';
import { listMounts, type Mount, HEARTBEAT_TTL_INTERVALS, type Agent } from '../shared/catalogue/index.ts';
import { sweepStaging, executesHere } from '../shared/orchestrator/index.ts';
import { symlinkedRootNote } from '../shared/backends/local/index.ts';
import { serveApi, type ApiServer } from '../shared/api/index-serve.ts';
import type { TokenEntry } from '../shared/api/index.ts';
import { AgentIdInUseError } from '../shared/dispatch/index.ts';
import { startAgentPresence, type AgentPresence, startCommandWorker, type CommandWorker } from '../shared/dispatch/index-agent.ts';
import { startAuditScheduler, type AuditScheduler, type AuditSelection } from '../shared/reconcile/index.ts';
import { migrate } from '../shared/db/index-migrate.ts';
import { packageVersion } from '../shared/index-package.ts';
import { startServices, wireFilestore, type Filestore, type FilestoreOptions } from '../shared/index-runtime.ts';
import type { WatchersHandle } from './watch/index.ts';
import { watchOwnedMounts } from './mount-refresh.ts';
import type { WatchBackendChoice } from './watch/types.ts';

/**
 * The on-prem agent (SPEC §1): one process per host that owns that host's local mounts. It
 * runs, on the shared PostgreSQL and Redis,
 * - the command worker `filestore-commands-<agentId>` (API calls for its mounts from any API process),
 * - the reconciliation consumer and, with a cron, the audit scheduler for its mounts,
 * - watchers on its local mounts (FILESTORE_ENABLE_WATCHERS),
 * - an HTTP server: /metrics, /healthz, /readyz, and the API, whose file routes stream the
 *   bytes of its mounts (API processes redirect file transfers for these mounts here),
 * and registers itself with a heartbeat. `npm start` runs the same pieces in one process.
 */
export interface AgentOptions {
  databaseUrl: string;
  /** redis://… or 'inline' (one process: no command queue or presence, everything runs here). */
  redisUrl: string;
  agentId: string;
  /** HTTP server address and port (0: any free port). */
  host: string;
  port: number;
  tokens: TokenEntry[];
  authDisabled?: boolean | undefined;
  /** FILESTORE_BODY_IDLE_TIMEOUT_MS: a request body that stops arriving this long is 408 (default 30 000). */
  bodyIdleTimeoutMs?: number | undefined;
  /** Where API processes reach this agent (default: http://<hostname or host>:<port>). */
  advertisedUrl?: string | undefined;
  /** FILESTORE_COMMAND_SECRET, the first signs and all verify: required with Redis (commands are signed). */
  commandSecrets?: readonly string[] | undefined;
  /** FILESTORE_COMMAND_TTL_MS: how long commands it dispatches stay valid, and the longest expiry its worker accepts (default 15 min). */
  commandTtlMs?: number | undefined;
  /** Called once the agent stopped itself because another instance took its id (the CLI exits 1). */
  onSuperseded?: (() => void) | undefined;
  /** Heartbeat period (default 5 000 ms): another instance may take the id after three missed. */
  heartbeatIntervalMs?: number | undefined;
  poolSize?: number | undefined;
  s3Endpoint?: string | undefined;
  reconcileConcurrency?: number | undefined;
  commandConcurrency?: number | undefined;
  maxMissingRatio?: number | undefined;
  s3MissingGraceMs?: number | undefined;
  /** FILESTORE_AUDIT_CRON; unset: no scheduled audits. */
  auditCron?: string | undefined;
  /** Which mounts the audits cover (default: this agent's local mounts). */
  auditSelection?: AuditSelection | undefined;
  watchers?:
    | {
        enabled: boolean;
        debounceMs?: number | undefined;
        /** For every mount, unless `perMount` (by mount key) says otherwise. */
        backend?: WatchBackendChoice | undefined;
        perMount?: Record<string, WatchBackendChoice> | undefined;
      }
    | undefined;
  /** How often the agent looks for mounts newly assigned to it (watchers; default 30 s). */
  mountRefreshMs?: number | undefined;
  /** Runs once the catalogue is up, before the agent looks at its mounts (npm start registers mount "local" here). */
  prepare?: ((core: Filestore) => Promise<void>) | undefined;
  /** Extra core options (tests): given to wireFilestore and startServices. */
  filestore?: Partial<FilestoreOptions> | undefined;
  log?: ((line: string) => void) | undefined;
}

export interface RunningAgent {
  readonly id: string;
  readonly core: Filestore;
  readonly server: ApiServer;
  /** Local mounts this agent owns (or that no agent owns), as of the last refresh. */
  mounts(): Mount[];
  watchers(): WatchersHandle | null;
  /** Keys of the mounts being watched right now (kept in step with assignments by the refresh). */
  watched(): string[];
  /** SIGTERM: stop taking work, let running commands and jobs finish, close watchers, exit cleanly. */
  stop(): Promise<void>;
}

export async function startAgent(o: AgentOptions): Promise<RunningAgent> {
  const log = o.log ?? (() => {});
  const inline = o.redisUrl === 'inline';
  // One live agent per id: the id is claimed before anything touches this agent's mounts or
  // queues (a second agent with it is refused; a restart after a SIGKILL waits out the dead
  // one's lease). The registration table must be migrated for that.
  if (o.filestore?.migrate !== false) await migrate(o.databaseUrl, log);
  // Another instance took the id. While this one starts, the start fails at its next step
  // (AGENT_ID_IN_USE) and a command worker already running takes nothing more; once started,
  // lostId stops the agent.
  let worker: CommandWorker | null = null;
  let lost: Agent | null = null;
  let onLost = (holder: Agent) => {
    lost ??= holder;
    void worker?.stopTaking().catch((e: Error) => log(`agent ${o.agentId}: ${e.message}`));
  };
  const holdsId = () => {
    if (lost) throw new AgentIdInUseError(lost, lost.heartbeatIntervalMs * HEARTBEAT_TTL_INTERVALS);
  };
  const presence: AgentPresence | null = inline
    ? null
    : await startAgentPresence(
        { databaseUrl: o.databaseUrl },
        { id: o.agentId, version: packageVersion(), url: o.advertisedUrl, intervalMs: o.heartbeatIntervalMs, log, onSuperseded: (holder) => onLost(holder) },
      );
  const options: FilestoreOptions = {
    databaseUrl: o.databaseUrl,
    redisUrl: o.redisUrl,
    poolSize: o.poolSize,
    s3: { endpoint: o.s3Endpoint },
    log,
    agentId: o.agentId,
    commandSecrets: o.commandSecrets,
    commandTtlMs: o.commandTtlMs,
    reconcile: {
      consume: true,
      concurrency: o.reconcileConcurrency,
      maxMissingRatio: o.maxMissingRatio,
      s3MissingGraceMs: o.s3MissingGraceMs,
      agentId: o.agentId,
    },
    ...o.filestore,
  };
  const core = await startCore(options, presence);
  const cleanups: Array<() => Promise<void>> = [];
  let owned: Mount[] = [];
  let watchers: WatchersHandle | null = null;
  let watchedNow: () => string[] = () => [];
  let server: ApiServer | undefined;
  let stopped = false;
  const stopAll = async () => {
    for (const c of cleanups.reverse()) await c().catch((e: Error) => log(`agent stop: ${e.message}`));
    cleanups.length = 0;
  };
  try {
    await o.prepare?.(core);
    holdsId();
    const ownedMounts = async () => (await listMounts(core.pool)).filter((m) => m.kind === 'local' && executesHere(o.agentId, m));
    owned = await ownedMounts();
    // What finished commands left in their mounts' staging areas goes before any command runs here.
    for (const m of owned) {
      // A root path through a symlink is resolved now, once (root-check.ts): say so, since re-pointing it needs a restart.
      const note = symlinkedRootNote(m.rootPath as string);
      if (note) log(`agent ${o.agentId}: mount ${m.key}: ${note}`);
      await sweepStaging(core.pool, m, (line) => log(`agent ${o.agentId}: ${line}`));
    }
    holdsId();

    // The HTTP server first: probes answer while the rest starts (readyz says when it is ready).
    let ready = false;
    server = await serveApi({
      core,
      host: o.host,
      port: o.port,
      tokens: o.tokens,
      authDisabled: o.authDisabled,
      bodyIdleTimeoutMs: o.bodyIdleTimeoutMs,
      log,
      readiness: async () => ({ agent: ready ? 'ok' : 'starting' }),
    });
    const http = server;
    cleanups.push(() => http.close());

    if (presence) {
      const url = o.advertisedUrl ?? advertisedUrl(o.host, server.port);
      holdsId();
      const started = await startCommandWorker(core, o.agentId, { concurrency: o.commandConcurrency, log });
      worker = started;
      cleanups.push(() => started.close());
      holdsId();
      await presence.advertise(url);
      cleanups.push(() => presence.stop());
      log(`agent ${o.agentId}: commands on filestore-commands-${o.agentId}, reachable at ${url}`);
    }

    if (o.auditCron) {
      const audits: AuditScheduler = await startAuditScheduler({
        pool: core.pool,
        queue: core.reconcile,
        cron: o.auditCron,
        redisUrl: o.redisUrl,
        select: o.auditSelection ?? { agentId: o.agentId },
        metrics: core.metrics,
        log,
      });
      cleanups.push(() => audits.close());
      log(`agent ${o.agentId}: audits at "${o.auditCron}"`);
    }

    if (o.watchers?.enabled) {
      const watching = await watchOwnedMounts(core, owned, {
        agentId: o.agentId,
        debounceMs: o.watchers.debounceMs,
        backend: o.watchers.backend,
        perMount: o.watchers.perMount,
        intervalMs: o.mountRefreshMs,
        ownedMounts,
        onOwned: (now) => {
          owned = now;
        },
        stopped: () => stopped,
        log,
      });
      watchers = watching.handle;
      watchedNow = () => watching.watched();
      cleanups.push(() => watching.close());
    }
    holdsId();
    ready = true;
  } catch (err) {
    await stopAll();
    await presence?.stop().catch(() => {});
    await core.close().catch(() => {});
    throw err;
  }

  const http = server as ApiServer;
  const running: RunningAgent = {
    id: o.agentId,
    core,
    server: http,
    mounts: () => owned,
    watchers: () => watchers,
    watched: () => watchedNow(),
    async stop() {
      if (stopped) return;
      stopped = true;
      // Reverse order of start: watchers judge what is pending and close, audits stop,
      // presence goes (API processes stop dispatching here), the command worker drains, and
      // the HTTP server closes last (transfers in flight get 5 s); core.close drains the
      // reconcile consumer and the relay.
      await stopAll();
      await core.close();
    },
  };
  // Another process holds this agent's id now. Its queue first: the holder may be on another
  // host, with another disk behind the same mount, so nothing more from it runs here; then the
  // rest stops as on SIGTERM.
  onLost = () => {
    const paused = worker?.stopTaking() ?? Promise.resolve();
    log(`agent ${o.agentId}: stopping: another instance took this agent id; no more commands from its queue run here`);
    void paused
      .catch((e: Error) => log(`agent ${o.agentId}: ${e.message}`))
      .then(() => running.stop())
      .finally(() => o.onSuperseded?.());
  };
  return running;
}

/**
 * The core, then what a long-running process adds to it: the recovery sweep and the
 * maintenance timer, the relay's loop, the reconcile consumer. If either fails, what started
 * is stopped, the presence too.
 */
async function startCore(options: FilestoreOptions, presence: AgentPresence | null): Promise<Filestore> {
  let core: Filestore;
  try {
    core = await wireFilestore(options);
  } catch (err) {
    await presence?.stop().catch(() => {});
    throw err;
  }
  try {
    await startServices(core, options);
  } catch (err) {
    await core.close().catch(() => {});
    await presence?.stop().catch(() => {});
    throw err;
  }
  return core;
}

/** http://<this host's name>:<port> when listening on every interface, else the address itself. */
function advertisedUrl(host: string, port: number): string {
  const name = host === '0.0.0.0' || host === '::' ? os.hostname() : host;
  return `http://${name.includes(':') ? `[${name}]` : name}:${port}`;
}
