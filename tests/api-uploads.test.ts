import http from 'node:http';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './support/api.ts';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { createTestMount, stopS3, type TestMount } from './support/filestore.ts';
import { rawKeys, testS3Client } from './support/s3.ts';
import { client, eventually, expectError, qs, visibleEntries as visible, type Client } from './support/http.ts';

// Upload bodies come from the network at the client's pace. A client that stops sending must
// not hold a database connection (and the path locks on it) for ever, nor may a crowd of them
// take the whole pool: every other route, and the readiness probe, must keep answering.

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  code?: string;
}

interface Stalled {
  /** The server's answer (or the connection's end: status 0). */
  answer: Promise<Answer>;
  /** Drops the connection, as a client that goes away does. */
  cut(): void;
}

/** Sends the headers and the first bytes of a body that claims to be longer, then nothing more. */
function stalledRequest(server: TestServer, method: string, route: string, headers: Record<string, string>, first: string, claimed = 1_000_000): Stalled {
  const { hostname, port } = new URL(server.url);
  const req = http.request({ host: hostname, port, method, path: route, headers: { ...headers, 'content-length': String(claimed) } });
  const answer = new Promise<Answer>((resolve) => {
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      const done = () => {
        let code: string | undefined;
        try {
          code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, ...(code ? { code } : {}) });
      };
      res.on('end', done);
      res.on('error', done);
    });
    req.on('error', () => resolve({ status: 0, headers: {}, text: '' }));
  });
  req.write(first);
  return { answer, cut: () => req.destroy() };
}

