import { spawn, execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { serveApi, type ApiServer } from '../shared/api/serve.ts';
import { FilestoreClient, type ReconcileJob } from '../shared/client/index.ts';
import { waitForJob } from '../cli/commands/reconcile.ts';
import { Redis } from 'ioredis';
import { s3Error } from '../shared/backends/s3/errors.ts';
import { startCommandWorker } from '../shared/dispatch/worker.ts';
import { asFilestoreError } from '../shared/errors.ts';
import { createFailureLog } from '../shared/api/failure-log.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { createFilestore, type Filestore, type FilestoreOptions } from '../shared/runtime.ts';
import { TEST_DATABASE_URL } from './support/env.ts';
import { uniqueKey } from './support/filestore.ts';
import { eventually, expectError, qs } from './support/http.ts';
import { startRedisServer, type TestRedisServer } from './support/redis-server.ts';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.ts';

// Failures of what Filestore depends on — PostgreSQL, Redis, a full disk — are reported as
// what they are (503 UNAVAILABLE with Retry-After, 507 INSUFFICIENT_STORAGE), not as 500
// INTERNAL; an outage is logged once, not per retry; `reconcile --wait` waits through it.

const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url));
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f().catch(() => {});
});

interface Served {
  core: Filestore;
  server: ApiServer;
  url: string;
  lines: string[];
}

/** A Filestore with its API (no tokens: loopback), every log line kept. */
async function serve(o: Partial<FilestoreOptions>): Promise<Served> {
  const lines: string[] = [];
  const log = (line: string) => lines.push(line);
  const core = await createFilestore({ databaseUrl: TEST_DATABASE_URL, redisUrl: 'inline', maintenanceIntervalMs: 600_000, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] }, log, ...o });
  const server = await serveApi({ core, host: '127.0.0.1', port: 0, tokens: [], authDisabled: true, log });
  cleanups.push(async () => {
    await server.close();
    await core.close();
  });
  return { core, server, url: server.url, lines };
}

async function localMount(core: Filestore, root?: string): Promise<{ key: string; id: string; root: string }> {
  const dir = root ?? (await mkdtemp(path.join(os.tmpdir(), 'filestore-errors-')));
  if (!root) cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const m = await createMount(core.pool, { key: uniqueKey('local'), kind: 'local', rootPath: dir });
  return { key: m.key, id: m.id, root: dir };
}

const call = (url: string, method: string, p: string, json?: unknown, body?: BodyInit) =>
  fetch(`${url}${p}`, {
    method,
    headers: json === undefined ? {} : { 'content-type': 'application/json' },
    body: json === undefined ? body : JSON.stringify(json),
    ...(body !== undefined ? { duplex: 'half' } : {}),
  } as RequestInit);

function proxiedDatabaseUrl(proxy: TcpProxy): string {
  const u = new URL(TEST_DATABASE_URL);
  u.port = String(proxy.port);
  u.password = 'not-a-real-secret'; // trust auth ignores it; it must never reach a caller
  return u.toString();
}

async function pgProxy(): Promise<TcpProxy> {
  const target = new URL(TEST_DATABASE_URL);
  const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
  cleanups.push(() => proxy.close());
  return proxy;
}

describe('PostgreSQL unreachable', () => {
  it('answers 503 UNAVAILABLE with Retry-After and says the catalogue database is unreachable, never the connection string; recovers when it is back', async () => {
    const proxy = await pgProxy();
    const s = await serve({ databaseUrl: proxiedDatabaseUrl(proxy) });
    const m = await localMount(s.core);
    expect((await call(s.url, 'GET', '/v1/mounts')).status).toBe(200);

    await proxy.down();
    for (const [method, p, json] of [
      ['GET', '/v1/mounts', undefined],
      ['GET', `/v1/nodes/by-path?${qs({ mountId: m.key, path: '' })}`, undefined],
      ['POST', '/v1/commands/mkdir', { mountId: m.key, path: 'd' }],
    ] as const) {
      const res = await call(s.url, method, p, json);
      expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
      const text = await res.clone().text();
      expect(text).not.toContain('not-a-real-secret');
      expect(text).not.toContain('postgres://');
      const e = await expectError(res, 503, 'UNAVAILABLE');
      expect(e.message).toMatch(/catalogue database.*unreachable/i);
      expect(e.details?.retryAfterSeconds).toEqual(expect.any(Number));
    }
    // The server log says so, not once per request, nor once per relay pass (every 500 ms):
    // the relay meets the outage, then several more passes fail while the test waits.
    await eventually(async () => (s.lines.some((l) => l.startsWith('outbox relay:')) ? true : undefined), 'the relay to meet the outage');
    await new Promise((r) => setTimeout(r, 2_500));
    expect(s.lines.filter((l) => l.startsWith('outbox relay:'))).toHaveLength(1);
    expect(s.lines.filter((l) => l.includes('503 UNAVAILABLE'))).toHaveLength(1);
    const ready = await call(s.url, 'GET', '/readyz');
    expect(ready.status).toBe(503);
    expect(await ready.text()).not.toContain('not-a-real-secret');
    // A server that closes every connection as it is made (pg: "Connection terminated unexpectedly").
    await proxy.up({ drop: true });
    const e = await expectError(call(s.url, 'GET', '/v1/mounts'), 503, 'UNAVAILABLE');
    expect(e.details?.cause).toBe('connection terminated unexpectedly');
    await proxy.down();

    await proxy.up();
    await eventually(async () => ((await call(s.url, 'GET', '/v1/mounts')).status === 200 ? true : undefined), 'the API to answer again');
  });
});

