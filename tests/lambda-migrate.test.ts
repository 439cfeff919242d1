/**
 * The migrate Lambda (lambdas/migrate.ts) against real PostgreSQL, with the three ways a deploy
 * invokes it: CloudFormation itself (the outcome PUT to the event's ResponseURL, here a local
 * HTTP server standing for S3's presigned URL), CDK's Provider framework (ResponseURL '...':
 * the return value or the throw is the answer), and a CDK trigger (a plain invoke, no payload).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { CloudFormationCustomResourceEvent } from 'aws-lambda';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { handler, SCHEMA_RESOURCE_ID } from '../lambdas/migrate.ts';
import { TEST_DATABASE_URL } from './support/env.ts';
import { lambdaContext } from './support/lambda-context.ts';

const fixture = (name: string): CloudFormationCustomResourceEvent =>
  JSON.parse(readFileSync(new URL(`./fixtures/lambda/${name}.json`, import.meta.url), 'utf8')) as CloudFormationCustomResourceEvent;

interface CfnResponse {
  Status: 'SUCCESS' | 'FAILED';
  Reason?: string;
  PhysicalResourceId: string;
  StackId: string;
  RequestId: string;
  LogicalResourceId: string;
  Data?: Record<string, string>;
}

/** Stands for CloudFormation's presigned response URL: records every PUT. */
let server: http.Server;
let responseBase: string;
const responses: { path: string; contentType: string | undefined; body: CfnResponse }[] = [];

const databases: string[] = [];
const admin = () => new pg.Client({ connectionString: TEST_DATABASE_URL });

async function freshDatabase(): Promise<string> {
  const name = `filestore_migrate_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const c = admin();
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

/** What a user of the database sees of the schema: tables, columns, indexes, and the migrations recorded. */
async function schemaOf(url: string): Promise<unknown> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const columns = await c.query(`SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'filestore' ORDER BY 1, 2`);
    const indexes = await c.query(`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'filestore' ORDER BY 1`);
    const schema = await c.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'filestore'`);
    const migrations = schema.rows[0].n > 0 ? (await c.query(`SELECT name FROM filestore.migrations ORDER BY id`)).rows : [];
    return { columns: columns.rows, indexes: indexes.rows, migrations };
  } finally {
    await c.end();
  }
}

/** The fixture, answering to the local server (a path of its own per request). */
function event(name: string): CloudFormationCustomResourceEvent {
  const e = fixture(name);
  return { ...e, ResponseURL: `${responseBase}/${e.RequestId}?X-Amz-Signature=test` };
}

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString('utf8')));
    req.on('end', () => {
      if (req.method === 'PUT') responses.push({ path: req.url ?? '', contentType: req.headers['content-type'], body: JSON.parse(text) as CfnResponse });
      res.writeHead(req.method === 'PUT' ? 200 : 405).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  responseBase = `http://127.0.0.1:${(server.address() as AddressInfo).port}/response`;
});

const saved = process.env.DATABASE_URL;
afterEach(() => {
  responses.length = 0;
  process.env.DATABASE_URL = saved;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const c = admin();
  await c.connect();
  try {
    for (const d of databases) await c.query(`DROP DATABASE IF EXISTS "${d}" WITH (FORCE)`);
  } finally {
    await c.end();
  }
});

describe('the migrate Lambda as a CloudFormation custom resource', () => {
  it('Create applies the migrations and reports SUCCESS; a second Create and an Update leave the same schema', async () => {
    process.env.DATABASE_URL = await freshDatabase();
    const create = event('cloudformation-create');
    await handler(create, lambdaContext());
    expect(responses).toHaveLength(1);
    const [first] = responses;
    expect(first?.path).toBe(`/response/${create.RequestId}?X-Amz-Signature=test`);
    expect(first?.contentType ?? '').toBe('');
    expect(first?.body).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: SCHEMA_RESOURCE_ID, StackId: create.StackId, RequestId: create.RequestId, LogicalResourceId: 'CatalogueSchema' });
    expect(Number(first?.body.Data?.Applied)).toBeGreaterThan(10);
    const schema = await schemaOf(process.env.DATABASE_URL);
    expect((schema as { migrations: unknown[] }).migrations).toHaveLength(Number(first?.body.Data?.Applied));

    await handler(event('cloudformation-create'), lambdaContext());
    await handler(event('cloudformation-update'), lambdaContext());
    expect(responses.slice(1).map((r) => [r.body.Status, r.body.PhysicalResourceId, r.body.Data?.Applied])).toEqual([
      ['SUCCESS', SCHEMA_RESOURCE_ID, '0'],
      ['SUCCESS', SCHEMA_RESOURCE_ID, '0'],
    ]);
    expect(await schemaOf(process.env.DATABASE_URL)).toEqual(schema);
  });

  it('Delete reports SUCCESS and changes nothing: a migrated catalogue stays, an empty database stays empty', async () => {
    process.env.DATABASE_URL = await freshDatabase();
    const empty = await schemaOf(process.env.DATABASE_URL);
    await handler(event('cloudformation-delete'), lambdaContext());
    expect(responses.map((r) => [r.body.Status, r.body.PhysicalResourceId])).toEqual([['SUCCESS', SCHEMA_RESOURCE_ID]]);
    expect(await schemaOf(process.env.DATABASE_URL)).toEqual(empty);

    await handler(event('cloudformation-create'), lambdaContext());
    const migrated = await schemaOf(process.env.DATABASE_URL);
    await handler(event('cloudformation-delete'), lambdaContext());
    expect(responses.at(-1)?.body.Status).toBe('SUCCESS');
    expect(await schemaOf(process.env.DATABASE_URL)).toEqual(migrated);
  });

  it('a failure is reported FAILED with its reason, and the invocation itself succeeds (no retry of an answered request)', async () => {
    const u = new URL(TEST_DATABASE_URL);
    u.pathname = `/filestore_absent_${randomBytes(4).toString('hex')}`;
    process.env.DATABASE_URL = u.toString();
    const create = event('cloudformation-create');
    await expect(handler(create, lambdaContext())).resolves.toMatchObject({ Status: 'FAILED' });
    expect(responses).toHaveLength(1);
    expect(responses[0]?.body).toMatchObject({ Status: 'FAILED', RequestId: create.RequestId, PhysicalResourceId: create.RequestId });
    expect(responses[0]?.body.Reason).toMatch(/^migrations failed: .*does not exist/);
  });

  it('bad configuration is reported FAILED naming the variable', async () => {
    delete process.env.DATABASE_URL;
    await handler(event('cloudformation-create'), lambdaContext());
    expect(responses[0]?.body.Status).toBe('FAILED');
    expect(responses[0]?.body.Reason).toContain('DATABASE_URL');
  });
});

