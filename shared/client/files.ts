import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { FilestoreApiError, FilestoreClientError, apiErrorFrom } from './errors.ts';
import { readJson, type Transport } from './transport.ts';
import type { CommandResult, DownloadToFileInput, FileDownload, GetFileInput, PutFileInput, PutLocalFileInput } from './types.ts';

const CHUNK = 64 * 1024;

type Bytes = Readable | Buffer | Uint8Array | string;

/**
 * PUT /v1/files: streams the body (never buffered whole). `makeBody` is called per attempt;
 * it returns null when the bytes cannot be produced again, so a consumed stream is never
 * re-sent and a lost connection then surfaces as FilestoreUnreachableError. A local mount
 * owned by another agent answers 307 to that agent: the body is sent there again if it can
 * be made again (a Buffer, a string, a local file), else FilestoreClientError says so.
 */
export async function putFile(t: Transport, o: Omit<PutFileInput, 'body'>, makeBody: () => Bytes | null): Promise<CommandResult> {
  const send = (url?: string, first?: Bytes) => {
    let pending = first;
    return t.send({
      method: 'PUT',
      path: '/v1/files',
      query: { mountId: o.mountId, path: o.path },
      url,
      headers: {
        accept: 'application/json',
        'content-type': 'application/octet-stream',
        'idempotency-key': o.idempotencyKey ?? randomUUID(),
        'if-match': o.ifMatch === undefined ? undefined : String(o.ifMatch),
        'x-checksum-sha256': o.sha256,
      },
      body: () => {
        const bytes = pending ?? makeBody();
        pending = undefined;
        if (bytes === null) return null;
        if (!(bytes instanceof Readable) && !o.onProgress) return typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
        return counted(bytes, o.onProgress);
      },
      retry: true,
      signal: o.signal,
      redirect: 'manual',
    });
  };
  let res = await send();
  const agent = agentRedirect(t, res);
  if (agent) {
    await res.body?.cancel().catch(() => {});
    const bytes = makeBody();
    if (bytes === null) {
      throw new FilestoreClientError(
        `mount "${o.mountId}" is served by agent "${agent.id}" (${agent.location}), and a stream cannot be sent twice: upload from a Buffer or a local file (putLocalFile), or to the agent directly`,
      );
    }
    res = await send(agent.location, bytes);
  }
  return readJson<CommandResult>(res);
}

/** A 307 from Filestore to the agent that owns a local mount (X-Filestore-Agent): the token goes along. */
function agentRedirect(t: Transport, res: Response): { id: string; location: string } | null {
  const id = res.headers.get('x-filestore-agent');
  const location = res.headers.get('location');
  if ((res.status !== 307 && res.status !== 308) || !id || !location) return null;
  return { id, location: new URL(location, t.url('/v1/files')).toString() };
}

/** A Readable is sent once; anything else can be sent again. */
export function bodyFactory(body: Bytes): () => Bytes | null {
  let used = false;
  return () => {
    if (!(body instanceof Readable)) return body;
    if (used) return null;
    used = true;
    return body;
  };
}

/** A local file is reopened for every attempt, so uploads of files survive a lost connection. */
export const localFileFactory = (o: PutLocalFileInput) => () => createReadStream(o.file, { highWaterMark: CHUNK });

async function* counted(bytes: Bytes, onProgress: ((sent: number) => void) | undefined): AsyncGenerator<Uint8Array> {
  let sent = 0;
  const source: AsyncIterable<Buffer | Uint8Array | string> = bytes instanceof Readable ? bytes : slices(bytes);
  for await (const chunk of source) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    sent += buf.length;
    onProgress?.(sent);
    yield buf;
  }
}

async function* slices(bytes: Buffer | Uint8Array | string): AsyncGenerator<Uint8Array> {
  const buf = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
  for (let i = 0; i < buf.length; i += CHUNK) yield buf.subarray(i, i + CHUNK);
}