describe('/readyz', () => {
  it('many parallel probes open a connection or so to PostgreSQL, not one each, and an unreachable database reads "unavailable" without host, port or user (the detail goes to the log, once)', async () => {
    const proxy = await pgProxy();
    const s = await serve({ databaseUrl: proxiedDatabaseUrl(proxy) });
    // REDIS_URL=inline: there is no Redis, and /readyz says so rather than "ok"; ready all the same.
    const first = await call(s.url, 'GET', '/readyz');
    expect(first.status).toBe(200);
    expect(await first.json()).toEqual({ status: 'ok', checks: { postgres: 'ok', redis: 'inline' } });
    // The API description says what the word means.
    const described = JSON.stringify(((await (await call(s.url, 'GET', '/openapi.json')).json()) as { paths: Record<string, unknown> }).paths['/readyz']);
    expect(described).toContain('\\"inline\\" (REDIS_URL=inline: no Redis is used');
    const before = proxy.accepted;
    const answers = await Promise.all(Array.from({ length: 40 }, () => call(s.url, 'GET', '/readyz')));
    expect(answers.map((r) => r.status)).toEqual(answers.map(() => 200));
    // One probe (single-flight, its result shared for a moment), not one connection per request;
    // a little room for the pool's own connections (the relay, maintenance).
    expect(proxy.accepted - before).toBeLessThanOrEqual(4);

    await proxy.down();
    const down = await eventually(async () => {
      const r = await call(s.url, 'GET', '/readyz');
      return r.status === 503 ? r : undefined;
    }, '/readyz to see PostgreSQL gone');
    const text = await down.text();
    expect(JSON.parse(text)).toMatchObject({ status: 'unavailable', checks: { postgres: 'unavailable', redis: 'inline' } });
    for (const leak of [String(proxy.port), '127.0.0.1', 'ECONNREFUSED', 'not-a-real-secret', 'user']) expect(text).not.toContain(leak);
    for (let i = 0; i < 3; i++) await call(s.url, 'GET', '/readyz');
    const logged = s.lines.filter((l) => l.startsWith('readiness: postgres'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatch(/ECONNREFUSED|connect/);

    await proxy.up();
    await eventually(async () => ((await call(s.url, 'GET', '/readyz')).status === 200 ? true : undefined), '/readyz to see PostgreSQL back');
    expect(s.lines.filter((l) => l.startsWith('readiness: postgres'))).toHaveLength(2); // and once when it is back
  });
});

describe('a full disk', () => {
  it('an upload that fills the disk is 507 INSUFFICIENT_STORAGE saying the storage is full; the journal entry fails with that code; nothing staged is left; one log line', async (ctx) => {
    const tmpfs = await mkdtemp(path.join(os.tmpdir(), 'filestore-full-'));
    cleanups.push(() => rm(tmpfs, { recursive: true, force: true }));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', tmpfs], { stdio: 'ignore' });
    } catch {
      ctx.skip(); // not root, or no tmpfs here: the test says so by being skipped
    }
    cleanups.push(async () => execFileSync('umount', [tmpfs]));
    const s = await serve({});
    const m = await localMount(s.core, tmpfs);
    const res = await call(s.url, 'PUT', `/v1/files?${qs({ mountId: m.key, path: 'big.bin' })}`, undefined, new Uint8Array(1024 * 1024));
    const e = await expectError(res, 507, 'INSUFFICIENT_STORAGE');
    expect(e.message).toMatch(/full/i);
    expect(e.message).toContain('big.bin');

    const journal = (await (await call(s.url, 'GET', `/v1/journal?${qs({ mountId: m.key })}`)).json()) as { items: Array<{ status: string; error: { code: string } | null }> };
    expect(journal.items.at(-1)).toMatchObject({ status: 'failed', error: { code: 'INSUFFICIENT_STORAGE' } });
    const left = async (dir: string): Promise<string[]> => {
      const out: string[] = [];
      for (const d of await readdir(dir, { withFileTypes: true })) {
        out.push(path.join(dir, d.name));
        if (d.isDirectory()) out.push(...(await left(path.join(dir, d.name))));
      }
      return out.filter((p) => !p.endsWith('.filestore-staging'));
    };
    expect(await left(tmpfs)).toEqual([]);
    expect(s.lines.filter((l) => /full|INSUFFICIENT_STORAGE|ENOSPC/.test(l))).toHaveLength(1);

    // Space is there again for what fits.
    expect((await call(s.url, 'PUT', `/v1/files?${qs({ mountId: m.key, path: 'small.txt' })}`, undefined, 'fits')).status).toBe(200);
  });
});

describe('a condition the operator ends does not spoil an Idempotency-Key', () => {
  it('a PUT refused 507 INSUFFICIENT_STORAGE succeeds when sent again with the same key once space is freed', async (ctx) => {
    const tmpfs = await mkdtemp(path.join(os.tmpdir(), 'filestore-full-'));
    cleanups.push(() => rm(tmpfs, { recursive: true, force: true }));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', tmpfs], { stdio: 'ignore' });
    } catch {
      ctx.skip(); // not root, or no tmpfs here
    }
    cleanups.push(async () => execFileSync('umount', [tmpfs]));
    const s = await serve({});
    const m = await localMount(s.core, tmpfs);
    await writeFile(path.join(tmpfs, 'filler.bin'), new Uint8Array(200 * 1024));
    const route = `/v1/files?${qs({ mountId: m.key, path: 'report.bin' })}`;
    const bytes = new Uint8Array(100 * 1024).fill(7);
    const put = () => fetch(`${s.url}${route}`, { method: 'PUT', headers: { 'idempotency-key': 'report-1' }, body: bytes });
    const e = await expectError(put(), 507, 'INSUFFICIENT_STORAGE');
    expect(e.message).toMatch(/free space.*send the command again/);

    await rm(path.join(tmpfs, 'filler.bin'));
    const res = await put();
    expect(res.status, await res.clone().text()).toBe(200);
    expect(((await res.json()) as { node: { sizeBytes: number } }).node.sizeBytes).toBe(bytes.length);
    expect((await readFile(path.join(tmpfs, 'report.bin'))).equals(Buffer.from(bytes))).toBe(true);
    const again = await put(); // now a replay of the success
    expect(again.status).toBe(200);
  });
});

