import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FilestoreClient } from '../shared/client/index.ts';
import { startTestServer, type TestServer } from './support/api.ts';
import { createTestMount, uniqueKey, type TestMount } from './support/filestore.ts';
import { qs, visibleEntries as visible } from './support/http.ts';

// The tokenless loopback default (FILESTORE_AUTH=auto, no tokens, 127.0.0.1) must not be an
// API for every web page the user opens: a browser sends some cross-site requests without a
// preflight (GET, HEAD, and POST with text/plain or form bodies), and a DNS-rebound name
// reaches 127.0.0.1 with its own Host. Those are refused; the CLI, the typed client and
// same-origin pages keep working.

let server: TestServer;
let t: TestMount;
let port: number;

beforeAll(async () => {
  server = await startTestServer({ auth: false });
  t = await createTestMount(server.core, 'local');
  port = Number(new URL(server.url).port);
});

afterAll(async () => {
  await server?.close();
  await t?.cleanup();
});

interface Raw {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  code?: string;
}

/** One request exactly as given (node:http, so Host and the absence of Content-Type are ours to choose). */
function raw(method: string, route: string, headers: Record<string, string>, body?: string): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: route, headers, setHost: !('host' in headers) }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let code: string | undefined;
        try {
          code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, ...(code ? { code } : {}) });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const mkdirBody = (p: string) => JSON.stringify({ mountId: t.mount.key, path: p });

