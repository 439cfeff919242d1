/**
 * What every Lambda handler stands on (lambdas/support): its configuration, the container's
 * core built once, the outbox published before a handler returns, secrets cached per
 * container, and PostgreSQL reached with IAM auth (a token per new connection, over TLS).
 *
 * PostgreSQL here trusts every local connection, so it never asks for a password: a small
 * front speaking PostgreSQL's protocol stands before it (tests/support/password-front.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { CreateQueueCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { interceptLocalhostDns } from 'fauxqs';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadLambdaConfig } from '../lambdas/support/config.ts';
import { closeLambdaCore, lambdaCore, redisUrlWithAuth, type LambdaCore } from '../lambdas/support/core.ts';
import { lambdaHandler, logger } from '../lambdas/support/powertools.ts';
import { SecretCache, resetContainerSecrets } from '../lambdas/support/secrets.ts';
import { freePort } from '../cli/embedded-postgres.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { appendEvents } from '../shared/catalogue/outbox.ts';
import { createPool, unregisterConnectionAuth, type Pool } from '../shared/db/pool.ts';
import { EVENTS_CHANNEL } from '../shared/events/bus.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { makeTestCertificate, startPasswordFront, type PasswordFront, type TestCertificate } from './support/password-front.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { eventually } from './support/http.ts';
import { sharedS3, stopS3 } from './support/filestore.ts';
import { lambdaContext } from './support/lambda-context.ts';
import { TEST_S3_CREDENTIALS, TEST_S3_REGION } from './support/s3.ts';

const saved = { ...process.env };
const databaseName = decodeURIComponent(new URL(TEST_DATABASE_URL).pathname.slice(1));

/** The environment of a Lambda against the test services (URL mode). */
function useLambdaEnv(extra: Record<string, string> = {}): void {
  for (const k of Object.keys(process.env)) if (k.startsWith('FILESTORE_') || k === 'DATABASE_URL' || k === 'REDIS_URL') delete process.env[k];
  Object.assign(process.env, { DATABASE_URL: TEST_DATABASE_URL, REDIS_URL: TEST_REDIS_URL, FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET, ...extra });
  for (const [k, v] of Object.entries(extra)) if (v === '') delete process.env[k];
}

afterEach(async () => {
  await closeLambdaCore();
  resetContainerSecrets();
  process.env = { ...saved };
});

