import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FilestoreApiError, FilestoreClient, FilestoreUnreachableError, type FilestoreEvent } from '../shared/client/index.ts';
import { startTestServer, type TestServer } from './support/api.ts';
import { createTestMount, type TestMount } from './support/filestore.ts';

let server: TestServer;
let t: TestMount;
let client: FilestoreClient;
let scratch: string;

beforeAll(async () => {
  server = await startTestServer();
  t = await createTestMount(server.core, 'local');
  client = new FilestoreClient({ baseUrl: server.url, token: server.tokens.write });
  scratch = await mkdtemp(path.join(os.tmpdir(), 'filestore-client-'));
});

afterAll(async () => {
  await server?.close();
  await t?.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const key = () => t.mount.key;

/** What `await p` threw, for asserting on typed errors. */
async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the call to fail');
}

/** Bytes compared by length and hash: vitest's deep equality walks big buffers byte by byte. */
function expectSameBytes(actual: Buffer, expected: Buffer): void {
  const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  expect({ length: actual.length, sha256: digest(actual) }).toEqual({ length: expected.length, sha256: digest(expected) });
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A lost answer: the request reached the server and was applied, but the caller never sees the response. */
const connectionReset = () => Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }) });

/** A fetch that answers the first matching request on the server, then pretends the connection broke. */
function losingFirstAnswer(match: (url: string) => boolean) {
  const keys: Array<string | null> = [];
  const answered: unknown[] = [];
  let lost = false;
  const fetchImpl: typeof fetch = async (input, init) => {
    const url = String(input);
    const res = await fetch(input, init);
    if (!match(url)) return res;
    keys.push(new Headers(init?.headers).get('idempotency-key'));
    if (lost) return res;
    lost = true;
    answered.push(await res.json());
    throw connectionReset();
  };
  return { fetchImpl, keys, answered };
}

