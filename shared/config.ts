import { z } from 'zod';
import { DATABASE_ENV, resolveDatabase, type DatabaseConfig } from './db/database-env.ts';
import { FilestoreError } from './errors.ts';
import { OutboxRetention } from './events/retention.ts';
import { COMMAND_SECRET_MIN_LENGTH, parseCommandSecrets } from './dispatch/signing.ts';
import { QUEUE_PREFIX_PATTERN } from './queues/prefix.ts';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const EnvSchema = z.object({
  /**
   * DATABASE_URL (postgres://… with its password), or RDS Proxy with IAM auth: FILESTORE_DB_HOST,
   * FILESTORE_DB_PORT, FILESTORE_DB_NAME, FILESTORE_DB_USER, FILESTORE_DB_IAM_AUTH=true,
   * FILESTORE_DB_TLS_CA and AWS_REGION, as the Lambdas (shared/db/database-env.ts).
   */
  ...DATABASE_ENV,
  REDIS_URL: z.union([z.literal('inline'), z.string().url()]).default('inline'),
  FILESTORE_ALLOW_INLINE: bool.default(false),
  FILESTORE_AGENT_ID: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).default('local'),
  FILESTORE_ENABLE_WATCHERS: bool.default(false),
  FILESTORE_WATCH_DEBOUNCE_MS: z.coerce.number().int().min(0).max(60_000).default(200),
  /**
   * Watcher backend: chokidar (a watch per file), parcel (a watch per directory), dirs (an
   * fs.watch per directory, no per-file state) or auto
   * (dirs for a large tree of big directories, else parcel: agent/watch/backends/choose.ts),
   * for every mount, then per mount key:
   * `auto,projects=parcel,scratch=chokidar`.
   */
  FILESTORE_WATCH_BACKEND: z
    .string()
    .default('auto')
    .transform((v, ctx) => {
      const choices = ['auto', 'chokidar', 'parcel', 'dirs'] as const;
      type Choice = (typeof choices)[number];
      const isChoice = (c: string): c is Choice => (choices as readonly string[]).includes(c);
      const out: { default: Choice; perMount: Record<string, Choice> } = { default: 'auto', perMount: {} };
      for (const part of v.split(',').map((p) => p.trim()).filter(Boolean)) {
        const eq = part.indexOf('=');
        const [key, choice] = eq === -1 ? [null, part] : [part.slice(0, eq).trim(), part.slice(eq + 1).trim()];
        if (!isChoice(choice) || key === '') {
          ctx.addIssue({ code: 'custom', message: `"${part}": expected auto, chokidar, parcel or dirs, or MOUNT_KEY=one of them` });
          return z.NEVER;
        }
        if (key === null) out.default = choice;
        else out.perMount[key] = choice;
      }
      return out;
    }),
  /** Where API processes reach this agent's HTTP server (file transfers are redirected there); default http://<hostname>:<PORT>. */
  FILESTORE_AGENT_URL: z.string().url().optional(),
  /** Commands for this agent's mounts run at once by its command worker. */
  FILESTORE_COMMAND_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(4),
  /**
   * Signs the commands API processes queue for agents (the agents verify): comma-separated,
   * the first signs and all verify (rotation). Required with Redis by the agent and `start`
   * (cli/commands/agent.ts). Never logged, never echoed in an error.
   */
  FILESTORE_COMMAND_SECRET: z
    .string()
    .transform(parseCommandSecrets)
    .refine((list) => list.every((s) => s.length >= COMMAND_SECRET_MIN_LENGTH), {
      message: `each comma-separated secret needs at least ${COMMAND_SECRET_MIN_LENGTH} characters (make one with \`openssl rand -hex 32\`)`,
    })
    .optional(),
  /**
   * How long a dispatched command stays valid in its agent's queue (the sender's clock), and
   * the longest expiry an agent accepts: the same value in every process of a deployment.
   */
  FILESTORE_COMMAND_TTL_MS: z.coerce.number().int().min(30_000).max(86_400_000).default(900_000),
  FILESTORE_AUDIT_CRON: z.string().optional(),
  /**
   * BullMQ key prefix of this catalogue's queues (reconcile, commands, audits). Default
   * `filestore:<catalogue id>`, from the catalogue itself; every process of one catalogue must
   * use the same value, and two catalogues on one Redis different ones.
   */
  FILESTORE_QUEUE_PREFIX: z
    .string()
    .regex(QUEUE_PREFIX_PATTERN, 'letters, digits and _ . : { } - only (1-100 characters)')
    .optional(),
  /** Reconciliation jobs run at once by one worker. */
  FILESTORE_RECONCILE_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(2),
  /** An audit that would mark more than this share of a mount's nodes MISSING stops and reports instead. */
  FILESTORE_MAX_MISSING_RATIO: z.coerce.number().min(0).max(1).default(0.5),
  /** S3: how long to wait before the second look that confirms an object is gone. */
  FILESTORE_S3_MISSING_GRACE_MS: z.coerce.number().int().min(0).max(600_000).default(2_000),
  FILESTORE_S3_ENDPOINT: z.string().url().optional(),
  /** How long published events stay in the outbox (resumable by event streams): 7d, 12h, 30m, 3600s or seconds; default 7 days. */
  FILESTORE_OUTBOX_RETENTION: OutboxRetention,
  FILESTORE_DB_POOL_SIZE: z.coerce.number().int().min(2).max(500).default(20),
  FILESTORE_CACHE_TTL_SECONDS: z.coerce.number().int().min(1).max(86_400).default(300),
  PORT: z.coerce.number().int().min(0).max(65_535).default(4300),
  /** A request body whose bytes stop arriving for this long is answered 408 REQUEST_TIMEOUT. */
  FILESTORE_BODY_IDLE_TIMEOUT_MS: z.coerce.number().int().min(100).max(3_600_000).default(30_000),
  /** Address the API listens on; anything but loopback requires tokens. */
  FILESTORE_HOST: z.string().min(1).default('127.0.0.1'),
  /** JSON array of {name, sha256, scopes}: hashes of bearer tokens, never the tokens (`filestore token create`). */
  FILESTORE_API_TOKENS: z.string().optional(),
  /** auto: off when no tokens are configured and the API listens on loopback, otherwise required. */
  FILESTORE_AUTH: z.enum(['auto', 'required', 'off']).default('auto'),
});

export type Config = z.infer<typeof EnvSchema> & {
  /**
   * Where PostgreSQL is: DATABASE_URL, or the URL and IAM auth of the FILESTORE_DB_* variables
   * (prepareDatabase, shared/db/iam-auth.ts, makes its connections' tokens); null when neither
   * is set (`filestore start` then runs an embedded PostgreSQL).
   */
  database: DatabaseConfig | null;
};

/**
 * Reads and validates the environment once, at start. A bad value stops the process with a
 * message naming the variable, never with a stack trace.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new FilestoreError('CONFIG_ERROR', `invalid configuration: ${problems.join('; ')}`);
  }
  const config: Config = { ...parsed.data, database: resolveDatabase(parsed.data) };
  if (config.REDIS_URL === 'inline' && !config.FILESTORE_ALLOW_INLINE) {
    throw new FilestoreError(
      'CONFIG_ERROR',
      'REDIS_URL is unset or "inline" (in-process queues and events), which is only for one process: set REDIS_URL=redis://… or FILESTORE_ALLOW_INLINE=true',
    );
  }
  return config;
}
