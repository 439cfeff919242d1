import type { IncomingMessage } from 'node:http';

/**
 * The CLI's `fetch` for the API client (cli/target.ts): requests of the JSON API go through
 * node:http, everything else through the global fetch.
 *
 * Why: Node's fetch is undici, compiled the first time fetch (or Response, Headers…) is touched:
 * ~110 ms of CPU on this project's 2-core machines, more than `node -e 0` itself, for every
 * `filestore stat` (`npm run bench:cli`). node:http costs ~15 ms.
 *
 * What goes through node:http: a request the client sends (Transport.send: `duplex: 'half'`)
 * with no body or a string body (a JSON document), no abort signal, redirects followed (the
 * default). Its answer is read whole (JSON documents and error bodies; the API answers these
 * requests with no redirect). Streams of file bytes in or out, the event stream (a signal), the
 * download redirects (`redirect: 'manual'`) and presigned URLs keep the global fetch. A network
 * failure is thrown as fetch throws it (a TypeError whose `cause` carries the code:
 * ECONNREFUSED…), so the client tells unreachable from lost the same way.
 */
export const cliFetch: typeof fetch = (input, init) => {
  const i = init as (RequestInit & { duplex?: string }) | undefined;
  const plain =
    typeof input === 'string' &&
    i?.duplex === 'half' &&
    (i.body === undefined || typeof i.body === 'string') &&
    (i.redirect ?? 'follow') === 'follow' &&
    i.signal == null &&
    (input.startsWith('http://') || input.startsWith('https://'));
  return plain ? request(input, i) : fetch(input, init);
};

const IDLE_TIMEOUT_MS = 300_000;

async function request(url: string, init: RequestInit): Promise<Response> {
  const body = init.body as string | undefined;
  const headers: Record<string, string> = { ...(init.headers as Record<string, string> | undefined) };
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  const { request: send } = url.startsWith('https:') ? await import('node:https') : await import('node:http');
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = send(url, { method: init.method ?? 'GET', headers }, resolve);
    req.on('error', (err) => reject(new TypeError('fetch failed', { cause: err })));
    // As fetch (undici) gives up on a server that stops answering: 300 s without a byte.
    req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(Object.assign(new Error(`no answer for ${IDLE_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' })));
    req.end(body);
  });
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of res) chunks.push(chunk as Buffer);
  } catch (err) {
    throw new TypeError('fetch failed', { cause: err });
  }
  const status = res.statusCode ?? 0;
  const location = res.headers.location;
  if (status >= 300 && status < 400 && location !== undefined && (init.method ?? 'GET') === 'GET') {
    // Not an answer of the JSON API (a proxy's?): the request again through fetch, which
    // follows the redirect as the caller asked and, as the Fetch standard says, drops the
    // Authorization header if it leads to another origin. (Following `location` here with
    // the same headers would hand the bearer token to whatever origin it names.)
    return fetch(url, init);
  }
  return answer(url, res, Buffer.concat(chunks));
}

/** What the client reads of a Response, over a body read whole. */
function answer(url: string, res: IncomingMessage, bytes: Buffer): Response {
  const status = res.statusCode ?? 0;
  const text = async () => bytes.toString('utf8');
  const value = {
    url,
    status,
    statusText: res.statusMessage ?? '',
    ok: status >= 200 && status < 300,
    redirected: false,
    headers: {
      get: (name: string) => {
        const v = res.headers[name.toLowerCase()];
        return v === undefined ? null : Array.isArray(v) ? v.join(', ') : String(v);
      },
      has: (name: string) => res.headers[name.toLowerCase()] !== undefined,
    },
    text,
    json: async () => JSON.parse(await text()) as unknown,
    arrayBuffer: async () => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
    // The body as a web stream, for a caller that asks (the client cancels unread ones).
    get body() {
      return new ReadableStream<Uint8Array>({
        start(c) {
          if (bytes.length > 0) c.enqueue(new Uint8Array(bytes));
          c.close();
        },
      });
    },
  };
  return value as unknown as Response;
}
