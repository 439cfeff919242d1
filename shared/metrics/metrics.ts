import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Backend operations as they appear in the `operation` label (the method names of Backend). */
export type ExecutorOperation =
  | 'stat'
  | 'list'
  | 'mkdir'
  | 'writeFile'
  | 'read'
  | 'hash'
  | 'move'
  | 'copy'
  | 'delete'
  | 'discardStaging';

export type Outcome = 'ok' | 'error';

/** 1 ms … 60 s: a stat on a warm disk up to a large multipart upload. */
const EXECUTOR_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** A reconcile job ranges from one HEAD to an audit of a large subtree. */
const RECONCILE_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600];
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export interface FilestoreMetricsOptions {
  /** Also collect prom-client's process and Node.js metrics (default true). */
  collectDefaults?: boolean | undefined;
}

/**
 * The metrics of SPEC §7 (plus the HTTP server's), on a registry of their own rather than
 * prom-client's global one, so several instances can coexist (tests, one process per agent).
 * Label values stay low-cardinality: error codes, paths and raw URLs are never labels.
 */
export class FilestoreMetrics {
  readonly registry = new Registry();

  readonly executorDuration: Histogram<'backend' | 'operation'>;
  readonly executorOperations: Counter<'backend' | 'operation' | 'outcome'>;
  /** Bytes written (writeFile: the written file's size) and read (read: bytes streamed out). */
  readonly executorBytes: Counter<'backend' | 'operation'>;

  // Defined now so the names are fixed; watchers, drift detection, reconciliation and node
  // state transitions (issue 5) increment them.
  readonly watcherEvents: Counter<'mount' | 'event'>;
  readonly driftDetected: Counter<'mount'>;
  readonly reconcileBacklog: Gauge<'queue'>;
  readonly reconcileJobs: Counter<'backend' | 'reason' | 'outcome'>;
  readonly reconcileDuration: Histogram<'backend'>;
  readonly nodeTransitions: Counter<'from' | 'to'>;
  /** Names on storage a reconciliation passed over because the catalogue cannot hold them (backends/skipped.ts reasons). */
  readonly reconcileSkipped: Counter<'mount' | 'reason'>;

  /** Age of the oldest event in the last published batch (now − occurredAt); 0 when idle. */
  readonly outboxLag: Gauge;

  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpRequestDuration: Histogram<'method' | 'route'>;

  /** Requests refused as hostile or unauthentic, by kind (e.g. command_forged, command_expired). */
  readonly securityEvents: Counter<'kind'>;

  constructor(options: FilestoreMetricsOptions = {}) {
    const registers = [this.registry];
    if (options.collectDefaults !== false) collectDefaultMetrics({ register: this.registry });

    this.executorDuration = new Histogram({
      name: 'filestore_executor_duration_seconds',
      help: 'Duration of storage backend operations (list: until the listing is exhausted; read: until the stream is open).',
      labelNames: ['backend', 'operation'],
      buckets: EXECUTOR_BUCKETS,
      registers,
    });
    this.executorOperations = new Counter({
      name: 'filestore_executor_operations_total',
      help: 'Storage backend operations by outcome (ok or error).',
      labelNames: ['backend', 'operation', 'outcome'],
      registers,
    });
    this.executorBytes = new Counter({
      name: 'filestore_executor_bytes_total',
      help: 'Bytes written (writeFile) and streamed out (read) by storage backends.',
      labelNames: ['backend', 'operation'],
      registers,
    });
    this.watcherEvents = new Counter({
      name: 'filestore_watcher_events_total',
      help: 'File system events received by local mount watchers.',
      labelNames: ['mount', 'event'],
      registers,
    });
    this.driftDetected = new Counter({
      name: 'filestore_drift_detected_total',
      help: 'Differences found between storage and the catalogue.',
      labelNames: ['mount'],
      registers,
    });
    this.reconcileBacklog = new Gauge({
      name: 'filestore_reconcile_backlog',
      help: 'Reconcile jobs waiting in a queue.',
      labelNames: ['queue'],
      registers,
    });
    this.reconcileJobs = new Counter({
      name: 'filestore_reconcile_jobs_total',
      help: 'Reconcile jobs finished, by reason and outcome.',
      labelNames: ['backend', 'reason', 'outcome'],
      registers,
    });
    this.reconcileDuration = new Histogram({
      name: 'filestore_reconcile_duration_seconds',
      help: 'Duration of reconcile jobs.',
      labelNames: ['backend'],
      buckets: RECONCILE_BUCKETS,
      registers,
    });
    this.nodeTransitions = new Counter({
      name: 'filestore_node_transitions_total',
      help: 'Catalogue node consistency-state transitions.',
      labelNames: ['from', 'to'],
      registers,
    });
    this.reconcileSkipped = new Counter({
      name: 'filestore_reconcile_skipped_total',
      help: 'Names on storage a reconciliation passed over because the catalogue cannot hold them (invalid_name, not_utf8, not_nfc, unsupported_kind).',
      labelNames: ['mount', 'reason'],
      registers,
    });
    this.outboxLag = new Gauge({
      name: 'filestore_outbox_lag_seconds',
      help: 'Age of the oldest event in the last batch the outbox relay published (0 when idle).',
      registers,
    });
    this.httpRequests = new Counter({
      name: 'filestore_http_requests_total',
      help: 'HTTP requests by method, route pattern and status.',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.httpRequestDuration = new Histogram({
      name: 'filestore_http_request_duration_seconds',
      help: 'HTTP request duration by method and route pattern.',
      labelNames: ['method', 'route'],
      buckets: HTTP_BUCKETS,
      registers,
    });
    this.securityEvents = new Counter({
      name: 'filestore_security_events_total',
      help: 'Requests refused as hostile or unauthentic (forged, expired or malformed dispatched commands…), by kind.',
      labelNames: ['kind'],
      registers,
    });
  }

  /** Records one finished backend operation. */
  recordExecutor(backend: string, operation: ExecutorOperation, outcome: Outcome, seconds: number): void {
    this.executorDuration.observe({ backend, operation }, seconds);
    this.executorOperations.inc({ backend, operation, outcome });
  }

  /** Sets the outbox lag from a batch just published; an empty batch means the relay is idle (0). */
  recordOutboxPublished(batch: ReadonlyArray<{ occurredAt: string | Date }>, now: number = Date.now()): void {
    let oldest = Infinity;
    for (const e of batch) oldest = Math.min(oldest, new Date(e.occurredAt).valueOf());
    // occurredAt is the database's clock: a small skew must not read as negative lag.
    this.outboxLag.set(batch.length === 0 ? 0 : Math.max(0, (now - oldest) / 1000));
  }

  /** Records one HTTP request; `route` is the matched pattern (`/v1/nodes/:id`), never the raw URL. */
  recordHttpRequest(method: string, route: string, status: number, seconds: number): void {
    this.httpRequests.inc({ method, route, status: String(status) });
    this.httpRequestDuration.observe({ method, route }, seconds);
  }

  /** The exposition text for GET /metrics. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

let processDefault: FilestoreMetrics | null = null;

/** The process-wide instance, used wherever no FilestoreMetrics is injected. */
export function defaultMetrics(): FilestoreMetrics {
  processDefault ??= new FilestoreMetrics();
  return processDefault;
}
