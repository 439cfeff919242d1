import { FilestoreError } from '../../errors.ts';
import type { ByteRange } from '../../backends/types.ts';
import { AgentUnavailableError } from '../../dispatch/errors.ts';
import type { MountLocation } from '../../dispatch/router.ts';
import { checksumSha256, idempotencyKey, ifMatchVersion } from '../request.ts';
import { AgentRedirect, CommandResult, ErrorBody, FileQuery } from '../schemas.ts';
import { defineRoute, json, type ApiRequest, type ApiResponse, type Route } from '../route.ts';

/**
 * A single `Range: bytes=…` against a file of `size` bytes (RFC 9110 §14.1.2): undefined
 * means "send it all" (no header, several ranges, or a form we ignore as the RFC allows);
 * an unsatisfiable range is RANGE_NOT_SATISFIABLE.
 */
export function parseRange(header: string | undefined, size: number): Required<ByteRange> | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) throw unsatisfiable(size);
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return undefined; // invalid: ignored
  }
  if (start >= size) throw unsatisfiable(size);
  return { start, end };
}

const unsatisfiable = (size: number) =>
  new FilestoreError('RANGE_NOT_SATISFIABLE', `the file has ${size} bytes; ask for a range inside it`, { sizeBytes: size });

/**
 * 307 to the same request on the agent that owns the local mount: file bytes never travel
 * through Redis. `X-Filestore-Agent` tells clients the target is Filestore (send the token there).
 */
function agentRedirect(where: Extract<MountLocation, { here: false }>, req: ApiRequest): ApiResponse {
  const { agent, mount } = where;
  if (!agent.url) {
    throw new AgentUnavailableError(
      `agent "${agent.id}", which owns mount "${mount.key}", registered no HTTP address, so its files cannot be reached from here; give the agent the URL it is reachable at`,
      { agentId: agent.id, mountId: mount.id },
    );
  }
  const location = `${agent.url.replace(/\/+$/, '')}${req.path}?${new URLSearchParams(req.query).toString()}`;
  return json(307, { agentId: agent.id, location }, { location, 'x-filestore-agent': agent.id, 'cache-control': 'no-store' });
}

/** File bytes in and out, streamed in constant memory. */
export const fileRoutes: Route[] = [
  defineRoute({
    method: 'PUT',
    path: '/v1/files',
    scope: 'filestore:write',
    tag: 'files',
    summary: 'Create or overwrite a file with the request body (streamed), creating missing parent directories',
    query: FileQuery,
    body: 'binary',
    headers: {
      'If-Match': 'version the file must have now (0 = must not exist)',
      'X-Checksum-Sha256': 'sha256 of the body (hex or base64); the write fails with CHECKSUM_MISMATCH and leaves nothing behind otherwise',
      'Idempotency-Key': 'a replay returns the first result',
    },
    responses: { 200: CommandResult, 307: AgentRedirect, 400: ErrorBody, 404: ErrorBody, 408: ErrorBody, 409: ErrorBody, 422: ErrorBody, 503: ErrorBody },
    async handle({ query, req, principal, correlationId, deps }) {
      if (!req.body) throw new FilestoreError('VALIDATION_ERROR', 'PUT /v1/files needs the file bytes as the request body');
      if (query.path.endsWith('/')) throw new FilestoreError('INVALID_PATH', 'a file path cannot end with "/" (that names a directory)');
      // Answered before the body is read: the client sends it to the agent instead.
      const where = await deps.fs.commands.locate(query.mountId);
      if (!where.here) return agentRedirect(where, req);
      const input = {
        path: query.path,
        expectedVersion: ifMatchVersion(req.headers['if-match']),
        expectedSha256: checksumSha256(req.headers['x-checksum-sha256']),
      };
      const ctx = { principal: principal.name, correlationId, idempotencyKey: idempotencyKey(req.headers['idempotency-key']) };
      const release = deps.uploads.take();
      try {
        return json(200, await deps.fs.orchestrator.writeFile(query.mountId, input, req.body, ctx));
      } finally {
        release();
      }
    },
  }),
  defineRoute({
    method: 'GET',
    path: '/v1/files',
    scope: 'filestore:read',
    tag: 'files',
    summary: "Download a file's bytes (streamed); a single Range gives 206",
    query: FileQuery,
    headers: { Range: 'bytes=START-END, bytes=START- or bytes=-SUFFIX' },
    responses: { 200: 'binary', 206: 'binary', 307: AgentRedirect, 404: ErrorBody, 409: ErrorBody, 416: ErrorBody, 503: ErrorBody },
    async handle({ query, req, deps }) {
      const where = await deps.fs.commands.locate(query.mountId);
      if (!where.here) return agentRedirect(where, req);
      const node = await deps.fs.reader.nodeByPath(query.mountId, query.path);
      if (node.kind !== 'file') {
        throw new FilestoreError(node.kind === 'directory' ? 'IS_A_DIRECTORY' : 'VALIDATION_ERROR', `"${String(node.path)}" is a ${String(node.kind)}, not a file`);
      }
      const mount = await deps.fs.reader.mount(query.mountId);
      const backend = deps.fs.backends.forMount(mount);
      // Sizes come from storage, not the catalogue: under drift the bytes served and the
      // headers describing them must agree.
      const stat = await backend.stat(String(node.path));
      if (!stat || stat.kind !== 'file') {
        throw new FilestoreError('NOT_FOUND', `"${String(node.path)}" is catalogued but gone from storage; it will be reconciled`);
      }
      const range = parseRange(req.headers.range, stat.sizeBytes);
      const headers: Record<string, string> = {
        'content-type': 'application/octet-stream',
        'accept-ranges': 'bytes',
        'x-filestore-version': String(node.version),
      };
      if (typeof node.sha256 === 'string' && stat.sizeBytes === node.sizeBytes) headers.etag = `"${node.sha256}"`;
      if (stat.mtime) headers['last-modified'] = stat.mtime.toUTCString();
      if (!range) {
        headers['content-length'] = String(stat.sizeBytes);
        return { status: 200, headers, stream: await backend.read(String(node.path)) };
      }
      headers['content-length'] = String(range.end - range.start + 1);
      headers['content-range'] = `bytes ${range.start}-${range.end}/${stat.sizeBytes}`;
      return { status: 206, headers, stream: await backend.read(String(node.path), range) };
    },
  }),
];
