import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLambdaApi, type ApiGatewayEvent, type LambdaApi } from '../shared/api/lambda/adapter.ts';
import { startTestServer, type TestServer } from './support/api.ts';
import { createTestMount, stopS3, type BackendKind, type TestMount } from './support/filestore.ts';

// The same requests through the node:http server and through the API Lambda's converter give
// the same status, the same JSON (once what differs by nature is masked: ids, times, the
// mount) and the same meaningful headers. Requests that change state run on two mounts alike,
// one per transport.

const HEADERS = ['content-type', 'etag', 'location', 'allow', 'www-authenticate', 'content-range', 'retry-after'];

interface Req {
  name: string;
  method: string;
  /** As a client sends it: percent-encoded. `{m}` is the mount's key. */
  target: string;
  token?: 'read' | 'write' | 'admin' | null;
  headers?: Record<string, string>;
  json?: unknown;
  body?: Buffer;
}

const FILE = encodeURIComponent('dir/a b%c+d?e#f é✓.txt');
const BYTES = randomBytes(5000);

const REQUESTS: Req[] = [
  { name: 'health', method: 'GET', target: '/healthz', token: null },
  { name: 'mount by key', method: 'GET', target: '/v1/mounts/{m}' },
  { name: 'unknown mount, encoded characters in the path', method: 'GET', target: '/v1/mounts/no%20such%3Fmount%23100%25' },
  { name: 'upload', method: 'PUT', target: `/v1/files?mountId={m}&path=${FILE}`, token: 'write', body: BYTES, headers: { 'content-type': 'application/octet-stream' } },
  { name: 'download', method: 'GET', target: `/v1/files?mountId={m}&path=${FILE}` },
  { name: 'range', method: 'GET', target: `/v1/files?mountId={m}&path=${FILE}`, headers: { range: 'bytes=100-199' } },
  { name: 'range not satisfiable', method: 'GET', target: `/v1/files?mountId={m}&path=${FILE}`, headers: { range: 'bytes=99999-' } },
  { name: 'node by path, repeated key', method: 'GET', target: `/v1/nodes/by-path?mountId={m}&path=${FILE}&path=other` },
  { name: 'list', method: 'GET', target: '/v1/nodes?mountId={m}&prefix=dir' },
  { name: 'mkdir', method: 'POST', target: '/v1/commands/mkdir', token: 'write', json: { mountId: '{m}', path: 'new dir/ü', parents: true } },
  { name: 'mkdir again', method: 'POST', target: '/v1/commands/mkdir', token: 'write', json: { mountId: '{m}', path: 'new dir/ü' } },
  { name: 'write as reader', method: 'POST', target: '/v1/commands/mkdir', token: 'read', json: { mountId: '{m}', path: 'x' } },
  { name: 'no caller', method: 'GET', target: '/v1/mounts', token: null },
  { name: 'method not allowed', method: 'DELETE', target: '/v1/mounts' },
  { name: 'no route', method: 'GET', target: '/v1/nothing%20here' },
  { name: 'bad json', method: 'POST', target: '/v1/commands/mkdir', token: 'write', body: Buffer.from('{not json'), headers: { 'content-type': 'application/json' } },
  { name: 'journal', method: 'GET', target: '/v1/journal?mountId={m}' },
];

let server: TestServer;
let lambda: LambdaApi;

beforeAll(async () => {
  server = await startTestServer();
  lambda = await createLambdaApi(server.core, { log: () => {} });
});
afterAll(async () => {
  await server?.close();
  await stopS3();
});

interface Answer {
  status: number;
  headers: Record<string, string | undefined>;
  json?: unknown;
  bytes?: Buffer;
}

