import { randomUUID } from 'node:crypto';
import { FilestoreCommandPendingError, apiErrorFrom } from './errors.ts';
import { streamEvents } from './events.ts';
import { bodyFactory, downloadToFile, getFile, localFileFactory, putFile } from './files.ts';
import { Transport, readJson, type Query } from './transport.ts';
import type {
  CommandAccepted,
  CommandOptions,
  CommandResult,
  CreateMountInput,
  DeleteInput,
  DownloadToFileInput,
  EventsOptions,
  FileDownload,
  FilestoreEvent,
  GetFileInput,
  Health,
  JournalEntry,
  JournalQuery,
  RemovedMount,
  ResolvedEntry,
  ListJobsQuery,
  ListNodesQuery,
  MetadataInput,
  MkdirInput,
  Mount,
  Node,
  Page,
  PageQuery,
  PatchMountInput,
  PutFileInput,
  PutLocalFileInput,
  ReconcileInput,
  ReconcileJob,
  Snapshot,
  TransferInput,
} from './types.ts';

export const DEFAULT_URL = 'http://127.0.0.1:4300';

export interface FilestoreClientOptions {
  /** Default: FILESTORE_URL, else http://127.0.0.1:4300 (what `npm start` serves). */
  baseUrl?: string;
  /** Bearer token. Default: FILESTORE_TOKEN; none when unset (a loopback server without tokens). */
  token?: string;
  /** A fetch to use instead of the global one (tests, proxies, instrumentation). */
  fetch?: typeof fetch;
}

/**
 * A typed client of the Filestore HTTP API (SPEC §4).
 *
 * Guarantees: every command carries an Idempotency-Key (a fresh UUID unless you pass one),
 * and a command whose connection is lost before any answer is sent again — at most twice —
 * with the same key, so the server applies it once and the retry gets the first result.
 * Non-guarantees: a streamed upload (a Readable body) is never sent twice, so a lost
 * connection during it is an error you must resolve (send it again with the same key).
 * Errors: FilestoreApiError for an error answer, FilestoreUnreachableError when none came.
 */
export class FilestoreClient {
  readonly baseUrl: string;
  readonly #t: Transport;

