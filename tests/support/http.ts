import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, expect } from 'vitest';
import { startTestServer, type TestServer } from './api.ts';
import { createTestMount, stopS3, type BackendKind, type TestMount } from './filestore.ts';

/** Helpers for driving the real HTTP API with global fetch, as a client would. */

export type TokenName = 'read' | 'write' | 'admin' | 'none';

export interface CallOptions {
  token?: TokenName;
  headers?: Record<string, string>;
  /** A JSON value (serialised), or raw bytes / a string / a stream sent as they are. */
  json?: unknown;
  body?: BodyInit | Uint8Array | Readable;
  signal?: AbortSignal;
}

export interface Client {
  url: string;
  call(method: string, path: string, o?: CallOptions): Promise<Response>;
  /** Calls and parses the JSON body, asserting the status. */
  json<T = Record<string, unknown>>(method: string, path: string, status: number, o?: CallOptions): Promise<T>;
}

export function client(server: TestServer, defaultToken: TokenName = 'admin'): Client {
  async function call(method: string, path: string, o: CallOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { ...o.headers };
    const token = o.token ?? defaultToken;
    if (token !== 'none') headers.authorization = `Bearer ${server.tokens[token]}`;
    let body = o.body;
    if (o.json !== undefined) {
      body = JSON.stringify(o.json);
      headers['content-type'] ??= 'application/json';
    }
    const init: RequestInit & { duplex?: 'half' } = { method, headers };
    // duplex 'half' lets a stream (a Node Readable or a web ReadableStream) be sent as it is produced.
    if (body !== undefined) Object.assign(init, { body: body as BodyInit, duplex: 'half' });
    if (o.signal) init.signal = o.signal;
    return fetch(`${server.url}${path}`, init);
  }
  return {
    url: server.url,
    call,
    async json<T>(method: string, path: string, status: number, o?: CallOptions): Promise<T> {
      const res = await call(method, path, o);
      const text = await res.text();
      expect(res.status, `${method} ${path} → ${res.status} ${text}`).toBe(status);
      return JSON.parse(text) as T;
    },
  };
}

