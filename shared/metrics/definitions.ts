/**
 * Every metric Filestore exports (SPEC §7, plus the HTTP server's, security events and skipped
 * names), in one list both implementations build from: Prometheus (prom.ts) and EMF (emf.ts)
 * can only ever declare the same names, kinds, labels and units.
 * Labels stay low-cardinality: error codes, paths and raw URLs are never labels. Under EMF each
 * label is a dimension and each distinct combination of values is a metric of its own (billed).
 */

export type MetricKind = 'counter' | 'gauge' | 'histogram';

/** The EMF unit (CloudWatch's names); Prometheus carries the unit in the name instead. */
export type MetricUnit = 'Count' | 'Bytes' | 'Seconds';

export interface MetricDefinition<L extends string = string> {
  readonly name: string;
  readonly kind: MetricKind;
  readonly labels: readonly L[];
  readonly unit: MetricUnit;
  readonly help: string;
}

const define = <const L extends string>(d: MetricDefinition<L>): MetricDefinition<L> => d;

export const METRIC_DEFINITIONS = {
  executorDuration: define({
    name: 'filestore_executor_duration_seconds',
    kind: 'histogram',
    labels: ['backend', 'operation'],
    unit: 'Seconds',
    help: 'Duration of storage backend operations (list: until the listing is exhausted; read: until the stream is open).',
  }),
  executorOperations: define({
    name: 'filestore_executor_operations_total',
    kind: 'counter',
    labels: ['backend', 'operation', 'outcome'],
    unit: 'Count',
    help: 'Storage backend operations by outcome (ok or error).',
  }),
  executorBytes: define({
    name: 'filestore_executor_bytes_total',
    kind: 'counter',
    labels: ['backend', 'operation'],
    unit: 'Bytes',
    help: 'Bytes written (writeFile) and streamed out (read) by storage backends.',
  }),
  watcherEvents: define({
    name: 'filestore_watcher_events_total',
    kind: 'counter',
    labels: ['mount', 'event'],
    unit: 'Count',
    help: 'File system events received by local mount watchers.',
  }),
  driftDetected: define({
    name: 'filestore_drift_detected_total',
    kind: 'counter',
    labels: ['mount'],
    unit: 'Count',
    help: 'Differences found between storage and the catalogue.',
  }),
  reconcileBacklog: define({
    name: 'filestore_reconcile_backlog',
    kind: 'gauge',
    labels: ['queue'],
    unit: 'Count',
    help: 'Reconcile jobs waiting in a queue.',
  }),
  reconcileJobs: define({
    name: 'filestore_reconcile_jobs_total',
    kind: 'counter',
    labels: ['backend', 'reason', 'outcome'],
    unit: 'Count',
    help: 'Reconcile jobs finished, by reason and outcome.',
  }),
  reconcileDuration: define({
    name: 'filestore_reconcile_duration_seconds',
    kind: 'histogram',
    labels: ['backend'],
    unit: 'Seconds',
    help: 'Duration of reconcile jobs.',
  }),
  nodeTransitions: define({
    name: 'filestore_node_transitions_total',
    kind: 'counter',
    labels: ['from', 'to'],
    unit: 'Count',
    help: 'Catalogue node consistency-state transitions.',
  }),
  reconcileSkipped: define({
    name: 'filestore_reconcile_skipped_total',
    kind: 'counter',
    labels: ['mount', 'reason'],
    unit: 'Count',
    help: 'Names on storage a reconciliation passed over because the catalogue cannot hold them (invalid_name, not_utf8, not_nfc, unsupported_kind).',
  }),
  outboxLag: define({
    name: 'filestore_outbox_lag_seconds',
    kind: 'gauge',
    labels: [],
    unit: 'Seconds',
    help: 'Age of the oldest event in the last batch the outbox relay published (0 when idle).',
  }),
  auditAge: define({
    name: 'filestore_audit_age_seconds',
    kind: 'gauge',
    labels: ['mount'],
    unit: 'Seconds',
    help: "Time since the mount's last finished audit began (every node is checked as of then); since its registration when it has never been audited whole.",
  }),
  httpRequests: define({
    name: 'filestore_http_requests_total',
    kind: 'counter',
    labels: ['method', 'route', 'status'],
    unit: 'Count',
    help: 'HTTP requests by method, route pattern and status.',
  }),
  httpRequestDuration: define({
    name: 'filestore_http_request_duration_seconds',
    kind: 'histogram',
    labels: ['method', 'route'],
    unit: 'Seconds',
    help: 'HTTP request duration by method and route pattern.',
  }),
  securityEvents: define({
    name: 'filestore_security_events_total',
    kind: 'counter',
    labels: ['kind'],
    unit: 'Count',
    help: 'Requests refused as hostile or unauthentic (forged, expired or malformed dispatched commands…), by kind.',
  }),
} as const;

export type MetricKey = keyof typeof METRIC_DEFINITIONS;
