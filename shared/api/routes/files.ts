import type { Readable } from 'node:stream';
import { FilestoreError } from '../../errors.ts';
import { AgentUnavailableError } from '../../dispatch/errors.ts';
import { download, type RecordedFile } from '../download.ts';
import type { MountLocation } from '../../dispatch/router.ts';
import { checksumSha256, idempotencyKey, ifMatchVersion } from '../request.ts';
import { AgentRedirect, CommandResult, ErrorBody, FileQuery, PresignedDownload } from '../schemas.ts';
import { defineRoute, json, type ApiRequest, type ApiResponse, type Route } from '../route.ts';

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

/** How long a download redirect's presigned URL stays valid. */
const PRESIGNED_GET_SECONDS = 300;

const tooLargeForTransport = (max: number, wayRound: string) =>
  new FilestoreError('PAYLOAD_TOO_LARGE', `this API endpoint carries at most ${max} bytes of a file per request: ${wayRound}`, { maxBytes: max });

/**
 * Bodies of at most SMALL_BODY_BYTES (by Content-Length) are read into memory before their
 * command starts, up to SMALL_BODIES_BYTES of them at once in the process; larger ones, chunked
 * ones and those beyond the budget stream, each in an upload slot (upload-slots.ts).
 */
export const SMALL_BODY_BYTES = 64 * 1024;
const SMALL_BODIES_BYTES = 32 * 1024 * 1024;

const smallBodies = {
  inMemory: 0,
  /** A reservation for a body of `declared` bytes (its release), or null: stream it. */
  take(declared: number): (() => void) | null {
    if (!Number.isSafeInteger(declared) || declared < 0 || declared > SMALL_BODY_BYTES || this.inMemory + declared > SMALL_BODIES_BYTES) return null;
    this.inMemory += declared;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inMemory -= declared;
    };
  },
};

/** The whole body (its Content-Length said `declared` bytes; node:http holds it to that). */
async function readAll(body: Readable, declared: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      size += (chunk as Buffer).length;
      if (size > declared) throw new FilestoreError('VALIDATION_ERROR', `the body is longer than its Content-Length (${declared} bytes)`);
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    // REQUEST_TIMEOUT (idle-body.ts) as is; a client gone mid-body: nothing was started, nothing to undo.
    if (err instanceof FilestoreError) throw err;
    throw new FilestoreError('INTERRUPTED', `the request body did not arrive whole (${size} of ${declared} bytes): ${(err as Error).message}`);
  }
  // node:http ends a body short of its Content-Length with an error; whatever transport comes
  // next, a short body must never become a short file.
  if (size !== declared) throw new FilestoreError('INTERRUPTED', `the request body did not arrive whole (${size} of ${declared} bytes)`);
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
}

/** File bytes in and out, streamed in constant memory (small uploads excepted: above). */
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
    responses: { 200: CommandResult, 307: AgentRedirect, 400: ErrorBody, 404: ErrorBody, 408: ErrorBody, 409: ErrorBody, 413: ErrorBody, 422: ErrorBody, 503: ErrorBody },
    async handle({ query, req, principal, correlationId, deps }) {
      if (!req.body) throw new FilestoreError('VALIDATION_ERROR', 'PUT /v1/files needs the file bytes as the request body');
      if (query.path.endsWith('/')) throw new FilestoreError('INVALID_PATH', 'a file path cannot end with "/" (that names a directory)');
      // Answered before the body is read: the client sends it to the agent instead.
      const where = await deps.core.commands.locate(query.mountId);
      if (!where.here) return agentRedirect(where, req);
      const input = {
        path: query.path,
        expectedVersion: ifMatchVersion(req.headers['if-match']),
        expectedSha256: checksumSha256(req.headers['x-checksum-sha256']),
      };
      // The declared length, when the request has one (a chunked body, or an HTTP API event
      // without the header, has none: it streams).
      const length = req.headers['content-length'];
      const declared = typeof length === 'string' && /^\d+$/.test(length) ? Number(length) : Number.NaN;
      if (deps.maxFileBodyBytes !== undefined && declared > deps.maxFileBodyBytes) {
        req.body.resume();
        const mount = await deps.core.reader.mount(query.mountId);
        throw tooLargeForTransport(deps.maxFileBodyBytes, mount.kind === 's3' ? 'upload it with POST /v1/uploads (a presigned PUT to S3)' : "send it to the owning agent's API");
      }
      const ctx = { principal: principal.name, correlationId, idempotencyKey: idempotencyKey(req.headers['idempotency-key']) };
      const small = smallBodies.take(declared);
      if (small) {
        // Read whole before the command starts: no connection (nor path lock) is held while the
        // bytes arrive at the client's pace. Then the command waits its turn for an upload slot
        // (queued, not refused: it holds nothing while it waits), so that commands never hold
        // more than half the pool, as streamed uploads don't.
        try {
          const bytes = await readAll(req.body, declared);
          const release = await deps.uploads.acquire();
          try {
            return json(200, await deps.core.orchestrator.writeFile(query.mountId, input, bytes, ctx));
          } finally {
            release();
          }
        } finally {
          small();
        }
      }
      const release = await deps.uploads.take();
      try {
        return json(200, await deps.core.orchestrator.writeFile(query.mountId, input, req.body, ctx));
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
    headers: {
      Range: 'bytes=START-END, bytes=START- or bytes=-SUFFIX',
      'If-Range': 'the strong ETag of the version the client holds part of: the range only if it is still that version, the whole file otherwise',
    },
    responses: { 200: 'binary', 206: 'binary', 307: AgentRedirect.or(PresignedDownload), 404: ErrorBody, 409: ErrorBody, 413: ErrorBody, 416: ErrorBody, 503: ErrorBody },
    async handle({ query, req, deps }) {
      const where = await deps.core.commands.locate(query.mountId);
      if (!where.here) return agentRedirect(where, req);
      const node = await deps.core.reader.nodeByPath(query.mountId, query.path);
      if (node.kind !== 'file') {
        throw new FilestoreError(node.kind === 'directory' ? 'IS_A_DIRECTORY' : 'VALIDATION_ERROR', `"${String(node.path)}" is a ${String(node.kind)}, not a file`);
      }
      const mount = await deps.core.reader.mount(query.mountId);
      const max = deps.maxFileBodyBytes;
      // More than the transport carries (the API Lambda's payload): S3 hands the bytes out
      // itself, after the same checks as above; nothing is journaled, as for any read.
      const presigned = async () => {
        const { directTransfers } = await import('../../backends/s3/direct.ts');
        const location = await directTransfers(mount, deps.core.backends.s3Defaults).presignGet(String(node.path), PRESIGNED_GET_SECONDS);
        return json(307, { location, expiresInSeconds: PRESIGNED_GET_SECONDS }, { location, 'cache-control': 'no-store' });
      };
      if (max !== undefined && mount.kind === 's3' && req.headers.range === undefined && Number(node.sizeBytes) > max) return presigned();
      const res = await download(deps.core.backends.forMount(mount), node as unknown as RecordedFile, req.headers);
      if (max === undefined || !('stream' in res) || Number(res.headers?.['content-length']) <= max) return res;
      res.stream.destroy();
      if (mount.kind !== 's3') throw tooLargeForTransport(max, 'ask for a part with Range (bytes=0-…) or download it from the owning agent');
      return presigned();
    },
  }),
];
