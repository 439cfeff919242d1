import { createMount, findMount, getMount, listMounts, updateMount } from '../../catalogue/mounts.ts';
import { removeMount } from '../../catalogue/mount-removal.ts';
import { setMountHealth } from '../../catalogue/reconcile-writes.ts';
import { createS3Mount, MOUNT_KEY_PATTERN, normaliseS3Prefix } from '../../catalogue/s3-mounts.ts';
import { FilestoreError } from '../../errors.ts';
import { jsonValueProblem } from '../../json-value.ts';
import { mountFor } from '../host-paths.ts';
import { assertLocalRootReachable, assertNoOverlap, assertS3Reachable, seesDiskOf, withLocalMountRegistration } from '../../mounts/mount-checks.ts';
import { assertMountableRoot } from '../../mounts/mount-root.ts';
import { CreateMountBody, ErrorBody, Mount, MountIdParams, PatchMountBody, RemovedMount, page } from '../schemas.ts';
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
      return json(200, { items: (await listMounts(deps.core.pool)).map((m) => mountFor(m, principal)), nextCursor: null });
    },
  }),
  defineRoute({
    method: 'POST',
    path: '/v1/mounts',
    scope: 'filestore:admin',
    tag: 'mounts',
    summary: 'Register a local directory or an S3 bucket/prefix as a mount',
    body: CreateMountBody,
    responses: { 201: Mount, 400: ErrorBody, 403: ErrorBody, 409: ErrorBody, 422: ErrorBody },
    async handle({ body, deps }) {
      assertStorable(body);
      const { check, ...mount } = body;
      // The key first: a second POST of the same mount is ALREADY_EXISTS, not an overlap with itself.
      if (!MOUNT_KEY_PATTERN.test(mount.key)) throw new FilestoreError('VALIDATION_ERROR', 'invalid mount: key must match ^[a-z0-9][a-z0-9_-]{0,62}$');
      if (await findMount(deps.core.pool, mount.key)) throw new FilestoreError('ALREADY_EXISTS', `a mount with key "${mount.key}" already exists`);
      if (mount.kind === 'local') {
        // Checked and inserted under one lock: a concurrent registration waits (see mount-checks.ts).
        return withLocalMountRegistration(deps.core.pool, async () => {
          const rootPath = await assertMountableRoot(mount.rootPath);
          const agentId = mount.agentId ?? null;
          const router = deps.core.commands;
          // Only a process on the root's host looks at the disk (see mount-checks.ts).
          const onHost = seesDiskOf(router.identity, router.redisUrl === 'inline', agentId);
          await assertNoOverlap(deps.core.pool, rootPath, agentId, onHost);
          if (check !== false && onHost) await assertLocalRootReachable(rootPath, mount.accessMode ?? 'rw');
          // Another agent's root: that agent looks (through its command queue), on its real paths too.
          else if (check !== false && agentId !== null) await router.checkMountRoot(agentId, { key: mount.key, rootPath, accessMode: mount.accessMode ?? 'rw' });
          // Unchecked on purpose: registered whatever the root is now, but a root this process sees
          // missing is recorded as such, so `ls` says the mount is unhealthy rather than empty.
          const problem = check === false && onHost ? await assertLocalRootReachable(rootPath, mount.accessMode ?? 'rw').then(() => null, (e: FilestoreError) => e) : null;
          const created = await createMount(deps.core.pool, { ...mount, rootPath });
          if (!problem) return json(201, created);
          await setMountHealth(deps.core.pool, created.id, 'unhealthy', `${problem.message.replace(/; create the directory first.*$/, '')} (registered without the check)`);
          return json(201, await getMount(deps.core.pool, created.id));
        });
      }
      // A deployment whose storage access is its configuration (the API Lambda) refuses S3 mounts
      // outside it; the ones it lists are reachable by its role, so they are not listed again here.
      if (check !== false && !deps.configuredS3Mounts) {
        await assertS3Reachable(deps.core.backends.s3Defaults, { ...mount, prefix: normaliseS3Prefix(mount.prefix) });
      }
      return json(201, await createS3Mount(deps.core.pool, mount, { configured: deps.configuredS3Mounts }));
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
      return json(200, mountFor(await getMount(deps.core.pool, params.id), principal));
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
    responses: { 200: Mount, 404: ErrorBody, 409: ErrorBody },
    async handle({ params, body, deps }) {
      assertStorable(body);
      if (body.agentId === undefined) return json(200, await updateMount(deps.core.pool, params.id, body));
      // A local mount given to another agent (or to none: run by every agent) lands on other
      // hosts: the overlap rule of POST applies there too, under the same lock.
      return withLocalMountRegistration(deps.core.pool, async () => {
        const mount = await getMount(deps.core.pool, params.id);
        if (mount.kind === 'local' && mount.rootPath !== null && (body.agentId ?? null) !== (mount.agentId ?? null)) {
          await assertNoOverlap(deps.core.pool, mount.rootPath, body.agentId ?? null, false, mount.id);
        }
        return json(200, await updateMount(deps.core.pool, params.id, body));
      });
    },
  }),
  defineRoute({
    method: 'DELETE',
    path: '/v1/mounts/:id',
    scope: 'filestore:admin',
    tag: 'mounts',
    summary: 'Remove a mount from the catalogue: its nodes, snapshots and jobs go, its journal stays, storage is untouched (409 MOUNT_BUSY while commands run on it)',
    params: MountIdParams,
    responses: { 200: RemovedMount, 404: ErrorBody, 409: ErrorBody },
    async handle({ params, deps }) {
      const removed = await removeMount(deps.core.pool, params.id);
      deps.core.reader.forget(removed.mount);
      return json(200, removed);
    },
  }),
];