describe('loadLambdaConfig', () => {
  const base = { REDIS_URL: 'rediss://cache.example:6379', DATABASE_URL: 'postgres://u:p@db.example/filestore' };
  const problem = (env: Record<string, string>) => {
    try {
      loadLambdaConfig(env);
    } catch (err) {
      return err as { code: string; message: string };
    }
    throw new Error('no error');
  };

  it('a bad or missing value is CONFIG_ERROR naming the variable', () => {
    expect(problem({ REDIS_URL: base.REDIS_URL })).toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('DATABASE_URL') });
    expect(problem({ DATABASE_URL: base.DATABASE_URL }).message).toContain('REDIS_URL');
    expect(problem({ ...base, REDIS_URL: 'http://cache.example' }).message).toContain('REDIS_URL');
    expect(problem({ ...base, FILESTORE_DB_POOL_SIZE: '5' }).message).toContain('FILESTORE_DB_POOL_SIZE');
    expect(problem({ ...base, FILESTORE_SECRETS_TTL_SECONDS: 'soon' }).message).toContain('FILESTORE_SECRETS_TTL_SECONDS');
    expect(problem({ REDIS_URL: base.REDIS_URL, FILESTORE_DB_IAM_AUTH: 'true', FILESTORE_DB_HOST: 'proxy.example', AWS_REGION: 'eu-west-1' }).message).toMatch(
      /FILESTORE_DB_NAME, FILESTORE_DB_USER/,
    );
    expect(problem({ REDIS_URL: base.REDIS_URL, FILESTORE_DB_IAM_AUTH: 'true', FILESTORE_DB_HOST: 'h', FILESTORE_DB_NAME: 'n', FILESTORE_DB_USER: 'u' }).message).toContain('AWS_REGION');
    expect(problem({ ...base, FILESTORE_DB_IAM_AUTH: 'true' }).message).toContain('DATABASE_URL');
    expect(problem({ ...base, REDIS_URL: 'inline' }).message).toContain('REDIS_URL');
  });

  it('defaults: a pool of 2, secrets kept 5 minutes; IAM auth makes a URL without a password', () => {
    expect(loadLambdaConfig(base)).toMatchObject({ databaseUrl: base.DATABASE_URL, iamAuth: null, poolSize: 2, secretsTtlMs: 300_000 });
    const iam = loadLambdaConfig({
      REDIS_URL: base.REDIS_URL,
      FILESTORE_DB_IAM_AUTH: 'true',
      FILESTORE_DB_HOST: 'proxy.example',
      FILESTORE_DB_NAME: 'filestore',
      FILESTORE_DB_USER: 'filestore_app',
      AWS_REGION: 'eu-west-1',
    });
    expect(iam.databaseUrl).toBe('postgres://filestore_app@proxy.example:5432/filestore');
    expect(iam.iamAuth).toEqual({ hostname: 'proxy.example', port: 5432, username: 'filestore_app', region: 'eu-west-1', tlsCaPath: undefined });
  });

  it('a Lambda with Redis and no command secret is refused when its core is built, naming FILESTORE_COMMAND_SECRET_ARN', async () => {
    useLambdaEnv();
    delete process.env.FILESTORE_COMMAND_SECRET;
    await expect(lambdaCore()).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_COMMAND_SECRET_ARN') });
  });

  it('a function that dispatches nothing (all but the API) builds without the command secret and refuses a dispatch with CONFIG_ERROR', async () => {
    useLambdaEnv();
    delete process.env.FILESTORE_COMMAND_SECRET;
    const { core } = await lambdaCore({ dispatches: false });
    expect(core.commands.signer).toBeNull();
    const refused = { code: 'CONFIG_ERROR', message: expect.stringContaining('dispatches no commands') };
    await expect(core.commands.checkMountRoot('agent-1', { key: 'disk', rootPath: '/srv/disk', accessMode: 'rw' })).rejects.toMatchObject(refused);
    await expect(core.commands.resolveOnAgent({ id: 'm', key: 'disk', agentId: 'agent-1' } as never, 1, null)).rejects.toMatchObject(refused);
    await closeLambdaCore();
    // Through lambdaHandler: the API requires it, the others do not.
    const probe = (name: string) => lambdaHandler(name, async (_e: unknown, _c, lc) => lc.core.commands.signer)({}, lambdaContext());
    await expect(probe('maintenance')).resolves.toBeNull();
    await closeLambdaCore();
    await expect(probe('api')).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_COMMAND_SECRET_ARN') });
  });
});

