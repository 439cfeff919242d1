import type { Readable } from 'node:stream';
import type { z } from 'zod';
import type * as S from '../api/schemas.ts';
import type { EventType } from '../catalogue/event-types.ts';

/**
 * The wire types of SPEC §4, inferred from the server's own zod schemas. Type-only: the
 * client loads no server code (and not zod) at runtime.
 */
export type Node = z.infer<typeof S.Node>;
export type Rollup = z.infer<typeof S.Rollup>;
export type Mount = z.infer<typeof S.Mount>;
export type Snapshot = z.infer<typeof S.Snapshot>;
export type JournalEntry = z.infer<typeof S.JournalEntry>;
export type ReconcileJob = z.infer<typeof S.ReconcileJob>;
export type CommandResult = z.infer<typeof S.CommandResult>;
/** The 202 body of a command still running on the agent that owns the mount. */
export type CommandAccepted = z.infer<typeof S.CommandAccepted>;
export type Health = z.infer<typeof S.Health>;
/** POST /v1/journal/:id/resolve: how a pending entry was recorded once storage was looked at. */
export type ResolvedEntry = z.infer<typeof S.ResolvedEntry>;
/** DELETE /v1/mounts/:id: what went with the mount (storage is untouched). */
export type RemovedMount = z.infer<typeof S.RemovedMount>;

export type NodeKind = Node['kind'];
export type ConsistencyState = Node['consistencyState'];
export type JobStatus = ReconcileJob['status'];

/** One page of a list: pass `nextCursor` back as `cursor`; null on the last page. */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

// Request shapes: the schemas' input types, with coerced numbers typed as numbers.
export type CreateMountInput = z.input<typeof S.CreateMountBody>;
export type PatchMountInput = z.input<typeof S.PatchMountBody>;
export type MkdirInput = z.input<typeof S.MkdirBody>;
export type TransferInput = z.input<typeof S.TransferBody>;
export type DeleteInput = z.input<typeof S.DeleteBody>;
export type MetadataInput = z.input<typeof S.MetadataBody>;
export type ReconcileInput = z.input<typeof S.ReconcileBody>;

export interface PageQuery {
  limit?: number;
  cursor?: string;
}
export interface ListNodesQuery extends PageQuery {
  mountId: string;
  prefix?: string;
  state?: ConsistencyState;
  kind?: NodeKind;
}
export interface ListJobsQuery extends PageQuery {
  mountId?: string;
  status?: JobStatus;
}
export interface JournalQuery {
  /** Required unless status is 'pending' (every mount's pending entries: admin scope). */
  mountId?: string;
  status?: JournalEntry['status'];
  /** Entries after this journal entry id (0 = from the start). */
  after?: number;
  limit?: number;
}

/** Options of every command: the key makes a retry (yours or the client's) replay the first result. */
export interface CommandOptions {
  /** Defaults to a fresh random UUID per call; reused by the client's own retries of that call. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface PutFileInput extends CommandOptions {
  mountId: string;
  path: string;
  /** The bytes. A Readable is streamed once and never re-sent; a Buffer or string may be re-sent on a lost connection. */
  body: Readable | Buffer | Uint8Array | string;
  /** The version the file must have now; 0 = it must not exist yet. */
  ifMatch?: number;
  /** sha256 of the body (hex); the server rejects a body that does not match with CHECKSUM_MISMATCH and keeps nothing. */
  sha256?: string;
  /** Called as bytes leave, with the running total of this attempt. */
  onProgress?: (bytesSent: number) => void;
}

export interface PutLocalFileInput extends Omit<PutFileInput, 'body'> {
  /** A file on this machine; reopened if the client has to send it again. */
  file: string;
}

export interface GetFileInput {
  mountId: string;
  path: string;
  /** Inclusive byte range; `end` omitted = to the end of the file. */
  range?: { start: number; end?: number };
  signal?: AbortSignal;
}

export interface FileDownload {
  status: 200 | 206;
  headers: Headers;
  /** The bytes, as a Node stream; read it to the end or destroy it. */
  body: Readable;
  /** Bytes in this response (Content-Length), or null when the server did not say. */
  sizeBytes: number | null;
  /** Parsed Content-Range of a 206: the range sent and the whole file's size. */
  contentRange: { start: number; end: number; totalBytes: number } | null;
  /** The node version served (X-Filestore-Version). */
  version: number | null;
  /** The file's sha256 when the server knows it (ETag). */
  sha256: string | null;
}

export interface DownloadToFileInput extends GetFileInput {
  file: string;
  onProgress?: (bytesReceived: number, totalBytes: number | null) => void;
}

/** The event types of SPEC §5 (the server's list; a newer server may send others). */
export type { EventType } from '../catalogue/event-types.ts';

/** The event envelope of SPEC §5. `seq` orders events and is the SSE id. */
export interface EventEnvelope {
  id: string;
  seq: number;
  type: EventType | (string & {});
  occurredAt: string;
  mountId: string;
  data: Record<string, unknown>;
}

export interface FilestoreEvent {
  /** The SSE id (the envelope's seq): pass it as `lastEventId` to resume after this event. */
  id: number;
  type: EventType | (string & {});
  data: EventEnvelope;
}

export interface EventsOptions {
  mountId?: string;
  types?: Array<EventType | (string & {})>;
  /** Resume after this event id (events since then are replayed first); omitted = only new events. */
  lastEventId?: number;
  /** Stops the stream; the iterator then ends without an error. */
  signal?: AbortSignal;
  /** Called each time the stream is (re)connected and the server has accepted it. */
  onOpen?: () => void;
  /** Called when an open stream is lost (before the iterator reconnects), with the error if there was one. */
  onDisconnect?: (error: unknown) => void;
  /** Wait before reconnecting after a drop; default: what the server asks for (`retry:`), else 1000 ms. */
  reconnectDelayMs?: number;
}
