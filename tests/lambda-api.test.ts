import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handler } from '../lambdas/api.ts';
import { closeLambdaCore, lambdaCore } from '../lambdas/support/core.ts';
import { createLambdaApi, type ApiGatewayEvent } from '../shared/api/lambda/adapter.ts';
import { LAMBDA_PAYLOAD_BYTES, MAX_LAMBDA_FILE_BYTES, toApiRequest } from '../shared/api/lambda/convert.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { createTestMount, runningRootJob, stopS3, wireTestFilestore, type TestMount } from './support/filestore.ts';
import { lambdaContext } from './support/lambda-context.ts';
import { TEST_S3_CREDENTIALS } from './support/s3.ts';

// lambdas/api.ts invoked as API Gateway invokes it: fixture events shaped like AWS's sample
// HTTP API payload 2.0 events (tests/fixtures/lambda/apigw-*.json), the container's core from
// the environment, the caller from the Lambda authorizer's context.

const saved = { ...process.env };
let core: Filestore;
let s3: TestMount;

const PATH = 'dir/a b%c+d?e#f é✓.txt'; // what the fixtures' rawQueryString encodes (its second path= is ignored)
const BYTES = Buffer.concat(Array.from({ length: 4 }, () => Buffer.from(Array.from({ length: 256 }, (_, i) => i))));

function fixture(name: string, mountKey = s3.mount.key): ApiGatewayEvent {
  const text = readFileSync(new URL(`./fixtures/lambda/${name}.json`, import.meta.url), 'utf8');
  return JSON.parse(text.replaceAll('__MOUNT__', encodeURIComponent(mountKey))) as ApiGatewayEvent;
}

/** An event like the fixtures, for requests no fixture covers. */
function event(method: string, rawPath: string, o: { query?: string; json?: unknown; scopes?: string } = {}): ApiGatewayEvent {
  const e = fixture('apigw-get-file');
  e.requestContext.http.method = method;
  e.rawPath = rawPath;
  e.requestContext.http.path = rawPath;
  e.rawQueryString = o.query ?? '';
  e.requestContext.authorizer = { lambda: { principal: 'test-write', scopes: o.scopes ?? 'write' } };
  delete e.cookies;
  if (o.json !== undefined) {
    e.body = JSON.stringify(o.json);
    e.headers['content-type'] = 'application/json';
  }
  return e;
}

const invoke = (e: ApiGatewayEvent) => handler(e, lambdaContext()) as Promise<APIGatewayProxyStructuredResultV2 & { statusCode: number; headers: Record<string, string> }>;
const jsonOf = (r: APIGatewayProxyStructuredResultV2) => JSON.parse(r.body as string) as Record<string, unknown> & { error: { code: string; message: string } };
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  Object.assign(process.env, {
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: TEST_REDIS_URL,
    FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET,
    AWS_ACCESS_KEY_ID: TEST_S3_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_S3_CREDENTIALS.secretAccessKey,
  });
  core = (await lambdaCore()).core;
  s3 = await createTestMount(core, 's3');
});
afterAll(async () => {
  await closeLambdaCore();
  await stopS3();
  process.env = { ...saved };
});

describe('the converter', () => {
  it('builds the request node:http would: encoded path, first of a repeated key, cookies as a header, a named stage stripped', () => {
    const e = fixture('apigw-get-file', 'm 1');
    const req = toApiRequest(e);
    expect(req).toMatchObject({ method: 'GET', path: '/v1/files', query: { mountId: 'm 1', path: PATH }, body: null });
    expect(req.headers.cookie).toBe('session=abc; theme=dark');
    const staged = fixture('apigw-get-mount-decoded-path');
    staged.requestContext.stage = 'prod';
    staged.rawPath = `/prod${staged.rawPath}`;
    expect(toApiRequest(staged).path).toBe('/v1/mounts/no%20such%3Fmount%23100%25');
  });
});

