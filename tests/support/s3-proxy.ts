import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A small HTTP proxy in front of the S3 emulator, for behaviour the emulator lacks:
 * - `throttleNext(n)`: the next n requests are answered 503 SlowDown, as S3 does under load
 *   (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html#ErrorCodeList);
 * - UploadPartCopy (PUT ?partNumber&uploadId with x-amz-copy-source), which fauxqs 1.x would
 *   store as an empty part: emulated by reading the source range and uploading it as a part.
 * The emulator checks no signatures, so forwarded and synthesised requests need none.
 */
export interface S3Proxy {
  endpoint: string;
  throttleNext(n: number): void;
  /** Requests answered with SlowDown so far. */
  readonly throttled: number;
  /** UploadPartCopy requests emulated so far. */
  readonly partCopies: number;
  /** Method and path+query of every request received, in order. */
  readonly requests: Array<{ method: string; url: string }>;
  /** Awaited before each request is forwarded (null: none): a test changes storage between two requests. */
  beforeForward(hook: ((method: string, url: string) => Promise<void> | void) | null): void;
  /**
   * Called (null: none) as soon as the emulator answered a write 2xx, before the client sees the
   * answer: what the S3-notification bridge turns into event records. DeleteObjects
   * (POST ?delete) comes with both XML bodies; other writes with their headers only.
   */
  afterWrite(hook: ((write: S3Write) => void) | null): void;
  stop(): Promise<void>;
}

/** A write the emulator accepted (PUT, POST, DELETE on a key or `?delete`). */
export interface S3Write {
  method: string;
  /** Path and query as received: /<bucket>/<url-encoded key>?… */
  url: string;
  requestHeaders: IncomingHttpHeaders;
  status: number;
  responseHeaders: IncomingHttpHeaders;
  /** DeleteObjects only. */
  requestBody?: Buffer | undefined;
  responseBody?: Buffer | undefined;
}

const SLOW_DOWN = `<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>PROXY</RequestId></Error>`;

export async function startS3Proxy(upstream: string): Promise<S3Proxy> {
  const target = new URL(upstream);
  let pendingThrottles = 0;
  let throttled = 0;
  let partCopies = 0;
  const requests: Array<{ method: string; url: string }> = [];
  let hook: ((method: string, url: string) => Promise<void> | void) | null = null;
  let written: ((write: S3Write) => void) | null = null;

  const forward = (method: string, path: string, headers: IncomingHttpHeaders, body?: Buffer | IncomingMessage) =>
    new Promise<IncomingMessage>((resolve, reject) => {
      const h = { ...headers, host: target.host };
      delete h.expect; // the proxy already has (or streams) the body; no 100-continue round trip
      if (Buffer.isBuffer(body)) {
        h['content-length'] = String(body.length);
        delete h['transfer-encoding'];
      }
      const req = httpRequest({ host: target.hostname, port: target.port, method, path, headers: h }, resolve);
      req.on('error', reject);
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else body.pipe(req);
    });

  const readAll = async (stream: IncomingMessage): Promise<Buffer> => {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  };

  const emulatePartCopy = async (req: IncomingMessage, res: ServerResponse, url: string): Promise<void> => {
    await readAll(req);
    const source = decodeURIComponent(String(req.headers['x-amz-copy-source'])).replace(/^\//, '');
    const sourcePath = `/${source.split('/').map(encodeURIComponent).join('/')}`;
    const range = req.headers['x-amz-copy-source-range'];
    const got = await forward('GET', sourcePath, range === undefined ? {} : { range: String(range) });
    const bytes = await readAll(got);
    if (got.statusCode !== 200 && got.statusCode !== 206) {
      res.writeHead(got.statusCode ?? 500, { 'content-type': 'application/xml' }).end(bytes);
      return;
    }
    const put = await forward('PUT', url, { 'content-type': 'application/octet-stream' }, bytes);
    const putBody = await readAll(put);
    if (put.statusCode !== 200) {
      res.writeHead(put.statusCode ?? 500, { 'content-type': 'application/xml' }).end(putBody);
      return;
    }
    partCopies++;
    const xml = `<?xml version="1.0" encoding="UTF-8"?>
<CopyPartResult><ETag>${String(put.headers.etag).replace(/"/g, '&quot;')}</ETag><LastModified>${new Date().toISOString()}</LastModified></CopyPartResult>`;
    res.writeHead(200, { 'content-type': 'application/xml' }).end(xml);
  };

  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    const method = req.method ?? 'GET';
    requests.push({ method, url });
    void (async () => {
      await hook?.(method, url);
      if (pendingThrottles > 0) {
        pendingThrottles--;
        throttled++;
        await readAll(req);
        res.writeHead(503, { 'content-type': 'application/xml' });
        res.end(method === 'HEAD' ? undefined : SLOW_DOWN);
        return;
      }
      const query = new URL(url, 'http://proxy').searchParams;
      if (method === 'PUT' && query.has('partNumber') && query.has('uploadId') && req.headers['x-amz-copy-source'] !== undefined) {
        await emulatePartCopy(req, res, url);
        return;
      }
      const isWrite = method === 'PUT' || method === 'POST' || method === 'DELETE';
      if (written !== null && method === 'POST' && query.has('delete')) {
        // DeleteObjects: the keys are in the request body, what was deleted in the response's.
        const requestBody = await readAll(req);
        const upstreamRes = await forward(method, url, req.headers, requestBody);
        const responseBody = await readAll(upstreamRes);
        const status = upstreamRes.statusCode ?? 502;
        if (status >= 200 && status < 300) written({ method, url, requestHeaders: req.headers, status, responseHeaders: upstreamRes.headers, requestBody, responseBody });
        res.writeHead(status, upstreamRes.headers).end(responseBody);
        return;
      }
      const upstreamRes = await forward(method, url, req.headers, req);
      const status = upstreamRes.statusCode ?? 502;
      if (written !== null && isWrite && status >= 200 && status < 300) written({ method, url, requestHeaders: req.headers, status, responseHeaders: upstreamRes.headers });
      res.writeHead(status, upstreamRes.headers);
      upstreamRes.pipe(res);
    })().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    throttleNext(n: number): void {
      pendingThrottles = n;
    },
    get throttled() {
      return throttled;
    },
    get partCopies() {
      return partCopies;
    },
    requests,
    beforeForward(h) {
      hook = h;
    },
    afterWrite(h) {
      written = h;
    },
    stop: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