/**
 * GET /v1/files, with an optional Range. A redirect to the agent that owns a local mount is
 * followed with the bearer token; any other redirect (S3 mounts may hand out a presigned
 * URL) without it, as the token is for Filestore only.
 */
export async function getFile(t: Transport, o: GetFileInput): Promise<FileDownload> {
  const range = o.range ? `bytes=${o.range.start}-${o.range.end ?? ''}` : undefined;
  let res = await t.send({
    method: 'GET',
    path: '/v1/files',
    query: { mountId: o.mountId, path: o.path },
    headers: { range },
    retry: true,
    signal: o.signal,
    redirect: 'manual',
  });
  const agent = agentRedirect(t, res);
  const location = res.status >= 300 && res.status < 400 ? res.headers.get('location') : null;
  if (agent) {
    await res.body?.cancel().catch(() => {});
    res = await t.send({ method: 'GET', path: '/v1/files', url: agent.location, headers: { range }, retry: true, signal: o.signal, redirect: 'manual' });
  } else if (location) {
    await res.body?.cancel().catch(() => {});
    res = await t.sendExternal(new URL(location, t.url('/v1/files')).toString(), { range }, o.signal);
  }
  if (res.status !== 200 && res.status !== 206) throw await apiErrorFrom(res);
  const length = res.headers.get('content-length');
  const version = res.headers.get('x-filestore-version');
  const etag = /^"?([0-9a-f]{64})"?$/.exec(res.headers.get('etag') ?? '');
  return {
    status: res.status,
    headers: res.headers,
    body: res.body ? Readable.fromWeb(res.body as unknown as NodeReadableStream<Uint8Array>) : Readable.from([]),
    sizeBytes: length === null ? null : Number(length),
    contentRange: parseContentRange(res.headers.get('content-range')),
    version: version === null ? null : Number(version),
    sha256: etag?.[1] ?? null,
  };
}

function parseContentRange(header: string | null): FileDownload['contentRange'] {
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header ?? '');
  return m ? { start: Number(m[1]), end: Number(m[2]), totalBytes: Number(m[3]) } : null;
}

/**
 * Downloads into `file` through a temporary file beside it, renamed into place only when
 * every byte arrived (and, for a whole file whose sha256 the server knows, matched it):
 * an interrupted download never leaves a truncated file under the final name.
 */
export async function downloadToFile(t: Transport, o: DownloadToFileInput): Promise<Omit<FileDownload, 'body'> & { bytesWritten: number }> {
  const { body, ...download } = await getFile(t, o);
  const tmp = path.join(path.dirname(o.file), `.${path.basename(o.file)}.${randomUUID().slice(0, 8)}.part`);
  const hash = download.status === 200 && download.sha256 ? createHash('sha256') : null;
  let received = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      received += chunk.length;
      hash?.update(chunk);
      o.onProgress?.(received, download.sizeBytes);
      done(null, chunk);
    },
  });
  try {
    await pipeline(body, meter, createWriteStream(tmp));
    if (download.sizeBytes !== null && received !== download.sizeBytes) throw brokenOff(received, download.sizeBytes);
    const actual = hash?.digest('hex');
    if (actual && actual !== download.sha256) {
      throw new FilestoreApiError({
        code: 'CHECKSUM_MISMATCH',
        status: download.status,
        message: `the bytes received hash to ${actual}, not ${download.sha256}: the file changed on storage during the download; try again`,
      });
    }
    await rename(tmp, o.file);
  } catch (err) {
    await rm(tmp, { force: true });
    if (err instanceof FilestoreClientError || (err as { syscall?: string }).syscall) throw err; // ours, or the local disk's
    throw brokenOff(received, download.sizeBytes, err);
  }
  return { ...download, bytesWritten: received };
}

const brokenOff = (received: number, expected: number | null, cause?: unknown) =>
  new FilestoreClientError(`the download broke off after ${received}${expected === null ? '' : ` of ${expected}`} bytes; try again`, { cause });
