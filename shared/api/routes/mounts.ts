import { createMount, getMount, listMounts, updateMount } from '../../catalogue/mounts.ts';
import { createS3Mount } from '../../catalogue/s3-mounts.ts';
import { FilestoreError } from '../../errors.ts';
import { jsonValueProblem } from '../../json-value.ts';
import { mountFor } from '../host-paths.ts';
import { assertMountableRoot } from '../mount-root.ts';
import { CreateMountBody, ErrorBody, Mount, MountIdParams, PatchMountBody, page } from '../schemas.ts';
import { defineRoute, json, type Route } from '../route.ts';

/** Mount fields are stored as text and jsonb: a lone surrogate would be mangled or refused there. */
function assertStorable(body: unknown): void {
  const problem = jsonValueProblem(body);
  if (problem) throw new FilestoreError('VALIDATION_ERROR', `${problem.at}: ${problem.problem}`);
}

/**
 * The mount registry: anyone with read may look (host paths only for admin: host-paths.ts),
 * only admin registers or changes mounts.
 */
export const mountRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    path: '/v1/mounts',
    scope: 'filestore:read',
    tag: 'mounts',
    summary: 'List mounts (all of them, by key)',
    responses: { 200: page(Mount) },
    async handle({ deps, principal }) {
      return json(200, { items: (await listMounts(deps.fs.pool)).map((m) => mountFor(m, principal)), nextCursor: null });
    },
  }),
  defineRoute({
    method: 'POST',
    path: '/v1/mounts',
    scope: 'filestore:admin',
    tag: 'mounts',
    summary: 'Register a local directory or an S3 bucket/prefix as a mount',
    body: CreateMountBody,
    responses: { 201: Mount, 400: ErrorBody, 403: ErrorBody, 409: ErrorBody },
    async handle({ body, deps }) {
      assertStorable(body);
      if (body.kind === 'local') {
        const rootPath = await assertMountableRoot(body.rootPath);
        return json(201, await createMount(deps.fs.pool, { ...body, rootPath }));
      }
      // A deployment whose storage access is its configuration (the API Lambda) refuses S3 mounts outside it.
      return json(201, await createS3Mount(deps.fs.pool, body, { configured: deps.configuredS3Mounts }));
    },
  }),
  defineRoute({
    method: 'GET',
    path: '/v1/mounts/:id',
    scope: 'filestore:read',
    tag: 'mounts',
    summary: 'One mount, by id or key',
    params: MountIdParams,
    responses: { 200: Mount, 404: ErrorBody },
    async handle({ params, deps, principal }) {
      return json(200, mountFor(await getMount(deps.fs.pool, params.id), principal));
    },
  }),
  defineRoute({
    method: 'PATCH',
    path: '/v1/mounts/:id',
    scope: 'filestore:admin',
    tag: 'mounts',
    summary: 'Change access mode (rw/ro), state (active/paused) or owning agent',
    params: MountIdParams,
    body: PatchMountBody,
    responses: { 200: Mount, 404: ErrorBody },
    async handle({ params, body, deps }) {
      assertStorable(body);
      return json(200, await updateMount(deps.fs.pool, params.id, body));
    },
  }),
];
