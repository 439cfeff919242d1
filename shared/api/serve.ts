import { createApi } from './app.ts';
import { Authenticator, isLoopback, type TokenEntry } from './auth.ts';
import type { ApiDeps } from './deps.ts';
import { startHttpServer, type HttpServer } from './http-server.ts';
import { createReadiness } from './readiness.ts';
import { UploadSlots } from './upload-slots.ts';
import { OutboxTail } from '../events/outbox-tail.ts';
import { FilestoreError } from '../errors.ts';
import type { Filestore } from '../runtime.ts';

export interface ServeOptions {
  fs: Filestore;
  host: string;
  port: number;
  tokens: TokenEntry[];
  /** Serve without authentication; refused unless `host` is a loopback address. */
  authDisabled?: boolean | undefined;
  log(line: string): void;
  /** FILESTORE_BODY_IDLE_TIMEOUT_MS: a request body that stops arriving this long is 408 (default 30 000). */
  bodyIdleTimeoutMs?: number | undefined;
  /** More readiness checks (`/readyz`): the agent reports whether it has finished starting. */
  readiness?: (() => Promise<Record<string, string>>) | undefined;
}

export interface ApiServer extends HttpServer {
  authDisabled: boolean;
}

/** The API on a local HTTP port: routes, authentication, the event-stream tail. */
export async function serveApi(o: ServeOptions): Promise<ApiServer> {
  if (o.authDisabled && !isLoopback(o.host)) {
    throw new FilestoreError(
      'CONFIG_ERROR',
      `refusing to serve without authentication on ${o.host}: only a loopback address (127.0.0.1) may run without tokens; set FILESTORE_API_TOKENS`,
    );
  }
  if (!o.authDisabled && o.tokens.length === 0) {
    throw new FilestoreError('CONFIG_ERROR', 'no API tokens configured: set FILESTORE_API_TOKENS (create one with `filestore token create`)');
  }
  const events = new OutboxTail({ q: o.fs.pool, bus: o.fs.bus, onError: (e) => o.log(`event stream: ${(e as Error).message}`) });
  await events.start();
  const deps: ApiDeps = {
    fs: o.fs,
    events,
    metrics: o.fs.metrics.exposition ?? undefined,
    log: o.log,
    uploads: UploadSlots.forPool(o.fs.pool.options.max ?? 20),
    readiness: createReadiness({ fs: o.fs, log: o.log, more: o.readiness }),
  };
  const api = createApi(deps, new Authenticator({ tokens: o.tokens, disabled: o.authDisabled }));
  const server = await startHttpServer({ api, host: o.host, port: o.port, log: o.log, bodyIdleTimeoutMs: o.bodyIdleTimeoutMs, onResponse: (method, route, status, seconds) => o.fs.metrics.recordHttpRequest(method, route, status, seconds) });
  return {
    ...server,
    authDisabled: o.authDisabled === true,
    async close() {
      events.stop();
      await server.close();
    },
  };
}
