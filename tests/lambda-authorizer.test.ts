/**
 * The HTTP API's Lambda authorizer (lambdas/authorizer.ts), called as API Gateway calls it
 * (payload 2.0, simple responses). The token hashes come from FILESTORE_API_TOKENS (local runs)
 * or from Secrets Manager, here a local HTTP server speaking Secrets Manager's JSON protocol
 * that the real SDK client reaches through AWS_ENDPOINT_URL_SECRETS_MANAGER.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { APIGatewayRequestAuthorizerEventV2 } from 'aws-lambda';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { handler } from '../lambdas/authorizer.ts';
import { resetContainerSecrets } from '../lambdas/support/secrets.ts';
import { hashToken, type Scope } from '../shared/api/auth.ts';
import { lambdaContext } from './support/lambda-context.ts';

const fixture = (name: string): APIGatewayRequestAuthorizerEventV2 =>
  JSON.parse(readFileSync(new URL(`./fixtures/lambda/${name}.json`, import.meta.url), 'utf8')) as APIGatewayRequestAuthorizerEventV2;

/** The fixture request with this Authorization header (API Gateway lower-cases header names). */
function request(authorization: string): APIGatewayRequestAuthorizerEventV2 {
  const e = fixture('authorizer-request');
  return { ...e, identitySource: [authorization], headers: { ...e.headers, authorization } };
}

const token = () => `fs_${randomBytes(16).toString('hex')}`;
const entry = (name: string, t: string, scopes: Scope[]) => ({ name, sha256: hashToken(t), scopes });

const saved = { ...process.env };
afterEach(() => {
  vi.useRealTimers();
  resetContainerSecrets();
  process.env = { ...saved };
  delete process.env.FILESTORE_API_TOKENS;
  delete process.env.FILESTORE_API_TOKENS_SECRET_ARN;
});

describe('the authorizer with FILESTORE_API_TOKENS', () => {
  const writer = token();
  const admin = token();
  const reader = token();
  const withTokens = () => {
    process.env.FILESTORE_API_TOKENS = JSON.stringify([entry('ci', writer, ['filestore:write']), entry('ops', admin, ['filestore:admin']), entry('viewer', reader, ['filestore:read'])]);
  };

  it('a known token is allowed with its name and every scope it has, implied ones included', async () => {
    withTokens();
    expect(await handler(request(`Bearer ${writer}`), lambdaContext())).toEqual({ isAuthorized: true, context: { principal: 'ci', scopes: 'read write' } });
    expect(await handler(request(`Bearer ${admin}`), lambdaContext())).toEqual({ isAuthorized: true, context: { principal: 'ops', scopes: 'read write admin' } });
    expect(await handler(request(`bearer ${reader}`), lambdaContext())).toEqual({ isAuthorized: true, context: { principal: 'viewer', scopes: 'read' } });
  });

  it('an unknown, malformed or missing token is denied, not an error', async () => {
    withTokens();
    for (const authorization of [`Bearer ${token()}`, 'Bearer', `Basic ${Buffer.from('u:p').toString('base64')}`, writer, '']) {
      expect(await handler(request(authorization), lambdaContext())).toEqual({ isAuthorized: false });
    }
    expect(await handler(fixture('authorizer-request-no-header'), lambdaContext())).toEqual({ isAuthorized: false });
  });

  it('without any token source the invocation fails naming FILESTORE_API_TOKENS_SECRET_ARN (API Gateway answers 500 and caches nothing)', async () => {
    await expect(handler(request(`Bearer ${writer}`), lambdaContext())).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_API_TOKENS_SECRET_ARN') });
  });
});

describe('the authorizer with the hashes in Secrets Manager', () => {
  const arn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:filestore/api-tokens-AbCdEf';
  let secret = '';
  /** The secret is deleted (or the role may not read it): ResourceNotFoundException. */
  let missing = false;
  const calls: { target: string | undefined; secretId: unknown }[] = [];
  let server: http.Server;
  let endpoint: string;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString('utf8')));
      req.on('end', () => {
        const target = req.headers['x-amz-target'] as string | undefined;
        const { SecretId } = JSON.parse(body || '{}') as { SecretId?: string };
        calls.push({ target, secretId: SecretId });
        res.setHeader('content-type', 'application/x-amz-json-1.1');
        if (target !== 'secretsmanager.GetSecretValue' || SecretId !== arn || missing) {
          res.writeHead(400).end(JSON.stringify({ __type: 'ResourceNotFoundException', message: "Secrets Manager can't find the specified secret." }));
          return;
        }
        res.writeHead(200).end(JSON.stringify({ ARN: arn, Name: 'filestore/api-tokens', SecretString: secret, VersionId: 'v1', VersionStages: ['AWSCURRENT'], CreatedDate: 1_767_225_600 }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const deployed = (secretArn = arn) =>
    Object.assign(process.env, {
      FILESTORE_API_TOKENS_SECRET_ARN: secretArn,
      AWS_ENDPOINT_URL_SECRETS_MANAGER: endpoint,
      AWS_REGION: 'eu-west-1',
      AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
    });

  it('the secret is read once per TTL: a rotation shows after it, not before', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const before = token();
    const after = token();
    secret = JSON.stringify([entry('ci', before, ['filestore:write'])]);
    calls.length = 0;
    deployed();
    for (let i = 0; i < 3; i++) expect(await handler(request(`Bearer ${before}`), lambdaContext())).toMatchObject({ isAuthorized: true, context: { principal: 'ci' } });
    expect(calls).toEqual([{ target: 'secretsmanager.GetSecretValue', secretId: arn }]);

    secret = JSON.stringify([entry('ci', after, ['filestore:write'])]); // rotated
    expect(await handler(request(`Bearer ${before}`), lambdaContext())).toMatchObject({ isAuthorized: true });
    expect(await handler(request(`Bearer ${after}`), lambdaContext())).toEqual({ isAuthorized: false });
    expect(calls).toHaveLength(1);

    vi.setSystemTime(Date.now() + 301_000); // past FILESTORE_SECRETS_TTL_SECONDS (300)
    expect(await handler(request(`Bearer ${after}`), lambdaContext())).toMatchObject({ isAuthorized: true });
    expect(await handler(request(`Bearer ${before}`), lambdaContext())).toEqual({ isAuthorized: false });
    expect(calls).toHaveLength(2);
  });

  it('a secret that cannot be read fails the invocation naming the secret; the next invocation reads again', async () => {
    const valid = token();
    secret = JSON.stringify([entry('ci', valid, ['filestore:read'])]);
    calls.length = 0;
    deployed();
    missing = true;
    await expect(handler(request(`Bearer ${valid}`), lambdaContext())).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining(arn) });
    missing = false;
    expect(await handler(request(`Bearer ${valid}`), lambdaContext())).toMatchObject({ isAuthorized: true });
    expect(calls).toHaveLength(2);
  });

  it('a secret that is not the tokens’ JSON fails with CONFIG_ERROR, never echoing it', async () => {
    secret = 'fs_not-json-but-a-token';
    deployed();
    const err = (await handler(request(`Bearer ${token()}`), lambdaContext()).then(
      () => null,
      (e: unknown) => e,
    )) as (Error & { code: string }) | null;
    expect(err).toMatchObject({ code: 'CONFIG_ERROR' });
    expect(err?.message).not.toContain('fs_not-json');
  });
});