describe('the migrate Lambda under CDK', () => {
  it('a trigger’s plain invoke applies the migrations and answers; a failure throws (the deploy fails)', async () => {
    process.env.DATABASE_URL = await freshDatabase();
    const out = await handler({}, lambdaContext());
    expect(out).toMatchObject({ PhysicalResourceId: SCHEMA_RESOURCE_ID });
    expect(Number((out as { Data?: Record<string, string> }).Data?.Applied)).toBeGreaterThan(10);
    expect(responses).toEqual([]);
    const u = new URL(TEST_DATABASE_URL);
    u.pathname = `/filestore_absent_${randomBytes(4).toString('hex')}`;
    process.env.DATABASE_URL = u.toString();
    await expect(handler({}, lambdaContext())).rejects.toThrow(/does not exist/);
  });

  it('under the Provider framework (ResponseURL "...") nothing is PUT: the return value is the answer', async () => {
    process.env.DATABASE_URL = await freshDatabase();
    const create = { ...fixture('cloudformation-create'), ResponseURL: '...' };
    await expect(handler(create, lambdaContext())).resolves.toMatchObject({ PhysicalResourceId: SCHEMA_RESOURCE_ID });
    const del = { ...fixture('cloudformation-delete'), ResponseURL: '...' };
    await expect(handler(del, lambdaContext())).resolves.toEqual({ PhysicalResourceId: SCHEMA_RESOURCE_ID, Data: {} });
    expect(responses).toEqual([]);
  });
});

/**
 * Stands for a proxy whose target is not available yet: the first `refuse` connections are
 * closed at once, the later ones are forwarded to the test's PostgreSQL.
 */
async function flakyProxy(refuse: number): Promise<{ url: (db: string) => string; accepted: () => number; close: () => Promise<void> }> {
  const target = new URL(TEST_DATABASE_URL);
  let n = 0;
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((socket) => {
    sockets.add(socket);
    if (++n <= refuse) return void socket.destroy();
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    sockets.add(upstream);
    socket.pipe(upstream).pipe(socket);
    socket.on('error', () => upstream.destroy());
    upstream.on('error', () => socket.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const port = (proxy.address() as AddressInfo).port;
  return {
    url: (db) => {
      const u = new URL(db);
      u.host = `127.0.0.1:${port}`;
      return u.toString();
    },
    accepted: () => n,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    },
  };
}

describe('the migrate Lambda waits for a database that is not reachable yet (first deploy)', () => {
  it('a first connection closed by the proxy is retried, and the migrations are applied', async () => {
    const db = await freshDatabase();
    const proxy = await flakyProxy(1);
    try {
      process.env.DATABASE_URL = proxy.url(db);
      const out = await handler({}, lambdaContext({ remainingMs: 600_000 }));
      expect(Number((out as { Data?: Record<string, string> }).Data?.Applied)).toBeGreaterThan(10);
      expect(proxy.accepted()).toBeGreaterThan(1);
    } finally {
      await proxy.close();
    }
    expect((await schemaOf(db)) as { migrations: unknown[] }).toMatchObject({ migrations: expect.arrayContaining([{ name: expect.any(String) }]) });
  });

  it('retries stop while the time the migrations need remains: the deploy fails with the last error', async () => {
    const db = await freshDatabase();
    const proxy = await flakyProxy(Number.POSITIVE_INFINITY);
    try {
      process.env.DATABASE_URL = proxy.url(db);
      // 62 s left: 2 s beyond the 60 s kept for the migrations, so one retry at most.
      await expect(handler({}, lambdaContext({ remainingMs: 62_000 }))).rejects.toThrow(/not reachable after 2 attempts/);
      expect(proxy.accepted()).toBe(2);
    } finally {
      await proxy.close();
    }
  });
});
