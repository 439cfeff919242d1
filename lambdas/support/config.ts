import { z } from 'zod';
import { MAX_S3_PREFIX_LENGTH, MOUNT_KEY_PATTERN, normaliseS3Prefix, S3_BUCKET_PATTERN, type ConfiguredS3Mount } from '../../shared/catalogue/index.ts';
import { COMMAND_SECRET_MIN_LENGTH, parseCommandSecrets } from '../../shared/dispatch/index.ts';
import { DATABASE_CHOICE, DATABASE_ENV, resolveDatabase, type DatabaseConfig } from '../../shared/db/index.ts';
import { FilestoreError } from '../../shared/index.ts';
import { hasLoneSurrogate } from '../../shared/index-json.ts';
import { OutboxRetention } from '../../shared/events/index.ts';
import { QUEUE_PREFIX_PATTERN } from '../../shared/queues/index.ts';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const redisUrl = z
  .string()
  .refine((v) => v === 'inline' || /^rediss?:\/\/[^\s]+$/.test(v), { message: 'expected redis://… or rediss://… (rediss: TLS, as ElastiCache with in-transit encryption requires)' });

/** One entry of FILESTORE_S3_MOUNTS: the rules POST /v1/mounts applies to an S3 mount. */
const ConfiguredS3MountEntry = z
  .object({
    key: z.string().regex(MOUNT_KEY_PATTERN, `must match ${MOUNT_KEY_PATTERN.source}`),
    bucket: z.string().regex(S3_BUCKET_PATTERN, 'not a valid S3 bucket name'),
    prefix: z
      .string()
      .max(MAX_S3_PREFIX_LENGTH)
      .refine((p) => !hasLoneSurrogate(p), 'holds a lone UTF-16 surrogate')
      .optional(),
  })
  .strict();

const entryName = (entry: unknown, i: number): string => {
  const key = (entry as { key?: unknown } | null)?.key;
  return typeof key === 'string' ? `entry ${i} (key "${key}")` : `entry ${i}`;
};

/**
 * FILESTORE_S3_MOUNTS: JSON `[{"key", "bucket", "prefix"?}]`, the stack's S3 mounts (set by the
 * CDK app from its configuration on the API and migrate Lambdas). Unset: no list (local runs).
 */
