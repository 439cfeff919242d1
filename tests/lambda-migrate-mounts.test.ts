/**
 * The migrate Lambda registers the stack's S3 mounts (FILESTORE_S3_MOUNTS) after the
 * migrations, against real PostgreSQL: created as POST /v1/mounts creates them, left alone
 * the second time, a key on other storage fails the deploy and changes nothing, mounts the
 * list leaves out stay. Unset: nothing registered; bad JSON or a bad entry: CONFIG_ERROR.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CloudFormationCustomResourceEvent } from 'aws-lambda';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { handler } from '../lambdas/migrate.ts';
import { loadLambdaConfig } from '../lambdas/support/config.ts';
import { TEST_DATABASE_URL } from './support/env.ts';
import { lambdaContext } from './support/lambda-context.ts';

interface Answer {
  PhysicalResourceId: string;
  Data: Record<string, string>;
}

const databases: string[] = [];
const admin = () => new pg.Client({ connectionString: TEST_DATABASE_URL });

async function freshDatabase(): Promise<string> {
  const name = `filestore_mounts_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
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

async function query<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

/** What a user of the catalogue sees of its mounts: every field but the generated ones, with the root node and its rollup. */
const mounts = () =>
  query(
    `SELECT m.key, m.kind, m.root_path, m.bucket, m.prefix, m.region, m.endpoint, m.agent_id, m.access_mode, m.state, m.id::text, m.updated_at,
            n.path AS root, n.kind AS root_kind, (r.node_id IS NOT NULL) AS rollup
       FROM filestore.mounts m LEFT JOIN filestore.nodes n ON n.mount_id = m.id AND n.path = ''
       LEFT JOIN filestore.rollups r ON r.node_id = n.id ORDER BY m.key`,
  );

const invoke = async (event: unknown = {}) => (await handler(event, lambdaContext())) as Answer;

/** Stands for CloudFormation's presigned response URL. */
let server: http.Server;
let responseBase: string;
const responses: { Status: string; Reason?: string; Data?: Record<string, string> }[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString('utf8')));
    req.on('end', () => {
      if (req.method === 'PUT') responses.push(JSON.parse(text));
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  responseBase = `http://127.0.0.1:${(server.address() as AddressInfo).port}/response`;
});

