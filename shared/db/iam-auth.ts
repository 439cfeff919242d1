import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { FilestoreError } from '../errors.ts';
import type { DatabaseConfig, IamDatabaseAuth } from './database-env.ts';
import { ensureDatabase } from './ensure-database.ts';
import { registerConnectionAuth, type ConnectionAuth } from './pool.ts';

/** Makes an IAM auth token (tests pass their own; the default signs with the AWS SDK's default credentials). */
export type TokenSigner = (auth: IamDatabaseAuth) => () => Promise<string>;

/**
 * RDS's signer with the SDK's default credential chain: a Lambda's role; on-prem AWS_* variables,
 * a profile (AWS_PROFILE; IAM Roles Anywhere's credential_process), an instance profile. The SDK
 * is loaded at the first token, so processes on DATABASE_URL never load it.
 */
const rdsSigner: TokenSigner = (auth) => {
  let signer: Promise<{ getAuthToken(): Promise<string> }> | undefined;
  return async () => {
    signer ??= import('@aws-sdk/rds-signer').then(({ Signer }) => new Signer({ hostname: auth.hostname, port: auth.port, username: auth.username, region: auth.region }));
    return (await signer).getAuthToken();
  };
};

/**
 * The password and TLS of IAM-authenticated connections (RDS Proxy). A token lives 15 minutes
 * while a pooled connection lives longer, so pg asks for a fresh one per new connection
 * (signing is local: no request; credentials the chain fetches are cached and refreshed by the
 * SDK). IAM auth requires TLS; the server's certificate is verified against FILESTORE_DB_TLS_CA
 * when given, else Node's CAs (RDS Proxy's certificate is public).
 */
export function iamConnectionAuth(auth: IamDatabaseAuth, sign: TokenSigner = rdsSigner): ConnectionAuth {
  const ssl: ConnectionOptions = { rejectUnauthorized: true };
  if (auth.tlsCaPath) {
    try {
      ssl.ca = readFileSync(auth.tlsCaPath, 'utf8');
    } catch (err) {
      throw new FilestoreError('CONFIG_ERROR', `FILESTORE_DB_TLS_CA: ${auth.tlsCaPath} could not be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  return { password: sign(auth), ssl };
}

/**
 * Prepares this process's connections to its database: under IAM auth, registers the token
 * function and TLS for the URL, so every pool and client made for it (wireFilestore's pool,
 * migrate's client, the agent's presence pool) uses them. Nothing to do for DATABASE_URL.
 */
export function prepareDatabase(config: DatabaseConfig, sign?: TokenSigner): void {
  if (config.iamAuth) registerConnectionAuth(config.databaseUrl, iamConnectionAuth(config.iamAuth, sign));
}

/**
 * A long-running process's database made ready (the agent, `filestore start`/`migrate`):
 * prepareDatabase, then, on DATABASE_URL, the database created if missing. Under IAM auth the
 * database is the stack's (RDS creates it with the instance) and the proxy only lets its user
 * in to it: nothing is created.
 */
export async function readyDatabase(config: DatabaseConfig, sign?: TokenSigner): Promise<void> {
  prepareDatabase(config, sign);
  if (!config.iamAuth) await ensureDatabase(config.databaseUrl);
}
