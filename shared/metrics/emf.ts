import { Metrics } from '@aws-lambda-powertools/metrics';
import type { MetricDefinition } from './definitions.ts';
import { MetricSet } from './metric-set.ts';
import type { Labels } from './metrics.ts';

/** Powertools' limit of values per metric in one EMF document (it publishes when a metric reaches it). */
const MAX_VALUES = 100;

/** Warnings of Powertools Metrics (a dropped dimension…); EMF documents themselves always go to stdout. */
export interface EmfLogger {
  debug(...content: unknown[]): void;
  info(...content: unknown[]): void;
  warn(...content: unknown[]): void;
  error(...content: unknown[]): void;
}

export interface EmfMetricsOptions {
  /** CloudWatch namespace (default: POWERTOOLS_METRICS_NAMESPACE, else `Filestore`). */
  namespace?: string | undefined;
  /** The `service` dimension every document carries (default: POWERTOOLS_SERVICE_NAME, else `filestore`). */
  serviceName?: string | undefined;
  logger?: EmfLogger | undefined;
}

/** What one combination of label values recorded since the last publication. */
interface Series {
  readonly dimensions: Record<string, string>;
  /** Counters summed, gauges' last value, histograms' every observation; by metric name. */
  readonly values: Map<string, { unit: MetricDefinition['unit']; kind: MetricDefinition['kind']; value: number; observations: number[] }>;
}

/**
 * The metrics as CloudWatch Embedded Metric Format on Powertools Metrics, for Lambdas. Each
 * label is a dimension (beside Powertools' `service`); each combination of label values is one
 * EMF document per publication, holding every metric recorded with exactly those labels.
 * EMF has no counters, gauges or histograms: a counter is published as its sum since the last
 * publication (CloudWatch's Sum adds them up), a gauge as its last value (only when it was set
 * since), a histogram as every observation, unit Seconds (CloudWatch computes the percentiles).
 * Nothing leaves until publishStoredMetrics() (per invocation: `middleware()` with middy), except
 * a series that reaches 100 observations, published then as Powertools does.
 */
export class EmfMetrics extends MetricSet {
  readonly exposition = null;
  private readonly series = new Map<string, Series>();
  private readonly publishers = new Map<string, Metrics>();
  private readonly namespace: string;
  private readonly serviceName: string;
  private readonly logger: EmfLogger | undefined;

  constructor(options: EmfMetricsOptions = {}) {
    // The instruments record into this.series, which exists only once super() returned: they
    // reach it through `self`, assigned before any instrument is called.
    let self: EmfMetrics | null = null;
    const record = (d: MetricDefinition, labels: Readonly<Record<string, string>>, value: number) => self?.record(d, labels, value);
    super({
      counter: (d) => ({ inc: (labels, value = 1) => record(d, labels, value) }),
      gauge: (d) => ({ set: (labels, value) => record(d, labels, value), remove: (labels) => self?.forget(d, labels) }),
      histogram: (d) => ({ observe: (labels, seconds) => record(d, labels, seconds) }),
    });
    self = this;
    this.namespace = options.namespace ?? (process.env.POWERTOOLS_METRICS_NAMESPACE || 'Filestore');
    this.serviceName = options.serviceName ?? (process.env.POWERTOOLS_SERVICE_NAME || 'filestore');
    this.logger = options.logger;
  }

  /** Whether anything was recorded since the last publication. */
  hasStoredMetrics(): boolean {
    return this.series.size > 0;
  }

  /**
   * Writes what was recorded since the last call as EMF (one document per label combination,
   * more when a metric holds over 100 values) and forgets it. Does nothing, and logs nothing,
   * when nothing was recorded.
   */
  publishStoredMetrics(): void {
    for (const key of [...this.series.keys()]) this.publish(key);
  }

  /** A middy middleware publishing after every invocation, failed ones included. */
  middleware(): { after: () => void; onError: () => void } {
    return { after: () => this.publishStoredMetrics(), onError: () => this.publishStoredMetrics() };
  }

  private record(d: MetricDefinition, labels: Labels<string>, value: number): void {
    // The definition's labels, in its order: one key per combination, the same dimension order.
    const dimensions = this.dimensionsOf(d, labels);
    const key = JSON.stringify(dimensions);
    let series = this.series.get(key);
    if (!series) this.series.set(key, (series = { dimensions, values: new Map() }));
    const stored = series.values.get(d.name);
    if (!stored) {
      series.values.set(d.name, { unit: d.unit, kind: d.kind, value, observations: d.kind === 'histogram' ? [value] : [] });
    } else if (d.kind === 'counter') {
      stored.value += value;
    } else if (d.kind === 'gauge') {
      stored.value = value;
    } else {
      stored.observations.push(value);
      if (stored.observations.length >= MAX_VALUES) this.publish(key);
    }
  }

  /** Drops a gauge's value not yet published. */
  private forget(d: MetricDefinition, labels: Labels<string>): void {
    const key = JSON.stringify(this.dimensionsOf(d, labels));
    const series = this.series.get(key);
    if (!series?.values.delete(d.name)) return;
    if (series.values.size === 0) this.series.delete(key);
  }

  private dimensionsOf(d: MetricDefinition, labels: Labels<string>): Record<string, string> {
    const dimensions: Record<string, string> = {};
    for (const label of d.labels) dimensions[label] = dimensionValue(labels[label]);
    return dimensions;
  }

  private publish(key: string): void {
    const series = this.series.get(key);
    if (!series) return;
    this.series.delete(key);
    const out = this.publisher(key, series.dimensions);
    for (const [name, stored] of series.values) {
      if (stored.kind !== 'histogram') out.addMetric(name, stored.unit, stored.value);
      else for (const v of stored.observations) out.addMetric(name, stored.unit, v);
    }
    if (out.hasStoredMetrics()) out.publishStoredMetrics();
  }

  /** One Powertools Metrics per combination: its default dimensions are the combination's labels. */
  private publisher(key: string, dimensions: Record<string, string>): Metrics {
    let out = this.publishers.get(key);
    if (!out) {
      out = new Metrics({ namespace: this.namespace, serviceName: this.serviceName, defaultDimensions: dimensions, ...(this.logger ? { logger: this.logger } : {}) });
      this.publishers.set(key, out);
    }
    return out;
  }
}

/** EMF dimension values must be non-empty (Powertools drops others, with a warning). */
function dimensionValue(v: string | undefined): string {
  return v === undefined || v.trim() === '' ? 'none' : v;
}