const S3Mounts = z.string().transform((text, ctx): ConfiguredS3Mount[] => {
  const fail = (message: string) => {
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return fail(`not JSON (${(err as Error).message}); expected [{"key": …, "bucket": …, "prefix"?: …}]`);
  }
  if (!Array.isArray(value)) return fail('expected a JSON array [{"key": …, "bucket": …, "prefix"?: …}]');
  const out: ConfiguredS3Mount[] = [];
  for (const [i, entry] of value.entries()) {
    const parsed = ConfiguredS3MountEntry.safeParse(entry);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || 'entry'}: ${issue.message}`);
      return fail(`${entryName(entry, i)}: ${problems.join('; ')}`);
    }
    if (out.some((m) => m.key === parsed.data.key)) return fail(`${entryName(entry, i)}: the key is listed twice`);
    out.push({ key: parsed.data.key, bucket: parsed.data.bucket, prefix: normaliseS3Prefix(parsed.data.prefix) });
  }
  return out;
});

/**
 * The Lambdas' environment. Unlike the long-running processes (shared/config.ts), secrets come
 * from Secrets Manager by ARN (fetched by lambdaCore, cached per container), and PostgreSQL may
 * be reached through RDS Proxy with IAM authentication instead of a URL with a password.
 */
const DatabaseEnv = z.object({
  /** DATABASE_URL, or the FILESTORE_DB_* variables of RDS Proxy with IAM auth (shared/db/database-env.ts). */
  ...DATABASE_ENV,
  /** The stack's S3 mounts: the migrate Lambda registers them, the API Lambda registers no other. */
  FILESTORE_S3_MOUNTS: S3Mounts.optional(),
});

const LambdaEnv = DatabaseEnv.extend({
  FILESTORE_DB_POOL_SIZE: z.coerce.number().int().min(1).max(2).default(2),
  REDIS_URL: redisUrl,
  FILESTORE_ALLOW_INLINE: bool.default(false),
  /** Secrets Manager secret holding the Redis AUTH token (plain, or JSON {"password", "username"?}). */
  FILESTORE_REDIS_AUTH_SECRET_ARN: z.string().min(1).optional(),
  /** Secrets Manager secret holding the API token hashes (the JSON of FILESTORE_API_TOKENS). */
  FILESTORE_API_TOKENS_SECRET_ARN: z.string().min(1).optional(),
  /** Local runs and tests only: the token hashes themselves. */
  FILESTORE_API_TOKENS: z.string().optional(),
  /** Secrets Manager secret holding FILESTORE_COMMAND_SECRET's value (comma-separated, the first signs). */
  FILESTORE_COMMAND_SECRET_ARN: z.string().min(1).optional(),
  /** Local runs and tests only: the command secrets themselves. */
  FILESTORE_COMMAND_SECRET: z
    .string()
    .transform(parseCommandSecrets)
    .refine((list) => list.every((s) => s.length >= COMMAND_SECRET_MIN_LENGTH), {
      message: `each comma-separated secret needs at least ${COMMAND_SECRET_MIN_LENGTH} characters`,
    })
    .optional(),
  /** How long a secret fetched from Secrets Manager is reused by a container (rotation shows after at most this). */
  FILESTORE_SECRETS_TTL_SECONDS: z.coerce.number().int().min(0).max(86_400).default(300),
  FILESTORE_COMMAND_TTL_MS: z.coerce.number().int().min(30_000).max(86_400_000).default(900_000),
  /**
   * How long a request waits for a command dispatched to a local mount's agent before 202. API
   * Gateway cuts at 30 s and the shell's outbox flush after the handler takes up to 5 s, so the
   * ceiling is 25 s and the default leaves a margin for the rest of the invocation.
   */
  FILESTORE_COMMAND_WAIT_MS: z.coerce.number().int().min(0).max(25_000).default(20_000),
  FILESTORE_QUEUE_PREFIX: z.string().regex(QUEUE_PREFIX_PATTERN, 'letters, digits and _ . : { } - only (1-100 characters)').optional(),
  FILESTORE_CACHE_TTL_SECONDS: z.coerce.number().int().min(1).max(86_400).default(300),
  FILESTORE_OUTBOX_RETENTION: OutboxRetention,
  FILESTORE_S3_ENDPOINT: z.string().url().optional(),
  /** The SQS queue of S3 mounts' reconcile jobs (docs/aws.md, "The reconcile queue"). */
  FILESTORE_RECONCILE_QUEUE_URL: z.string().url().optional(),
});

export type { DatabaseConfig, IamDatabaseAuth } from '../../shared/db/index.ts';

/** The migrate Lambda's variables: the database, and the stack's S3 mounts to register. */
export interface MigrateConfig extends DatabaseConfig {
  /** FILESTORE_S3_MOUNTS (prefixes normalised); undefined when unset: nothing is registered. */
  s3Mounts: ConfiguredS3Mount[] | undefined;
}

export interface LambdaConfig extends DatabaseConfig {
  /** redis://… or rediss://… (its AUTH token, when in a secret, added by lambdaCore), or 'inline' (tests). */
  redisUrl: string;
  poolSize: number;
  redisAuthSecretArn: string | undefined;
  apiTokensSecretArn: string | undefined;
  apiTokens: string | undefined;
  commandSecretArn: string | undefined;
  commandSecrets: string[] | undefined;
  secretsTtlMs: number;
  commandTtlMs: number;
  /** FILESTORE_COMMAND_WAIT_MS: the wait for a dispatched command before 202 (the router's commandWaitMs). */
  commandWaitMs: number;
  queuePrefix: string | undefined;
  cacheTtlSeconds: number;
  outboxRetentionMs: number;
  s3Endpoint: string | undefined;
  reconcileQueueUrl: string | undefined;
  /** FILESTORE_S3_MOUNTS: the only S3 mounts the API registers; undefined when unset (no restriction). */
  s3Mounts: ConfiguredS3Mount[] | undefined;
}

/**
 * Reads and validates a Lambda's environment (at the container's first invocation). A bad or
 * missing value is CONFIG_ERROR naming the variable; nothing is fetched here.
 */
export function loadLambdaConfig(env: NodeJS.ProcessEnv = process.env): LambdaConfig {
  const e = parse(LambdaEnv, env);
  if (e.REDIS_URL === 'inline' && !e.FILESTORE_ALLOW_INLINE) {
    throw new FilestoreError('CONFIG_ERROR', 'REDIS_URL is "inline" (events stay in one container, which other containers never see): set REDIS_URL=rediss://…');
  }
  if (e.FILESTORE_COMMAND_SECRET_ARN && e.FILESTORE_COMMAND_SECRET) {
    throw new FilestoreError('CONFIG_ERROR', 'FILESTORE_COMMAND_SECRET_ARN and FILESTORE_COMMAND_SECRET are both set: keep the ARN (the value is for local runs only)');
  }
  return {
    ...database(e),
    redisUrl: e.REDIS_URL,
    poolSize: e.FILESTORE_DB_POOL_SIZE,
    redisAuthSecretArn: e.FILESTORE_REDIS_AUTH_SECRET_ARN,
    apiTokensSecretArn: e.FILESTORE_API_TOKENS_SECRET_ARN,
    apiTokens: e.FILESTORE_API_TOKENS,
    commandSecretArn: e.FILESTORE_COMMAND_SECRET_ARN,
    commandSecrets: e.FILESTORE_COMMAND_SECRET,
    secretsTtlMs: e.FILESTORE_SECRETS_TTL_SECONDS * 1000,
    commandTtlMs: e.FILESTORE_COMMAND_TTL_MS,
    commandWaitMs: e.FILESTORE_COMMAND_WAIT_MS,
    queuePrefix: e.FILESTORE_QUEUE_PREFIX,
    cacheTtlSeconds: e.FILESTORE_CACHE_TTL_SECONDS,
    outboxRetentionMs: e.FILESTORE_OUTBOX_RETENTION,
    s3Endpoint: e.FILESTORE_S3_ENDPOINT,
    reconcileQueueUrl: e.FILESTORE_RECONCILE_QUEUE_URL,
    s3Mounts: e.FILESTORE_S3_MOUNTS,
  };
}

/** The database part of loadLambdaConfig alone: DATABASE_URL, or the FILESTORE_DB_* variables. */
export function loadDatabaseConfig(env: NodeJS.ProcessEnv = process.env): DatabaseConfig {
  return database(parse(DatabaseEnv, env));
}

/** The migrate Lambda's: loadDatabaseConfig and FILESTORE_S3_MOUNTS. */
export function loadMigrateConfig(env: NodeJS.ProcessEnv = process.env): MigrateConfig {
  const e = parse(DatabaseEnv, env);
  return { ...database(e), s3Mounts: e.FILESTORE_S3_MOUNTS };
}

function parse<S extends z.ZodType>(schema: S, env: NodeJS.ProcessEnv): z.infer<S> {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new FilestoreError('CONFIG_ERROR', `invalid Lambda configuration: ${problems.join('; ')}`);
  }
  return parsed.data;
}

/** DATABASE_URL or the FILESTORE_DB_* variables (shared/db/database-env.ts): a Lambda needs one of them. */
function database(e: z.infer<typeof DatabaseEnv>): DatabaseConfig {
  const config = resolveDatabase(e);
  if (!config) throw new FilestoreError('CONFIG_ERROR', `DATABASE_URL is unset: set ${DATABASE_CHOICE}`);
  return config;
}

const AuthorizerEnv = z.object({
  FILESTORE_API_TOKENS_SECRET_ARN: z.string().min(1).optional(),
  FILESTORE_API_TOKENS: z.string().min(1).optional(),
  FILESTORE_SECRETS_TTL_SECONDS: z.coerce.number().int().min(0).max(86_400).default(300),
});

/** Where the authorizer finds the token hashes: a secret (deployed), or the value itself (local runs, tests). */
export interface AuthorizerConfig {
  tokens: { secretArn: string } | { value: string };
  secretsTtlMs: number;
}

/** The authorizer's variables (it needs no database and no Redis). */
export function loadAuthorizerConfig(env: NodeJS.ProcessEnv = process.env): AuthorizerConfig {
  const e = parse(AuthorizerEnv, env);
  if (e.FILESTORE_API_TOKENS_SECRET_ARN && e.FILESTORE_API_TOKENS) {
    throw new FilestoreError('CONFIG_ERROR', 'FILESTORE_API_TOKENS_SECRET_ARN and FILESTORE_API_TOKENS are both set: keep the ARN (the value is for local runs only)');
  }
  const secretsTtlMs = e.FILESTORE_SECRETS_TTL_SECONDS * 1000;
  if (e.FILESTORE_API_TOKENS_SECRET_ARN) return { tokens: { secretArn: e.FILESTORE_API_TOKENS_SECRET_ARN }, secretsTtlMs };
  if (e.FILESTORE_API_TOKENS) return { tokens: { value: e.FILESTORE_API_TOKENS }, secretsTtlMs };
  throw new FilestoreError('CONFIG_ERROR', 'FILESTORE_API_TOKENS_SECRET_ARN is unset: the authorizer reads the token hashes (the JSON of FILESTORE_API_TOKENS) from that secret');
}
