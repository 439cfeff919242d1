import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { FilestoreError } from '../../shared/index.ts';

/** Where a secret's text comes from (Secrets Manager by default; tests may pass their own). */
export type SecretSource = (secretId: string) => Promise<string>;

/**
 * Secrets Manager GetSecretValue (the endpoint follows the SDK's settings, such as
 * AWS_ENDPOINT_URL_SECRETS_MANAGER). Binary secrets are refused: every secret of Filestore is text.
 * Errors name the secret, never its value.
 */
export function secretsManagerSource(client: SecretsManagerClient = new SecretsManagerClient({})): SecretSource {
  return async (secretId) => {
    let out;
    try {
      out = await client.send(new GetSecretValueCommand({ SecretId: secretId }));
    } catch (err) {
      const name = err instanceof Error ? err.name : 'Error';
      throw new FilestoreError('UNAVAILABLE', `secret ${secretId} could not be read from Secrets Manager (${name}): check the ARN and the function's secretsmanager:GetSecretValue permission`, {
        retryAfterSeconds: 1,
        resource: 'secrets',
      });
    }
    if (typeof out.SecretString !== 'string') {
      throw new FilestoreError('CONFIG_ERROR', `secret ${secretId} holds no text (SecretString): store it as a string`);
    }
    return out.SecretString;
  };
}

/**
 * Secrets cached per container for `ttlMs`: one GetSecretValue per secret and TTL, not one per
 * invocation (Secrets Manager bills and throttles per call), while a rotation shows within the
 * TTL. Concurrent reads of one secret share one request; a failed read is not cached.
 */
export class SecretCache {
  private readonly entries = new Map<string, { value: Promise<string>; expires: number }>();
  private source: SecretSource | null;

  constructor(
    private readonly ttlMs: number,
    source?: SecretSource,
    private readonly now: () => number = Date.now,
  ) {
    this.source = source ?? null;
  }

  get(secretId: string): Promise<string> {
    const hit = this.entries.get(secretId);
    if (hit && hit.expires > this.now()) return hit.value;
    // The client is made at the first read: importing this module opens nothing.
    this.source ??= secretsManagerSource();
    const value = this.source(secretId);
    this.entries.set(secretId, { value, expires: this.now() + this.ttlMs });
    value.catch(() => {
      if (this.entries.get(secretId)?.value === value) this.entries.delete(secretId);
    });
    return value;
  }

  clear(): void {
    this.entries.clear();
  }
}

let containerCache: SecretCache | null = null;

/** The container's secret cache (its TTL: the first caller's, FILESTORE_SECRETS_TTL_SECONDS). */
export function containerSecrets(ttlMs: number): SecretCache {
  return (containerCache ??= new SecretCache(ttlMs));
}

/** Tests: forget the container's cached secrets (and use `source` for the next reads, when given). */
export function resetContainerSecrets(ttlMs = 300_000, source?: SecretSource): void {
  containerCache = source ? new SecretCache(ttlMs, source) : null;
}
