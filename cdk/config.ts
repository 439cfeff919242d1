import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { MAX_S3_PREFIX_LENGTH, MOUNT_KEY_PATTERN, S3_BUCKET_PATTERN } from '../shared/catalogue/mount-names.ts';

/**
 * The deployment's configuration (cdk.json context `config`, default cdk/config.example.json):
 * the S3 mounts the AWS half serves (the source of truth for S3 mounts in AWS: the migrate
 * function registers exactly these at deploy, and the API refuses others), sizes, alarms and
 * the on-prem network. Validated with zod; a bad file is one error naming every problem.
 */

const RATE = /^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$/;
const UNIT_SECONDS = { minute: 60, minutes: 60, hour: 3600, hours: 3600, day: 86_400, days: 86_400 } as const;

/** Seconds between two audits of a mount: `rate(N unit)` or a number of minutes. */
export function cadenceSeconds(cadence: string | number): number {
  if (typeof cadence === 'number') return cadence * 60;
  const m = RATE.exec(cadence);
  if (!m) throw new Error(`audit cadence ${JSON.stringify(cadence)}: expected "rate(N minutes|hours|days)" or a number of minutes`);
  return Number(m[1]) * UNIT_SECONDS[m[2] as keyof typeof UNIT_SECONDS];
}

