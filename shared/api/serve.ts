import { createApi } from './app.ts';
import { Authenticator, isLoopback, type TokenEntry } from './auth.ts';
import { buildApiDeps } from './deps.ts';
import { startHttpServer, type HttpServer } from './http-server.ts';
import { FilestoreError } from '../errors.ts';
import type { Filestore } from '../runtime.ts';

export interface ServeOptions {
  core: Filestore;
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

/** The API on a local HTTP port: node:http in front of the routes (deps from buildApiDeps, event stream on) and authentication. */
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
  const built = await buildApiDeps(o.core, { log: o.log, eventStream: true, readiness: o.readiness });
  const api = createApi(built.deps, new Authenticator({ tokens: o.tokens, disabled: o.authDisabled }));
  const onResponse = (method: string, route: string, status: number, seconds: number) => o.core.metrics.recordHttpRequest(method, route, status, seconds);
  const server = await startHttpServer({ api, host: o.host, port: o.port, log: o.log, bodyIdleTimeoutMs: o.bodyIdleTimeoutMs, onResponse }).catch((err: unknown) => {
    built.close();
    throw err;
  });
  return {
    ...server,
    authDisabled: o.authDisabled === true,
    async close() {
      built.close();
      await server.close();
    },
  };
}
