/**
 * The Lambda bundles as `npm run build` makes them (cli/bundle.ts bundleLambdas), each loaded
 * the way Lambda loads it: copied alone (with migrations/ beside it) into an empty directory,
 * imported by a fresh Node process, its `handler` called with a fixture event against the real
 * PostgreSQL and Redis. The Node binary is FILESTORE_TEST_NODE (CI runs this file again under
 * Node 24, as the Lambda runtime has it), else the one running the tests.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleLambdas, lambdaEntries } from '../cli/bundle.ts';
import { hashToken } from '../shared/api/auth.ts';
import { MIGRATIONS, migrate } from '../shared/db/migrate.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';

const NODE = process.env.FILESTORE_TEST_NODE || process.execPath;
const run = promisify(execFile);

let built: string;
const scratch: string[] = [];
const databases: string[] = [];
const fixture = async (name: string) => JSON.parse(await readFile(new URL(`./fixtures/lambda/${name}.json`, import.meta.url), 'utf8')) as Record<string, unknown>;

// What runs in the fresh process: import the bundle, call its handler with each event and a
// Lambda-shaped context, print the answers after a marker (the handler's logs share stdout).
const RUNNER = `
const { pathToFileURL } = await import('node:url');
const m = await import(pathToFileURL(process.env.BUNDLE).href);
const out = { node: process.version, exports: Object.keys(m), handler: typeof m.handler, results: [] };
const deadline = Date.now() + 60000;
for (const event of JSON.parse(process.env.EVENTS || '[]')) {
  const context = { functionName: 'bundle-test', functionVersion: '$LATEST', invokedFunctionArn: 'arn:aws:lambda:eu-west-1:123456789012:function:bundle-test',
    memoryLimitInMB: '512', awsRequestId: crypto.randomUUID(), logGroupName: '/aws/lambda/bundle-test', logStreamName: 'test',
    callbackWaitsForEmptyEventLoop: true, getRemainingTimeInMillis: () => deadline - Date.now() };
  try { out.results.push({ answer: await m.handler(event, context) }); }
  catch (err) { out.results.push({ error: String(err && err.message), code: err && err.code }); }
}
process.stdout.write('\\n@@RESULT@@' + JSON.stringify(out) + '\\n');
process.exit(0);
`;

interface RunResult {
  node: string;
  exports: string[];
  handler: string;
  results: { answer?: unknown; error?: string; code?: string }[];
}

/** Copies the bundle alone (and migrations/) into an empty directory and runs it there in a fresh process. */
async function runBundle(name: string, env: Record<string, string>, events: unknown[] = []): Promise<RunResult> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `filestore-bundle-${name}-`));
  scratch.push(dir);
  await cp(path.join(built, `${name}.mjs`), path.join(dir, `${name}.mjs`));
  await cp(path.join(built, MIGRATIONS), path.join(dir, MIGRATIONS), { recursive: true });
  const { stdout } = await run(NODE, ['--input-type=module', '-e', RUNNER], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', HOME: dir, AWS_REGION: 'eu-west-1', BUNDLE: path.join(dir, `${name}.mjs`), EVENTS: JSON.stringify(events), ...env },
    maxBuffer: 32 * 1024 * 1024,
    timeout: 90_000,
  });
  const marker = stdout.lastIndexOf('@@RESULT@@');
  if (marker === -1) throw new Error(`${name}.mjs printed no result:\n${stdout.slice(-2000)}`);
  return JSON.parse(stdout.slice(marker + '@@RESULT@@'.length)) as RunResult;
}