describe('the container’s core', () => {
  it('is built once and reused by every invocation; closeLambdaCore makes the next one build anew', async () => {
    useLambdaEnv();
    const seen: LambdaCore[] = [];
    const handler = lambdaHandler('reuse', async (_e: unknown, _c, lc) => {
      seen.push(lc);
      await lc.core.pool.query('SELECT 1');
      return lc.core.pool.totalCount;
    });
    const [a, b] = await Promise.all([lambdaCore(), lambdaCore()]);
    expect(a).toBe(b);
    expect(await handler({}, lambdaContext())).toBeLessThanOrEqual(2);
    await handler({}, lambdaContext());
    expect(seen[0]).toBe(a);
    expect(seen[1]).toBe(a);
    await closeLambdaCore();
    const fresh = await lambdaCore();
    expect(fresh).not.toBe(a);
    expect(fresh.config.poolSize).toBe(2);
  });

  it('a build that failed is forgotten: the next invocation tries again', async () => {
    useLambdaEnv({ DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nowhere' });
    await expect(lambdaCore()).rejects.toThrow();
    process.env.DATABASE_URL = TEST_DATABASE_URL;
    await expect(lambdaCore()).resolves.toMatchObject({ config: { databaseUrl: TEST_DATABASE_URL } });
  });
});

describe('the core’s reconcile queue', () => {
  afterAll(() => stopS3());

  it('with FILESTORE_RECONCILE_QUEUE_URL, an S3 mount’s reconcile request is sent to that SQS queue', async () => {
    const s3 = await sharedS3();
    const sqs = new SQSClient({ endpoint: s3.endpoint, region: TEST_S3_REGION, credentials: TEST_S3_CREDENTIALS });
    const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: `lambda-support-${randomUUID().slice(0, 8)}` }))).QueueUrl as string;
    // fauxqs names queues sqs.<region>.localhost:<port>: the core's client goes where the URL says.
    const restoreDns = interceptLocalhostDns();
    try {
      useLambdaEnv({
        FILESTORE_RECONCILE_QUEUE_URL: queueUrl,
        AWS_REGION: TEST_S3_REGION,
        AWS_ACCESS_KEY_ID: TEST_S3_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: TEST_S3_CREDENTIALS.secretAccessKey,
      });
      const { core } = await lambdaCore();
      const mount = await createMount(core.pool, { key: `lambda-support-${randomUUID().slice(0, 8)}`, kind: 's3', bucket: await s3.createBucket(), prefix: 'p/', endpoint: s3.endpoint, region: TEST_S3_REGION });
      await core.reconcile.enqueue({ mountId: mount.id, path: 'a/b', reason: 'manual', recursive: false, hash: false });
      const { Messages } = await sqs.send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }));
      expect(Messages?.map((m) => JSON.parse(m.Body ?? '{}') as Record<string, unknown>)).toEqual([expect.objectContaining({ mountId: mount.id, path: 'a/b' })]);
    } finally {
      await closeLambdaCore();
      restoreDns();
      sqs.destroy();
    }
  });
});

