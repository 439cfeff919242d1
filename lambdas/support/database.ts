import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Signer } from '@aws-sdk/rds-signer';
import { registerConnectionAuth, type ConnectionAuth } from '../../shared/db/pool.ts';
import { FilestoreError } from '../../shared/errors.ts';
import type { IamDatabaseAuth, LambdaConfig } from './config.ts';

/** Makes an IAM auth token (tests pass their own; the default signs with the function's role). */
export type TokenSigner = (auth: IamDatabaseAuth) => () => Promise<string>;

const rdsSigner: TokenSigner = (auth) => {
  const signer = new Signer({ hostname: auth.hostname, port: auth.port, username: auth.username, region: auth.region });
  return () => signer.getAuthToken();
};

/**
 * The password and TLS of IAM-authenticated connections (RDS Proxy). A token lives 15 minutes
 * while a pooled connection lives longer, so pg asks for a fresh one per new connection
 * (signing is local: no request). IAM auth requires TLS; the server's certificate is verified
 * against FILESTORE_DB_TLS_CA when given, else Node's CAs (RDS Proxy's certificate is public).
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
 * Prepares this container's connections to its database: under IAM auth, registers the token
 * function and TLS for the URL, so every pool and client made for it (wireFilestore's pool,
 * migrate's client) uses them.
 */
export function prepareDatabase(config: Pick<LambdaConfig, 'databaseUrl' | 'iamAuth'>, sign?: TokenSigner): void {
  if (config.iamAuth) registerConnectionAuth(config.databaseUrl, iamConnectionAuth(config.iamAuth, sign));
}