const Cadence = z
  .union([z.number().int().min(1), z.string()])
  .superRefine((v, ctx) => {
    let seconds: number;
    try {
      seconds = cadenceSeconds(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return;
    }
    // The audit-age alarm's period is twice the cadence, and CloudWatch allows one day at most.
    if (seconds < 60 || seconds > 86_400) ctx.addIssue({ code: 'custom', message: 'the audit cadence must lie between 1 minute and 1 day' });
    if (typeof v === 'string' && Number(RATE.exec(v)?.[1]) === 1 && RATE.exec(v)?.[2]?.endsWith('s')) {
      ctx.addIssue({ code: 'custom', message: `EventBridge wants the singular unit for 1: ${v.replace(/s\)$/, ')')}` });
    }
    if (typeof v === 'string' && Number(RATE.exec(v)?.[1]) > 1 && !RATE.exec(v)?.[2]?.endsWith('s')) {
      ctx.addIssue({ code: 'custom', message: `EventBridge wants the plural unit above 1: ${v.replace(/\)$/, 's)')}` });
    }
  });

export const S3MountConfig = z.object({
  /** The mount's key in the catalogue (`mounts add s3 KEY`). */
  key: z.string().regex(MOUNT_KEY_PATTERN, 'lower-case letters, digits, _ and - (1-63 characters, starting with a letter or digit)'),
  bucket: z.string().regex(S3_BUCKET_PATTERN, 'an S3 bucket name (3-63 lower-case letters, digits, dots, hyphens)'),
  /** Key prefix inside the bucket ('' or ending with '/'). */
  prefix: z
    .string()
    .max(MAX_S3_PREFIX_LENGTH)
    .default('')
    .refine((p) => p === '' || (p.endsWith('/') && !p.startsWith('/')), { message: 'a prefix is "" or ends with "/" (and does not start with "/")' }),
  /** true: the stack creates (and owns) the bucket; false: an existing bucket, imported by name. */
  create: z.boolean(),
  /** Versioning of a created bucket. */
  versioned: z.boolean().default(false),
  /** How often the audit Lambda lists the mount: "rate(1 hour)", "rate(30 minutes)", or minutes. */
  auditCadence: Cadence.default('rate(1 hour)'),
});
export type S3MountConfig = z.infer<typeof S3MountConfig>;

const CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

export const FilestoreConfig = z
  .object({
    /** The stack's name. */
    stackName: z.string().regex(/^[A-Za-z][A-Za-z0-9-]{0,127}$/).default('Filestore'),
    /** Optional: pin the stack to an account and region (else env-agnostic; no lookups either way). */
    account: z.string().regex(/^\d{12}$/, 'a 12-digit AWS account id').optional(),
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'an AWS region such as eu-west-1').optional(),
    /** Explicit AZs of the VPC (at least 2: RDS and ElastiCache Multi-AZ), e.g. ["eu-west-1a", "eu-west-1b"]. */
    availabilityZones: z.array(z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d[a-z]$/, 'an availability zone name such as eu-west-1a')).min(2).max(3),
    vpcCidr: z.string().regex(CIDR, 'an IPv4 CIDR such as 10.40.0.0/16').default('10.40.0.0/16'),
    /** The on-prem network (VPN / Direct Connect) whose agents reach the RDS Proxy (IAM auth) and Redis; never the instance. */
    onPremCidr: z.string().regex(CIDR, 'an IPv4 CIDR such as 192.168.0.0/16').optional(),
    s3Mounts: z.array(S3MountConfig).default([]),
    database: z
      .object({
        instanceType: z.string().regex(/^[a-z0-9]+\.[a-z0-9]+$/, 'an instance type without the "db." prefix, such as t4g.medium').default('t4g.medium'),
        allocatedStorageGiB: z.number().int().min(20).max(65_536).default(50),
        maxAllocatedStorageGiB: z.number().int().min(20).max(65_536).default(200),
        backupRetentionDays: z.number().int().min(1).max(35).default(7),
        /** Days between rotations of the master password (the proxy follows; agents and Lambdas use IAM auth: nothing to restart). */
        rotationDays: z.number().int().min(1).max(365).default(30),
      })
      .default({ instanceType: 't4g.medium', allocatedStorageGiB: 50, maxAllocatedStorageGiB: 200, backupRetentionDays: 7, rotationDays: 30 }),
    redis: z
      .object({
        nodeType: z.string().regex(/^cache\.[a-z0-9]+\.[a-z0-9]+$/, 'a cache node type such as cache.t4g.small').default('cache.t4g.small'),
        /** Primary + replicas (2 or more: automatic failover across AZs). */
        nodes: z.number().int().min(2).max(6).default(2),
      })
      .default({ nodeType: 'cache.t4g.small', nodes: 2 }),
    api: z
      .object({
        throttleRateLimit: z.number().int().min(1).default(100),
        throttleBurstLimit: z.number().int().min(1).default(200),
      })
      .default({ throttleRateLimit: 100, throttleBurstLimit: 200 }),
    /** Upper bound of concurrent reconcile Lambdas (each run holds up to three database connections); 2-1000. */
    reconcileMaxConcurrency: z.number().int().min(2).max(1000).default(5),
    /** Alarms are published to an SNS topic; this address is subscribed to it when set. */
    alarmEmail: z.string().email().optional(),
    /** Days the Lambdas', the API's and the VPC flow logs are kept. */
    logRetentionDays: z.union([z.literal(7), z.literal(14), z.literal(30), z.literal(60), z.literal(90), z.literal(180), z.literal(365)]).default(30),
    s3MissingGraceMs: z.number().int().min(0).max(600_000).default(2000),
    maxMissingRatio: z.number().min(0).max(1).default(0.5),
  })
  .strict()
  .superRefine((c, ctx) => {
    const keys = new Set<string>();
    c.s3Mounts.forEach((m, i) => {
      if (keys.has(m.key)) ctx.addIssue({ code: 'custom', path: ['s3Mounts', i, 'key'], message: `mount key "${m.key}" appears twice` });
      keys.add(m.key);
    });
    const byBucket = new Map<string, S3MountConfig[]>();
    for (const m of c.s3Mounts) byBucket.set(m.bucket, [...(byBucket.get(m.bucket) ?? []), m]);
    for (const [bucket, mounts] of byBucket) {
      if (new Set(mounts.map((m) => m.create)).size > 1) ctx.addIssue({ code: 'custom', path: ['s3Mounts'], message: `bucket "${bucket}" is both created and imported: give its mounts the same "create"` });
      if (new Set(mounts.map((m) => m.prefix)).size < mounts.length) ctx.addIssue({ code: 'custom', path: ['s3Mounts'], message: `bucket "${bucket}" has two mounts of the same prefix` });
    }
    if (c.region) {
      c.availabilityZones.forEach((az, i) => {
        if (!az.startsWith(c.region as string)) ctx.addIssue({ code: 'custom', path: ['availabilityZones', i], message: `${az} is not in region ${c.region}` });
      });
    }
    if (c.database.maxAllocatedStorageGiB < c.database.allocatedStorageGiB) {
      ctx.addIssue({ code: 'custom', path: ['database', 'maxAllocatedStorageGiB'], message: 'must be at least allocatedStorageGiB' });
    }
  });
export type FilestoreConfig = z.infer<typeof FilestoreConfig>;

/** Thrown for an unreadable or invalid configuration: the message names the file and every problem. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export function parseConfig(raw: unknown, source = 'the configuration'): FilestoreConfig {
  const parsed = FilestoreConfig.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `  - ${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`);
    throw new ConfigError(`invalid Filestore CDK configuration in ${source}:\n${problems.join('\n')}`);
  }
  return parsed.data;
}

export function loadConfig(file: string): FilestoreConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read the Filestore CDK configuration ${file}: ${(e as Error).message} (pass another with -c config=<path>)`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`the Filestore CDK configuration ${file} is not JSON: ${(e as Error).message}`);
  }
  return parseConfig(raw, file);
}

/** What the api and migrate functions receive as FILESTORE_S3_MOUNTS: the configured S3 mounts. */
export function s3MountsVariable(config: FilestoreConfig): string {
  return JSON.stringify(config.s3Mounts.map((m) => ({ key: m.key, bucket: m.bucket, prefix: m.prefix })));
}