const saved = { ...process.env };
afterEach(() => {
  responses.length = 0;
  process.env = { ...saved };
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

function cloudFormation(name: string): CloudFormationCustomResourceEvent {
  const e = JSON.parse(readFileSync(new URL(`./fixtures/lambda/${name}.json`, import.meta.url), 'utf8')) as CloudFormationCustomResourceEvent;
  return { ...e, ResponseURL: `${responseBase}/${e.RequestId}` };
}

describe('the migrate Lambda registers FILESTORE_S3_MOUNTS', () => {
  it('creates the listed mounts as POST /v1/mounts does; a second deploy leaves them (and mounts it does not list) alone', async () => {
    process.env.DATABASE_URL = await freshDatabase();
    process.env.FILESTORE_S3_MOUNTS = JSON.stringify([
      { key: 'media', bucket: 'acme-media', prefix: '/photos/2026' },
      { key: 'archive', bucket: 'acme-archive' },
    ]);
    const first = await invoke();
    expect(first.Data).toMatchObject({ Created: '2', Unchanged: '0' });
    expect(Number(first.Data.Applied)).toBeGreaterThan(10);
    const registered = await mounts();
    expect(registered).toEqual([
      expect.objectContaining({ key: 'archive', kind: 's3', bucket: 'acme-archive', prefix: '', region: null, endpoint: null, root_path: null, agent_id: null, access_mode: 'rw', state: 'active', root: '', root_kind: 'directory', rollup: true }),
      expect.objectContaining({ key: 'media', kind: 's3', bucket: 'acme-media', prefix: 'photos/2026/', region: null, endpoint: null, root_path: null, agent_id: null, access_mode: 'rw', state: 'active', root: '', root_kind: 'directory', rollup: true }),
    ]);

    // A mount registered through the API meanwhile, not in the list: never touched.
    await query(
      `WITH m AS (INSERT INTO filestore.mounts (key, kind, bucket, prefix) VALUES ('by-hand', 's3', 'acme-other', '') RETURNING id),
            n AS (INSERT INTO filestore.nodes (mount_id, path, name, kind) SELECT id, '', '', 'directory' FROM m RETURNING id, mount_id)
       INSERT INTO filestore.rollups (node_id, mount_id) SELECT id, mount_id FROM n`,
    );
    const before = await mounts();
    // Same list, spelled differently (the prefix as stored): the same mounts.
    process.env.FILESTORE_S3_MOUNTS = JSON.stringify([
      { key: 'media', bucket: 'acme-media', prefix: 'photos/2026/' },
      { key: 'archive', bucket: 'acme-archive', prefix: '' },
    ]);
    await handler(cloudFormation('cloudformation-update'), lambdaContext());
    expect(responses.map((r) => [r.Status, r.Data?.Created, r.Data?.Unchanged, r.Data?.Applied])).toEqual([['SUCCESS', '0', '2', '0']]);
    expect(await mounts()).toEqual(before);
  });

  it('a key the catalogue holds on other storage fails the deploy naming both, and registers nothing', async () => {
    process.env.DATABASE_URL = await freshDatabase();
    process.env.FILESTORE_S3_MOUNTS = JSON.stringify([{ key: 'media', bucket: 'acme-media', prefix: 'photos' }]);
    await invoke();
    const before = await mounts();

    process.env.FILESTORE_S3_MOUNTS = JSON.stringify([
      { key: 'new-one', bucket: 'acme-new' },
      { key: 'media', bucket: 'acme-media-2', prefix: 'photos' },
    ]);
    await handler(cloudFormation('cloudformation-update'), lambdaContext());
    expect(responses).toHaveLength(1);
    expect(responses[0]?.Status).toBe('FAILED');
    const reason = responses[0]?.Reason ?? '';
    expect(reason).toMatch(/^S3 mounts not registered \(the migrations are applied\): /);
    expect(reason).toContain('mount "media": the catalogue holds s3://acme-media/photos/, the configuration says s3://acme-media-2/photos/');
    expect(reason).toContain('cdk/config.json');
    expect(await mounts()).toEqual(before);

    // Under a CDK trigger the failure throws (the deploy fails), with the same message; a prefix or a kind differing too.
    process.env.FILESTORE_S3_MOUNTS = JSON.stringify([{ key: 'media', bucket: 'acme-media', prefix: 'videos' }]);
    await expect(invoke()).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('the configuration says s3://acme-media/videos/') });
    await query(`UPDATE filestore.mounts SET kind = 'local', root_path = '/srv/media', bucket = NULL WHERE key = 'media'`);
    process.env.FILESTORE_S3_MOUNTS = JSON.stringify([{ key: 'media', bucket: 'acme-media', prefix: 'photos' }]);
    await expect(invoke()).rejects.toThrow('mount "media": the catalogue holds a local mount of /srv/media, the configuration says s3://acme-media/photos/');
    expect((await mounts()).map((m) => m.key)).toEqual(['media']);
  });

  it('unset, nothing is registered and the answer has no mount counts', async () => {
    process.env.DATABASE_URL = await freshDatabase();
    delete process.env.FILESTORE_S3_MOUNTS;
    const out = await invoke();
    expect(Object.keys(out.Data)).toEqual(['Applied']);
    expect(await mounts()).toEqual([]);
    // Set to an empty list (a stack without S3 mounts): nothing either, counted.
    process.env.FILESTORE_S3_MOUNTS = '[]';
    expect((await invoke()).Data).toEqual({ Applied: '0', Created: '0', Unchanged: '0' });
  });

  it('bad JSON or a bad entry is CONFIG_ERROR naming the variable and the entry; nothing is migrated or registered', async () => {
    process.env.DATABASE_URL = await freshDatabase();
    const cases: Array<[string, RegExp]> = [
      ['[{"key": "media", "bucket": ', /FILESTORE_S3_MOUNTS: not JSON/],
      ['{"key": "media", "bucket": "acme-media"}', /FILESTORE_S3_MOUNTS: expected a JSON array/],
      [JSON.stringify([{ key: 'ok', bucket: 'acme-ok' }, { key: 'media', bucket: 'Acme_Media' }]), /FILESTORE_S3_MOUNTS: entry 1 \(key "media"\): bucket: not a valid S3 bucket name/],
      [JSON.stringify([{ key: 'Media!', bucket: 'acme-media' }]), /FILESTORE_S3_MOUNTS: entry 0 \(key "Media!"\): key: must match/],
      [JSON.stringify([{ key: 'media', bucket: 'acme-media', region: 'eu-west-1' }]), /FILESTORE_S3_MOUNTS: entry 0 \(key "media"\): entry: Unrecognized key/i],
      [JSON.stringify([{ key: 'media', bucket: 'acme-media', prefix: 'x'.repeat(1025) }]), /entry 0 \(key "media"\): prefix: /],
      [JSON.stringify([{ key: 'media', bucket: 'acme-a' }, { key: 'media', bucket: 'acme-b' }]), /entry 1 \(key "media"\): the key is listed twice/],
    ];
    for (const [value, message] of cases) {
      process.env.FILESTORE_S3_MOUNTS = value;
      await expect(invoke(), value).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringMatching(message) });
      // The API Lambda reads the same variable the same way.
      expect(() => loadLambdaConfig({ DATABASE_URL: process.env.DATABASE_URL, REDIS_URL: 'redis://127.0.0.1:6379', FILESTORE_S3_MOUNTS: value })).toThrow(message);
    }
    await handler(cloudFormation('cloudformation-create'), lambdaContext());
    expect(responses[0]).toMatchObject({ Status: 'FAILED', Reason: expect.stringMatching(/^migrations failed: .*FILESTORE_S3_MOUNTS/) });
    expect(await query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'filestore'`)).toEqual([{ n: 0 }]);
  });
});
