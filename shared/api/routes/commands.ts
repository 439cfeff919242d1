import { FilestoreError } from '../../errors.ts';
import type { CommandContext } from '../../orchestrator/context.ts';
import type { RouteOptions, RoutedCommand } from '../../dispatch/router.ts';
import { idempotencyKey, ifMatchVersion } from '../request.ts';
import { CommandAccepted, CommandResult, DeleteBody, ErrorBody, MetadataBody, MkdirBody, NodeIdParams, TransferBody } from '../schemas.ts';
import { defineRoute, json, type ApiRequest, type ApiResponse, type Route, type RouteInput } from '../route.ts';
import { nodeById } from './nodes.ts';

const context = ({ req, principal, correlationId }: RouteInput<unknown, unknown, unknown>): CommandContext => ({
  principal: principal.name,
  correlationId,
  idempotencyKey: idempotencyKey(req.headers['idempotency-key']),
});

/** `Prefer: wait=N` (RFC 7240 §4.3): how long the caller waits for a dispatched command before 202. */
const routeOptions = (req: ApiRequest): RouteOptions => {
  const m = /(?:^|[,;\s])wait\s*=\s*"?(\d{1,6})"?/i.exec(req.headers.prefer ?? '');
  return m ? { waitMs: Number(m[1]) * 1000 } : {};
};

/** 200 with the result, or 202 when the owning agent is still running the command. */
const respond = (r: RoutedCommand): ApiResponse => (r.status === 200 ? json(200, r.result) : json(202, r.accepted));

/** The expected version from the body or If-Match (both given must agree). */
function expectedVersion(req: ApiRequest, fromBody: number | undefined): number | undefined {
  const header = ifMatchVersion(req.headers['if-match']);
  if (header !== undefined && fromBody !== undefined && header !== fromBody) {
    throw new FilestoreError('VALIDATION_ERROR', `If-Match (${header}) and expectedVersion (${fromBody}) disagree`);
  }
  return header ?? fromBody;
}

const SUMMARIES = {
  move: 'Move or rename a file or tree (overwrite replaces an existing target)',
  copy: 'Copy a file or tree (overwrite replaces an existing target)',
  delete: 'Delete a file, symlink or (recursive) a tree; the node becomes a tombstone',
} as const;

const responses = { 200: CommandResult, 202: CommandAccepted, 400: ErrorBody, 404: ErrorBody, 409: ErrorBody, 502: ErrorBody, 503: ErrorBody } as const;
const headers = {
  'Idempotency-Key': 'a replay returns the first result; a different body is 409 IDEMPOTENCY_CONFLICT',
  Prefer: 'wait=N: for a local mount of another agent, answer 202 after at most N seconds (capped by the server)',
};

/** The journaled commands of SPEC §4: each returns the node after the change and its journal entry id. */
export const commandRoutes: Route[] = [
  defineRoute({
    method: 'POST',
    path: '/v1/commands/mkdir',
    scope: 'filestore:write',
    tag: 'commands',
    summary: 'Create a directory (parents: create missing ancestors and accept an existing directory)',
    body: MkdirBody,
    headers,
    responses,
    async handle(input) {
      const { mountId, ...rest } = input.body;
      return respond(await input.deps.core.commands.mkdir(mountId, rest, context(input), routeOptions(input.req)));
    },
  }),
  ...(['move', 'copy', 'delete'] as const).map((command) =>
    defineRoute({
      method: 'POST',
      path: `/v1/commands/${command}`,
      scope: 'filestore:write',
      tag: 'commands',
      summary: SUMMARIES[command],
      body: command === 'delete' ? DeleteBody : TransferBody,
      headers: { ...headers, 'If-Match': 'version the source node must have now (or expectedVersion in the body)' },
      responses,
      async handle(input) {
        const { mountId, expectedVersion: v, ...rest } = input.body as { mountId: string; expectedVersion?: number | undefined };
        const req = { ...rest, expectedVersion: expectedVersion(input.req, v) };
        return respond(await input.deps.core.commands[command](mountId, req, context(input), routeOptions(input.req)));
      },
    }),
  ),
  defineRoute({
    method: 'PATCH',
    path: '/v1/nodes/:id/metadata',
    scope: 'filestore:write',
    tag: 'commands',
    summary: "Set or unset keys of a node's metadata (If-Match: the version it must have)",
    params: NodeIdParams,
    body: MetadataBody,
    headers: { ...headers, 'If-Match': 'version the node must have now' },
    responses,
    async handle(input) {
      const node = await nodeById(input.deps.core.pool, input.params.id);
      if (node.deletedAt) throw new FilestoreError('NOT_FOUND', `node ${node.id} was deleted`);
      const req = { path: node.path, ...input.body, expectedVersion: ifMatchVersion(input.req.headers['if-match']) };
      return respond(await input.deps.core.commands.updateMetadata(node.mountId, req, context(input), routeOptions(input.req)));
    },
  }),
];
