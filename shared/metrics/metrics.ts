/**
 * The metrics interface the core records into. Two implementations build it from the same
 * definitions (definitions.ts): PromMetrics (prom.ts) for long-running processes, scraped on
 * GET /metrics, and EmfMetrics (emf.ts) for Lambdas, written to stdout as CloudWatch EMF and
 * flushed per invocation. Call sites see only these instruments.
 */

/** Label values by label name; values are low-cardinality strings (never paths, URLs or error texts). */
export type Labels<L extends string> = Readonly<Record<L, string>>;

/** A count that only goes up. */
export interface CounterMetric<L extends string> {
  inc(labels: Labels<L>, value?: number): void;
}

/** A value that is set; the last one set is what is reported. */
export interface GaugeMetric<L extends string> {
  set(labels: Labels<L>, value: number): void;
  /** Stops reporting these labels (a mount gone): no stale value stays behind. */
  remove(labels: Labels<L>): void;
}

/** A distribution of durations, observed in seconds. */
export interface HistogramMetric<L extends string> {
  observe(labels: Labels<L>, seconds: number): void;
}

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

/** What a scraper reads (GET /metrics). */
export interface MetricsExposition {
  readonly contentType: string;
  text(): Promise<string>;
}

/** The metrics of SPEC §7, plus the HTTP server's, security events and skipped names. */
export interface FilestoreMetrics {
  readonly executorDuration: HistogramMetric<'backend' | 'operation'>;
  readonly executorOperations: CounterMetric<'backend' | 'operation' | 'outcome'>;
  /** Bytes written (writeFile: the written file's size) and read (read: bytes streamed out). */
  readonly executorBytes: CounterMetric<'backend' | 'operation'>;
  readonly watcherEvents: CounterMetric<'mount' | 'event'>;
  readonly driftDetected: CounterMetric<'mount'>;
  readonly reconcileBacklog: GaugeMetric<'queue'>;
  readonly reconcileJobs: CounterMetric<'backend' | 'reason' | 'outcome'>;
  readonly reconcileDuration: HistogramMetric<'backend'>;
  readonly nodeTransitions: CounterMetric<'from' | 'to'>;
  /** Names on storage a reconciliation passed over because the catalogue cannot hold them (backends/skipped.ts reasons). */
  readonly reconcileSkipped: CounterMetric<'mount' | 'reason'>;
  /** Age of the oldest event in the last published batch (now − occurredAt); 0 when idle. */
  readonly outboxLag: GaugeMetric<never>;
  /** Seconds since the start of the mount's last complete audit (reconcile/audit-age.ts sets it). */
  readonly auditAge: GaugeMetric<'mount'>;
  readonly httpRequests: CounterMetric<'method' | 'route' | 'status'>;
  readonly httpRequestDuration: HistogramMetric<'method' | 'route'>;
  /** Requests refused as hostile or unauthentic, by kind (e.g. command_forged, command_expired). */
  readonly securityEvents: CounterMetric<'kind'>;

  /** Records one finished backend operation. */
  recordExecutor(backend: string, operation: ExecutorOperation, outcome: Outcome, seconds: number): void;
  /** Sets the outbox lag from a batch just published; an empty batch means the relay is idle (0). */
  recordOutboxPublished(batch: ReadonlyArray<{ occurredAt: string | Date }>, now?: number): void;
  /** Records one HTTP request; `route` is the matched pattern (`/v1/nodes/:id`), never the raw URL. */
  recordHttpRequest(method: string, route: string, status: number, seconds: number): void;

  /** GET /metrics' text where this implementation is scraped (Prometheus); null where metrics leave otherwise (EMF). */
  readonly exposition: MetricsExposition | null;
}
