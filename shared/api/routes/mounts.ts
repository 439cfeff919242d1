import path from 'node:path';
import { createMount, getMount, listMounts, updateMount } from '../../catalogue/mounts.ts';
import { FilestoreError } from '../../errors.ts';
import { CreateMountBody, ErrorBody, Mount, MountIdParams, PatchMountBody, page } from '../schemas.ts';
import { defineRoute, json, type Route } from '../route.ts';

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** The mount registry: anyone with read may look, only admin registers or changes mounts. */
export const mountRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    path: '/v1/mounts',
    scope: 'filestore:read',
    tag: 'mounts',
    summary: 'List mounts (all of them, by key)',
    responses: { 200: page(Mount) },
    async handle({ deps }) {
      return json(200, { items: await listMounts(deps.fs.pool), nextCursor: null });
    },
  }),
  defineRoute({
    method: 'POST',
    path: '/v1/mounts',
    scope: 'filestore:admin',
    tag: 'mounts',
    summary: 'Register a local directory or an S3 bucket/prefix as a mount',
    body: CreateMountBody,
    responses: { 201: Mount, 400: ErrorBody, 409: ErrorBody },
    async handle({ body, deps }) {
      if (body.kind === 'local') {
        if (!path.isAbsolute(body.rootPath)) throw new FilestoreError('VALIDATION_ERROR', 'rootPath: must be an absolute directory path');
        const rootPath = path.resolve(body.rootPath);
        if (rootPath === path.parse(rootPath).root) throw new FilestoreError('VALIDATION_ERROR', 'rootPath: a filesystem root cannot be a mount');
        return json(201, await createMount(deps.fs.pool, { ...body, rootPath }));
      }
      if (!BUCKET.test(body.bucket)) throw new FilestoreError('VALIDATION_ERROR', 'bucket: not a valid S3 bucket name');
      const prefix = (body.prefix ?? '').replace(/^\/+/, '');
      return json(201, await createMount(deps.fs.pool, { ...body, prefix: prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/` }));
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
    async handle({ params, deps }) {
      return json(200, await getMount(deps.fs.pool, params.id));
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
      return json(200, await updateMount(deps.fs.pool, params.id, body));
    },
  }),
];