  constructor(options: FilestoreClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? process.env.FILESTORE_URL ?? DEFAULT_URL).replace(/\/+$/, '');
    const token = options.token ?? (process.env.FILESTORE_TOKEN || undefined);
    this.#t = new Transport({ baseUrl: this.baseUrl, token, fetch: options.fetch ?? globalThis.fetch });
  }

  // ---- system ------------------------------------------------------------------------

  /** GET /healthz: the process answers. */
  health(): Promise<Health> {
    return this.#get('/healthz');
  }

  /** GET /readyz: PostgreSQL and Redis answer (`checks.redis` is "inline" where no Redis is used). Resolves with `status: 'unavailable'` (HTTP 503) rather than throwing. */
  async ready(): Promise<Health> {
    const res = await this.#t.send({ method: 'GET', path: '/readyz', headers: { accept: 'application/json' }, retry: true });
    return readJson<Health>(res, [200, 503]);
  }

  /** GET /openapi.json: the API description (OpenAPI 3.1). */
  openapi(): Promise<Record<string, unknown>> {
    return this.#get('/openapi.json');
  }

  /** GET /metrics: Prometheus text. */
  async metrics(): Promise<string> {
    const res = await this.#t.send({ method: 'GET', path: '/metrics', retry: true });
    if (!res.ok) throw await apiErrorFrom(res);
    return res.text();
  }

  // ---- mounts ------------------------------------------------------------------------

  /** GET /v1/mounts: every mount, by key (one page). */
  listMounts(): Promise<Page<Mount>> {
    return this.#get('/v1/mounts');
  }

  /** GET /v1/mounts/:id, by id or key. */
  getMount(idOrKey: string): Promise<Mount> {
    return this.#get(`/v1/mounts/${encodeURIComponent(idOrKey)}`);
  }

  /** POST /v1/mounts (scope filestore:admin). Not retried: a lost answer is checked with getMount. */
  createMount(input: CreateMountInput): Promise<Mount> {
    return this.#t.json({ method: 'POST', path: '/v1/mounts', json: input, retry: false });
  }

  /** PATCH /v1/mounts/:id (scope filestore:admin): access mode, state, owning agent. */
  updateMount(idOrKey: string, patch: PatchMountInput): Promise<Mount> {
    return this.#t.json({ method: 'PATCH', path: `/v1/mounts/${encodeURIComponent(idOrKey)}`, json: patch, retry: true });
  }

  /**
   * DELETE /v1/mounts/:id (scope filestore:admin): the mount, its nodes, snapshots and jobs go;
   * its journal stays; storage is untouched. 409 MOUNT_BUSY while commands run on it.
   */
  removeMount(idOrKey: string): Promise<RemovedMount> {
    return this.#t.json({ method: 'DELETE', path: `/v1/mounts/${encodeURIComponent(idOrKey)}`, retry: false });
  }

  // ---- nodes -------------------------------------------------------------------------

  /** GET /v1/nodes: one page of live nodes in path order. */
  listNodes(query: ListNodesQuery): Promise<Page<Node>> {
    return this.#get('/v1/nodes', { ...query });
  }

  /** Every live node matching the query, page after page. */
  iterateNodes(query: ListNodesQuery): AsyncGenerator<Node> {
    return pages(query, (cursor) => this.listNodes({ ...query, cursor }));
  }

  /** GET /v1/nodes/by-path: one live node (directories carry their rollup). The root is path "". */
  getNodeByPath(input: { mountId: string; path: string }): Promise<Node> {
    return this.#get('/v1/nodes/by-path', { mountId: input.mountId, path: input.path });
  }

  /** GET /v1/nodes/:id (deleted nodes too: deletedAt is set). */
  getNode(id: number): Promise<Node> {
    return this.#get(`/v1/nodes/${id}`);
  }

  /** GET /v1/nodes/:id/children: one page of a directory's direct children, by name. */
  listChildren(id: number, query: PageQuery = {}): Promise<Page<Node>> {
    return this.#get(`/v1/nodes/${id}/children`, { ...query });
  }

  iterateChildren(id: number, query: PageQuery = {}): AsyncGenerator<Node> {
    return pages(query, (cursor) => this.listChildren(id, { ...query, cursor }));
  }

  /** GET /v1/nodes/:id/snapshots: one page of a node's history, oldest first. */
  listSnapshots(id: number, query: PageQuery = {}): Promise<Page<Snapshot>> {
    return this.#get(`/v1/nodes/${id}/snapshots`, { ...query });
  }

  iterateSnapshots(id: number, query: PageQuery = {}): AsyncGenerator<Snapshot> {
    return pages(query, (cursor) => this.listSnapshots(id, { ...query, cursor }));
  }

  // ---- files -------------------------------------------------------------------------

  /** PUT /v1/files: create or overwrite a file, streamed, creating missing parent directories. A string body is the content (UTF-8). */
  putFile(input: PutFileInput): Promise<CommandResult> {
    const { body, ...rest } = input;
    return putFile(this.#t, rest, bodyFactory(body));
  }

  /** PUT /v1/files with the bytes of a local file (reopened if the upload has to be sent again). */
  putLocalFile(input: PutLocalFileInput): Promise<CommandResult> {
    return putFile(this.#t, input, localFileFactory(input));
  }

  /** GET /v1/files: the bytes as a Node stream (206 and contentRange for a range). */
  getFile(input: GetFileInput): Promise<FileDownload> {
    return getFile(this.#t, input);
  }

  /** Downloads into a local file, atomically (a temp file renamed when complete and verified). */
  downloadToFile(input: DownloadToFileInput): ReturnType<typeof downloadToFile> {
    return downloadToFile(this.#t, input);
  }

  // ---- commands ----------------------------------------------------------------------

  /** POST /v1/commands/mkdir (`parents`: create missing ancestors and accept an existing directory). */
  mkdir(input: MkdirInput, options: CommandOptions = {}): Promise<CommandResult> {
    return this.#command('/v1/commands/mkdir', input, options);
  }

  /** POST /v1/commands/move: move or rename a file or tree, within a mount or to `targetMountId`. */
  move(input: TransferInput, options: CommandOptions = {}): Promise<CommandResult> {
    return this.#command('/v1/commands/move', input, options);
  }

  /** POST /v1/commands/copy: copy a file or tree. */
  copy(input: TransferInput, options: CommandOptions = {}): Promise<CommandResult> {
    return this.#command('/v1/commands/copy', input, options);
  }

  /** POST /v1/commands/delete: a file, a symlink, or (`recursive`) a tree. */
  delete(input: DeleteInput, options: CommandOptions = {}): Promise<CommandResult> {
    return this.#command('/v1/commands/delete', input, options);
  }

  /** PATCH /v1/nodes/:id/metadata: set or unset metadata keys (`ifMatch`: the version the node must have). */
  updateMetadata(nodeId: number, input: MetadataInput, options: CommandOptions & { ifMatch?: number } = {}): Promise<CommandResult> {
    return this.#command(`/v1/nodes/${nodeId}/metadata`, input, options, 'PATCH');
  }

  // ---- reconciliation and history ----------------------------------------------------

  /** POST /v1/reconcile: enqueue a reconciliation of a path or subtree; returns the job (202). */
  reconcile(input: ReconcileInput): Promise<ReconcileJob> {
    return this.#t.json({ method: 'POST', path: '/v1/reconcile', json: input, retry: false });
  }

  /**
   * GET /v1/reconcile/jobs/:id. With `waitMs`, a job still queued or running is answered once
   * it has settled, or after that long as it is then (a long poll; at most 20,000 ms).
   */
  getJob(id: number, o: { waitMs?: number } = {}): Promise<ReconcileJob> {
    return this.#get(`/v1/reconcile/jobs/${id}`, o.waitMs ? { waitMs: o.waitMs } : undefined);
  }

  /** GET /v1/reconcile/jobs: one page, newest first. */
  listJobs(query: ListJobsQuery = {}): Promise<Page<ReconcileJob>> {
    return this.#get('/v1/reconcile/jobs', { ...query });
  }

  iterateJobs(query: ListJobsQuery = {}): AsyncGenerator<ReconcileJob> {
    return pages(query, (cursor) => this.listJobs({ ...query, cursor }));
  }

  /** GET /v1/journal: one page of a mount's command history after entry `after`, oldest first. */
  listJournal(query: JournalQuery): Promise<Page<JournalEntry>> {
    return this.#get('/v1/journal', { ...query });
  }

  /**
   * POST /v1/journal/:id/resolve (scope filestore:admin): storage is looked at, then the pending
   * entry is recorded succeeded (the effect is there) or failed (it is not); nothing runs again.
   */
  resolveJournalEntry(id: number): Promise<ResolvedEntry> {
    return this.#t.json({ method: 'POST', path: `/v1/journal/${id}/resolve`, retry: true });
  }

  iterateJournal(query: JournalQuery): AsyncGenerator<JournalEntry> {
    // The journal's cursor is the last entry id, passed back as `after`.
    return pages({ cursor: query.after === undefined ? undefined : String(query.after) }, (cursor) =>
      this.listJournal({ ...query, after: cursor === undefined ? undefined : Number(cursor) }),
    );
  }

  /** GET /v1/events/stream: events as they happen, reconnecting (with Last-Event-ID) after a drop until `signal` aborts. */
  events(options: EventsOptions = {}): AsyncGenerator<FilestoreEvent> {
    return streamEvents(this.#t, options);
  }

  // ---- plumbing ----------------------------------------------------------------------

  #get<T>(path: string, query?: Query): Promise<T> {
    return this.#t.json<T>({ method: 'GET', path, query });
  }

  /** A 202 (the owning agent is still running it) becomes FilestoreCommandPendingError. */
  async #command(path: string, body: unknown, o: CommandOptions & { ifMatch?: number }, method = 'POST'): Promise<CommandResult> {
    const res = await this.#t.send({
      method,
      path,
      headers: {
        accept: 'application/json',
        'content-type': 'application/json',
        'idempotency-key': o.idempotencyKey ?? randomUUID(),
        'if-match': o.ifMatch === undefined ? undefined : String(o.ifMatch),
      },
      body: () => JSON.stringify(body),
      retry: true,
      signal: o.signal,
    });
    if (res.status === 202) throw new FilestoreCommandPendingError(await readJson<CommandAccepted>(res));
    return readJson<CommandResult>(res);
  }
}

async function* pages<T>(query: PageQuery, fetchPage: (cursor: string | undefined) => Promise<Page<T>>): AsyncGenerator<T> {
  let cursor = query.cursor;
  for (;;) {
    const page = await fetchPage(cursor);
    yield* page.items;
    if (page.nextCursor === null || page.items.length === 0) return;
    cursor = page.nextCursor;
  }
}