async function overHttp(r: Req, mount: TestMount): Promise<Answer> {
  const headers: Record<string, string> = { ...r.headers };
  const token = r.token === undefined ? 'read' : r.token;
  if (token) headers.authorization = `Bearer ${server.tokens[token]}`;
  let body: BodyInit | undefined = r.body ? new Uint8Array(r.body) : undefined;
  if (r.json !== undefined) {
    body = fill(JSON.stringify(r.json), mount);
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(`${server.url}${fill(r.target, mount)}`, { method: r.method, headers, body, redirect: 'manual' });
  const bytes = Buffer.from(await res.arrayBuffer());
  return answer(res.status, (h) => res.headers.get(h) ?? undefined, bytes);
}

/** The event API Gateway would send for the same request: rawPath decoded, rawQueryString as sent, the authorizer's context. */
async function overLambda(r: Req, mount: TestMount): Promise<Answer> {
  const target = fill(r.target, mount);
  const q = target.indexOf('?');
  const rawPath = decodeURIComponent(q === -1 ? target : target.slice(0, q));
  const headers: Record<string, string> = { ...r.headers };
  let body = r.body;
  if (r.json !== undefined) {
    body = Buffer.from(fill(JSON.stringify(r.json), mount));
    headers['content-type'] = 'application/json';
  }
  const token = r.token === undefined ? 'read' : r.token;
  const event = {
    version: '2.0',
    routeKey: '$default',
    rawPath,
    rawQueryString: q === -1 ? '' : target.slice(q + 1),
    headers: { host: 'api.example.com', ...headers, ...(body ? { 'content-length': String(body.length) } : {}) },
    requestContext: {
      http: { method: r.method, path: rawPath, protocol: 'HTTP/1.1', sourceIp: '198.51.100.1', userAgent: 'parity' },
      requestId: 'parity',
      routeKey: '$default',
      stage: '$default',
      ...(token ? { authorizer: { lambda: { principal: `test-${token}`, scopes: token } } } : {}),
    },
    ...(body ? { body: body.toString('base64'), isBase64Encoded: true } : { isBase64Encoded: false }),
  } as unknown as ApiGatewayEvent;
  const res = await lambda.handle(event);
  const raw = Buffer.from(res.body ?? '', res.isBase64Encoded ? 'base64' : 'utf8');
  const h = (res.headers ?? {}) as Record<string, string>;
  return answer(res.statusCode ?? 0, (name) => h[name], raw);
}

function answer(status: number, header: (name: string) => string | undefined, bytes: Buffer): Answer {
  const headers = Object.fromEntries(HEADERS.map((h) => [h, header(h)]));
  const type = headers['content-type'] ?? '';
  if (type.startsWith('application/json')) return { status, headers, json: bytes.length > 0 ? JSON.parse(bytes.toString('utf8')) : undefined };
  return { status, headers, bytes };
}

const fill = (s: string, m: TestMount) => s.replaceAll('{m}', m.mount.key);

/** Masks what differs by nature between two runs on two mounts: ids, times, the mount, storage validators. */
function masked(a: Answer, m: TestMount): unknown {
  const walk = (v: unknown, key = ''): unknown => {
    if (typeof v === 'string') {
      if (/(^id$|Id$|At$|^mtime$|^etag$|^cursor$|^nextCursor$|^bucket$|^rootPath$|^key$|^endpoint$)/.test(key)) return `<${key}>`;
      return v.replaceAll(m.mount.key, '<mount>').replaceAll(m.mount.id, '<mount>');
    }
    if (typeof v === 'number' && /(^id$|Id$)/.test(key)) return `<${key}>`;
    if (Array.isArray(v)) return v.map((x) => walk(x, key));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, k)]));
    return v;
  };
  const headers = { ...a.headers };
  if (headers.etag?.startsWith('W/')) headers.etag = 'W/<validator>';
  return { status: a.status, headers: walk(headers), json: walk(a.json), bytes: a.bytes?.toString('base64') };
}

describe.each<BackendKind>(['local', 's3'])('node:http and the API Lambda answer alike (%s mount)', (kind) => {
  let httpMount: TestMount;
  let lambdaMount: TestMount;
  beforeAll(async () => {
    httpMount = await createTestMount(server.core, kind);
    lambdaMount = await createTestMount(server.core, kind);
  });
  afterAll(async () => {
    await httpMount?.cleanup();
    await lambdaMount?.cleanup();
  });

  it('for every request of the list, in order', async () => {
    for (const r of REQUESTS) {
      const viaHttp = await overHttp(r, httpMount);
      const viaLambda = await overLambda(r, lambdaMount);
      expect(masked(viaLambda, lambdaMount), r.name).toEqual(masked(viaHttp, httpMount));
    }
  });
});
