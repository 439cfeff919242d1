import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { MetricDefinition, MetricKey } from './definitions.ts';
import { METRIC_DEFINITIONS } from './definitions.ts';
import { MetricSet, type InstrumentFactory } from './metric-set.ts';
import type { MetricsExposition } from './metrics.ts';

/** 1 ms … 60 s: a stat on a warm disk up to a large multipart upload. */
const EXECUTOR_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** A reconcile job ranges from one HEAD to an audit of a large subtree. */
const RECONCILE_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600];
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const BUCKETS = new Map<string, number[]>(
  ([
    ['executorDuration', EXECUTOR_BUCKETS],
    ['reconcileDuration', RECONCILE_BUCKETS],
    ['httpRequestDuration', HTTP_BUCKETS],
  ] satisfies Array<[MetricKey, number[]]>).map(([key, buckets]) => [METRIC_DEFINITIONS[key].name, buckets]),
);

/** prom-client defaults left out of /metrics (see the constructor). */
export const DROPPED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'] as const;

export interface PromMetricsOptions {
  /** Also collect prom-client's process and Node.js metrics (default true). */
  collectDefaults?: boolean | undefined;
}

function promInstruments(registry: Registry): InstrumentFactory {
  const base = <L extends string>(d: MetricDefinition<L>) => ({ name: d.name, help: d.help, labelNames: [...d.labels], registers: [registry] });
  return {
    counter: (d) => new Counter(base(d)),
    gauge: (d) => new Gauge(base(d)),
    histogram: (d) => new Histogram({ ...base(d), buckets: BUCKETS.get(d.name) ?? EXECUTOR_BUCKETS }),
  };
}

/**
 * The metrics on prom-client, for long-running processes (npm start, the agent, the reconcile
 * worker) scraped on GET /metrics. On a registry of their own rather than prom-client's global
 * one, so several instances can coexist (tests, one process per agent).
 */
export class PromMetrics extends MetricSet implements MetricsExposition {
  readonly registry: Registry;

  // The instruments are prom-client's own: whoever holds a PromMetrics (tests, /metrics) may read them.
  declare readonly executorDuration: Histogram<'backend' | 'operation'>;
  declare readonly executorOperations: Counter<'backend' | 'operation' | 'outcome'>;
  declare readonly executorBytes: Counter<'backend' | 'operation'>;
  declare readonly watcherEvents: Counter<'mount' | 'event'>;
  declare readonly driftDetected: Counter<'mount'>;
  declare readonly reconcileBacklog: Gauge<'queue'>;
  declare readonly reconcileJobs: Counter<'backend' | 'reason' | 'outcome'>;
  declare readonly reconcileDuration: Histogram<'backend'>;
  declare readonly nodeTransitions: Counter<'from' | 'to'>;
  declare readonly reconcileSkipped: Counter<'mount' | 'reason'>;
  declare readonly outboxLag: Gauge;
  declare readonly auditAge: Gauge<'mount'>;
  declare readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  declare readonly httpRequestDuration: Histogram<'method' | 'route'>;
  declare readonly securityEvents: Counter<'kind'>;

  constructor(options: PromMetricsOptions = {}) {
    const registry = new Registry();
    // Registered first, as they always were: /metrics lists the process metrics, then ours.
    if (options.collectDefaults !== false) {
      collectDefaultMetrics({ register: registry });
      // Gauges named like counters (`promtool check metrics`: non-counter metrics should not
      // have a "_total" suffix). Each is the sum of its per-type gauge, kept:
      // sum(nodejs_active_handles) and so on.
      for (const name of DROPPED_DEFAULTS) registry.removeSingleMetric(name);
    }
    super(promInstruments(registry));
    this.registry = registry;
  }

  get exposition(): MetricsExposition {
    return this;
  }

  /** The exposition text for GET /metrics. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

let processDefault: PromMetrics | null = null;

/** The process-wide instance, used wherever no metrics are injected (long-running processes). */
export function defaultMetrics(): PromMetrics {
  processDefault ??= new PromMetrics();
  return processDefault;
}
