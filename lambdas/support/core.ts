import { parseCommandSecrets, COMMAND_SECRET_MIN_LENGTH } from '../../shared/dispatch/index.ts';
import { FilestoreError } from '../../shared/index.ts';
import { EmfMetrics } from '../../shared/metrics/index.ts';
import { wireFilestore, type Filestore } from '../../shared/index-runtime.ts';
import { loadLambdaConfig, type LambdaConfig } from './config.ts';
import { prepareDatabase } from './database.ts';
import { logger } from './logger.ts';
import { containerSecrets } from './secrets.ts';

export interface LambdaCore {
  core: Filestore;
  config: LambdaConfig;
  metrics: EmfMetrics;
}

let building: Promise<LambdaCore> | null = null;

/** The functions whose core dispatches commands to agents (signed): the API alone (lambdaHandler). */
export const DISPATCHING_FUNCTIONS: ReadonlySet<string> = new Set(['api']);

export interface LambdaCoreOptions {
  /**
   * Whether this function dispatches commands on local mounts to their agents (default true:
   * the API). Only then is the command secret required; a core built with false refuses a
   * dispatch with CONFIG_ERROR. A container runs one function, so the first call decides.
   */
  dispatches?: boolean;
}

/**
 * The core of this container, built once (wireFilestore, pool FILESTORE_DB_POOL_SIZE default 2,
 * EmfMetrics), reused by every invocation: connections outlive an invocation, so a warm
 * invocation opens none. Concurrent first callers share one build; a build that failed is
 * forgotten, so the next invocation tries again (a database that was away may be back).
 *
 * agentId null: this process owns no local mount, so commands on local mounts are dispatched to
 * their agents (signed: FILESTORE_COMMAND_SECRET_ARN). The relay is on but its loop is not
 * started: a handler publishes with flushOutbox() before it returns (lambdaHandler does).
 * With FILESTORE_RECONCILE_QUEUE_URL, S3 mounts' reconcile jobs are sent to that SQS queue.
 */
export function lambdaCore(o: LambdaCoreOptions = {}): Promise<LambdaCore> {
  if (!building) {
    const attempt = buildCore(o.dispatches ?? true);
    building = attempt;
    attempt.catch(() => {
      if (building === attempt) building = null;
    });
  }
  return building;
}

/** Tests: close the container's core and forget it (the next lambdaCore() builds anew from process.env). */
export async function closeLambdaCore(): Promise<void> {
  const current = building;
  building = null;
  if (!current) return;
  const lc = await current.catch(() => null);
  await lc?.core.close();
}

async function buildCore(dispatches: boolean): Promise<LambdaCore> {
  const config = loadLambdaConfig();
  const secrets = containerSecrets(config.secretsTtlMs);
  const [redisUrl, commandSecrets] = await Promise.all([redisUrlWithAuth(config, (arn) => secrets.get(arn)), commandSecretsOf(config, (arn) => secrets.get(arn), dispatches)]);
  prepareDatabase(config);
  const metrics = new EmfMetrics({ logger });
  const core = await wireFilestore({
    databaseUrl: config.databaseUrl,
    redisUrl,
    poolSize: config.poolSize,
    cacheTtlSeconds: config.cacheTtlSeconds,
    s3: config.s3Endpoint ? { endpoint: config.s3Endpoint } : undefined,
    outboxRetentionMs: config.outboxRetentionMs,
    metrics,
    agentId: null,
    commandSecrets,
    dispatches,
    commandTtlMs: config.commandTtlMs,
    // Under API Gateway's 30 s, with room for the outbox flush after the handler.
    commandWaitMs: config.commandWaitMs,
    queuePrefix: config.queuePrefix,
    // S3 mounts' reconcile jobs go to the reconcile Lambda's SQS queue; local mounts' to their agents' BullMQ queue.
    reconcile: config.reconcileQueueUrl ? { sqs: { queueUrl: config.reconcileQueueUrl } } : undefined,
    log: (line) => logger.warn(line),
  });
  return { core, config, metrics };
}

/**
 * REDIS_URL with the AUTH token of FILESTORE_REDIS_AUTH_SECRET_ARN: the secret is the token, or
 * JSON {"password", "username"?} (an ElastiCache RBAC user). Read once per container build.
 */
export async function redisUrlWithAuth(config: Pick<LambdaConfig, 'redisUrl' | 'redisAuthSecretArn'>, read: (arn: string) => Promise<string>): Promise<string> {
  if (!config.redisAuthSecretArn || config.redisUrl === 'inline') return config.redisUrl;
  const raw = await read(config.redisAuthSecretArn);
  let password = raw;
  let username: string | undefined;
  if (raw.trimStart().startsWith('{')) {
    const parsed = (() => {
      try {
        return JSON.parse(raw) as { password?: unknown; username?: unknown };
      } catch {
        return null;
      }
    })();
    if (!parsed || typeof parsed.password !== 'string') {
      throw new FilestoreError('CONFIG_ERROR', 'FILESTORE_REDIS_AUTH_SECRET_ARN: the secret is JSON without a "password" string; store the AUTH token, or {"password": …, "username"?: …}');
    }
    password = parsed.password;
    if (typeof parsed.username === 'string') username = parsed.username;
  }
  const u = new URL(config.redisUrl);
  if (username !== undefined) u.username = encodeURIComponent(username);
  u.password = encodeURIComponent(password);
  return u.toString();
}

async function commandSecretsOf(config: LambdaConfig, read: (arn: string) => Promise<string>, dispatches: boolean): Promise<string[] | undefined> {
  if (config.commandSecrets) return config.commandSecrets;
  if (!config.commandSecretArn) {
    if (config.redisUrl === 'inline' || !dispatches) return undefined;
    throw new FilestoreError('CONFIG_ERROR', 'FILESTORE_COMMAND_SECRET_ARN is unset: a Lambda dispatches commands on local mounts to their agents, signed with the secret the agents verify');
  }
  const secrets = parseCommandSecrets(await read(config.commandSecretArn));
  if (!secrets.every((s) => s.length >= COMMAND_SECRET_MIN_LENGTH)) {
    throw new FilestoreError('CONFIG_ERROR', `FILESTORE_COMMAND_SECRET_ARN: each comma-separated secret needs at least ${COMMAND_SECRET_MIN_LENGTH} characters`);
  }
  return secrets;
}
