import { findById, listChildren, listLive, listSnapshots } from '../../catalogue/nodes.ts';
import { readRollup, readRollups } from '../../catalogue/rollups.ts';
import type { CatalogueNode } from '../../catalogue/types.ts';
import type { Queryable } from '../../db/pool.ts';
import { FilestoreError } from '../../errors.ts';
import { decodeCursor, pageOf } from '../request.ts';
import { ByPathQuery, ErrorBody, ListNodesQuery, Node, NodeIdParams, PageQuery, Snapshot, page } from '../schemas.ts';
import { defineRoute, json, type Route } from '../route.ts';

export async function nodeById(q: Queryable, id: number): Promise<CatalogueNode> {
  const node = await findById(q, id);
  if (!node) throw new FilestoreError('NOT_FOUND', `no node with id ${id}`);
  return node;
}

/** Directories carry their rollup (recursive size and counts); one query for a whole page. */
async function withRollups(q: Queryable, nodes: CatalogueNode[]): Promise<Array<CatalogueNode & { rollup?: unknown }>> {
  const dirs = nodes.filter((n) => n.kind === 'directory' && n.deletedAt === null).map((n) => n.id);
  const rollups = await readRollups(q, dirs);
  return nodes.map((n) => (n.kind === 'directory' ? { ...n, rollup: rollups.get(n.id) ?? null } : n));
}

/** Browsing the catalogue: lists in byte order of path with keyset cursors, one node, history. */
export const nodeRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    path: '/v1/nodes',
    scope: 'filestore:read',
    tag: 'nodes',
    summary: 'List live nodes of a mount in path order, filtered by prefix, state and kind',
    query: ListNodesQuery,
    responses: { 200: page(Node), 404: ErrorBody },
    async handle({ query, deps }) {
      const mount = await deps.core.reader.mount(query.mountId);
      const rows = await listLive(deps.core.pool, {
        mountId: mount.id,
        prefix: query.prefix === undefined ? undefined : query.prefix.replace(/^\/+/, '').normalize('NFC'),
        state: query.state,
        kind: query.kind,
        afterPath: decodeCursor<string>(query.cursor, 'string'),
        limit: query.limit + 1,
      });
      return json(200, pageOf(rows, query.limit, (n) => n.path));
    },
  }),
  defineRoute({
    method: 'GET',
    path: '/v1/nodes/by-path',
    scope: 'filestore:read',
    tag: 'nodes',
    summary: 'One live node by path, with its rollup if it is a directory',
    query: ByPathQuery,
    responses: { 200: Node, 400: ErrorBody, 404: ErrorBody },
    async handle({ query, deps }) {
      return { status: 200, jsonText: await deps.core.reader.nodeByPathJson(query.mountId, query.path) };
    },
  }),
  defineRoute({
    method: 'GET',
    path: '/v1/nodes/:id',
    scope: 'filestore:read',
    tag: 'nodes',
    summary: 'One node by id (deleted nodes too: deletedAt is set)',
    params: NodeIdParams,
    responses: { 200: Node, 404: ErrorBody },
    async handle({ params, deps }) {
      const node = await nodeById(deps.core.pool, params.id);
      if (node.kind !== 'directory' || node.deletedAt) return json(200, node);
      return json(200, { ...node, rollup: await readRollup(deps.core.pool, node.id) });
    },
  }),
  defineRoute({
    method: 'GET',
    path: '/v1/nodes/:id/children',
    scope: 'filestore:read',
    tag: 'nodes',
    summary: 'Direct live children of a directory, by name in byte order',
    params: NodeIdParams,
    query: PageQuery,
    responses: { 200: page(Node), 404: ErrorBody, 409: ErrorBody },
    async handle({ params, query, deps }) {
      const node = await nodeById(deps.core.pool, params.id);
      if (node.kind !== 'directory') throw new FilestoreError('NOT_A_DIRECTORY', `node ${node.id} ("${node.path}") is a ${node.kind}`);
      const rows = await listChildren(deps.core.pool, node.id, query.limit + 1, decodeCursor<string>(query.cursor, 'string'));
      const p = pageOf(rows, query.limit, (n) => n.name);
      return json(200, { items: await withRollups(deps.core.pool, p.items), nextCursor: p.nextCursor });
    },
  }),
  defineRoute({
    method: 'GET',
    path: '/v1/nodes/:id/snapshots',
    scope: 'filestore:read',
    tag: 'nodes',
    summary: "A node's history: its recorded state after each change, oldest first",
    params: NodeIdParams,
    query: PageQuery,
    responses: { 200: page(Snapshot), 404: ErrorBody },
    async handle({ params, query, deps }) {
      await nodeById(deps.core.pool, params.id);
      const rows = await listSnapshots(deps.core.pool, params.id, query.limit + 1, decodeCursor<number>(query.cursor, 'number') ?? 0);
      return json(200, pageOf(rows, query.limit, (s) => s.version));
    },
  }),
];