describe('Redis unreachable', () => {
  async function redis(): Promise<TestRedisServer> {
    const r = await startRedisServer();
    cleanups.push(() => r.stop());
    return r;
  }

  it('POST /v1/reconcile answers 202 with the job, saying it is queued once the queue is reachable; a consumer queues it when Redis is back and it runs', async () => {
    const r = await redis();
    const s = await serve({ redisUrl: r.url, reconcile: { consume: false } });
    const m = await localMount(s.core);
    await writeFile(path.join(m.root, 'found.txt'), 'x');

    await r.stop();
    const res = await call(s.url, 'POST', '/v1/reconcile', { mountId: m.key });
    const text = await res.text();
    expect(res.status, text).toBe(202);
    const job = JSON.parse(text) as { id: number; status: string; queuePending?: boolean; message?: string };
    expect(job).toMatchObject({ status: 'queued', queuePending: true });
    expect(job.message).toMatch(/Redis/);
    expect(res.headers.get('location')).toBe(`/v1/reconcile/jobs/${job.id}`);

    // The promise holds: once Redis answers, a consumer's sweep queues the recorded job and it runs.
    await r.start();
    const consumer = await createFilestore({ databaseUrl: TEST_DATABASE_URL, redisUrl: r.url, relay: false, recover: false, maintenanceIntervalMs: 600_000, reconcile: { consume: true, mountIds: [m.id] } });
    cleanups.push(() => consumer.close());
    const done = await eventually(async () => {
      const j = (await (await call(s.url, 'GET', `/v1/reconcile/jobs/${job.id}`)).json()) as { status: string; result: Record<string, number> | null };
      return j.status === 'succeeded' || j.status === 'failed' ? j : undefined;
    }, 'the job to run', 30_000);
    expect(done).toMatchObject({ status: 'succeeded', result: { discovered: 1 } });
  });

  it('an outage is logged once per kind of connection when Redis goes and once when it is back, however much work meets it; no unhandled ioredis errors', async () => {
    const r = await redis();
    const consoleError = vi.spyOn(console, 'error');
    cleanups.push(async () => consoleError.mockRestore());
    const s = await serve({ redisUrl: r.url, commandSecrets: [TEST_COMMAND_SECRET], reconcile: { consume: true, mountIds: [] } });
    // An agent's command worker in the same process, logging to the same place.
    const worker = await startCommandWorker(s.core, `h4-${process.pid}`, { log: (line) => s.lines.push(line) });
    cleanups.push(() => worker.close());
    const m = await localMount(s.core);
    const put = (p: string) => call(s.url, 'PUT', `/v1/files?${qs({ mountId: m.key, path: p })}`, undefined, 'x');
    expect((await put('before.txt')).status).toBe(200);
    // An event stream open: the events subscriber connection exists too.
    const stream = new AbortController();
    cleanups.push(async () => stream.abort());
    expect((await fetch(`${s.url}/v1/events/stream`, { signal: stream.signal })).status).toBe(200);
    const before = s.lines.length;

    await r.stop();
    // Work that meets the outage: reads through the cache, commits (cache invalidation, the
    // outbox relay), reconciliation requests.
    for (let i = 0; i < 5; i++) {
      expect((await call(s.url, 'GET', `/v1/nodes/by-path?${qs({ mountId: m.key, path: 'before.txt' })}`)).status).toBe(200);
      expect((await put(`during-${i}.txt`)).status).toBe(200);
    }
    expect((await call(s.url, 'POST', '/v1/reconcile', { mountId: m.key, path: 'before.txt' })).status).toBe(202);
    await eventually(async () => (s.lines.slice(before).some((l) => /unreachable/i.test(l)) ? true : undefined), 'the outage to be logged');
    const during = s.lines.slice(before);

    await r.start();
    await eventually(async () => (s.lines.slice(before).some((l) => /reachable again/i.test(l)) ? true : undefined), 'the recovery to be logged');
    // Every connection kind that logged its outage logs its recovery (they reconnect on their own schedules).
    const kinds = (re: RegExp) => s.lines.slice(before).filter((l) => re.test(l)).map((l) => /^redis \(([^)]+)\)/.exec(l)?.[1]);
    await eventually(async () => (kinds(/reachable again/).length >= kinds(/ unreachable/).length ? true : undefined), 'every kind to recover');
    const down = kinds(/ unreachable/);
    const up = kinds(/reachable again/);
    expect(down.length).toBeGreaterThan(0);
    expect(down.every((k) => k !== undefined)).toBe(true);
    expect(new Set(down).size).toBe(down.length); // once per kind, not per retry or per operation
    expect(new Set(up).size).toBe(up.length);
    expect([...new Set(up)].sort()).toEqual([...new Set(down)].sort());
    // Nothing else repeats per failed operation.
    const other = during.filter((l) => !/^redis \(/.test(l));
    expect(other, other.join('\n')).toHaveLength(0);
    const unhandled = consoleError.mock.calls.filter((c) => String(c[0]).includes('[ioredis] Unhandled error event'));
    expect(unhandled).toEqual([]);
  }, 120_000);
});

