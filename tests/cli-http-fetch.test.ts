/**
 * The CLI's node:http path for JSON API requests (cli/http-fetch.ts) keeps what fetch
 * guarantees: a redirect to another origin does not carry the bearer token there.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliFetch } from '../cli/http-fetch.ts';
import { FilestoreClient } from '../shared/client/index.ts';

function listen(handler: http.RequestListener): Promise<{ server: http.Server; url: string }> {
  const server = http.createServer(handler);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })));
}

describe('the CLI client over node:http', () => {
  const seenElsewhere: Array<string | undefined> = [];
  let other: { server: http.Server; url: string };
  let api: { server: http.Server; url: string };

  beforeAll(async () => {
    other = await listen((req, res) => {
      seenElsewhere.push(req.headers.authorization);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ items: [], nextCursor: null }));
    });
    // A proxy in front of the API that redirects to another origin (another port is another origin).
    api = await listen((req, res) => {
      res.writeHead(302, { location: `${other.url}${req.url ?? '/'}` }).end();
    });
  });
  afterAll(async () => {
    await new Promise((r) => api.server.close(r));
    await new Promise((r) => other.server.close(r));
  });

  it('follows a redirect to another origin without sending the token there', async () => {
    const client = new FilestoreClient({ baseUrl: api.url, token: 'secret-token-123', fetch: cliFetch });
    const page = await client.listMounts();
    expect(page.items).toEqual([]);
    expect(seenElsewhere.length).toBeGreaterThan(0);
    expect(seenElsewhere.every((a) => a === undefined)).toBe(true);
  });
});
