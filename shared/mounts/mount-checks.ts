import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import { listMounts } from '../catalogue/mounts.ts';
import type { Mount } from '../catalogue/types.ts';
import pg from 'pg';
import { clientConfigOf, type Pool } from '../db/pool.ts';
import { lockKey } from '../catalogue/locks.ts';
import type { S3Defaults } from '../backends/registry.ts';
import type { ProcessIdentity } from '../orchestrator/ownership.ts';
import { FilestoreError } from '../errors.ts';
import { realPathOfNearest } from './mount-root.ts';

/**
 * What POST /v1/mounts checks before it registers a mount: the safety rules always
 * (an absolute root, not a filesystem root or /proc — mount-root.ts — and no overlap with
 * another local mount of the same agent: one root inside another, or equal, after realpath),
 * and, unless the caller passed `check: false` (`--no-check`), that the storage can be reached:
 * a local root exists, is a directory and is usable by the server's user; an S3 bucket/prefix
 * can be listed with the server's credentials. A local root is looked at only by a process on
 * its host: the owning agent's, or one that runs every mount; elsewhere only the rules that
 * need no disk are applied.
 */

/** True when this process runs the local mounts of `agentId` itself, so it sees their disk. */
export function seesDiskOf(identity: ProcessIdentity, inline: boolean, agentId: string | null): boolean {
  if (identity === undefined || inline) return true;
  if (identity === null) return false;
  return agentId === null || agentId === identity;
}

const inside = (inner: string, outer: string) => inner === outer || inner.startsWith(outer.endsWith('/') ? outer : `${outer}/`);

/**
 * Whether two local mounts' roots are paths on one host: the same agent's, or either assigned to
 * no agent (every agent runs an unassigned local mount: shared/orchestrator/ownership.ts).
 */
const sameHost = (a: string | null, b: string | null) => a === null || b === null || a === b;

/** MOUNT_OVERLAP when `root` is, holds or sits in the root of another local mount on the same host (same agent, or either unassigned). */
export async function assertNoOverlap(pool: Pool, root: string, agentId: string | null, onHost: boolean, exceptId?: string): Promise<void> {
  const spellings = async (p: string) => [...new Set([path.resolve(p), ...(onHost ? [await realPathOfNearest(path.resolve(p))] : [])])];
  const mine = await spellings(root);
  const others = (await listMounts(pool)).filter((m: Mount) => m.kind === 'local' && m.rootPath !== null && m.id !== exceptId && sameHost(m.agentId ?? null, agentId));
  for (const m of others) {
    const theirs = await spellings(m.rootPath as string);
    for (const a of mine) {
      for (const b of theirs) {
        if (!inside(a, b) && !inside(b, a)) continue;
        const how = a === b ? 'is the root of' : inside(a, b) ? 'is inside the root of' : 'holds the root of';
        throw new FilestoreError(
          'MOUNT_OVERLAP',
          `rootPath ${root} ${how} mount "${m.key}" (${m.rootPath}${b !== m.rootPath ? `, really ${b}` : ''}): local mounts run on one host (one agent's, or assigned to none) must not overlap, or their files (and the inner mount's .filestore-staging) would be catalogued twice`,
          { mount: m.key, rootPath: m.rootPath },
        );
      }
    }
  }
}

/**
 * Local mounts are registered one at a time: the overlap check and the insert run under one
 * PostgreSQL advisory lock, so two registrations at the same moment (two admins, two API
 * containers) cannot both pass the check with roots that overlap. The lock is held on a
 * connection of its own, beside the pool (the API Lambda's pool has a single connection, which
 * the work itself needs), and ends with it.
 */
export async function withLocalMountRegistration<T>(pool: Pool, work: () => Promise<T>): Promise<T> {
  const client = new pg.Client({ ...clientConfigOf(pool), application_name: 'filestore-mount-registration' });
  client.on('error', () => {}); // a dropped lock connection fails the query below, or ends the lock with it
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1::bigint)', [LOCAL_MOUNT_REGISTRATION.toString()]);
    return await work();
  } finally {
    await client.end().catch(() => {}); // the session's lock ends with it
  }
}

const LOCAL_MOUNT_REGISTRATION = lockKey('local-mount-registration');

/** The root can be used: it exists, is a directory, and the server's user may list (and, rw, write) it. */
export async function assertLocalRootReachable(root: string, accessMode: 'rw' | 'ro'): Promise<void> {
  const real = await realPathOfNearest(root);
  let st;
  try {
    st = await stat(real);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new FilestoreError('MOUNT_ROOT_NOT_FOUND', `rootPath ${root} does not exist on this host; create the directory first (or pass --no-check, API: "check": false, if it will exist before the mount is used)`, { rootPath: root });
    }
    throw unreachable(root, code ?? 'unknown');
  }
  if (!st.isDirectory()) throw new FilestoreError('MOUNT_ROOT_NOT_DIRECTORY', `rootPath ${root} is not a directory`, { rootPath: root });
  try {
    await access(real, constants.R_OK | constants.X_OK | (accessMode === 'rw' ? constants.W_OK : 0));
  } catch (err) {
    throw unreachable(root, (err as NodeJS.ErrnoException).code ?? 'unknown', accessMode);
  }
}

const unreachable = (root: string, cause: string, accessMode?: 'rw' | 'ro') =>
  new FilestoreError(
    'MOUNT_UNREACHABLE',
    `rootPath ${root} cannot be used by the server's user (${cause})${accessMode === 'rw' ? ': it must be readable and writable (or add the mount read-only)' : ''}`,
    { rootPath: root, cause },
  );

/** The bucket/prefix can be listed with the credentials the server would use (one ListObjectsV2, no retries). */
export async function assertS3Reachable(
  defaults: S3Defaults,
  m: { bucket: string; prefix: string; region?: string | undefined; endpoint?: string | undefined },
): Promise<void> {
  const [{ createS3Client }, { ListObjectsV2Command }, { s3ErrorName }] = await Promise.all([
    import('../backends/s3/client.ts'),
    import('@aws-sdk/client-s3'),
    import('../backends/s3/errors.ts'),
  ]);
  const client = createS3Client({
    region: m.region ?? defaults.region,
    endpoint: m.endpoint ?? defaults.endpoint,
    credentials: defaults.credentials,
    maxAttempts: 1,
  });
  const where = `s3://${m.bucket}/${m.prefix}`;
  try {
    await client.send(new ListObjectsV2Command({ Bucket: m.bucket, Prefix: m.prefix, MaxKeys: 1 }));
  } catch (err) {
    const name = s3ErrorName(err);
    const why =
      name === 'CredentialsProviderError' || /credential/i.test(String((err as Error)?.message))
        ? 'the server has no S3 credentials (configure AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role)'
        : name === 'NoSuchBucket'
          ? 'the bucket does not exist'
          : name === 'AccessDenied' || name === 'Forbidden' || name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch'
            ? `the server's credentials may not list it (${name})`
            : `it could not be listed (${name})`;
    throw new FilestoreError('MOUNT_UNREACHABLE', `${where} cannot be reached: ${why}; pass --no-check (API: "check": false) to register it anyway`, { bucket: m.bucket, prefix: m.prefix, cause: name });
  } finally {
    client.destroy();
  }
}