/** Query string of defined values (encodeURIComponent, so `%00` etc. survive as given). */
export const qs = (params: Record<string, string | number | undefined>): string =>
  Object.entries(params)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`)
    .join('&');

/**
 * Asserts an error response: the status, the stable code, and the documented body shape
 * `{"error":{"code","message","details?"}}` with nothing that looks like a stack trace.
 * `code` may list the codes that are all acceptable.
 */
export async function expectError(res: Response | Promise<Response>, status: number, code: string | string[]): Promise<{ code: string; message: string; details?: Record<string, unknown> }> {
  const r = await res;
  const text = await r.text();
  expect(r.status, text).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^application\/json/);
  const body = JSON.parse(text) as { error: { code: string; message: string; details?: Record<string, unknown> } };
  expect(Object.keys(body)).toEqual(['error']);
  if (Array.isArray(code)) expect(code).toContain(body.error.code);
  else expect(body.error.code).toBe(code);
  expect(typeof body.error.message).toBe('string');
  expect(body.error.message.length).toBeGreaterThan(0);
  for (const k of Object.keys(body.error)) expect(['code', 'message', 'details']).toContain(k);
  expect(text).not.toMatch(/\n\s+at |\.ts:\d+|node:internal|stack/i);
  return body.error;
}

export const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

// ---- Server-Sent Events over fetch --------------------------------------------------------

export interface SseEvent {
  id: number;
  event: string;
  data: { id: string; seq: number; type: string; mountId: string; occurredAt: string; data: Record<string, unknown> };
}

export interface SseReader {
  response: Response;
  events: SseEvent[];
  /** Resolves once `match` holds for the events received so far (checked on every event). */
  until(match: (events: SseEvent[]) => boolean, timeoutMs?: number): Promise<SseEvent[]>;
  /** Drops the connection (as a network failure would). */
  abort(): void;
  /** Set when the stream ended or failed (other than by abort). */
  ended: boolean;
}

/** Opens the event stream and parses it incrementally (`id:`, `event:`, `data:` fields; comments ignored). */
export async function openSse(c: Client, path: string, o: CallOptions = {}): Promise<SseReader> {
  const controller = new AbortController();
  const response = await c.call('GET', path, { ...o, signal: controller.signal });
  const events: SseEvent[] = [];
  const waiters = new Set<() => void>();
  const reader: SseReader = {
    response,
    events,
    ended: false,
    abort: () => controller.abort(),
    until(match, timeoutMs = 15_000) {
      if (match(events)) return Promise.resolve(events);
      return new Promise((resolve, reject) => {
        const check = () => {
          if (match(events)) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(events);
          } else if (reader.ended) {
            clearTimeout(timer);
            waiters.delete(check);
            reject(new Error(`event stream ended; got ${events.length} events`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`condition not met; got ${JSON.stringify(events.map((e) => [e.id, e.event]))}`));
        }, timeoutMs);
        waiters.add(check);
      });
    },
  };
  if (response.status !== 200 || !response.body) return reader;
  const body = response.body.pipeThrough(new TextDecoderStream()).getReader();
  void (async () => {
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await body.read();
        if (done) break;
        buffer += value;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields: Record<string, string> = {};
          for (const line of block.split('\n')) {
            if (line === '' || line.startsWith(':')) continue;
            const colon = line.indexOf(':');
            const name = colon < 0 ? line : line.slice(0, colon);
            const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            fields[name] = name in fields && name === 'data' ? `${fields[name]}\n${value}` : value;
          }
          if (fields.data === undefined) continue;
          events.push({ id: Number(fields.id), event: fields.event ?? 'message', data: JSON.parse(fields.data) as SseEvent['data'] });
          for (const w of [...waiters]) w();
        }
      }
    } catch {
      // aborted or cut
    }
    reader.ended = true;
    for (const w of [...waiters]) w();
  })();
  return reader;
}

// ---- One API server per test file ------------------------------------------------------

export interface ApiFixture {
  readonly server: TestServer;
  readonly c: Client;
  /** A fresh mount, cleaned up after the file. */
  mountOf(kind?: BackendKind): Promise<TestMount>;
  /** Runs after the file (temp directories and the like). */
  cleanup(f: () => Promise<void>): void;
}

/** Starts a real API server (auth on) before the file's tests and stops it, and S3, after. */
export function useApiServer(defaultToken: TokenName = 'admin'): ApiFixture {
  let server: TestServer | undefined;
  let inner: Client | undefined;
  const cleanups: Array<() => Promise<void>> = [];
  beforeAll(async () => {
    server = await startTestServer();
    inner = client(server, defaultToken);
  });
  afterAll(async () => {
    await server?.close();
    for (const f of cleanups) await f();
    await stopS3();
  });
  const started = (): TestServer => {
    if (!server) throw new Error('the API server starts in beforeAll');
    return server;
  };
  const ready = (): Client => {
    if (!inner) throw new Error('the API server starts in beforeAll');
    return inner;
  };
  // A stable client object usable at module scope; it talks to the server once it runs.
  const c: Client = {
    get url() {
      return ready().url;
    },
    call: (...args) => ready().call(...args),
    json: (...args) => ready().json(...args),
  };
  return {
    get server() {
      return started();
    },
    c,
    async mountOf(kind: BackendKind = 'local') {
      const m = await createTestMount(started().core, kind);
      cleanups.push(m.cleanup);
      return m;
    },
    cleanup(f) {
      cleanups.push(f);
    },
  };
}

/** What a user sees in a local directory (Filestore's own staging area aside), sorted. */
export const visibleEntries = async (dir: string): Promise<string[]> => (await readdir(dir)).filter((n) => !n.startsWith('.filestore')).sort();

/** Polls `check` until it returns a value other than undefined (a condition wait, never a fixed sleep). */
export async function eventually<T>(check: () => Promise<T | undefined>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