describe('FilestoreClient', () => {
  it('uploads, finds and downloads a file; a Range gives 206 with its Content-Range', async () => {
    const bytes = randomBytes(300_000);
    const put = await client.putFile({ mountId: key(), path: 'docs/blob.bin', body: bytes });
    expect(put.node).toMatchObject({ path: 'docs/blob.bin', kind: 'file', sizeBytes: bytes.length, version: 1, consistencyState: 'ACTIVE' });
    expectSameBytes(await readFile(path.join(t.root as string, 'docs/blob.bin')), bytes);

    const dir = await client.getNodeByPath({ mountId: key(), path: 'docs' });
    expect(dir.rollup).toMatchObject({ fileCount: 1, sizeBytes: bytes.length });

    const whole = await client.getFile({ mountId: key(), path: 'docs/blob.bin' });
    expect(whole).toMatchObject({ status: 200, sizeBytes: bytes.length, version: 1, contentRange: null });
    expectSameBytes(await readAll(whole.body), bytes);

    const part = await client.getFile({ mountId: key(), path: 'docs/blob.bin', range: { start: 1000, end: 1999 } });
    expect(part).toMatchObject({ status: 206, sizeBytes: 1000, contentRange: { start: 1000, end: 1999, totalBytes: bytes.length } });
    expectSameBytes(await readAll(part.body), bytes.subarray(1000, 2000));

    const tail = await client.getFile({ mountId: key(), path: 'docs/blob.bin', range: { start: bytes.length - 10 } });
    expectSameBytes(await readAll(tail.body), bytes.subarray(bytes.length - 10));

    const outside = await failure(client.getFile({ mountId: key(), path: 'docs/blob.bin', range: { start: bytes.length } }));
    expect(outside).toMatchObject({ code: 'RANGE_NOT_SATISFIABLE', status: 416 });
  });

  it('putLocalFile streams a file with progress and downloadToFile writes it back whole', async () => {
    const source = path.join(scratch, 'source.bin');
    const bytes = randomBytes(2 * 1024 * 1024 + 17);
    await writeFile(source, bytes);
    const progress: number[] = [];
    const put = await client.putLocalFile({ mountId: key(), path: 'local/source.bin', file: source, onProgress: (n) => progress.push(n) });
    expect(put.node.sizeBytes).toBe(bytes.length);
    expect(progress.at(-1)).toBe(bytes.length);
    expect(progress.length).toBeGreaterThan(1);

    const target = path.join(scratch, 'copy.bin');
    const got = await client.downloadToFile({ mountId: key(), path: 'local/source.bin', file: target });
    expect(got).toMatchObject({ bytesWritten: bytes.length, sha256: put.node.sha256, version: 1 });
    expectSameBytes(await readFile(target), bytes);
    expect((await readdir(scratch)).filter((f) => f.endsWith('.part'))).toEqual([]);
  });

  it('error answers become FilestoreApiError with the stable code, status and message', async () => {
    const missing = await failure(client.getNodeByPath({ mountId: key(), path: 'no/such/file' }));
    expect(missing).toBeInstanceOf(FilestoreApiError);
    expect(missing).toMatchObject({ code: 'NOT_FOUND', status: 404 });
    expect((missing as Error).message).toMatch(/no\/such\/file/);

    const noMount = await failure(client.listNodes({ mountId: 'no-such-mount' }));
    expect(noMount).toMatchObject({ code: 'MOUNT_NOT_FOUND', status: 404 });

    await client.putFile({ mountId: key(), path: 'versions.txt', body: 'one' });
    const stale = await failure(client.putFile({ mountId: key(), path: 'versions.txt', body: 'two', ifMatch: 7 }));
    expect(stale).toMatchObject({ code: 'VERSION_MISMATCH', status: 409 });
    const created = await failure(client.putFile({ mountId: key(), path: 'versions.txt', body: 'two', ifMatch: 0 }));
    expect(created).toMatchObject({ code: 'VERSION_MISMATCH', status: 409 });
    const ok = await client.putFile({ mountId: key(), path: 'versions.txt', body: 'two', ifMatch: 1 });
    expect(ok.node.version).toBe(2);

    const corrupt = await failure(client.putFile({ mountId: key(), path: 'checked.txt', body: 'abc', sha256: '0'.repeat(64) }));
    expect(corrupt).toMatchObject({ code: 'CHECKSUM_MISMATCH', status: 422 });
  });

  it('a missing token is UNAUTHENTICATED and a read token that writes is FORBIDDEN', async () => {
    const anonymous = new FilestoreClient({ baseUrl: server.url, token: '' });
    expect(await failure(anonymous.listMounts())).toMatchObject({ code: 'UNAUTHENTICATED', status: 401 });
    const reader = new FilestoreClient({ baseUrl: server.url, token: server.tokens.read });
    expect((await reader.listMounts()).items.some((m) => m.key === key())).toBe(true);
    expect(await failure(reader.mkdir({ mountId: key(), path: 'nope' }))).toMatchObject({ code: 'FORBIDDEN', status: 403 });
  });

  it('an unreachable server is FilestoreUnreachableError telling how to start it', async () => {
    const port = await closedPort();
    const offline = new FilestoreClient({ baseUrl: `http://127.0.0.1:${port}`, token: 'x' });
    const err = await failure(offline.mkdir({ mountId: 'local', path: 'x' }));
    expect(err).toBeInstanceOf(FilestoreUnreachableError);
    expect(err).toMatchObject({ networkCode: 'ECONNREFUSED', url: `http://127.0.0.1:${port}` });
    expect((err as Error).message).toBe(
      `cannot reach Filestore at http://127.0.0.1:${port}: is it running? start it with \`npm start\`, or set FILESTORE_URL`,
    );
  });

  it('the same Idempotency-Key replays the first result; the same key with another body is IDEMPOTENCY_CONFLICT', async () => {
    const idempotencyKey = randomUUID();
    const first = await client.mkdir({ mountId: key(), path: 'once' }, { idempotencyKey });
    const again = await client.mkdir({ mountId: key(), path: 'once' }, { idempotencyKey });
    expect(again.journalEntryId).toBe(first.journalEntryId);
    expect(again.node.id).toBe(first.node.id);

    const conflict = await failure(client.mkdir({ mountId: key(), path: 'twice' }, { idempotencyKey }));
    expect(conflict).toMatchObject({ code: 'IDEMPOTENCY_CONFLICT', status: 409 });

    // Without a key of the caller's, every call is a new command: a second mkdir of the same path fails.
    await client.mkdir({ mountId: key(), path: 'fresh' });
    expect(await failure(client.mkdir({ mountId: key(), path: 'fresh' }))).toMatchObject({ code: 'ALREADY_EXISTS' });
  });

  it('a command whose answer was lost is sent again with the same automatic key and replays the first result', async () => {
    const lossy = losingFirstAnswer((url) => url.includes('/v1/commands/mkdir'));
    const flaky = new FilestoreClient({ baseUrl: server.url, token: server.tokens.write, fetch: lossy.fetchImpl });
    const result = await flaky.mkdir({ mountId: key(), path: 'retried' });

    expect(lossy.keys).toHaveLength(2);
    expect(lossy.keys[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(lossy.keys[1]).toBe(lossy.keys[0]);
    expect(result.journalEntryId).toBe((lossy.answered[0] as { journalEntryId: number }).journalEntryId);
    const entries = [];
    for await (const e of client.iterateJournal({ mountId: key(), limit: 50 })) if (e.request.path === 'retried') entries.push(e);
    expect(entries).toHaveLength(1);
  });

  it('an upload from a Buffer is sent again after a lost answer; one from a stream is not', async () => {
    const lossy = losingFirstAnswer((url) => url.includes('/v1/files'));
    const flaky = new FilestoreClient({ baseUrl: server.url, token: server.tokens.write, fetch: lossy.fetchImpl });
    const result = await flaky.putFile({ mountId: key(), path: 'retried.bin', body: Buffer.from('same bytes') });
    expect(lossy.keys).toHaveLength(2);
    expect(lossy.keys[1]).toBe(lossy.keys[0]);
    expect(result.journalEntryId).toBe((lossy.answered[0] as { journalEntryId: number }).journalEntryId);
    expect(result.node.version).toBe(1);

    const streamed = losingFirstAnswer((url) => url.includes('/v1/files'));
    const once = new FilestoreClient({ baseUrl: server.url, token: server.tokens.write, fetch: streamed.fetchImpl });
    const err = await failure(once.putFile({ mountId: key(), path: 'streamed.bin', body: Readable.from([Buffer.from('stream')]) }));
    expect(err).toBeInstanceOf(FilestoreUnreachableError);
    expect(err).toMatchObject({ networkCode: 'ECONNRESET' });
    expect((err as Error).message).toMatch(/same Idempotency-Key/);
    expect(streamed.keys).toHaveLength(1);
  });

  it('iterators walk every page of nodes, children, snapshots and the journal', async () => {
    const names = Array.from({ length: 25 }, (_, i) => `f${String(i).padStart(2, '0')}.txt`);
    for (let i = 0; i < names.length; i += 5) {
      await Promise.all(names.slice(i, i + 5).map((n) => client.putFile({ mountId: key(), path: `many/${n}`, body: n })));
    }
    const first = await client.listNodes({ mountId: key(), prefix: 'many/', limit: 10 });
    expect(first.items).toHaveLength(10);
    expect(first.nextCursor).toEqual(expect.any(String));

    const paths: string[] = [];
    for await (const n of client.iterateNodes({ mountId: key(), prefix: 'many/', limit: 10 })) paths.push(n.path);
    expect(paths).toEqual(names.map((n) => `many/${n}`));

    const dir = await client.getNodeByPath({ mountId: key(), path: 'many' });
    const children: string[] = [];
    for await (const n of client.iterateChildren(dir.id, { limit: 7 })) children.push(n.name);
    expect(children).toEqual(names);

    let node = (await client.putFile({ mountId: key(), path: 'history.txt', body: 'v1' })).node;
    node = (await client.putFile({ mountId: key(), path: 'history.txt', body: 'v2' })).node;
    node = (await client.updateMetadata(node.id, { set: { owner: 'ops' } }, { ifMatch: node.version })).node;
    expect(node.metadata).toEqual({ owner: 'ops' });
    const versions: number[] = [];
    for await (const s of client.iterateSnapshots(node.id, { limit: 1 })) versions.push(s.version);
    expect(versions).toEqual([1, 2, 3]);

    const ids: number[] = [];
    for await (const e of client.iterateJournal({ mountId: key(), limit: 4 })) ids.push(e.id);
    expect(ids.length).toBeGreaterThan(25);
    expect([...ids].sort((a, b) => a - b)).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('events replay from lastEventId and resume after the connection drops, without gaps or repeats', async () => {
    const m = await createTestMount(server.core, 'local');
    const proxy = await startProxy(new URL(server.url).port);
    const abort = new AbortController();
    try {
      await client.putFile({ mountId: m.mount.key, path: 'before.txt', body: 'a' });
      const viaProxy = new FilestoreClient({ baseUrl: proxy.url, token: server.tokens.read });
      let opened = 0;
      const stream = viaProxy.events({ mountId: m.mount.key, lastEventId: 0, reconnectDelayMs: 20, signal: abort.signal, onOpen: () => opened++ });
      const seen: FilestoreEvent[] = [];
      const until = async (done: (e: FilestoreEvent) => boolean) => {
        for (;;) {
          const next = await stream.next();
          if (next.done) throw new Error('the event stream ended');
          seen.push(next.value);
          if (done(next.value)) return;
        }
      };
      const createdAt = (p: string) => (e: FilestoreEvent) => e.type === 'filestore.node.created' && (e.data.data.node as { path: string }).path === p;

      await until(createdAt('before.txt'));
      proxy.dropAll();
      await client.putFile({ mountId: m.mount.key, path: 'after.txt', body: 'b' });
      await until(createdAt('after.txt'));

      expect(opened).toBeGreaterThanOrEqual(2);
      expect(proxy.requests.some((r) => /last-event-id: \d+/i.test(r))).toBe(true);
      const ids = seen.map((e) => e.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect([...ids].sort((a, b) => a - b)).toEqual(ids);
      for (const e of seen) expect(e.data).toMatchObject({ seq: e.id, type: e.type, mountId: m.mount.id });

      abort.abort();
      expect((await stream.next()).done).toBe(true);
    } finally {
      abort.abort();
      await proxy.close();
      await m.cleanup();
    }
  });

  it('an event stream the server refuses throws instead of reconnecting', async () => {
    const anonymous = new FilestoreClient({ baseUrl: server.url, token: '' });
    const err = await failure(anonymous.events({ mountId: key() }).next());
    expect(err).toMatchObject({ code: 'UNAUTHENTICATED', status: 401 });
  });
});

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

/** A TCP proxy to the test server whose connections can be cut, as a flaky network would. */
async function startProxy(targetPort: string) {
  const sockets = new Set<net.Socket>();
  const requests: string[] = [];
  const proxy = net.createServer((downstream) => {
    const upstream = net.connect(Number(targetPort), '127.0.0.1');
    sockets.add(downstream).add(upstream);
    downstream.once('data', (chunk: Buffer) => requests.push(chunk.toString('latin1')));
    downstream.pipe(upstream).pipe(downstream);
    const end = () => {
      downstream.destroy();
      upstream.destroy();
      sockets.delete(downstream);
      sockets.delete(upstream);
    };
    downstream.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const { port } = proxy.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    dropAll() {
      for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        proxy.close(() => resolve());
      }),
  };
}
