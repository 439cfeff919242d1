import { z } from 'zod';
import { FilestoreError } from '../errors.ts';

/**
 * How a process reaches PostgreSQL, from its environment: the same variables and the same rules
 * for every runtime (the agent, `filestore start`/`migrate`/`reconcile-worker` through
 * shared/config.ts, the Lambdas through lambdas/support/config.ts).
 *
 * Either DATABASE_URL (postgres://… with its password), or RDS Proxy with IAM authentication:
 * FILESTORE_DB_HOST, FILESTORE_DB_PORT (5432), FILESTORE_DB_NAME, FILESTORE_DB_USER,
 * FILESTORE_DB_IAM_AUTH=true and optionally FILESTORE_DB_TLS_CA. Under IAM auth each new
 * connection's password is a token signed with the AWS SDK's default credentials (a Lambda's
 * role; on-prem: IAM Roles Anywhere through a profile's credential_process, an instance
 * profile, AWS_* variables or a profile) in AWS_REGION, over TLS (shared/db/iam-auth.ts).
 */

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

/** The variables' schemas, to be spread into a runtime's own environment schema. */
export const DATABASE_ENV = {
  /** postgres://… with its password; or the FILESTORE_DB_* variables below. */
  DATABASE_URL: z.string().url().optional(),
  FILESTORE_DB_HOST: z.string().min(1).optional(),
  /** Default 5432. */
  FILESTORE_DB_PORT: z.coerce.number().int().min(1).max(65_535).optional(),
  FILESTORE_DB_NAME: z.string().min(1).optional(),
  FILESTORE_DB_USER: z.string().min(1).optional(),
  /** RDS Proxy IAM authentication: each new connection's password is a signed token (TLS required). */
  FILESTORE_DB_IAM_AUTH: bool.default(false),
  /** A PEM file of the CA that signs the database's certificate (default: Node's trusted CAs, which include Amazon's). */
  FILESTORE_DB_TLS_CA: z.string().min(1).optional(),
  /** The region the tokens are signed for (the proxy's): the AWS SDK's own variable, which Lambda sets. */
  AWS_REGION: z.string().min(1).optional(),
};

const DatabaseEnvSchema = z.object(DATABASE_ENV);
export type DatabaseEnv = z.infer<typeof DatabaseEnvSchema>;

/** How a process reaches PostgreSQL with IAM auth (RDS Proxy): the signer's inputs. */
export interface IamDatabaseAuth {
  hostname: string;
  port: number;
  username: string;
  region: string;
  /** PEM of the CA to trust instead of Node's default ones. */
  tlsCaPath: string | undefined;
}

/** How a process reaches PostgreSQL. */
export interface DatabaseConfig {
  /** postgres://… (without a password under IAM auth: `iamAuth` makes each connection's). */
  databaseUrl: string;
  iamAuth: IamDatabaseAuth | null;
}

/** How to set either way, for the messages. */
export const DATABASE_CHOICE = 'DATABASE_URL, or FILESTORE_DB_HOST, FILESTORE_DB_NAME, FILESTORE_DB_USER (FILESTORE_DB_PORT, FILESTORE_DB_TLS_CA) with FILESTORE_DB_IAM_AUTH=true';

/**
 * The database of a validated environment: DATABASE_URL, or the FILESTORE_DB_* variables with
 * IAM auth; null when neither is set (the caller decides: an error, an embedded database, a
 * default URL). A mix of both, or half of the second, is CONFIG_ERROR naming the variables.
 */
export function resolveDatabase(e: DatabaseEnv): DatabaseConfig | null {
  const iamVariables = {
    FILESTORE_DB_HOST: e.FILESTORE_DB_HOST,
    FILESTORE_DB_PORT: e.FILESTORE_DB_PORT,
    FILESTORE_DB_NAME: e.FILESTORE_DB_NAME,
    FILESTORE_DB_USER: e.FILESTORE_DB_USER,
    FILESTORE_DB_IAM_AUTH: e.FILESTORE_DB_IAM_AUTH ? true : undefined,
    FILESTORE_DB_TLS_CA: e.FILESTORE_DB_TLS_CA,
  };
  const set = Object.entries(iamVariables).filter(([, v]) => v !== undefined).map(([k]) => k);
  if (e.DATABASE_URL) {
    if (set.length > 0) {
      throw new FilestoreError(
        'CONFIG_ERROR',
        `DATABASE_URL and ${set.join(', ')} are both set: reach PostgreSQL one way, DATABASE_URL (its password in the URL) or the FILESTORE_DB_* variables with FILESTORE_DB_IAM_AUTH=true (RDS Proxy, IAM auth); unset the other`,
      );
    }
    return { databaseUrl: e.DATABASE_URL, iamAuth: null };
  }
  if (set.length === 0) return null;
  if (!e.FILESTORE_DB_IAM_AUTH) {
    throw new FilestoreError('CONFIG_ERROR', `${set.join(', ')} ${set.length > 1 ? 'are' : 'is'} set without FILESTORE_DB_IAM_AUTH=true: the FILESTORE_DB_* variables are for RDS Proxy with IAM auth; otherwise set DATABASE_URL`);
  }
  const parts = { FILESTORE_DB_HOST: e.FILESTORE_DB_HOST, FILESTORE_DB_NAME: e.FILESTORE_DB_NAME, FILESTORE_DB_USER: e.FILESTORE_DB_USER };
  const missing = Object.entries(parts).filter(([, v]) => v === undefined).map(([k]) => k);
  if (missing.length > 0) throw new FilestoreError('CONFIG_ERROR', `FILESTORE_DB_IAM_AUTH=true needs ${missing.join(', ')} (the proxy's endpoint, the database and its user)`);
  if (!e.AWS_REGION) {
    throw new FilestoreError('CONFIG_ERROR', 'FILESTORE_DB_IAM_AUTH=true needs AWS_REGION, the region of the RDS Proxy the tokens are signed for (Lambda sets it itself; elsewhere set it)');
  }
  const iamAuth: IamDatabaseAuth = {
    hostname: e.FILESTORE_DB_HOST as string,
    port: e.FILESTORE_DB_PORT ?? 5432,
    username: e.FILESTORE_DB_USER as string,
    region: e.AWS_REGION,
    tlsCaPath: e.FILESTORE_DB_TLS_CA,
  };
  const u = new URL('postgres://placeholder');
  u.hostname = iamAuth.hostname;
  u.port = String(iamAuth.port);
  u.username = encodeURIComponent(iamAuth.username);
  u.pathname = `/${encodeURIComponent(e.FILESTORE_DB_NAME as string)}`;
  return { databaseUrl: u.toString(), iamAuth };
}
