import type { PoolClient, Queryable } from '../db/pool.ts';
import { inTransaction } from '../db/pool.ts';
import { FilestoreError } from '../errors.ts';
import { createMount, listMounts } from './mounts.ts';
import { MAX_S3_PREFIX_LENGTH, MOUNT_KEY_PATTERN, S3_BUCKET_PATTERN } from './mount-names.ts';
import type { Mount } from './types.ts';

export { MAX_S3_PREFIX_LENGTH, MOUNT_KEY_PATTERN, S3_BUCKET_PATTERN };

/** An S3 mount's prefix as stored: no leading `/`; empty (the whole bucket) or ending in `/`. */
export function normaliseS3Prefix(prefix: string | undefined): string {
  const p = (prefix ?? '').replace(/^\/+/, '');
  return p === '' || p.endsWith('/') ? p : `${p}/`;
}

export interface NewS3Mount {
  key: string;
  bucket: string;
  prefix?: string | undefined;
  region?: string | undefined;
  endpoint?: string | undefined;
  accessMode?: 'rw' | 'ro' | undefined;
}

/**
 * Registers an S3 mount: the one way both POST /v1/mounts and the deploy (the migrate Lambda)
 * create one. The bucket name is checked, then, with `configured`, that the mount is one of
 * them (assertConfiguredS3Mount), and the prefix is stored normalised (normaliseS3Prefix).
 */
export async function createS3Mount(q: Queryable, m: NewS3Mount, o: { configured?: readonly ConfiguredS3Mount[] | undefined } = {}): Promise<Mount> {
  if (!S3_BUCKET_PATTERN.test(m.bucket)) throw new FilestoreError('VALIDATION_ERROR', 'bucket: not a valid S3 bucket name');
  if (o.configured) assertConfiguredS3Mount(o.configured, m);
  return createMount(q, { ...m, kind: 's3', prefix: normaliseS3Prefix(m.prefix) });
}

/** One S3 mount of a deployment's configuration (FILESTORE_S3_MOUNTS), its prefix normalised. */
export interface ConfiguredS3Mount {
  key: string;
  bucket: string;
  prefix: string;
}

/** Where the configuration of a stack's S3 mounts lives, for messages. */
export const S3_MOUNTS_CONFIGURATION = "the stack's configuration (s3Mounts in cdk/config.json)";

const location = (bucket: string, prefix: string) => `s3://${bucket}/${prefix}`;

/**
 * Refuses an S3 mount that a deployment's configured list does not hold (MOUNT_NOT_CONFIGURED,
 * 403): in AWS the Lambdas' IAM role reaches only the buckets of the stack's configuration, so
 * a mount elsewhere would be registered and never readable. The mount is judged by bucket and
 * normalised prefix; one with an endpoint of its own is never a configured one (the stack's
 * mounts are on the Lambdas' S3).
 */
export function assertConfiguredS3Mount(configured: readonly ConfiguredS3Mount[], m: { bucket: string; prefix?: string | undefined; endpoint?: string | null | undefined }): void {
  const prefix = normaliseS3Prefix(m.prefix);
  const where = location(m.bucket, prefix);
  const fix = `add it to ${S3_MOUNTS_CONFIGURATION} and redeploy: the deploy registers it`;
  if (m.endpoint !== undefined && m.endpoint !== null) {
    throw new FilestoreError(
      'MOUNT_NOT_CONFIGURED',
      `${where} names an endpoint of its own (${m.endpoint}): this deployment's S3 mounts are on its own S3, the buckets listed in ${S3_MOUNTS_CONFIGURATION}, which its Lambdas' IAM role can reach; leave endpoint out, and if the bucket is not listed, ${fix}`,
      { bucket: m.bucket, prefix, endpoint: m.endpoint },
    );
  }
  if (configured.some((c) => c.bucket === m.bucket && c.prefix === prefix)) return;
  throw new FilestoreError(
    'MOUNT_NOT_CONFIGURED',
    `${where} is not one of this deployment's S3 mounts: its Lambdas' IAM role reaches only the buckets and prefixes listed in ${S3_MOUNTS_CONFIGURATION}, so they could not read it; ${fix}`,
    { bucket: m.bucket, prefix },
  );
}

/** What registering a configuration's mounts did, by mount key. */
export interface ConfiguredMountsReport {
  created: string[];
  unchanged: string[];
  /** S3 mounts of the catalogue the configuration does not list: left alone (never deleted). */
  unlisted: string[];
}

function describe(m: Mount): string {
  if (m.kind === 'local') return `a local mount of ${m.rootPath ?? '?'}`;
  return `${location(m.bucket ?? '?', m.prefix)}${m.endpoint ? ` at endpoint ${m.endpoint}` : ''}`;
}

const holds = (m: Mount, c: ConfiguredS3Mount) => m.kind === 's3' && m.bucket === c.bucket && m.prefix === c.prefix && m.endpoint === null;

/**
 * Makes the catalogue hold a deployment's configured S3 mounts (the migrate Lambda, after the
 * migrations), in one transaction: a missing mount is created as POST /v1/mounts creates it
 * (createS3Mount); one already there with the same bucket and prefix is left alone. A key the
 * catalogue holds with other storage (another bucket, prefix or kind, or an endpoint of its
 * own) fails the whole registration with CONFIG_ERROR naming each, and nothing is created: a
 * deploy never moves a mount to other storage. Mounts the list leaves out stay as they are.
 */
export async function registerConfiguredS3Mounts(client: PoolClient, configured: readonly ConfiguredS3Mount[]): Promise<ConfiguredMountsReport> {
  return inTransaction(client, async () => {
    // Two deploys at once register one after the other, each seeing the other's mounts.
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('filestore:configured-s3-mounts'))`);
    const existing = new Map((await listMounts(client)).map((m) => [m.key, m]));
    const conflicts = configured.flatMap((c) => {
      const m = existing.get(c.key);
      return m && !holds(m, c) ? [{ key: c.key, says: `mount "${c.key}": the catalogue holds ${describe(m)}, the configuration says ${location(c.bucket, c.prefix)}` }] : [];
    });
    if (conflicts.length > 0) {
      throw new FilestoreError(
        'CONFIG_ERROR',
        `FILESTORE_S3_MOUNTS does not match the catalogue (${conflicts.map((c) => c.says).join('; ')}); a deploy does not move a mount to other storage, so nothing was registered: ` +
          `give the configured mount another key, or put back what the catalogue holds, in ${S3_MOUNTS_CONFIGURATION}`,
        { conflicts: conflicts.map((c) => c.key) },
      );
    }
    const report: ConfiguredMountsReport = { created: [], unchanged: [], unlisted: [] };
    for (const c of configured) {
      if (existing.has(c.key)) {
        report.unchanged.push(c.key);
      } else {
        await createS3Mount(client, c);
        report.created.push(c.key);
      }
    }
    const listed = new Set(configured.map((c) => c.key));
    report.unlisted = [...existing.values()].filter((m) => m.kind === 's3' && !listed.has(m.key)).map((m) => m.key);
    return report;
  });
}
