import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { exactLength } from '../backends/exact-length.ts';
import type { Api, HandledResponse } from './app.ts';
import { IdleTimeoutBody } from './idle-body.ts';
import type { ApiRequest, SseMessage, SseSink } from './route.ts';

export interface HttpServerOptions {
  api: Api;
  host: string;
  port: number;
  log(line: string): void;
  /** A request body whose bytes stop arriving for this long fails with 408 REQUEST_TIMEOUT (default 30 000). */
  bodyIdleTimeoutMs?: number | undefined;
  /** Called once per answered request (metrics). `route` is the pattern, never the raw URL. */
  onResponse?: ((method: string, route: string, status: number, seconds: number) => void) | undefined;
}

export interface HttpServer {
  url: string;
  port: number;
  /** Stops accepting, ends event streams, waits for requests in flight (bounded), then closes. */
  close(): Promise<void>;
}

const KEEP_ALIVE_MS = 15_000;
export const DEFAULT_BODY_IDLE_TIMEOUT_MS = 30_000;
// A stream client that stops reading is dropped once this much is queued for it; it
// resumes with Last-Event-ID and loses nothing.
const MAX_SSE_BACKLOG = 8 * 1024 * 1024;

/** The local HTTP transport: node:http in front of the transport-independent Api. */
export async function startHttpServer(o: HttpServerOptions): Promise<HttpServer> {
  const streams = new Set<() => void>();
  let closing = false;
  const idleMs = o.bodyIdleTimeoutMs ?? DEFAULT_BODY_IDLE_TIMEOUT_MS;

  const server = http.createServer((req, res) => {
    const started = process.hrtime.bigint();
    // Once closing, every answer ends its connection: a kept-alive client would otherwise
    // hold the close until the 5 s cut-off.
    if (closing) res.shouldKeepAlive = false;
    res.on('close', () => {
      if (closing) server.closeIdleConnections();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      o.onResponse?.(req.method ?? 'GET', (res as { route?: string }).route ?? 'unknown', res.statusCode, seconds);
    });
    const target = req.url ?? '/';
    const q = target.indexOf('?');
    const query: Record<string, string> = {};
    if (q !== -1) for (const [k, v] of new URLSearchParams(target.slice(q + 1))) if (!(k in query)) query[k] = v;
    // node:http joins repeated request headers with ", " (set-cookie aside, which requests do not carry).
    const headers = req.headers as Record<string, string | undefined>;
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
    const body = hasBody ? new IdleTimeoutBody(req, idleMs) : null;
    const request: ApiRequest = { method: req.method ?? 'GET', path: q === -1 ? target : target.slice(0, q), query, headers, body };
    o.api
      .handle(request)
      .then((r) => write(req, res, r, streams, o.log, body))
      .catch((err: unknown) => {
        o.log(`response failed: ${(err as Error).message}`);
        res.destroy();
      });
  });
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.requestTimeout = 0; // uploads and event streams may be long

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  return {
    url: `http://${host}:${port}`,
    port,
    async close() {
      closing = true;
      for (const stop of [...streams]) stop();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), 5_000);
      await closed;
      clearTimeout(timer);
    },
  };
}

async function write(
  _req: http.IncomingMessage,
  res: http.ServerResponse,
  r: HandledResponse,
  streams: Set<() => void>,
  log: (l: string) => void,
  requestBody: IdleTimeoutBody | null,
) {
  (res as { route?: string }).route = r.route;
  // A client whose body stopped arriving gets its answer on a connection that then closes.
  if (r.status === 408) res.shouldKeepAlive = false;
  // An upload refused before its body was read is answered at once; the rest is read and
  // dropped, so the client (still sending) gets the answer rather than a broken pipe.
  requestBody?.discardRest();
  const socket = _req.socket;
  if (socket.destroyed) {
    // The client left while the handler ran, and its 'close' has fired already: an answer
    // queued behind another on a pipelined connection would wait for ever, holding its
    // source (an open file, an S3 body). Nothing is sent; the source is released now.
    if ('stream' in r) r.stream.destroy();
    return;
  }
  const headers: Record<string, string> = r.headers ?? {}; // the response's own object: ours to extend
  if ('jsonText' in r) {
    headers['content-type'] = 'application/json; charset=utf-8';
    headers['content-length'] = String(Buffer.byteLength(r.jsonText));
    res.writeHead(r.status, headers);
    res.end(r.jsonText);
  } else if ('json' in r) {
    const body = r.json === undefined ? '' : JSON.stringify(r.json);
    res.writeHead(r.status, { ...headers, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  } else if ('text' in r) {
    res.writeHead(r.status, { 'content-type': 'text/plain; charset=utf-8', ...headers, 'content-length': Buffer.byteLength(r.text) });
    res.end(r.text);
  } else if ('stream' in r) {
    res.writeHead(r.status, headers);
    // A storage error mid-body cannot change the status any more: the connection is cut, so
    // the client sees a short body (Content-Length says how long it should have been). Never
    // more than Content-Length either: surplus bytes on a kept-alive connection would be read
    // as the answer to the client's next request.
    const declared = headers['content-length'];
    const body = declared === undefined ? [r.stream] : [r.stream, exactLength(Number(declared), 'the response body')];
    // A response queued behind another on a pipelined connection never sees the connection
    // go: its source (an open file) is released when the connection closes (not yet: checked
    // above, and nothing between that check and this listener yields).
    const release = () => r.stream.destroy();
    socket.once('close', release);
    await pipeline([...body, res])
      .catch((err: Error) => {
        if (!res.destroyed) log(`download interrupted: ${err.message}`);
        res.destroy();
      })
      .finally(() => socket.off('close', release));
  } else if ('sse' in r) {
    await openEventStream(res, r, headers, streams);
  }
}

async function openEventStream(
  res: http.ServerResponse,
  r: Extract<HandledResponse, { sse: unknown }>,
  headers: Record<string, string>,
  streams: Set<() => void>,
) {
  res.writeHead(200, {
    ...headers,
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write('retry: 2000\n\n');
  let stopped = false;
  let unsubscribe: (() => void) | null = null;
  const timer = setInterval(() => res.write(': keep-alive\n\n'), KEEP_ALIVE_MS);
  const stop = () => {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    unsubscribe?.();
    streams.delete(stop);
    res.end();
  };
  streams.add(stop);
  res.on('close', stop);
  const sink: SseSink = {
    get closed() {
      return stopped;
    },
    ready() {
      if (stopped || !res.writableNeedDrain) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const done = () => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.on('drain', done);
        res.on('close', done);
      });
    },
    send(m: SseMessage) {
      if (stopped) return;
      res.write(`id: ${m.id}\nevent: ${m.event}\ndata: ${JSON.stringify(m.data)}\n\n`);
      if (res.writableLength > MAX_SSE_BACKLOG) stop();
    },
    position(id: number) {
      if (!stopped) res.write(`id: ${id}\n\n`);
    },
    comment(text: string) {
      if (!stopped) res.write(`: ${text.replace(/\n/g, ' ')}\n\n`);
    },
    end: stop,
  };
  try {
    const off = await r.sse(sink);
    if (stopped) off();
    else unsubscribe = off;
  } catch {
    stop();
  }
}
