import { ErrorBody, Health } from '../schemas.ts';
import { allReady } from '../readiness.ts';
import { defineRoute, json, type Route } from '../route.ts';

/** Probes and metrics: public, so orchestrators and scrapers need no token. */
export const systemRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    path: '/healthz',
    scope: null,
    tag: 'system',
    summary: 'Liveness: the process answers',
    responses: { 200: Health },
    async handle() {
      return json(200, { status: 'ok' });
    },
  }),
  defineRoute({
    method: 'GET',
    path: '/readyz',
    scope: null,
    tag: 'system',
    summary: 'Readiness: PostgreSQL and Redis answer (redis "inline": no Redis is used)',
    responses: { 200: Health, 503: Health },
    async handle({ deps }) {
      const checks = await deps.readiness();
      const ok = allReady(checks);
      return json(ok ? 200 : 503, { status: ok ? 'ok' : 'unavailable', checks });
    },
  }),
  defineRoute({
    method: 'GET',
    path: '/metrics',
    scope: null,
    tag: 'system',
    summary: 'Prometheus metrics (SPEC §7)',
    responses: { 200: 'text', 501: ErrorBody },
    async handle({ deps }) {
      if (!deps.metrics) return json(501, { error: { code: 'NOT_IMPLEMENTED', message: 'metrics are exported as EMF here' } });
      return { status: 200, headers: { 'content-type': deps.metrics.contentType }, text: await deps.metrics.text() };
    },
  }),
];