/** Resolves with `p`, or fails the test with `what` when it has not settled in `ms` (a hang, not a slow answer). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Everything in a local mount's staging area, recursively. */
async function staged(root: string): Promise<string[]> {
  try {
    return (await readdir(path.join(root, '.filestore-staging'), { recursive: true })).map(String);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

interface Entry {
  command: string;
  status: string;
  error: { code: string } | null;
}

const journalOf = async (c: Client, mountId: string) =>
  (await c.json<{ items: Entry[] }>('GET', `/v1/journal?${qs({ mountId, limit: 1000 })}`, 200)).items;

describe('a body that stops arriving', () => {
  let server: TestServer;
  let c: Client;
  let t: TestMount;
  beforeAll(async () => {
    server = await startTestServer({ serve: { bodyIdleTimeoutMs: 1000 }, filestore: { poolSize: 4 } });
    c = client(server, 'write');
    t = await createTestMount(server.core, 'local');
  });
  afterAll(async () => {
    await server?.close();
    await t?.cleanup();
    await stopS3();
  });

  it('an upload is answered 408 REQUEST_TIMEOUT after the idle timeout: nothing at the path or in staging, its journal entry failed, and the same Idempotency-Key may be sent again', async () => {
    const route = `/v1/files?${qs({ mountId: t.mount.key, path: 'stalled.bin' })}`;
    const headers = { authorization: `Bearer ${server.tokens.write}`, 'content-type': 'application/octet-stream', 'idempotency-key': 'stalled-upload-1' };
    const upload = stalledRequest(server, 'PUT', route, headers, 'the first bytes');
    const answer = await within(upload.answer, 20_000, 'a stalled upload');
    upload.cut();
    expect(answer, answer.text).toMatchObject({ status: 408, code: 'REQUEST_TIMEOUT' });
    expect(await visible(t.root as string)).toEqual([]);
    expect(await staged(t.root as string)).toEqual([]);
    const entries = await journalOf(c, t.mount.key);
    expect(entries.map((e) => [e.command, e.status, e.error?.code])).toEqual([['writeFile', 'failed', 'REQUEST_TIMEOUT']]);

    // The client sends it again, whole this time, under the same key: it runs.
    const again = await c.json<{ node: { sizeBytes: number } }>('PUT', route, 200, { body: 'all the bytes', headers: { 'idempotency-key': 'stalled-upload-1' } });
    expect(again.node.sizeBytes).toBe(13);
    expect(await readFile(path.join(t.root as string, 'stalled.bin'), 'utf8')).toBe('all the bytes');
  });

  it('on S3 too, with a multipart upload under way: 408, no object at the path, no staging object, no unfinished upload', async () => {
    const s3 = await createTestMount(server.core, 's3');
    const route = `/v1/files?${qs({ mountId: s3.mount.key, path: 'big.bin' })}`;
    const headers = { authorization: `Bearer ${server.tokens.write}`, 'content-type': 'application/octet-stream' };
    // More than one 8 MiB part, so a part is sent before the body stalls.
    const upload = stalledRequest(server, 'PUT', route, headers, 'x'.repeat(9 * 1024 * 1024), 20 * 1024 * 1024);
    const answer = await within(upload.answer, 30_000, 'a stalled S3 upload');
    upload.cut();
    expect(answer, answer.text).toMatchObject({ status: 408, code: 'REQUEST_TIMEOUT' });
    const client = testS3Client(s3.mount.endpoint as string);
    try {
      expect((await rawKeys(client, s3.mount.bucket as string)).filter((k) => !k.endsWith('/'))).toEqual([]);
      const multipart = await client.send(new ListMultipartUploadsCommand({ Bucket: s3.mount.bucket as string }));
      expect(multipart.Uploads ?? []).toEqual([]);
    } finally {
      client.destroy();
    }
    const entries = await journalOf(c, s3.mount.key);
    expect(entries.map((e) => [e.command, e.status, e.error?.code])).toEqual([['writeFile', 'failed', 'REQUEST_TIMEOUT']]);
  });

  it('a JSON body that stops arriving is 408 too, and changes nothing', async () => {
    const json = JSON.stringify({ mountId: t.mount.key, path: 'never' });
    const mkdir = stalledRequest(server, 'POST', '/v1/commands/mkdir', { authorization: `Bearer ${server.tokens.write}`, 'content-type': 'application/json' }, json.slice(0, 10), json.length);
    const answer = await within(mkdir.answer, 20_000, 'a stalled JSON body');
    mkdir.cut();
    expect(answer, answer.text).toMatchObject({ status: 408, code: 'REQUEST_TIMEOUT' });
    expect(await visible(t.root as string)).not.toContain('never');
  });

  it('a slow upload that keeps sending is not cut, however long it takes in all', async () => {
    const route = `/v1/files?${qs({ mountId: t.mount.key, path: 'slow.bin' })}`;
    const chunks = Array.from({ length: 15 }, (_, i) => `chunk ${String(i).padStart(2, '0')};`);
    const { hostname, port } = new URL(server.url);
    const answer = await new Promise<Answer>((resolve, reject) => {
      const req = http.request({
        host: hostname,
        port,
        method: 'PUT',
        path: route,
        headers: { authorization: `Bearer ${server.tokens.write}`, 'content-length': String(chunks.join('').length) },
      });
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      });
      req.on('error', reject);
      // 15 chunks 100 ms apart: longer in all than the 1 s idle timeout, never idle for it.
      let i = 0;
      const next = () => {
        const chunk = chunks[i++];
        if (chunk === undefined) return void req.end();
        req.write(chunk);
        setTimeout(next, 100);
      };
      next();
    });
    expect(answer.status, answer.text).toBe(200);
    expect(await readFile(path.join(t.root as string, 'slow.bin'), 'utf8')).toBe(chunks.join(''));
  });
});

