import { resolveAuth } from '../shared/api/index.ts';
import { loadConfig, type Config } from '../shared/index-config.ts';
import { FilestoreError } from '../shared/index.ts';
import { DATABASE_CHOICE, readyDatabase } from '../shared/db/index.ts';
import { MISSING_SECRET_MESSAGE } from '../shared/dispatch/index.ts';
import { stopOnSignals } from '../shared/process/index.ts';
import { startAgent, type AgentOptions, type RunningAgent } from './agent.ts';

/**
 * The agent's options from the validated environment (shared by `filestore agent` and
 * `filestore start`). With Redis, commands travel through queues that anyone with access to
 * Redis can write to: FILESTORE_COMMAND_SECRET is required (the agent verifies what it runs).
 */
export function agentOptionsFrom(config: Config, databaseUrl: string, log: (line: string) => void): AgentOptions {
  const auth = resolveAuth({ mode: config.FILESTORE_AUTH, tokens: config.FILESTORE_API_TOKENS, host: config.FILESTORE_HOST });
  if (config.REDIS_URL !== 'inline' && !config.FILESTORE_COMMAND_SECRET) throw new FilestoreError('CONFIG_ERROR', MISSING_SECRET_MESSAGE);
  return {
    databaseUrl,
    redisUrl: config.REDIS_URL,
    agentId: config.FILESTORE_AGENT_ID,
    host: config.FILESTORE_HOST,
    port: config.PORT,
    tokens: auth.tokens,
    authDisabled: auth.disabled,
    bodyIdleTimeoutMs: config.FILESTORE_BODY_IDLE_TIMEOUT_MS,
    advertisedUrl: config.FILESTORE_AGENT_URL,
    commandSecrets: config.FILESTORE_COMMAND_SECRET,
    commandTtlMs: config.FILESTORE_COMMAND_TTL_MS,
    poolSize: config.FILESTORE_DB_POOL_SIZE,
    s3Endpoint: config.FILESTORE_S3_ENDPOINT,
    reconcileConcurrency: config.FILESTORE_RECONCILE_CONCURRENCY,
    commandConcurrency: config.FILESTORE_COMMAND_CONCURRENCY,
    maxMissingRatio: config.FILESTORE_MAX_MISSING_RATIO,
    s3MissingGraceMs: config.FILESTORE_S3_MISSING_GRACE_MS,
    auditCron: config.FILESTORE_AUDIT_CRON,
    watchers: {
      enabled: config.FILESTORE_ENABLE_WATCHERS,
      debounceMs: config.FILESTORE_WATCH_DEBOUNCE_MS,
      backend: config.FILESTORE_WATCH_BACKEND.default,
      perMount: config.FILESTORE_WATCH_BACKEND.perMount,
    },
    // Command, reconcile and audit queues under this prefix (default: the catalogue's own).
    filestore: { queuePrefix: config.FILESTORE_QUEUE_PREFIX, outboxRetentionMs: config.FILESTORE_OUTBOX_RETENTION },
    log,
  };
}

/**
 * The agent process's main (`filestore agent`, npm run agent, the agent image): the agent for
 * the local mounts of FILESTORE_AGENT_ID until SIGTERM/SIGINT (stopOnSignals: running commands
 * and jobs finish, watchers judge what is pending, then exit 0; a later signal exits 1 at once).
 */
export async function runAgent(): Promise<void> {
  // Watchers on by default (SPEC §8), as under `filestore start`: changes made in the owned
  // local mounts around Filestore are followed as they happen; FILESTORE_ENABLE_WATCHERS=false turns them off.
  const config = loadConfig({ FILESTORE_ENABLE_WATCHERS: 'true', ...process.env });
  const database = config.database;
  if (!database) throw new FilestoreError('CONFIG_ERROR', `the agent needs the shared catalogue: set ${DATABASE_CHOICE}; \`filestore start\` runs everything on an embedded database`);
  const log = (line: string) => console.error(line);
  // Every setting checked before the database is touched.
  const options: AgentOptions = {
    ...agentOptionsFrom(config, database.databaseUrl, log),
    // Another process took this agent's id while this one could not heartbeat: it stopped itself.
    onSuperseded: () => process.exit(1),
  };
  // Under IAM auth (RDS Proxy), each new connection signs a token with the SDK's default credentials.
  await readyDatabase(database);
  let starting: Promise<RunningAgent> | undefined;
  // A signal while the agent starts waits for the start to finish, then stops it cleanly:
  // exiting mid-start would leave it registered (API processes would queue commands for it
  // until its heartbeat expired) and its taken jobs stalled.
  stopOnSignals(async () => (await starting?.catch(() => undefined))?.stop(), log, `agent ${config.FILESTORE_AGENT_ID}`);
  starting = startAgent(options);
  const agent = await starting;
  const owned = agent.mounts();
  console.log(
    `filestore agent ${agent.id} at ${agent.server.url}: ${owned.length} local mount(s)${owned.length ? ` (${owned.map((m) => m.key).join(', ')})` : ''}, ` +
      `watchers ${config.FILESTORE_ENABLE_WATCHERS ? 'on (FILESTORE_ENABLE_WATCHERS=false turns them off)' : 'off'}, audits ${config.FILESTORE_AUDIT_CRON ? `at "${config.FILESTORE_AUDIT_CRON}"` : 'not scheduled'}`,
  );
}
