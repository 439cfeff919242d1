import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A proxy in front of the S3 emulator that honours the write preconditions fauxqs 1.9 ignores
 * (it honours GetObject If-Match itself), as S3 does
 * (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-requests.html):
 * - CopyObject `x-amz-copy-source-if-match`: 412 PreconditionFailed unless the source's ETag is that one;
 * - PutObject `If-None-Match: *`: 412 PreconditionFailed when the key exists.
 * `beforeForward` runs before each request is judged and forwarded: a test changes storage between
 * two requests of one operation. The emulator checks no signatures, so nothing is re-signed.
 */
export interface S3ConditionsProxy {
  endpoint: string;
  /** Requests refused with 412 so far, as `METHOD path`. */
  readonly refused: string[];
  beforeForward(hook: ((method: string, url: string, headers: IncomingHttpHeaders) => Promise<void> | void) | null): void;
  stop(): Promise<void>;
}

const PRECONDITION_FAILED = `<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><RequestId>PROXY</RequestId></Error>`;

export async function startS3ConditionsProxy(upstream: string): Promise<S3ConditionsProxy> {
  const target = new URL(upstream);
  const refused: string[] = [];
  let hook: ((method: string, url: string, headers: IncomingHttpHeaders) => Promise<void> | void) | null = null;

  const forward = (method: string, path: string, headers: IncomingHttpHeaders, body?: IncomingMessage) =>
    new Promise<IncomingMessage>((resolve, reject) => {
      const h = { ...headers, host: target.host };
      delete h.expect;
      const req = httpRequest({ host: target.hostname, port: target.port, method, path, headers: h }, resolve);
      req.on('error', reject);
      if (body === undefined) req.end();
      else body.pipe(req);
    });
  const etagOf = async (path: string): Promise<string | null> => {
    const res = await forward('HEAD', path, {});
    res.resume();
    return res.statusCode === 200 ? String(res.headers.etag) : null;
  };

  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    const method = req.method ?? 'GET';
    void (async () => {
      await hook?.(method, url, req.headers);
      const path = url.split('?')[0] as string;
      let fails = false;
      if (method === 'PUT' && req.headers['x-amz-copy-source-if-match'] !== undefined && req.headers['x-amz-copy-source'] !== undefined) {
        const source = decodeURIComponent(String(req.headers['x-amz-copy-source'])).replace(/^\//, '');
        const sourcePath = `/${source.split('/').map(encodeURIComponent).join('/')}`;
        fails = (await etagOf(sourcePath)) !== String(req.headers['x-amz-copy-source-if-match']);
      } else if (method === 'PUT' && req.headers['if-none-match'] === '*') {
        fails = (await etagOf(path)) !== null;
      }
      if (fails) {
        refused.push(`${method} ${path}`);
        req.resume();
        res.writeHead(412, { 'content-type': 'application/xml' }).end(PRECONDITION_FAILED);
        return;
      }
      const up = await forward(method, url, req.headers, req);
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    })().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    refused,
    beforeForward(h) {
      hook = h;
    },
    stop: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