describe('errors of services and storage, mapped', () => {
  it('a command that meets an unreachable Redis is 503 UNAVAILABLE; a full S3-compatible store is 507; a caller whose upload breaks is not taken for the database', async () => {
    const r = await startRedisServer();
    await r.stop();
    const client = new Redis(r.url, { maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    const failed = await client.get('x').catch((e: unknown) => e);
    client.disconnect();
    const e = asFilestoreError(failed);
    expect([e.code, e.status]).toEqual(['UNAVAILABLE', 503]);
    expect(e.message).toMatch(/Redis.*unreachable/);
    expect(e.details?.retryAfterSeconds).toEqual(expect.any(Number));

    const full = s3Error({ name: 'XMinioStorageFull', $metadata: { httpStatusCode: 507 } }, 'big.bin', 'writeFile');
    expect([full.code, full.status]).toEqual(['INSUFFICIENT_STORAGE', 507]);
    expect(full.message).toMatch(/full.*big\.bin/);

    // node:http reports a request body cut by its sender as ECONNRESET, without a syscall.
    const aborted = Object.assign(new Error('aborted'), { code: 'ECONNRESET' });
    expect(asFilestoreError(aborted).code).toBe('INTERNAL');
  });
});

describe('a client bug is not an outage', () => {
  it('a protocol violation (SQLSTATE 08P01, e.g. a wrong parameter count) is 500 INTERNAL logged with its stack; the rest of class 08 stays 503 UNAVAILABLE', async () => {
    const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 1 });
    cleanups.push(() => pool.end());
    // Two values for one placeholder: PostgreSQL refuses the Bind message.
    const violation = await pool.query('SELECT $1::int AS n', [1, 2]).catch((e: unknown) => e);
    expect((violation as { code?: string }).code).toBe('08P01');
    const e = asFilestoreError(violation);
    expect([e.code, e.status]).toEqual(['INTERNAL', 500]);
    expect(e.details?.retryAfterSeconds).toBeUndefined();
    const lines: string[] = [];
    createFailureLog((line) => lines.push(line))('POST /v1/commands/mkdir [c1]', violation, e);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/failed: .*bind message supplies 2 parameters/);
    expect(lines[0]).toMatch(/\n\s+at /); // the stack

    // The connection itself is still fine: the pool answers the next query.
    expect((await pool.query<{ n: number }>('SELECT 1 AS n')).rows[0]?.n).toBe(1);
    for (const code of ['08000', '08001', '08003', '08004', '08006', '08007']) {
      const mapped = asFilestoreError(Object.assign(new Error('connection exception'), { code }));
      expect([code, mapped.code, mapped.status]).toEqual([code, 'UNAVAILABLE', 503]);
    }
  });
});