describe('many stalled uploads against a small pool', () => {
  let server: TestServer;
  let c: Client;
  let t: TestMount;
  beforeAll(async () => {
    // Stalled uploads stay stalled for the whole test (60 s idle timeout); a pool of 4.
    server = await startTestServer({ serve: { bodyIdleTimeoutMs: 60_000 }, filestore: { poolSize: 4, poolAcquireTimeoutMs: 500 } });
    c = client(server, 'write');
    t = await createTestMount(server.core, 'local');
  });
  afterAll(async () => {
    await server?.close();
    await t?.cleanup();
  });

  it('20 stalled uploads: uploads beyond the limit get 503 UNAVAILABLE with Retry-After, and every other route and /readyz keep answering', async () => {
    const headers = { authorization: `Bearer ${server.tokens.write}`, 'content-type': 'application/octet-stream' };
    const uploads = Array.from({ length: 20 }, (_, i) =>
      stalledRequest(server, 'PUT', `/v1/files?${qs({ mountId: t.mount.key, path: `stalled-${i}.bin` })}`, headers, 'a few bytes'),
    );
    try {
      // Half the pool (2 of 4 connections) may stream bodies; the others are refused at once.
      const refused = await within(
        eventually(async () => {
          const settled = await Promise.all(uploads.map((u) => Promise.race([u.answer, Promise.resolve(null)])));
          const answered = settled.filter((a): a is Answer => a !== null);
          return answered.length >= 18 ? answered : undefined;
        }, 'the uploads beyond the limit to be refused'),
        20_000,
        'uploads beyond the limit',
      );
      expect(refused).toHaveLength(18);
      for (const a of refused) {
        expect(a, a.text).toMatchObject({ status: 503, code: 'UNAVAILABLE' });
        expect(Number(a.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      }

      // With two uploads still stalled, the API answers.
      await within(c.json('GET', `/v1/nodes?${qs({ mountId: t.mount.key })}`, 200), 10_000, 'GET /v1/nodes');
      await within(c.json('POST', '/v1/commands/mkdir', 200, { json: { mountId: t.mount.key, path: 'meanwhile' } }), 10_000, 'mkdir');
      const ready = await within(c.json<{ status: string; checks: Record<string, string> }>('GET', '/readyz', 200), 10_000, '/readyz');
      expect(ready.checks.postgres).toBe('ok');
      // Another streamed upload may run once a slot is free: not yet.
      const oneMore = stalledRequest(server, 'PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'one-more.bin' })}`, headers, 'x');
      uploads.push(oneMore);
      expect(await within(oneMore.answer, 10_000, 'one more streamed upload')).toMatchObject({ status: 503, code: 'UNAVAILABLE' });
      // A small body (at most 64 KiB) is read whole before its command starts and needs no slot (issue 17).
      await within(c.json('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'small.bin' })}`, 200, { body: 'x' }), 10_000, 'a small upload');
    } finally {
      for (const u of uploads) u.cut();
    }

    // The two that held slots end failed when their clients go; nothing stays pending or staged.
    await eventually(async () => {
      const entries = await journalOf(c, t.mount.key);
      const writes = entries.filter((e) => e.command === 'writeFile');
      return writes.length === 3 && writes.filter((e) => e.status === 'failed').length === 2 && writes.some((e) => e.status === 'succeeded') ? writes : undefined;
    }, 'the stalled uploads to end failed');
    expect(await staged(t.root as string)).toEqual([]);
    expect(await visible(t.root as string)).toEqual(['meanwhile', 'small.bin']);
    // And uploads run again.
    await c.json('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'after.bin' })}`, 200, { body: 'after' });
  });

  it('when the pool is exhausted, routes that need it answer 503 UNAVAILABLE with Retry-After instead of waiting, and /readyz still answers', async () => {
    const held: pg.PoolClient[] = [];
    try {
      for (let i = 0; i < 4; i++) held.push(await server.core.pool.connect());
      const res = await within(c.call('GET', `/v1/journal?${qs({ mountId: t.mount.id })}`), 10_000, 'GET /v1/journal');
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      await expectError(res, 503, 'UNAVAILABLE');
      const ready = await within(c.json<{ checks: Record<string, string> }>('GET', '/readyz', 200), 10_000, '/readyz');
      expect(ready.checks.postgres).toBe('ok');
    } finally {
      for (const h of held) h.release();
    }
    await c.json('GET', `/v1/journal?${qs({ mountId: t.mount.id })}`, 200);
  });
});