async function freshDatabase(): Promise<string> {
  const name = `filestore_bundle_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const c = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE "${name}"`);
  } finally {
    await c.end();
  }
  databases.push(name);
  const u = new URL(TEST_DATABASE_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

beforeAll(async () => {
  built = await mkdtemp(path.join(os.tmpdir(), 'filestore-lambdas-'));
  scratch.push(built);
  await mkdir(built, { recursive: true });
  await bundleLambdas(built);
}, 180_000);

afterAll(async () => {
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
  const c = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await c.connect();
  try {
    for (const d of databases) await c.query(`DROP DATABASE IF EXISTS "${d}" WITH (FORCE)`);
  } finally {
    await c.end();
  }
});

describe(`the Lambda bundles, each alone in a directory, under ${NODE === process.execPath ? 'this Node' : NODE}`, () => {
  it('the build makes one bundle per lambdas/*.ts, and the migrations beside them', async () => {
    const names = Object.keys(await lambdaEntries());
    expect(names).toEqual(expect.arrayContaining(['authorizer', 'maintenance', 'migrate']));
    const files = await readdir(built);
    for (const n of names) expect(files).toContain(`${n}.mjs`);
    expect((await readdir(path.join(built, MIGRATIONS))).sort()).toEqual((await readdir(new URL('../migrations', import.meta.url))).filter((f) => f.endsWith('.sql')).sort());
  });

  it('migrate.mjs migrates an empty database from the migrations beside it, then registers the stack’s S3 mounts', { timeout: 120_000 }, async () => {
    const url = await freshDatabase();
    const out = await runBundle('migrate', { DATABASE_URL: url, FILESTORE_S3_MOUNTS: '[{"key":"media","bucket":"acme-media"}]' }, [{}]);
    expect(out.node).toBe((await run(NODE, ['--version'])).stdout.trim());
    expect(out.results).toEqual([{ answer: { PhysicalResourceId: 'filestore-catalogue-schema', Data: { Applied: expect.any(String), Created: '1', Unchanged: '0' } } }]);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      const { rows } = await c.query<{ n: number }>('SELECT count(*)::int AS n FROM filestore.migrations');
      const shipped = (await readdir(path.join(built, MIGRATIONS))).filter((f) => f.endsWith('.sql')).length;
      expect(rows[0]?.n).toBe(shipped);
      expect(Number((out.results[0]?.answer as { Data: { Applied: string } }).Data.Applied)).toBe(shipped);
      expect((await c.query('SELECT key, kind, bucket, prefix FROM filestore.mounts')).rows).toEqual([{ key: 'media', kind: 's3', bucket: 'acme-media', prefix: '' }]);
    } finally {
      await c.end();
    }
  });

  it('maintenance.mjs runs a maintenance pass and answers its report', { timeout: 120_000 }, async () => {
    const out = await runBundle('maintenance', { DATABASE_URL: TEST_DATABASE_URL, REDIS_URL: TEST_REDIS_URL, FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET }, [await fixture('scheduled-maintenance')]);
    expect(out.results).toEqual([
      {
        answer: {
          published: expect.any(Number),
          recovery: { succeeded: expect.any(Number), failed: expect.any(Number), skipped: expect.any(Number), error: expect.any(Number), elsewhere: expect.any(Number) },
          compacted: expect.any(Number),
          pruned: expect.any(Number),
          upkeep: { vacuumed: expect.any(Array), analyzed: expect.any(Array), skipped: expect.any(Array) },
        },
      },
    ]);
  });

  it('authorizer.mjs allows a known token with its scopes and denies an unknown one', { timeout: 120_000 }, async () => {
    const token = `fs_${randomBytes(16).toString('hex')}`;
    const request = await fixture('authorizer-request');
    const withToken = (t: string) => ({ ...request, identitySource: [`Bearer ${t}`], headers: { ...(request.headers as object), authorization: `Bearer ${t}` } });
    const out = await runBundle('authorizer', { FILESTORE_API_TOKENS: JSON.stringify([{ name: 'ci', sha256: hashToken(token), scopes: ['filestore:write'] }]) }, [
      withToken(token),
      withToken(`fs_${randomBytes(16).toString('hex')}`),
    ]);
    expect(out.results).toEqual([{ answer: { isAuthorized: true, context: { principal: 'ci', scopes: 'read write' } } }, { answer: { isAuthorized: false } }]);
  });

  // The handlers that need a catalogue answer a fixture event against a fresh, migrated one
  // (nothing of other tests in it: the audit of "every S3 mount" finds none).
  async function migratedDatabase(): Promise<string> {
    const url = await freshDatabase();
    await migrate(url);
    return url;
  }
  const coreEnv = (url: string) => ({ DATABASE_URL: url, REDIS_URL: TEST_REDIS_URL, FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET });

  it('api.mjs answers HTTP API events: the mounts listed, the event stream refused with 501 naming the agent', { timeout: 120_000 }, async () => {
    const stream = await fixture('apigw-events-stream');
    const list = structuredClone(stream) as { rawPath: string; rawQueryString: string; requestContext: { http: { path: string } }; headers: Record<string, string> };
    list.rawPath = '/v1/mounts';
    list.requestContext.http.path = '/v1/mounts';
    list.rawQueryString = '';
    list.headers = { ...list.headers, accept: 'application/json' };
    const out = await runBundle('api', coreEnv(await migratedDatabase()), [list, stream]);
    const [mounts, sse] = out.results.map((r) => r.answer as { statusCode: number; body: string });
    expect(mounts?.statusCode).toBe(200);
    expect(JSON.parse(mounts?.body ?? '{}')).toEqual({ items: [], nextCursor: null });
    expect(sse?.statusCode).toBe(501);
    expect((JSON.parse(sse?.body ?? '{}') as { error: { code: string } }).error.code).toBe('NOT_IMPLEMENTED');
  });

  it('s3-events.mjs acknowledges an s3:TestEvent batch (no failures)', { timeout: 120_000 }, async () => {
    const out = await runBundle('s3-events', coreEnv(await migratedDatabase()), [await fixture('s3-sqs-test-event')]);
    expect(out.results).toEqual([{ answer: { batchItemFailures: [] } }]);
  });

  it('audit.mjs answers a scheduled event for every S3 mount of a catalogue that has none', { timeout: 120_000 }, async () => {
    const out = await runBundle('audit', coreEnv(await migratedDatabase()), [await fixture('scheduler-audit-all')]);
    expect(out.results).toEqual([{ answer: { mounts: [] } }]);
  });

  it('reconcile.mjs acknowledges a message whose job row does not exist (nothing to run, nothing to retry)', { timeout: 120_000 }, async () => {
    const env = { ...coreEnv(await migratedDatabase()), FILESTORE_RECONCILE_QUEUE_URL: 'http://127.0.0.1:9/000000000000/filestore-reconcile', AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'x' };
    const out = await runBundle('reconcile', env, [await fixture('sqs-reconcile')]);
    expect(out.results).toEqual([{ answer: { batchItemFailures: [] } }]);
  });

  it('every bundle the build makes is one of those answering an event above', async () => {
    expect(Object.keys(await lambdaEntries()).sort()).toEqual(['api', 'audit', 'authorizer', 'maintenance', 'migrate', 'reconcile', 's3-events']);
  });
});
