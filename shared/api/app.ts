import { randomUUID } from 'node:crypto';
import FindMyWay from 'find-my-way';
import type { z } from 'zod';
import { FilestoreError, asFilestoreError } from '../errors.ts';
import type { Authenticator, Principal } from './auth.ts';
import type { ApiDeps } from './deps.ts';
import { errorFor } from './host-paths.ts';
import { answerFor } from './host-path-views.ts';
import { createFailureLog } from './failure-log.ts';
import { assertLocalCaller } from './local-caller.ts';
import { readJsonBody } from './request.ts';
import type { ApiRequest, ApiResponse, Route } from './route.ts';
import { ROUTES } from './routes/index.ts';

export interface Api {
  routes: readonly Route[];
  /** Answers one request; never throws (errors become `{"error":…}` responses). */
  handle(req: ApiRequest): Promise<HandledResponse>;
}

/** The response plus the matched route pattern (for metrics and logs; never the raw URL). */
export type HandledResponse = ApiResponse & { route: string };

// Unique per process start, then a counter: as unique as a UUID for tracing, far cheaper per request.
const BOOT = randomUUID().slice(0, 13);
let sequence = 0;
const nextCorrelationId = () => `${BOOT}${(++sequence).toString(36).padStart(10, '0')}`;

const PUBLIC: Principal = { name: 'public', scopes: new Set() };
const CORRELATION = /^[A-Za-z0-9._:-]{1,128}$/;

/** The routes of SPEC §4 behind one dispatcher: match → authenticate → validate → handle. */
export function createApi(deps: ApiDeps, auth: Authenticator, routes: readonly Route[] = ROUTES): Api {
  const router = FindMyWay({ ignoreTrailingSlash: true, caseSensitive: true });
  // Routes without parameters are found by one Map lookup; the router handles the rest.
  const fixed = new Map<string, Route>();
  for (const route of routes) {
    router.on(route.method, route.path, () => {}, { route });
    if (!route.path.includes(':')) fixed.set(`${route.method} ${route.path}`, route);
  }
  const NO_PARAMS = {};
  const logFailure = createFailureLog(deps.log);

  function match(req: ApiRequest): { route: Route; params: Record<string, string | undefined> } | null {
    const route = fixed.get(`${req.method} ${req.path}`);
    if (route) return { route, params: NO_PARAMS };
    const found = router.find(req.method as 'GET', req.path);
    const stored = (found?.store as { route: Route } | undefined)?.route;
    return found && stored ? { route: stored, params: found.params } : null;
  }

  async function dispatch(req: ApiRequest, correlationId: string, caller: { principal?: Principal }): Promise<HandledResponse> {
    // Without tokens, a web page must not be able to use the API on the user's behalf.
    if (auth.disabled) assertLocalCaller(req.headers);
    const found = match(req);
    const route = found?.route;
    if (!found || !route) {
      const allowed = METHODS.filter((m) => m !== req.method && router.find(m, req.path));
      if (allowed.length > 0) {
        throw new FilestoreError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${req.path}; use ${allowed.join(' or ')}`, { allow: allowed });
      }
      throw new FilestoreError('NOT_FOUND', `no route ${req.method} ${req.path}; the routes are listed at /openapi.json`);
    }
    const principal = route.scope ? auth.authenticate(req.headers.authorization) : PUBLIC;
    caller.principal = principal;
    if (route.scope) auth.authorize(principal, route.scope);
    const params = parse(route.params, found.params, 'path');
    const query = parse(route.query, req.query, 'query');
    const body =
      route.body === 'binary' ? undefined : route.body ? parse(route.body, await readJsonBody(req.body, req.headers['content-type']), 'body') : undefined;
    // Symlink targets naming the host are for admins, wherever a node appears (host-path-views.ts).
    const res = (await answerFor(await route.handle({ query, params, body, req, principal, correlationId, deps }), principal, deps)) as HandledResponse;
    res.route = route.path;
    return res;
  }

  return {
    routes,
    async handle(req) {
      const given = req.headers['x-correlation-id'];
      const correlationId = given && CORRELATION.test(given) ? given : nextCorrelationId();
      let res: HandledResponse;
      const caller: { principal?: Principal } = {};
      try {
        res = await dispatch(req, correlationId, caller);
      } catch (err) {
        const e = asFilestoreError(err);
        logFailure(`${req.method} ${req.path} [${correlationId}]`, err, e);
        res = { status: e.status, json: { error: errorFor(e.toJSON(), caller.principal) }, headers: errorHeaders(e), route: 'error' };
      }
      if (res.headers) res.headers['x-correlation-id'] = correlationId;
      else res.headers = { 'x-correlation-id': correlationId };
      return res;
    },
  };
}

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

/** Headers some errors must carry (RFC 6750 §3, RFC 9110 §15.5.6 and §15.5.17). */
function errorHeaders(e: FilestoreError): Record<string, string> | undefined {
  if (e.code === 'UNAUTHENTICATED') return { 'www-authenticate': 'Bearer realm="filestore"' };
  if (e.code === 'METHOD_NOT_ALLOWED') return { allow: (e.details?.allow as string[]).join(', ') };
  if (e.code === 'RANGE_NOT_SATISFIABLE') return { 'content-range': `bytes */${String(e.details?.sizeBytes)}` };
  // RFC 9110 §10.2.3: how long to wait before sending the request again (503, 429).
  const retryAfter = e.details?.retryAfterSeconds;
  if (typeof retryAfter === 'number' && Number.isFinite(retryAfter)) return { 'retry-after': String(Math.max(1, Math.ceil(retryAfter))) };
  return undefined;
}

function parse(schema: z.ZodType | undefined, value: unknown, where: string): unknown {
  if (!schema) return undefined;
  const parsed = schema.safeParse(value ?? (where === 'body' ? undefined : {}));
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((i) => `${[where, ...i.path].join('.')}: ${i.message}`);
  throw new FilestoreError('VALIDATION_ERROR', issues.join('; '));
}
