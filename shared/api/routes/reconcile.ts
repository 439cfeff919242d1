import { findJob, isOpenJob, listJobs, type ReconcileJobRow } from '../../catalogue/jobs.ts';
import { FilestoreError } from '../../errors.ts';
import { normalizePath } from '../../paths.ts';
import type { Principal } from '../auth.ts';
import type { ApiDeps } from '../deps.ts';
import { redactValue, seesHostPaths } from '../host-paths.ts';
import { decodeCursor, pageOf } from '../request.ts';
import { ErrorBody, JobIdParams, JobWaitQuery, ListJobsQuery, ReconcileAccepted, ReconcileBody, ReconcileJob, page } from '../schemas.ts';
import { defineRoute, json, type Route } from '../route.ts';

/** Jobs as `principal` may see them: a failed job's error names the mount's root on its host (admin only). */
async function jobsFor<J extends ReconcileJobRow>(jobs: J[], principal: Principal, deps: ApiDeps): Promise<J[]> {
  if (seesHostPaths(principal) || jobs.every((j) => j.error === null)) return jobs;
  const roots = new Map<string, string[]>();
  for (const id of new Set(jobs.filter((j) => j.error !== null).map((j) => j.mountId))) {
    const mount = await deps.core.reader.mount(id).catch(() => null);
    roots.set(id, mount?.rootPath ? [mount.rootPath] : []);
  }
  return jobs.map((j) => (j.error === null ? j : { ...j, error: redactValue(j.error, roots.get(j.mountId) ?? []) as Record<string, unknown> }));
}

const QUEUE_PENDING =
  'the job is recorded, but the queue (Redis) is unreachable now: it is queued as soon as Redis answers again and runs then; follow it at its Location';

/** Reconciliation requests and their job records (the worker itself is shared/reconcile/). */
export const reconcileRoutes: Route[] = [
  defineRoute({
    method: 'POST',
    path: '/v1/reconcile',
    scope: 'filestore:write',
    tag: 'reconcile',
    summary: 'Enqueue a reconciliation of a path or subtree (an audit when path is the root); joins a waiting job for the same path',
    body: ReconcileBody,
    responses: { 202: ReconcileAccepted, 400: ErrorBody, 404: ErrorBody },
    async handle({ body, deps, principal }) {
      const mount = await deps.core.reader.mount(body.mountId);
      const { job, coalesced, queuePending } = await deps.core.reconcile.enqueue({
        mountId: mount.id,
        path: normalizePath(body.path ?? ''),
        reason: 'manual',
        recursive: body.recursive ?? true,
        hash: body.hash ?? false,
        force: body.force,
      });
      // A request for a path that already waits joins that job (coalesced): same id, merged options.
      const [shown] = await jobsFor([job], principal, deps);
      // Recorded while Redis is unreachable: the row is the promise, queued once Redis answers.
      const answer = queuePending ? { ...shown, queuePending: true, message: QUEUE_PENDING } : shown;
      return json(202, answer, { location: `/v1/reconcile/jobs/${job.id}`, 'x-filestore-coalesced': String(coalesced) });
    },
  }),
  defineRoute({
    method: 'GET',
    path: '/v1/reconcile/jobs',
    scope: 'filestore:read',
    tag: 'reconcile',
    summary: 'Reconciliation jobs, newest first',
    query: ListJobsQuery,
    responses: { 200: page(ReconcileJob), 404: ErrorBody },
    async handle({ query, deps, principal }) {
      const mount = query.mountId === undefined ? undefined : await deps.core.reader.mount(query.mountId);
      const rows = await listJobs(deps.core.pool, {
        mountId: mount?.id,
        status: query.status,
        beforeId: decodeCursor<number>(query.cursor, 'number'),
        limit: query.limit + 1,
      });
      const page = pageOf(rows, query.limit, (j) => j.id);
      return json(200, { ...page, items: await jobsFor(page.items, principal, deps) });
    },
  }),
  defineRoute({
    method: 'GET',
    path: '/v1/reconcile/jobs/:id',
    scope: 'filestore:read',
    tag: 'reconcile',
    summary: 'One reconciliation job: status, attempts, result counts, error, timings; with waitMs, answered once it has settled (a long poll)',
    params: JobIdParams,
    query: JobWaitQuery,
    responses: { 200: ReconcileJob, 400: ErrorBody, 404: ErrorBody },
    async handle({ params, query, deps, principal }) {
      let job = await findJob(deps.core.pool, params.id);
      if (job && query.waitMs > 0 && deps.jobWaits.holds && isOpenJob(job.status)) {
        await deps.jobWaits.settled(job.id, query.waitMs);
        job = await findJob(deps.core.pool, params.id);
      }
      if (!job) throw new FilestoreError('NOT_FOUND', `no reconciliation job ${params.id}`);
      const [shown] = await jobsFor([job], principal, deps);
      return json(200, shown);
    },
  }),
];
