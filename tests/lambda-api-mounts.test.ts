/**
 * The API Lambda with FILESTORE_S3_MOUNTS (the stack's S3 mounts): POST /v1/mounts registers
 * an S3 mount only when its bucket and prefix are listed (its IAM role reaches no other
 * bucket), else 403 MOUNT_NOT_CONFIGURED naming the stack's configuration; local mounts are
 * unaffected; an API built without the list (the local server, the agent) registers any.
 * Through the handler, with payload 2.0 events as API Gateway sends them.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handler } from '../lambdas/api.ts';
import { closeLambdaCore, lambdaCore } from '../lambdas/support/core.ts';
import { createLambdaApi, type ApiGatewayEvent } from '../shared/api/lambda/adapter.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { lambdaContext } from './support/lambda-context.ts';

const saved = { ...process.env };
const run = randomBytes(4).toString('hex');
const BUCKET = `acme-${run}`;
let core: Filestore;
let dir: string;

function post(json: unknown, scopes = 'read write admin'): ApiGatewayEvent {
  const e = JSON.parse(readFileSync(new URL('./fixtures/lambda/apigw-get-file.json', import.meta.url), 'utf8')) as ApiGatewayEvent;
  e.requestContext.http.method = 'POST';
  e.rawPath = '/v1/mounts';
  e.requestContext.http.path = '/v1/mounts';
  e.rawQueryString = '';
  e.requestContext.authorizer = { lambda: { principal: 'test-admin', scopes } };
  delete e.cookies;
  e.body = JSON.stringify(json);
  e.isBase64Encoded = false;
  e.headers['content-type'] = 'application/json';
  return e;
}

type Result = APIGatewayProxyStructuredResultV2 & { statusCode: number };
const invoke = async (e: ApiGatewayEvent) => (await handler(e, lambdaContext())) as Result;
const bodyOf = (r: Result) => JSON.parse(r.body as string) as { key?: string; prefix?: string; error?: { code: string; message: string; details?: unknown } };
const key = (name: string) => `${name}-${run}`;
const stored = async (k: string) => (await core.pool.query('SELECT key, bucket, prefix FROM filestore.mounts WHERE key = $1', [k])).rows;

beforeAll(async () => {
  Object.assign(process.env, {
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: TEST_REDIS_URL,
    FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET,
    FILESTORE_S3_MOUNTS: JSON.stringify([
      { key: key('media'), bucket: BUCKET, prefix: 'photos/2026' },
      { key: key('whole'), bucket: `${BUCKET}-all` },
    ]),
  });
  core = (await lambdaCore()).core;
  dir = await mkdtemp(path.join(tmpdir(), 'filestore-api-mounts-'));
});
afterAll(async () => {
  await core.pool.query(`DELETE FROM filestore.mounts WHERE key LIKE $1`, [`%-${run}`]).catch(() => {});
  await closeLambdaCore();
  await rm(dir, { recursive: true, force: true });
  process.env = { ...saved };
});

describe('the API Lambda with FILESTORE_S3_MOUNTS', () => {
  it('registers a listed bucket and prefix (as POST normalises it, under any key) and refuses any other: 403 MOUNT_NOT_CONFIGURED naming the configuration, nothing registered', async () => {
    const listed = await invoke(post({ kind: 's3', key: key('media'), bucket: BUCKET, prefix: '/photos/2026' }));
    expect(listed.statusCode, listed.body).toBe(201);
    expect(bodyOf(listed)).toMatchObject({ key: key('media'), prefix: 'photos/2026/' });
    const again = await invoke(post({ kind: 's3', key: key('media-2'), bucket: BUCKET, prefix: 'photos/2026/' }));
    expect(again.statusCode, again.body).toBe(201);
    const whole = await invoke(post({ kind: 's3', key: key('whole'), bucket: `${BUCKET}-all`, accessMode: 'ro' }));
    expect(whole.statusCode, whole.body).toBe(201);
    expect(await stored(key('whole'))).toEqual([{ key: key('whole'), bucket: `${BUCKET}-all`, prefix: '' }]);

    const cases = [
      { kind: 's3', key: key('other'), bucket: `other-${run}` },
      { kind: 's3', key: key('wrong-prefix'), bucket: BUCKET, prefix: 'photos/2025' },
      { kind: 's3', key: key('whole-of-listed'), bucket: BUCKET },
      { kind: 's3', key: key('sub-prefix'), bucket: `${BUCKET}-all`, prefix: 'tenant' },
    ];
    for (const body of cases) {
      const r = await invoke(post(body));
      expect(r.statusCode, r.body).toBe(403);
      const { error } = bodyOf(r);
      expect(error?.code).toBe('MOUNT_NOT_CONFIGURED');
      expect(error?.message).toContain(`s3://${body.bucket}/${body.prefix ? `${body.prefix}/` : ''} is not one of this deployment's S3 mounts`);
      expect(error?.message).toContain('s3Mounts in cdk/config.json');
      expect(error?.message).toContain('redeploy');
      expect(await stored(body.key)).toEqual([]);
    }
    // A listed bucket on an endpoint of its own is other storage too.
    const r = await invoke(post({ kind: 's3', key: key('endpoint'), bucket: BUCKET, prefix: 'photos/2026', endpoint: 'https://s3.example.com' }));
    expect([r.statusCode, bodyOf(r).error?.code]).toEqual([403, 'MOUNT_NOT_CONFIGURED']);
    expect(bodyOf(r).error?.message).toContain('names an endpoint of its own (https://s3.example.com)');
    // Bad input is still a validation error first.
    const bad = await invoke(post({ kind: 's3', key: key('bad'), bucket: 'Not_A_Bucket' }));
    expect([bad.statusCode, bodyOf(bad).error?.code]).toEqual([400, 'VALIDATION_ERROR']);
  });

  it('local mounts are unaffected; an API built without the list (the local server, the agent) registers any S3 mount', async () => {
    const local = await invoke(post({ kind: 'local', key: key('local'), rootPath: dir }));
    expect(local.statusCode, local.body).toBe(201);

    const refused = await invoke(post({ kind: 's3', key: key('anywhere'), bucket: `anywhere-${run}` }));
    expect(refused.statusCode).toBe(403);
    const unrestricted = await createLambdaApi(core, { log: () => {} });
    // check: false — this bucket exists nowhere; what is tested is that no configured list refuses it.
    const r = await unrestricted.handle(post({ kind: 's3', key: key('anywhere'), bucket: `anywhere-${run}`, check: false }));
    expect(r.statusCode, r.body as string).toBe(201);
  });
});