describe('the API Lambda (HTTP API payload 2.0)', () => {
  it('a base64 body is the file; the path comes from rawQueryString (space, %, +, ?, #, unicode), the first of a repeated key', async () => {
    const r = await invoke(fixture('apigw-put-file-base64'));
    expect(r.statusCode, r.body).toBe(200);
    expect((jsonOf(r).node as { path: string; sizeBytes: number; sha256: string })).toMatchObject({ path: PATH, sizeBytes: BYTES.length, sha256: sha(BYTES) });
  });

  it('a download comes back base64-encoded with its headers; Range gives 206 and Content-Range', async () => {
    const r = await invoke(fixture('apigw-get-file'));
    expect(r.statusCode).toBe(200);
    expect(r.isBase64Encoded).toBe(true);
    expect(Buffer.from(r.body as string, 'base64').equals(BYTES)).toBe(true);
    expect(r.headers['content-type']).toBe('application/octet-stream');
    expect(r.headers.etag).toBe(`"${sha(BYTES)}"`);
    const part = await invoke(fixture('apigw-get-file-range'));
    expect(part.statusCode).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 10-19/${BYTES.length}`);
    expect(Buffer.from(part.body as string, 'base64').equals(BYTES.subarray(10, 20))).toBe(true);
  });

  it('rawPath arrives decoded: it reaches the router as an encoded request line would', async () => {
    const r = await invoke(fixture('apigw-get-mount-decoded-path'));
    expect(r.statusCode).toBe(404);
    expect(jsonOf(r).error.message).toContain('no such?mount#100%');
  });

  it('a file larger than the Lambda payload carries, on an S3 mount: 307 to a presigned URL that serves the bytes; nothing journaled', async () => {
    const big = randomBytes(MAX_LAMBDA_FILE_BYTES + 1);
    await core.orchestrator.writeFile(s3.mount.id, { path: 'big.bin' }, Readable.from([big]));
    const count = async () => (await core.pool.query('SELECT count(*)::int AS n FROM filestore.journal_entries WHERE mount_id = $1', [s3.mount.id])).rows[0].n as number;
    const before = await count();
    const r = await invoke(event('GET', '/v1/files', { query: `mountId=${s3.mount.key}&path=big.bin`, scopes: 'read' }));
    expect(r.statusCode).toBe(307);
    const location = r.headers.location as string;
    expect(jsonOf(r).location).toBe(location);
    const got = await fetch(location);
    expect(got.status).toBe(200);
    expect(Buffer.from(await got.arrayBuffer()).equals(big)).toBe(true);
    // A range within the limit is served here; a larger one redirects too (S3 honours the Range sent there).
    const small = event('GET', '/v1/files', { query: `mountId=${s3.mount.key}&path=big.bin`, scopes: 'read' });
    small.headers.range = 'bytes=0-99';
    const smallAnswer = await invoke(small);
    expect(smallAnswer.statusCode).toBe(206);
    expect(Buffer.from(smallAnswer.body as string, 'base64').equals(big.subarray(0, 100))).toBe(true);
    const wide = event('GET', '/v1/files', { query: `mountId=${s3.mount.key}&path=big.bin`, scopes: 'read' });
    wide.headers.range = `bytes=0-${MAX_LAMBDA_FILE_BYTES}`;
    expect((await invoke(wide)).statusCode).toBe(307);
    expect(await count()).toBe(before);
    // The same checks come first: a caller without read scope gets no URL.
    const none = await invoke(event('GET', '/v1/files', { query: `mountId=${s3.mount.key}&path=big.bin`, scopes: '' }));
    expect(none.statusCode).toBe(403);
    expect(none.headers.location).toBeUndefined();
  });

  it('the three-step upload works through the Lambda', async () => {
    const bytes = randomBytes(1000);
    const start = await invoke(event('POST', '/v1/uploads', { json: { mountId: s3.mount.key, path: 'up/through lambda.bin', sizeBytes: bytes.length, sha256: sha(bytes) } }));
    expect(start.statusCode, start.body).toBe(201);
    const up = jsonOf(start) as unknown as { uploadId: number; url: string; headers: Record<string, string>; completeUrl: string };
    const { 'content-length': _, ...headers } = up.headers; // fetch sets it
    expect((await fetch(up.url, { method: 'PUT', body: new Uint8Array(bytes), headers })).status).toBe(200);
    const done = await invoke(event('POST', up.completeUrl));
    expect(done.statusCode, done.body).toBe(200);
    expect((jsonOf(done).node as { sha256: string }).sha256).toBe(sha(bytes));
    // An upload given up is cancelled through the Lambda too.
    const other = jsonOf(await invoke(event('POST', '/v1/uploads', { json: { mountId: s3.mount.key, path: 'up/given up.bin', sizeBytes: 1 } }))) as unknown as { uploadId: number };
    const cancelled = await invoke(event('DELETE', `/v1/uploads/${other.uploadId}`));
    expect(cancelled.statusCode, cancelled.body).toBe(200);
    expect(jsonOf(cancelled)).toMatchObject({ uploadId: other.uploadId, status: 'cancelled' });
  });

  it('GET /v1/reconcile/jobs/:id?waitMs= is answered at once: no function instance held per waiting client', async () => {
    const id = Number((await runningRootJob(core, s3.mount.id)).id);
    // Held, it would wait until the job settles: for the whole 20 s here.
    const held = new Promise<'held'>((resolve) => setTimeout(() => resolve('held'), 10_000).unref());
    const r = await Promise.race([invoke(event('GET', `/v1/reconcile/jobs/${id}`, { query: 'waitMs=20000', scopes: 'read' })), held]);
    if (r === 'held') throw new Error('the API Lambda held GET /v1/reconcile/jobs/:id?waitMs=20000');
    expect(r.statusCode).toBe(200);
    expect(jsonOf(r)).toMatchObject({ id, status: 'running' });
    await core.pool.query('DELETE FROM filestore.reconciliation_jobs WHERE id = $1', [id]);
  });

  it('GET /v1/events/stream: 501 NOT_IMPLEMENTED naming the agent stream', async () => {
    const r = await invoke(fixture('apigw-events-stream'));
    expect(r.statusCode).toBe(501);
    expect(jsonOf(r).error.code).toBe('NOT_IMPLEMENTED');
  });

  it("the route's scope is checked again: a read-only principal the authorizer let through gets 403 on a write route", async () => {
    const r = await invoke(fixture('apigw-mkdir-as-reader'));
    expect(r.statusCode).toBe(403);
    expect(jsonOf(r).error.code).toBe('FORBIDDEN');
    const { rows } = await core.pool.query(`SELECT 1 FROM filestore.nodes WHERE mount_id = $1 AND path = 'new dir'`, [s3.mount.id]);
    expect(rows).toHaveLength(0);
  });

  it('no authorizer context: 401 with WWW-Authenticate', async () => {
    const r = await invoke(fixture('apigw-no-authorizer'));
    expect(r.statusCode).toBe(401);
    expect(r.headers['www-authenticate']).toBe('Bearer realm="filestore"');
  });
});

describe('the Lambda adapter over a core that serves a local mount itself', () => {
  let local: Filestore;
  let mount: TestMount;
  beforeAll(async () => {
    local = await wireTestFilestore();
    mount = await createTestMount(local, 'local');
  });
  afterAll(async () => {
    await local?.close();
    await mount?.cleanup();
  });

  it('more than the payload carries: 413 PAYLOAD_TOO_LARGE naming the way round, for downloads and uploads', async () => {
    const api = await createLambdaApi(local, { log: () => {} });
    await local.orchestrator.writeFile(mount.mount.id, { path: 'big.bin' }, Readable.from([randomBytes(MAX_LAMBDA_FILE_BYTES + 1)]));
    const down = await api.handle(event('GET', '/v1/files', { query: `mountId=${mount.mount.key}&path=big.bin`, scopes: 'read' }));
    expect(down.statusCode).toBe(413);
    const error = (JSON.parse(down.body as string) as { error: { code: string; message: string } }).error;
    expect(error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(error.message).toMatch(/Range/);
    // A part within the limit is served.
    const part = event('GET', '/v1/files', { query: `mountId=${mount.mount.key}&path=big.bin`, scopes: 'read' });
    part.headers.range = 'bytes=0-99';
    expect((await api.handle(part)).statusCode).toBe(206);

    // A body one byte over the limit, as API Gateway delivers it: base64 in the event, which still
    // fits the 6 MB invoke payload (bodies up to ~4.5 MiB are delivered; larger never arrive).
    const over = randomBytes(MAX_LAMBDA_FILE_BYTES + 1);
    const up = event('PUT', '/v1/files', { query: `mountId=${mount.mount.key}&path=too-big.bin` });
    up.headers['content-type'] = 'application/octet-stream';
    up.headers['content-length'] = String(over.length);
    up.body = over.toString('base64');
    up.isBase64Encoded = true;
    expect(Buffer.byteLength(JSON.stringify(up))).toBeLessThanOrEqual(LAMBDA_PAYLOAD_BYTES);
    const refused = await api.handle(up);
    expect(refused.statusCode).toBe(413);
    expect((JSON.parse(refused.body as string) as { error: { code: string } }).error.code).toBe('PAYLOAD_TOO_LARGE');
    await expect(stat(path.join(mount.root as string, 'too-big.bin'))).rejects.toMatchObject({ code: 'ENOENT' });
    // At the limit it is written.
    const at = randomBytes(MAX_LAMBDA_FILE_BYTES);
    const fits = event('PUT', '/v1/files', { query: `mountId=${mount.mount.key}&path=fits.bin` });
    fits.headers['content-type'] = 'application/octet-stream';
    fits.headers['content-length'] = String(at.length);
    fits.body = at.toString('base64');
    fits.isBase64Encoded = true;
    expect((await api.handle(fits)).statusCode).toBe(200);
    expect((await readFile(path.join(mount.root as string, 'fits.bin'))).equals(at)).toBe(true);
    expect((JSON.parse(refused.body as string) as { error: { message: string } }).error.message).toMatch(/agent/);
  });
});
