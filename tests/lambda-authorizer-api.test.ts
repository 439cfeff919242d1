/**
 * The authorizer and the API Lambda together, as API Gateway chains them: the authorizer's
 * answer for a bearer token becomes the API event's `requestContext.authorizer.lambda`, and
 * the API Lambda checks each route's scope against it. What one Lambda writes, the other must
 * read the same way (names and the form of the scopes), or every deployed request fails.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { APIGatewayProxyStructuredResultV2, APIGatewayRequestAuthorizerEventV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handler as api } from '../lambdas/api.ts';
import { handler as authorizer } from '../lambdas/authorizer.ts';
import { closeLambdaCore, lambdaCore } from '../lambdas/support/core.ts';
import { resetContainerSecrets } from '../lambdas/support/secrets.ts';
import { hashToken } from '../shared/api/auth.ts';
import type { ApiGatewayEvent } from '../shared/api/lambda/adapter.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { createTestMount, stopS3, type TestMount } from './support/filestore.ts';
import { lambdaContext } from './support/lambda-context.ts';
import { TEST_S3_CREDENTIALS } from './support/s3.ts';

const fixture = <T>(name: string): T => JSON.parse(readFileSync(new URL(`./fixtures/lambda/${name}.json`, import.meta.url), 'utf8')) as T;

const saved = { ...process.env };
const tokens = { reader: `fs_${randomBytes(16).toString('hex')}`, writer: `fs_${randomBytes(16).toString('hex')}`, admin: `fs_${randomBytes(16).toString('hex')}` };
let core: Filestore;
let s3: TestMount;

/** What API Gateway does with one request: the authorizer first; allowed, the API Lambda with its context. */
async function through(authorization: string, method: string, rawPath: string, rawQueryString: string, body?: string) {
  const request = fixture<APIGatewayRequestAuthorizerEventV2>('authorizer-request');
  const verdict = (await authorizer({ ...request, identitySource: [authorization], headers: { ...request.headers, authorization } }, lambdaContext())) as {
    isAuthorized: boolean;
    context?: Record<string, string>;
  };
  if (!verdict.isAuthorized) return { statusCode: 401, body: '{"message":"Unauthorized"}' } as const; // API Gateway's own answer
  const e = fixture<ApiGatewayEvent>('apigw-get-file');
  e.requestContext.http.method = method;
  e.rawPath = rawPath;
  e.requestContext.http.path = rawPath;
  e.rawQueryString = rawQueryString;
  e.headers = { ...e.headers, authorization };
  e.requestContext.authorizer = { lambda: verdict.context ?? {} };
  delete e.cookies;
  if (body !== undefined) {
    e.body = Buffer.from(body).toString('base64');
    e.isBase64Encoded = true;
    e.headers['content-type'] = 'application/octet-stream';
  } else {
    delete e.body;
    e.isBase64Encoded = false;
  }
  return (await api(e, lambdaContext())) as APIGatewayProxyStructuredResultV2 & { statusCode: number };
}

beforeAll(async () => {
  Object.assign(process.env, {
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: TEST_REDIS_URL,
    FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET,
    AWS_ACCESS_KEY_ID: TEST_S3_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_S3_CREDENTIALS.secretAccessKey,
    FILESTORE_API_TOKENS: JSON.stringify([
      { name: 'viewer', sha256: hashToken(tokens.reader), scopes: ['filestore:read'] },
      { name: 'ci', sha256: hashToken(tokens.writer), scopes: ['filestore:write'] },
      { name: 'ops', sha256: hashToken(tokens.admin), scopes: ['filestore:admin'] },
    ]),
  });
  resetContainerSecrets();
  core = (await lambdaCore()).core;
  s3 = await createTestMount(core, 's3');
});
afterAll(async () => {
  await closeLambdaCore();
  await stopS3();
  resetContainerSecrets();
  process.env = { ...saved };
});

describe('authorizer → API Lambda', () => {
  it("a writer's token writes, and the journal names its principal", async () => {
    const query = `mountId=${encodeURIComponent(s3.mount.key)}&path=chain.txt`;
    const put = await through(`Bearer ${tokens.writer}`, 'PUT', '/v1/files', query, 'hello');
    expect(put.statusCode, put.body as string).toBe(200);
    const { rows } = await core.pool.query<{ principal: string }>(
      `SELECT principal FROM filestore.journal_entries WHERE mount_id = $1 ORDER BY id DESC LIMIT 1`,
      [s3.mount.id],
    );
    expect(rows[0]?.principal).toBe('ci');
    const get = await through(`Bearer ${tokens.reader}`, 'GET', '/v1/files', query);
    expect(get.statusCode).toBe(200);
    expect(Buffer.from(get.body as string, 'base64').toString()).toBe('hello');
  });

  it("a reader's token is let through by the authorizer but refused by the write route (403), and nothing is written", async () => {
    const query = `mountId=${encodeURIComponent(s3.mount.key)}&path=reader.txt`;
    const put = await through(`Bearer ${tokens.reader}`, 'PUT', '/v1/files', query, 'nope');
    expect(put.statusCode).toBe(403);
    expect((JSON.parse(put.body as string) as { error: { code: string } }).error.code).toBe('FORBIDDEN');
    const stat = await through(`Bearer ${tokens.reader}`, 'GET', '/v1/nodes/by-path', query);
    expect(stat.statusCode).toBe(404);
  });

  it('admin routes need the admin token; an unknown token never reaches the API', async () => {
    // Registering a mount is an admin route: a writer is refused before its (empty) body is
    // looked at; the admin gets as far as validation.
    expect((await through(`Bearer ${tokens.writer}`, 'POST', '/v1/mounts', '')).statusCode).toBe(403);
    const admin = await through(`Bearer ${tokens.admin}`, 'POST', '/v1/mounts', '');
    expect(admin.statusCode).toBe(400);
    expect((JSON.parse(admin.body as string) as { error: { code: string } }).error.code).toBe('VALIDATION_ERROR');
    expect((await through(`Bearer fs_${randomBytes(16).toString('hex')}`, 'GET', '/v1/mounts', '')).statusCode).toBe(401);
  });
});
