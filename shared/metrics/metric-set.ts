import { METRIC_DEFINITIONS as D, type MetricDefinition } from './definitions.ts';
import type { CounterMetric, ExecutorOperation, FilestoreMetrics, GaugeMetric, HistogramMetric, MetricsExposition, Outcome } from './metrics.ts';

/** How an implementation makes one instrument from its definition. */
export interface InstrumentFactory {
  counter<L extends string>(definition: MetricDefinition<L>): CounterMetric<L>;
  gauge<L extends string>(definition: MetricDefinition<L>): GaugeMetric<L>;
  histogram<L extends string>(definition: MetricDefinition<L>): HistogramMetric<L>;
}

/**
 * The instruments of every definition, made by one implementation's factory, and the recorders
 * that derive several series from one event. PromMetrics and EmfMetrics differ only in the
 * factory (and in how their series leave the process).
 */
export abstract class MetricSet implements FilestoreMetrics {
  readonly executorDuration: HistogramMetric<'backend' | 'operation'>;
  readonly executorOperations: CounterMetric<'backend' | 'operation' | 'outcome'>;
  readonly executorBytes: CounterMetric<'backend' | 'operation'>;
  readonly watcherEvents: CounterMetric<'mount' | 'event'>;
  readonly driftDetected: CounterMetric<'mount'>;
  readonly reconcileBacklog: GaugeMetric<'queue'>;
  readonly reconcileJobs: CounterMetric<'backend' | 'reason' | 'outcome'>;
  readonly reconcileDuration: HistogramMetric<'backend'>;
  readonly nodeTransitions: CounterMetric<'from' | 'to'>;
  readonly reconcileSkipped: CounterMetric<'mount' | 'reason'>;
  readonly outboxLag: GaugeMetric<never>;
  readonly auditAge: GaugeMetric<'mount'>;
  readonly httpRequests: CounterMetric<'method' | 'route' | 'status'>;
  readonly httpRequestDuration: HistogramMetric<'method' | 'route'>;
  readonly securityEvents: CounterMetric<'kind'>;

  abstract readonly exposition: MetricsExposition | null;

  // Made in the definitions' order: Prometheus renders its registry in registration order.
  protected constructor(make: InstrumentFactory) {
    this.executorDuration = make.histogram(D.executorDuration);
    this.executorOperations = make.counter(D.executorOperations);
    this.executorBytes = make.counter(D.executorBytes);
    this.watcherEvents = make.counter(D.watcherEvents);
    this.driftDetected = make.counter(D.driftDetected);
    this.reconcileBacklog = make.gauge(D.reconcileBacklog);
    this.reconcileJobs = make.counter(D.reconcileJobs);
    this.reconcileDuration = make.histogram(D.reconcileDuration);
    this.nodeTransitions = make.counter(D.nodeTransitions);
    this.reconcileSkipped = make.counter(D.reconcileSkipped);
    this.outboxLag = make.gauge(D.outboxLag);
    this.auditAge = make.gauge(D.auditAge);
    this.httpRequests = make.counter(D.httpRequests);
    this.httpRequestDuration = make.histogram(D.httpRequestDuration);
    this.securityEvents = make.counter(D.securityEvents);
  }

  recordExecutor(backend: string, operation: ExecutorOperation, outcome: Outcome, seconds: number): void {
    this.executorDuration.observe({ backend, operation }, seconds);
    this.executorOperations.inc({ backend, operation, outcome });
  }

  recordOutboxPublished(batch: ReadonlyArray<{ occurredAt: string | Date }>, now: number = Date.now()): void {
    let oldest = Infinity;
    for (const e of batch) oldest = Math.min(oldest, new Date(e.occurredAt).valueOf());
    // occurredAt is the database's clock: a small skew must not read as negative lag.
    this.outboxLag.set({}, batch.length === 0 ? 0 : Math.max(0, (now - oldest) / 1000));
  }

  recordHttpRequest(method: string, route: string, status: number, seconds: number): void {
    this.httpRequests.inc({ method, route, status: String(status) });
    this.httpRequestDuration.observe({ method, route }, seconds);
  }
}