describe('JSON bodies need Content-Type: application/json', () => {
  it('a body without Content-Type, or as text/plain or a form (what a page may send cross-site without a preflight), is 415 UNSUPPORTED_MEDIA_TYPE and changes nothing', async () => {
    const none = await raw('POST', '/v1/commands/mkdir', {}, mkdirBody('none'));
    expect(none, none.text).toMatchObject({ status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' });
    for (const type of ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const r = await raw('POST', '/v1/commands/mkdir', { 'content-type': type }, mkdirBody('typed'));
      expect(r, `${type}: ${r.text}`).toMatchObject({ status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' });
    }
    // Registering a mount the same way is refused too.
    const mount = await raw('POST', '/v1/mounts', { 'content-type': 'text/plain' }, JSON.stringify({ kind: 'local', key: uniqueKey('x'), rootPath: t.root }));
    expect(mount).toMatchObject({ status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' });
    expect(await visible(t.root as string)).toEqual([]);
    // application/json (with parameters) is accepted.
    const ok = await raw('POST', '/v1/commands/mkdir', { 'content-type': 'application/json; charset=utf-8' }, mkdirBody('typed-json'));
    expect(ok.status, ok.text).toBe(200);
    expect(await visible(t.root as string)).toEqual(['typed-json']);
  });
});

describe('without authentication, only this machine’s own pages and programs', () => {
  it('a Host that is not a loopback name (DNS rebinding) is 403 ORIGIN_NOT_ALLOWED, reads included', async () => {
    const put = await raw('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'secret.txt' })}`, { 'content-type': 'application/octet-stream' }, 'secret');
    expect(put.status, put.text).toBe(200);
    for (const host of ['rebind.evil.example', `rebind.evil.example:${port}`, `10.0.0.1:${port}`, `localhost.evil.example:${port}`, `127.0.0.1.nip.io:${port}`]) {
      for (const route of ['/v1/mounts', `/v1/files?${qs({ mountId: t.mount.key, path: 'secret.txt' })}`, `/v1/journal?${qs({ mountId: t.mount.key })}`]) {
        const r = await raw('GET', route, { host });
        expect(r, `${host} ${route}: ${r.text}`).toMatchObject({ status: 403, code: 'ORIGIN_NOT_ALLOWED' });
        expect(r.text).not.toContain('secret');
      }
    }
    const mkdir = await raw('POST', '/v1/commands/mkdir', { host: 'rebind.evil.example', 'content-type': 'application/json' }, mkdirBody('rebound'));
    expect(mkdir).toMatchObject({ status: 403, code: 'ORIGIN_NOT_ALLOWED' });
    expect(await visible(t.root as string)).not.toContain('rebound');
  });

  it('loopback Host values, with or without a port, are served', async () => {
    for (const host of [`127.0.0.1:${port}`, '127.0.0.1', `127.8.9.10:${port}`, `localhost:${port}`, 'localhost', `LOCALHOST:${port}`, `[::1]:${port}`, '[::1]']) {
      const r = await raw('GET', '/v1/mounts', { host });
      expect(r.status, `${host}: ${r.text}`).toBe(200);
    }
  });

  it('a cross-site request (Origin of another site, Origin null, Sec-Fetch-Site cross-site or same-site) is 403 ORIGIN_NOT_ALLOWED and changes nothing', async () => {
    const cases: Array<Record<string, string>> = [
      { origin: 'https://evil.example' },
      { origin: 'null' },
      { origin: `http://localhost:${port + 1}` }, // another local port is another origin
      { origin: `https://127.0.0.1:${port}` },
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site' },
      { origin: `http://127.0.0.1:${port}`, 'sec-fetch-site': 'cross-site' },
    ];
    for (const headers of cases) {
      const post = await raw('POST', '/v1/commands/mkdir', { ...headers, 'content-type': 'application/json' }, mkdirBody('cross'));
      expect(post, `${JSON.stringify(headers)}: ${post.text}`).toMatchObject({ status: 403, code: 'ORIGIN_NOT_ALLOWED' });
      const put = await raw('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'cross.txt' })}`, { ...headers, 'content-type': 'application/octet-stream' }, 'x');
      expect(put, JSON.stringify(headers)).toMatchObject({ status: 403, code: 'ORIGIN_NOT_ALLOWED' });
      const get = await raw('GET', `/v1/files?${qs({ mountId: t.mount.key, path: 'secret.txt' })}`, headers);
      expect(get, JSON.stringify(headers)).toMatchObject({ status: 403, code: 'ORIGIN_NOT_ALLOWED' });
      const mount = await raw('POST', '/v1/mounts', { ...headers, 'content-type': 'application/json' }, JSON.stringify({ kind: 'local', key: uniqueKey('x'), rootPath: t.root }));
      expect(mount, JSON.stringify(headers)).toMatchObject({ status: 403, code: 'ORIGIN_NOT_ALLOWED' });
    }
    const entries = await raw('GET', `/v1/journal?${qs({ mountId: t.mount.key })}`, {});
    expect(entries.text).not.toContain('cross');
    expect(await visible(t.root as string)).not.toContain('cross');
  });

  it('a same-origin page and the browser’s own navigation are served', async () => {
    const self = `http://127.0.0.1:${port}`;
    const post = await raw('POST', '/v1/commands/mkdir', { origin: self, 'sec-fetch-site': 'same-origin', 'content-type': 'application/json' }, mkdirBody('same-origin'));
    expect(post.status, post.text).toBe(200);
    const viaLocalhost = await raw('GET', '/v1/mounts', { host: `localhost:${port}`, origin: `http://localhost:${port}`, 'sec-fetch-site': 'same-origin' });
    expect(viaLocalhost.status, viaLocalhost.text).toBe(200);
    const typed = await raw('GET', '/v1/mounts', { 'sec-fetch-site': 'none' });
    expect(typed.status, typed.text).toBe(200);
  });

  it('the typed client (no Origin) works as before', async () => {
    const client = new FilestoreClient({ baseUrl: server.url });
    await client.mkdir({ mountId: t.mount.key, path: 'by-client' });
    await client.putFile({ mountId: t.mount.key, path: 'by-client/f.txt', body: 'hello' });
    const file = await client.getFile({ mountId: t.mount.key, path: 'by-client/f.txt' });
    const chunks: Buffer[] = [];
    for await (const chunk of file.body) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('hello');
    expect((await client.listMounts()).items.map((m) => m.key)).toContain(t.mount.key);
  });
});

describe('with authentication on', () => {
  it('tokens are the protection: Host and Origin are not checked (a page cannot send a bearer token cross-site without a preflight)', async () => {
    const authed = await startTestServer();
    try {
      const p = Number(new URL(authed.url).port);
      const res = await new Promise<number>((resolve, reject) => {
        const req = http.request(
          { host: '127.0.0.1', port: p, path: '/v1/mounts', headers: { host: 'api.example.com', origin: 'https://app.example.com', authorization: `Bearer ${authed.tokens.read}` } },
          (r) => {
            r.resume();
            resolve(r.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end();
      });
      expect(res).toBe(200);
    } finally {
      await authed.close();
    }
  });
});