describe('lambdaHandler', () => {
  let pool: Pool;
  let subscriber: Redis;
  const received: string[] = [];
  beforeAll(async () => {
    pool = createPool(TEST_DATABASE_URL, 2);
    subscriber = new Redis(TEST_REDIS_URL);
    subscriber.on('message', (_channel: string, message: string) => void received.push(message));
    await subscriber.subscribe(EVENTS_CHANNEL);
  });
  afterAll(async () => {
    await subscriber.quit();
    await pool.end();
  });

  it('events committed during an invocation are published to Redis before the handler returns', async () => {
    useLambdaEnv();
    const mount = await createMount(pool, { key: `lambda-support-${randomUUID().slice(0, 8)}`, kind: 's3', bucket: 'b', prefix: 'p/', region: 'us-east-1' });
    const tag = randomUUID();
    const handler = lambdaHandler('events', async (_e: unknown, _c, lc) => {
      await appendEvents(lc.core.pool, [{ type: 'filestore.node.updated', mountId: mount.id, data: { tag } }]);
      return 'ok';
    });
    expect(await handler({}, lambdaContext())).toBe('ok');
    // The bus took it before the handler returned; its row's mark may still be on its way.
    await (await lambdaCore()).core.relay?.settled();
    const { rows } = await pool.query<{ published: boolean }>(`SELECT published_at IS NOT NULL AS published FROM filestore.outbox WHERE mount_id = $1`, [mount.id]);
    expect(rows).toEqual([{ published: true }]);
    await eventually(async () => received.find((m) => m.includes(tag)), 'the event on the Redis channel');
  });

  it('a handler that throws still publishes what it committed, and the error reaches the caller', async () => {
    useLambdaEnv();
    const mount = await createMount(pool, { key: `lambda-support-${randomUUID().slice(0, 8)}`, kind: 's3', bucket: 'b', prefix: 'p/', region: 'us-east-1' });
    const handler = lambdaHandler('fails', async (_e: unknown, _c, lc) => {
      await appendEvents(lc.core.pool, [{ type: 'filestore.node.updated', mountId: mount.id, data: {} }]);
      throw new Error('after the commit');
    });
    await expect(handler({}, lambdaContext())).rejects.toThrow('after the commit');
    // Published before the handler returned; its row's mark may still be on its way.
    await (await lambdaCore()).core.relay?.settled();
    const { rows } = await pool.query<{ published: boolean }>(`SELECT published_at IS NOT NULL AS published FROM filestore.outbox WHERE mount_id = $1`, [mount.id]);
    expect(rows).toEqual([{ published: true }]);
  });

  it('log lines of an invocation carry its Lambda context and a correlation id from the event', async () => {
    useLambdaEnv();
    const lines: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    const context = lambdaContext({ functionName: 'filestore-api' });
    try {
      const handler = lambdaHandler('logs', async () => logger.info('inside the handler'));
      await handler({ version: '2.0', requestContext: { requestId: 'Ab1cD2eFgHIEJ3Q=' } }, context);
      await handler({ 'detail-type': 'Scheduled Event', id: '53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa' }, context);
      await handler({}, context);
    } finally {
      spy.mockRestore();
    }
    const inside = lines
      .join('')
      .split('\n')
      .filter((l) => l.includes('inside the handler'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(inside.map((l) => l.correlation_id)).toEqual(['Ab1cD2eFgHIEJ3Q=', '53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa', context.awsRequestId]);
    expect(inside[0]).toMatchObject({ level: 'INFO', function_name: 'filestore-api', function_request_id: context.awsRequestId, handler: 'logs' });
  });

  it('metrics recorded during an invocation are published (as EMF) when it ends', async () => {
    useLambdaEnv();
    const handler = lambdaHandler('metrics', async (_e: unknown, _c, lc) => {
      lc.metrics.securityEvents.inc({ kind: 'test' });
      return lc.metrics.hasStoredMetrics();
    });
    expect(await handler({}, lambdaContext())).toBe(true);
    expect((await lambdaCore()).metrics.hasStoredMetrics()).toBe(false);
  });
});

describe('Redis with AUTH (ElastiCache): the token from FILESTORE_REDIS_AUTH_SECRET_ARN', () => {
  // Characters a URL must escape: the token reaches Redis as stored in the secret.
  const authToken = `t0ken%#!${randomUUID().slice(0, 8)}`;
  const arn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:filestore/redis-auth-AbCdEf';
  let redis: ChildProcess;
  let redisUrl: string;
  let secrets: http.Server;
  let endpoint: string;
  let pool: Pool;
  const commandSecrets: Record<string, string> = {
    'arn:aws:secretsmanager:eu-west-1:123456789012:secret:filestore/command-AbCdEf': `${TEST_COMMAND_SECRET},${'b'.repeat(40)}`,
    'arn:aws:secretsmanager:eu-west-1:123456789012:secret:filestore/short-AbCdEf': 'too-short',
  };

  beforeAll(async () => {
    const port = await freePort();
    redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--requirepass', authToken], { stdio: 'ignore' });
    redisUrl = `redis://127.0.0.1:${port}/0`;
    const probe = new Redis(port, '127.0.0.1', { password: authToken, retryStrategy: () => 50 });
    probe.on('error', () => {}); // refused until the server listens: retried
    await probe.ping();
    probe.disconnect();
    // Secrets Manager's JSON protocol (GetSecretValue), for the SDK client at AWS_ENDPOINT_URL_SECRETS_MANAGER.
    secrets = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString('utf8')));
      req.on('end', () => {
        const id = (JSON.parse(body) as { SecretId?: string }).SecretId ?? '';
        const value = id === arn ? JSON.stringify({ password: authToken }) : commandSecrets[id];
        res.setHeader('content-type', 'application/x-amz-json-1.1');
        if (req.headers['x-amz-target'] !== 'secretsmanager.GetSecretValue' || value === undefined) res.writeHead(400).end(JSON.stringify({ __type: 'ResourceNotFoundException', message: 'not found' }));
        else res.writeHead(200).end(JSON.stringify({ ARN: id, Name: id.split(':').at(-1), SecretString: value, VersionId: 'v1' }));
      });
    });
    await new Promise<void>((resolve) => secrets.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(secrets.address() as net.AddressInfo).port}`;
    pool = createPool(TEST_DATABASE_URL, 2);
  });
  afterAll(async () => {
    await pool.end();
    await new Promise<void>((resolve) => secrets.close(() => resolve()));
    redis.kill('SIGKILL');
  });

  const publishesOneEvent = async (): Promise<boolean> => {
    const mount = await createMount(pool, { key: `lambda-support-${randomUUID().slice(0, 8)}`, kind: 's3', bucket: 'b', prefix: 'p/', region: 'us-east-1' });
    const handler = lambdaHandler('redis-auth', async (_e: unknown, _c, lc) => {
      await appendEvents(lc.core.pool, [{ type: 'filestore.node.updated', mountId: mount.id, data: {} }]);
    });
    await handler({}, lambdaContext());
    await closeLambdaCore();
    const { rows } = await pool.query<{ published: boolean }>('SELECT published_at IS NOT NULL AS published FROM filestore.outbox WHERE mount_id = $1', [mount.id]);
    return rows[0]?.published === true;
  };

  it('without the token the core cannot publish; with it, it does', async () => {
    useLambdaEnv({ REDIS_URL: redisUrl });
    expect(await publishesOneEvent()).toBe(false);
    useLambdaEnv({
      REDIS_URL: redisUrl,
      FILESTORE_REDIS_AUTH_SECRET_ARN: arn,
      AWS_ENDPOINT_URL_SECRETS_MANAGER: endpoint,
      AWS_REGION: 'eu-west-1',
      AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
    });
    expect(await publishesOneEvent()).toBe(true);
  });

  it('the command secrets come from FILESTORE_COMMAND_SECRET_ARN; a secret too short is CONFIG_ERROR naming the variable', async () => {
    const aws = { AWS_ENDPOINT_URL_SECRETS_MANAGER: endpoint, AWS_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
    useLambdaEnv({ ...aws, FILESTORE_COMMAND_SECRET: '', FILESTORE_COMMAND_SECRET_ARN: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:filestore/short-AbCdEf' });
    await expect(lambdaCore()).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_COMMAND_SECRET_ARN') });
    useLambdaEnv({ ...aws, FILESTORE_COMMAND_SECRET: '', FILESTORE_COMMAND_SECRET_ARN: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:filestore/command-AbCdEf' });
    await expect(lambdaCore()).resolves.toMatchObject({ config: { commandSecretArn: expect.stringContaining('filestore/command') } });
  });
});

describe('secrets', () => {
  it('a secret is read once per TTL; a failed read is not kept', async () => {
    let now = 0;
    let reads = 0;
    let fail = true;
    const cache = new SecretCache(
      1_000,
      async (id) => {
        reads++;
        if (fail) throw new Error('throttled');
        return `value of ${id}`;
      },
      () => now,
    );
    await expect(cache.get('arn:a')).rejects.toThrow('throttled');
    fail = false;
    expect(await cache.get('arn:a')).toBe('value of arn:a');
    expect(await cache.get('arn:a')).toBe('value of arn:a');
    expect(reads).toBe(2);
    now = 1_001;
    await cache.get('arn:a');
    expect(reads).toBe(3);
  });

  it('the Redis AUTH secret becomes the password (or user and password) of REDIS_URL', async () => {
    const url = 'rediss://cache.example:6379/0';
    expect(await redisUrlWithAuth({ redisUrl: url, redisAuthSecretArn: 'arn' }, async () => 'tok/en')).toBe('rediss://:tok%2Fen@cache.example:6379/0');
    expect(await redisUrlWithAuth({ redisUrl: url, redisAuthSecretArn: 'arn' }, async () => '{"username":"app","password":"pw"}')).toBe('rediss://app:pw@cache.example:6379/0');
    expect(await redisUrlWithAuth({ redisUrl: url, redisAuthSecretArn: undefined }, async () => 'x')).toBe(url);
    await expect(redisUrlWithAuth({ redisUrl: url, redisAuthSecretArn: 'arn' }, async () => '{"token":"x"}')).rejects.toMatchObject({ code: 'CONFIG_ERROR' });
  });
});

describe('PostgreSQL with IAM auth', () => {
  let certificate: TestCertificate;
  let key: string;
  let cert: string;
  let caPath: string;
  let dir: string;
  const fronts: PasswordFront[] = [];

  beforeAll(() => {
    certificate = makeTestCertificate();
    ({ key, cert, caPath } = certificate);
    dir = path.dirname(caPath);
  });
  afterAll(() => certificate.remove());
  afterEach(async () => {
    for (const f of fronts.splice(0)) {
      unregisterConnectionAuth(`postgres://postgres@127.0.0.1:${f.port}/${databaseName}`);
      await f.close();
    }
  });

  const front = async (o: { tls?: boolean } = {}) => {
    const f = await startPasswordFront(o.tls ? { tls: { key, cert } } : {});
    fronts.push(f);
    return f;
  };

  const iamEnv = (port: number, extra: Record<string, string> = {}) =>
    useLambdaEnv({
      DATABASE_URL: '',
      FILESTORE_DB_IAM_AUTH: 'true',
      FILESTORE_DB_HOST: '127.0.0.1',
      FILESTORE_DB_PORT: String(port),
      FILESTORE_DB_NAME: databaseName,
      FILESTORE_DB_USER: 'postgres',
      AWS_REGION: 'eu-west-1',
      AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
      ...extra,
    });

  it('a password function is called for each new connection, and what it returns is what the server receives', async () => {
    const f = await front();
    let calls = 0;
    const pool = createPool(`postgres://postgres@127.0.0.1:${f.port}/${databaseName}`, 2, { password: async () => `token-${++calls}` });
    try {
      const [a, b] = await Promise.all([pool.connect(), pool.connect()]);
      a.release();
      b.release();
      await pool.query('SELECT 1'); // an idle connection is reused: no new password
      expect(calls).toBe(2);
      expect(f.passwords.sort()).toEqual(['token-1', 'token-2']);
    } finally {
      await pool.end();
    }
  });

  it('the core of a Lambda with FILESTORE_DB_IAM_AUTH connects over TLS with a signed RDS token per connection', async () => {
    const f = await front({ tls: true });
    iamEnv(f.port, { FILESTORE_DB_TLS_CA: caPath });
    const { core } = await lambdaCore();
    const [a, b] = await Promise.all([core.pool.connect(), core.pool.connect()]);
    a.release();
    b.release();
    expect(f.passwords).toHaveLength(2);
    for (const token of f.passwords) {
      expect(token).toMatch(new RegExp(`^127\\.0\\.0\\.1:${f.port}/\\?Action=connect&DBUser=postgres&.*X-Amz-Signature=[0-9a-f]{64}`));
    }
  });

  it('refuses a server that offers no TLS, and one whose certificate the configured CAs do not sign', async () => {
    const plain = await front();
    iamEnv(plain.port, { FILESTORE_DB_TLS_CA: caPath });
    await expect(lambdaCore()).rejects.toThrow(/SSL/i);
    expect(plain.passwords).toEqual([]);
    await closeLambdaCore();

    const tlsFront = await front({ tls: true });
    iamEnv(tlsFront.port); // Node's CAs do not sign the test's certificate
    await expect(lambdaCore()).rejects.toThrow(/self.signed|certificate/i);
    expect(tlsFront.passwords).toEqual([]);
  });

  it('an unreadable FILESTORE_DB_TLS_CA is CONFIG_ERROR naming it', async () => {
    iamEnv(5432, { FILESTORE_DB_TLS_CA: path.join(dir, 'absent.pem') });
    await expect(lambdaCore()).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_DB_TLS_CA') });
  });
});
