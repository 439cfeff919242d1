/**
 * The agent and the CLI's processes (shared/config.ts) reach PostgreSQL the way the Lambdas do:
 * DATABASE_URL, or RDS Proxy with IAM auth (FILESTORE_DB_HOST/PORT/NAME/USER,
 * FILESTORE_DB_IAM_AUTH=true, FILESTORE_DB_TLS_CA, AWS_REGION), one implementation in
 * shared/db. A local PostgreSQL cannot verify RDS tokens: a front before it
 * (tests/support/password-front.ts) asks each connection for its password over TLS and records
 * it, so what a process sends is observable.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { agentOptionsFrom } from '../agent/main.ts';
import { startAgent, type RunningAgent } from '../agent/agent.ts';
import { loadConfig } from '../shared/config.ts';
import { readyDatabase, type TokenSigner } from '../shared/db/iam-auth.ts';
import { createPool, unregisterConnectionAuth } from '../shared/db/pool.ts';
import { RunLocks } from '../shared/reconcile/lambda-run.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { makeTestCertificate, startPasswordFront, type PasswordFront, type TestCertificate } from './support/password-front.ts';

const databaseName = decodeURIComponent(new URL(TEST_DATABASE_URL).pathname.slice(1));
const ROOT = path.resolve(import.meta.dirname, '..');

const iamEnv = (port: number, extra: Record<string, string> = {}): Record<string, string> => ({
  FILESTORE_DB_IAM_AUTH: 'true',
  FILESTORE_DB_HOST: '127.0.0.1',
  FILESTORE_DB_PORT: String(port),
  FILESTORE_DB_NAME: databaseName,
  FILESTORE_DB_USER: 'postgres',
  AWS_REGION: 'eu-west-1',
  ...extra,
});

const problem = (env: Record<string, string>): { code?: string; message: string } => {
  try {
    loadConfig({ FILESTORE_ALLOW_INLINE: 'true', ...env });
  } catch (err) {
    return err as { code?: string; message: string };
  }
  throw new Error('no error');
};

describe('the database variables of shared/config.ts', () => {
  it('FILESTORE_DB_* with IAM auth: a URL without a password, the signer\'s inputs', () => {
    const config = loadConfig({ FILESTORE_ALLOW_INLINE: 'true', ...iamEnv(6432, { FILESTORE_DB_USER: 'filestore', FILESTORE_DB_NAME: 'filestore', FILESTORE_DB_HOST: 'proxy.example', FILESTORE_DB_TLS_CA: '/etc/rds-ca.pem' }) });
    expect(config.database).toEqual({
      databaseUrl: 'postgres://filestore@proxy.example:6432/filestore',
      iamAuth: { hostname: 'proxy.example', port: 6432, username: 'filestore', region: 'eu-west-1', tlsCaPath: '/etc/rds-ca.pem' },
    });
    expect(loadConfig({ FILESTORE_ALLOW_INLINE: 'true', DATABASE_URL: TEST_DATABASE_URL }).database).toEqual({ databaseUrl: TEST_DATABASE_URL, iamAuth: null });
    expect(loadConfig({ FILESTORE_ALLOW_INLINE: 'true' }).database).toBeNull(); // `filestore start`: the embedded PostgreSQL
  });

  it('a mix or half of a way is CONFIG_ERROR naming the variables', () => {
    const both = problem({ DATABASE_URL: TEST_DATABASE_URL, ...iamEnv(5432) });
    expect(both.code).toBe('CONFIG_ERROR');
    expect(both.message).toMatch(/DATABASE_URL and FILESTORE_DB_HOST, .*FILESTORE_DB_IAM_AUTH.* are both set/);
    expect(problem({ DATABASE_URL: TEST_DATABASE_URL, FILESTORE_DB_HOST: 'proxy.example' }).message).toMatch(/DATABASE_URL and FILESTORE_DB_HOST are both set/);
    const half = problem({ FILESTORE_DB_IAM_AUTH: 'true', FILESTORE_DB_NAME: 'filestore', AWS_REGION: 'eu-west-1' });
    expect(half).toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_DB_IAM_AUTH=true needs FILESTORE_DB_HOST, FILESTORE_DB_USER') });
    expect(problem({ ...iamEnv(5432), AWS_REGION: '' }).message).toBe(problem(iamEnv(5432, { AWS_REGION: '' })).message);
    const { AWS_REGION: _region, ...noRegion } = iamEnv(5432);
    expect(problem(noRegion)).toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('needs AWS_REGION') });
    const { FILESTORE_DB_IAM_AUTH: _iam, ...noIam } = iamEnv(5432);
    expect(problem(noIam)).toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('without FILESTORE_DB_IAM_AUTH=true') });
    expect(problem(iamEnv(5432, { FILESTORE_DB_PORT: 'x' })).message).toContain('FILESTORE_DB_PORT');
  });
});

describe('the agent on RDS Proxy with IAM auth', () => {
  let certificate: TestCertificate;
  const fronts: PasswordFront[] = [];
  let agent: RunningAgent | undefined;

  beforeAll(() => {
    certificate = makeTestCertificate();
  });
  afterAll(() => certificate.remove());
  afterEach(async () => {
    await agent?.stop();
    agent = undefined;
    for (const f of fronts.splice(0)) {
      unregisterConnectionAuth(`postgres://postgres@127.0.0.1:${f.port}/${databaseName}`);
      await f.close();
    }
  });

  const front = async (tls = true) => {
    const f = await startPasswordFront(tls ? { tls: { key: certificate.key, cert: certificate.cert } } : {});
    fronts.push(f);
    return f;
  };

  /** Counts its calls; the front accepts any password (the server behind it trusts). */
  const countingSigner = () => {
    const calls: string[] = [];
    const sign: TokenSigner = (auth) => async () => {
      const token = `token-${auth.username}@${auth.hostname}:${auth.port}-${calls.length + 1}`;
      calls.push(token);
      return token;
    };
    return { calls, sign };
  };

  const agentEnv = (port: number, extra: Record<string, string> = {}) =>
    iamEnv(port, {
      REDIS_URL: TEST_REDIS_URL,
      FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET,
      FILESTORE_AGENT_ID: `iam-${randomUUID().slice(0, 8)}`,
      PORT: '0',
      FILESTORE_DB_TLS_CA: certificate.caPath,
      ...extra,
    });

  it('every new connection (its pool, the presence pool, the readiness probe) gets a token of its own from the signer, over TLS', async () => {
    const f = await front();
    const config = loadConfig(agentEnv(f.port));
    const database = config.database!;
    const { calls, sign } = countingSigner();
    await readyDatabase(database, sign);
    agent = await startAgent(agentOptionsFrom(config, database.databaseUrl, () => {}));
    expect((await fetch(`${agent.server.url}/readyz`)).status).toBe(200);
    expect((await fetch(`${agent.server.url}/v1/mounts`)).status).toBe(200);
    expect(calls.length).toBeGreaterThanOrEqual(2);
    expect([...f.passwords].sort()).toEqual([...calls].sort());
    expect(new Set(f.passwords).size).toBe(f.passwords.length); // never a token twice
    expect(calls[0]).toMatch(/^token-postgres@127\.0\.0\.1:\d+-1$/);
    expect(f.applications).toContain('filestore-migrate');
  });

  it('a client made beside a pool (a run\'s lock connection in the audit and reconcile Lambdas) sends a token too', async () => {
    const f = await front();
    const config = loadConfig(agentEnv(f.port));
    const { calls, sign } = countingSigner();
    await readyDatabase(config.database!, sign);
    const pool = createPool(config.database!.databaseUrl, 1);
    try {
      const locks = await RunLocks.open(pool);
      await locks.close();
    } finally {
      await pool.end();
    }
    expect(f.applications).toEqual(['filestore-locks']);
    expect(f.passwords).toEqual(calls);
    expect(calls).toHaveLength(1);
  });

  it('refuses a server that offers no TLS: no token leaves the process', async () => {
    const f = await front(false);
    const config = loadConfig(agentEnv(f.port));
    const { sign } = countingSigner();
    await readyDatabase(config.database!, sign);
    await expect(startAgent(agentOptionsFrom(config, config.database!.databaseUrl, () => {}))).rejects.toThrow(/SSL/i);
    expect(f.passwords).toEqual([]);
  });

  /** `filestore <args>` in a process of its own (async: the front runs in this one). */
  const cli = (args: string[], env: Record<string, string>) => {
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(FILESTORE_|DATABASE_URL$|REDIS_URL$|AWS_)/.test(k)));
    return new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', 'cli/index.ts', ...args], { cwd: ROOT, env: { ...base, ...env }, timeout: 90_000 }, (err, stdout, stderr) =>
        resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  };

  it('`filestore migrate` signs RDS tokens with the SDK\'s default credentials (here AWS_* variables), one per connection, over TLS', async () => {
    const f = await front();
    const r = await cli(['migrate'], {
      ...iamEnv(f.port, { FILESTORE_DB_TLS_CA: certificate.caPath }),
      AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
      AWS_CONFIG_FILE: '/nonexistent',
      AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/database is up to date|applied/);
    expect(f.passwords.length).toBeGreaterThanOrEqual(1);
    for (const token of f.passwords) {
      expect(token).toMatch(new RegExp(`^127\\.0\\.0\\.1:${f.port}/\\?Action=connect&DBUser=postgres&.*X-Amz-Credential=AKIDEXAMPLE%2F\\d{8}%2Feu-west-1%2Frds-db%2Faws4_request.*X-Amz-Signature=[0-9a-f]{64}`));
    }
  });

  it('`filestore agent` with DATABASE_URL and FILESTORE_DB_* exits 1 with CONFIG_ERROR naming both, before touching either', async () => {
    const r = await cli(['agent'], {
      DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none',
      ...iamEnv(1),
      REDIS_URL: 'redis://127.0.0.1:1/0',
      FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET,
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/CONFIG_ERROR/);
    expect(r.stderr).toMatch(/DATABASE_URL and FILESTORE_DB_HOST, .* are both set/);
  });
});