describe('filestore reconcile --wait', () => {
  it('waits through a catalogue outage (503s) saying so once on stderr, and prints the final job when it is back', async () => {
    const proxy = await pgProxy();
    const s = await serve({ databaseUrl: proxiedDatabaseUrl(proxy) });
    const m = await localMount(s.core);
    await writeFile(path.join(m.root, 'a.txt'), 'a');
    const direct = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2 });
    cleanups.push(() => direct.end());

    let stdout = '';
    let stderr = '';
    const child = spawn(process.execPath, [BIN, 'reconcile', m.key, '--wait', '--json'], { env: { ...process.env, FILESTORE_URL: s.url } });
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    cleanups.push(async () => child.kill('SIGKILL'));

    // The job is recorded (and waits: nothing consumes it yet); then the catalogue goes away.
    await eventually(async () => {
      const { rows } = await direct.query('SELECT id FROM filestore.reconciliation_jobs WHERE mount_id = $1', [m.id]);
      return rows.length > 0 ? true : undefined;
    }, 'the job row');
    await proxy.down();
    await eventually(async () => (/still waiting/i.test(stderr) ? true : undefined), 'the CLI to say it waits through the outage', 20_000);
    await proxy.up();

    // A consumer comes and runs the job.
    const consumer = await createFilestore({ databaseUrl: TEST_DATABASE_URL, redisUrl: 'inline', relay: false, recover: false, maintenanceIntervalMs: 600_000, reconcile: { consume: true, queueRedisUrl: 'inline', mountIds: [m.id] } });
    cleanups.push(() => consumer.close());
    expect(await exited, stderr).toBe(0);
    expect(JSON.parse(stdout)).toMatchObject({ status: 'succeeded', result: { discovered: 1 } });
    expect(stderr.match(/still waiting/gi)?.length ?? 0, stderr).toBe(1);
  });

  it('gives up after the bounded time without an answer, saying the job goes on and how to follow it', async () => {
    const proxy = await pgProxy(); // a port that answers nothing once down
    await proxy.down();
    const client = new FilestoreClient({ baseUrl: `http://127.0.0.1:${proxy.port}` });
    const job = { id: 424242, status: 'queued' } as ReconcileJob;
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    cleanups.push(async () => stderr.mockRestore());
    await expect(waitForJob(client, job, { giveUpMs: 1_500 })).rejects.toThrow(/no answer about job 424242 .*filestore jobs 424242 --wait/);
    expect(stderr.mock.calls.map((c) => String(c[0])).join('').match(/still waiting/g)).toHaveLength(1);
  });
});
