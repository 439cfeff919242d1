import { afterEach, describe, expect, it, vi } from 'vitest';
import { EmfMetrics, type EmfLogger } from '../shared/metrics/emf.ts';
import type { FilestoreMetrics } from '../shared/metrics/metrics.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';

// ---- What the two implementations put out: the Prometheus text, and EMF documents on stdout.

interface EmfDocument {
  _aws: { Timestamp: number; CloudWatchMetrics: Array<{ Namespace: string; Dimensions: string[][]; Metrics: Array<{ Name: string; Unit: string }> }> };
  [key: string]: unknown;
}

/** Runs `publish` and returns the EMF documents it wrote to stdout (one JSON object per line), and anything else written. */
function captureStdout(publish: () => void): { documents: EmfDocument[]; stderr: string } {
  const out: string[] = [];
  const err: string[] = [];
  const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out.push(String(chunk));
    return true;
  });
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err.push(String(chunk));
    return true;
  });
  try {
    publish();
  } finally {
    stdout.mockRestore();
    stderr.mockRestore();
  }
  const lines = out.join('').split('\n').filter((l) => l !== '');
  return { documents: lines.map((l) => JSON.parse(l) as EmfDocument), stderr: err.join('') };
}

/** A logger that remembers every warning Powertools gives. */
function recordingLogger(): EmfLogger & { lines: string[] } {
  const lines: string[] = [];
  const keep = (...content: unknown[]) => void lines.push(content.map(String).join(' '));
  return { lines, debug: keep, info: keep, warn: keep, error: keep };
}

/** Every published value of a metric, as one series per combination of dimension values (service excluded). */
interface EmfSeries {
  unit: string;
  dimensionNames: string[];
  dimensions: Record<string, string>;
  values: number[];
}

function emfSeries(documents: EmfDocument[]): Map<string, EmfSeries[]> {
  const byName = new Map<string, EmfSeries[]>();
  for (const doc of documents) {
    expect(doc._aws.CloudWatchMetrics).toHaveLength(1);
    const [directive] = doc._aws.CloudWatchMetrics;
    expect(directive?.Dimensions).toHaveLength(1);
    const dimensionNames = directive?.Dimensions[0] ?? [];
    const dimensions = Object.fromEntries(dimensionNames.map((d) => [d, doc[d] as string]));
    delete dimensions.service;
    for (const { Name, Unit } of directive?.Metrics ?? []) {
      const raw = doc[Name] as number | number[];
      const list = byName.get(Name) ?? [];
      const same = list.find((s) => JSON.stringify(s.dimensions) === JSON.stringify(dimensions));
      const values = Array.isArray(raw) ? raw : [raw];
      if (same) same.values.push(...values);
      else list.push({ unit: Unit, dimensionNames, dimensions, values: [...values] });
      byName.set(Name, list);
    }
  }
  return byName;
}

interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples and TYPE lines of a Prometheus exposition (label values here hold no quotes or escapes). */
function parseProm(text: string): { types: Map<string, string>; samples: PromSample[] } {
  const types = new Map<string, string>();
  const samples: PromSample[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) {
      const [name, type] = line.slice(7).split(' ');
      types.set(name as string, type as string);
    } else if (line !== '' && !line.startsWith('#')) {
      const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!m) throw new Error(`unparsed sample: ${line}`);
      const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((l) => [l[1] as string, l[2] as string]));
      samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
    }
  }
  return { types, samples };
}

const sameLabels = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(b).every(([k, v]) => a[k] === v);

// ---- SPEC §7's metrics and those the docs add (HTTP, security events, skipped names): one list, both implementations.

interface Expected {
  name: string;
  kind: 'counter' | 'gauge' | 'histogram';
  labels: string[];
  unit: 'Count' | 'Bytes' | 'Seconds';
  /** One recording through the interface, with a value of each label. */
  record(m: FilestoreMetrics): void;
}

const EXPECTED: Expected[] = [
  { name: 'filestore_executor_duration_seconds', kind: 'histogram', labels: ['backend', 'operation'], unit: 'Seconds', record: (m) => m.executorDuration.observe({ backend: 'local', operation: 'stat' }, 0.002) },
  { name: 'filestore_executor_operations_total', kind: 'counter', labels: ['backend', 'operation', 'outcome'], unit: 'Count', record: (m) => m.executorOperations.inc({ backend: 'local', operation: 'stat', outcome: 'ok' }) },
  { name: 'filestore_executor_bytes_total', kind: 'counter', labels: ['backend', 'operation'], unit: 'Bytes', record: (m) => m.executorBytes.inc({ backend: 's3', operation: 'read' }, 4096) },
  { name: 'filestore_watcher_events_total', kind: 'counter', labels: ['mount', 'event'], unit: 'Count', record: (m) => m.watcherEvents.inc({ mount: 'docs', event: 'create' }, 3) },
  { name: 'filestore_drift_detected_total', kind: 'counter', labels: ['mount'], unit: 'Count', record: (m) => m.driftDetected.inc({ mount: 'docs' }, 2) },
  { name: 'filestore_reconcile_backlog', kind: 'gauge', labels: ['queue'], unit: 'Count', record: (m) => m.reconcileBacklog.set({ queue: 'filestore-reconcile' }, 7) },
  { name: 'filestore_reconcile_jobs_total', kind: 'counter', labels: ['backend', 'reason', 'outcome'], unit: 'Count', record: (m) => m.reconcileJobs.inc({ backend: 's3', reason: 's3_event', outcome: 'succeeded' }) },
  { name: 'filestore_reconcile_duration_seconds', kind: 'histogram', labels: ['backend'], unit: 'Seconds', record: (m) => m.reconcileDuration.observe({ backend: 's3' }, 1.25) },
  { name: 'filestore_node_transitions_total', kind: 'counter', labels: ['from', 'to'], unit: 'Count', record: (m) => m.nodeTransitions.inc({ from: 'ACTIVE', to: 'INCONSISTENT' }, 5) },
  { name: 'filestore_outbox_lag_seconds', kind: 'gauge', labels: [], unit: 'Seconds', record: (m) => m.outboxLag.set({}, 0.5) },
  { name: 'filestore_audit_age_seconds', kind: 'gauge', labels: ['mount'], unit: 'Seconds', record: (m) => m.auditAge.set({ mount: 'docs' }, 86_400) },
  { name: 'filestore_reconcile_skipped_total', kind: 'counter', labels: ['mount', 'reason'], unit: 'Count', record: (m) => m.reconcileSkipped.inc({ mount: 'docs', reason: 'not_nfc' }, 2) },
  { name: 'filestore_security_events_total', kind: 'counter', labels: ['kind'], unit: 'Count', record: (m) => m.securityEvents.inc({ kind: 'command_forged' }) },
  { name: 'filestore_http_requests_total', kind: 'counter', labels: ['method', 'route', 'status'], unit: 'Count', record: (m) => m.httpRequests.inc({ method: 'GET', route: '/v1/nodes/:id', status: '200' }) },
  { name: 'filestore_http_request_duration_seconds', kind: 'histogram', labels: ['method', 'route'], unit: 'Seconds', record: (m) => m.httpRequestDuration.observe({ method: 'GET', route: '/v1/nodes/:id' }, 0.01) },
];

const emf = (logger?: EmfLogger) => new EmfMetrics({ namespace: 'FilestoreTest', serviceName: 'filestore-test', logger });

afterEach(() => {
  vi.restoreAllMocks();
});

describe('both implementations declare the same metrics', () => {
  it('every metric of SPEC §7 and the documented ones is declared by PromMetrics, with its type and labels, and no other', async () => {
    const m = new PromMetrics({ collectDefaults: false });
    for (const e of EXPECTED) e.record(m);
    const { types, samples } = parseProm(await m.text());
    for (const e of EXPECTED) {
      expect(types.get(e.name), e.name).toBe(e.kind);
      const sample = samples.find((s) => s.name === (e.kind === 'histogram' ? `${e.name}_count` : e.name));
      expect(Object.keys(sample?.labels ?? {}).sort(), e.name).toEqual([...e.labels].sort());
    }
    expect([...types.keys()].sort()).toEqual(EXPECTED.map((e) => e.name).sort());
  });

  it('every metric of SPEC §7 and the documented ones is declared by EmfMetrics, with its unit and its labels as dimensions, and no other', () => {
    const m = emf();
    for (const e of EXPECTED) e.record(m);
    const { documents } = captureStdout(() => m.publishStoredMetrics());
    const series = emfSeries(documents);
    for (const e of EXPECTED) {
      const [s] = series.get(e.name) ?? [];
      expect(s?.unit, e.name).toBe(e.unit);
      expect(s?.dimensionNames, e.name).toEqual(['service', ...e.labels]);
    }
    expect([...series.keys()].sort()).toEqual(EXPECTED.map((e) => e.name).sort());
    for (const doc of documents) {
      expect(doc._aws.CloudWatchMetrics[0]?.Namespace).toBe('FilestoreTest');
      expect(doc.service).toBe('filestore-test');
    }
  });
});

describe('EmfMetrics, driven through the same calls as PromMetrics', () => {
  /** A workload through the interface only: several label combinations, repeated counts, a gauge set twice. */
  const workload = (m: FilestoreMetrics) => {
    m.recordExecutor('local', 'writeFile', 'ok', 0.004);
    m.recordExecutor('local', 'writeFile', 'ok', 0.006);
    m.recordExecutor('local', 'writeFile', 'error', 0.5);
    m.recordExecutor('s3', 'stat', 'ok', 0.02);
    m.executorBytes.inc({ backend: 'local', operation: 'writeFile' }, 1000);
    m.executorBytes.inc({ backend: 'local', operation: 'writeFile' }, 24);
    m.executorBytes.inc({ backend: 'local', operation: 'read' }, 7);
    m.watcherEvents.inc({ mount: 'docs', event: 'create' });
    m.watcherEvents.inc({ mount: 'docs', event: 'create' }, 4);
    m.watcherEvents.inc({ mount: 'media', event: 'delete' }, 2);
    m.reconcileBacklog.set({ queue: 'filestore-reconcile' }, 9);
    m.reconcileBacklog.set({ queue: 'filestore-reconcile' }, 3);
    m.reconcileDuration.observe({ backend: 's3' }, 2);
    m.reconcileDuration.observe({ backend: 's3' }, 0.5);
    m.auditAge.set({ mount: 'docs' }, 120);
    m.auditAge.set({ mount: 'media' }, 30);
    m.recordOutboxPublished([{ occurredAt: '2030-01-01T00:00:07Z' }], Date.parse('2030-01-01T00:00:10Z'));
    m.recordHttpRequest('PUT', '/v1/mounts/:mount/files/*', 201, 0.03);
    m.recordHttpRequest('PUT', '/v1/mounts/:mount/files/*', 201, 0.07);
    m.recordHttpRequest('GET', '/v1/nodes/:id', 404, 0.001);
  };

  it('publishes the values Prometheus shows: counter totals, gauges’ last values, every histogram observation', async () => {
    const prom = new PromMetrics({ collectDefaults: false });
    const m = emf();
    workload(prom);
    workload(m);
    const series = emfSeries(captureStdout(() => m.publishStoredMetrics()).documents);
    const { types, samples } = parseProm(await prom.text());

    let compared = 0;
    for (const [name, type] of types) {
      const emfOf = (labels: Record<string, string>) => (series.get(name) ?? []).find((s) => sameLabels(s.dimensions, labels));
      if (type === 'histogram') {
        for (const count of samples.filter((s) => s.name === `${name}_count`)) {
          const sum = samples.find((s) => s.name === `${name}_sum` && sameLabels(s.labels, count.labels));
          const published = emfOf(count.labels);
          expect(published?.values.length, `${name} ${JSON.stringify(count.labels)}`).toBe(count.value);
          expect(published?.values.reduce((a, b) => a + b, 0)).toBeCloseTo(sum?.value ?? NaN, 9);
          compared += 1;
        }
      } else {
        for (const s of samples.filter((x) => x.name === name)) {
          expect(emfOf(s.labels)?.values, `${name} ${JSON.stringify(s.labels)}`).toEqual([s.value]);
          compared += 1;
        }
      }
    }
    // Every EMF series has its Prometheus twin (counted above), and nothing more.
    expect([...series.values()].reduce((n, list) => n + list.length, 0)).toBe(compared);
    expect(series.get('filestore_reconcile_backlog')?.[0]?.values).toEqual([3]);
    expect(series.get('filestore_outbox_lag_seconds')?.[0]?.values).toEqual([3]);
    expect(series.get('filestore_http_request_duration_seconds')?.find((s) => s.dimensions.method === 'PUT')?.values).toEqual([0.03, 0.07]);
  });

  it('one document per combination of label values holds every metric recorded with exactly those labels', () => {
    const m = emf();
    m.executorDuration.observe({ backend: 'local', operation: 'read' }, 0.1);
    m.executorBytes.inc({ backend: 'local', operation: 'read' }, 10);
    m.executorBytes.inc({ backend: 'local', operation: 'writeFile' }, 5);
    const { documents } = captureStdout(() => m.publishStoredMetrics());
    expect(documents).toHaveLength(2);
    const read = documents.find((d) => d.operation === 'read');
    expect(read?._aws.CloudWatchMetrics[0]?.Metrics).toEqual([
      { Name: 'filestore_executor_duration_seconds', Unit: 'Seconds' },
      { Name: 'filestore_executor_bytes_total', Unit: 'Bytes' },
    ]);
    expect(read).toMatchObject({ backend: 'local', operation: 'read', filestore_executor_duration_seconds: 0.1, filestore_executor_bytes_total: 10 });
  });
});

describe('EmfMetrics publication', () => {
  it('with nothing recorded, publishing writes nothing and logs nothing', () => {
    const logger = recordingLogger();
    const m = emf(logger);
    expect(m.hasStoredMetrics()).toBe(false);
    const first = captureStdout(() => m.publishStoredMetrics());
    expect(first.documents).toEqual([]);
    expect(first.stderr).toBe('');
    // After a publication the store is empty again: the next one is silent too.
    m.driftDetected.inc({ mount: 'docs' });
    expect(captureStdout(() => m.publishStoredMetrics()).documents).toHaveLength(1);
    const again = captureStdout(() => m.publishStoredMetrics());
    expect(again.documents).toEqual([]);
    expect(again.stderr).toBe('');
    expect(logger.lines).toEqual([]);
  });

  it('each publication holds what was recorded since the last: counts since then, a gauge only when set since', () => {
    const m = emf();
    m.driftDetected.inc({ mount: 'docs' }, 4);
    m.reconcileBacklog.set({ queue: 'q' }, 12);
    captureStdout(() => m.publishStoredMetrics());
    m.driftDetected.inc({ mount: 'docs' }, 1);
    const series = emfSeries(captureStdout(() => m.publishStoredMetrics()).documents);
    expect(series.get('filestore_drift_detected_total')?.[0]?.values).toEqual([1]);
    expect(series.has('filestore_reconcile_backlog')).toBe(false);
  });

  it('a gauge removed before the publication (a mount gone) is not published; its other labels are', () => {
    const m = emf();
    m.auditAge.set({ mount: 'gone' }, 50);
    m.auditAge.set({ mount: 'kept' }, 60);
    m.auditAge.remove({ mount: 'gone' });
    const series = emfSeries(captureStdout(() => m.publishStoredMetrics()).documents);
    expect(series.get('filestore_audit_age_seconds')?.map((s) => [s.dimensions.mount, s.values])).toEqual([['kept', [60]]]);
  });

  it('a histogram of more than 100 observations goes out in documents of at most 100 values, each observation once', () => {
    const m = emf();
    const observations = Array.from({ length: 250 }, (_, i) => i / 1000);
    const early = captureStdout(() => {
      for (const s of observations) m.reconcileDuration.observe({ backend: 'local' }, s);
    });
    // Powertools' limit: a metric holds at most 100 values per document, so full ones leave at once.
    expect(early.documents).toHaveLength(2);
    const rest = captureStdout(() => m.publishStoredMetrics());
    const all = [...early.documents, ...rest.documents];
    for (const d of all) expect((d.filestore_reconcile_duration_seconds as number[]).length).toBeLessThanOrEqual(100);
    expect(all.flatMap((d) => d.filestore_reconcile_duration_seconds as number[])).toEqual(observations);
  });

  it('an empty label value becomes the dimension value "none" instead of a dimension Powertools would drop', () => {
    const logger = recordingLogger();
    const m = emf(logger);
    m.httpRequests.inc({ method: 'GET', route: '', status: '200' });
    const [doc] = captureStdout(() => m.publishStoredMetrics()).documents;
    expect(doc?._aws.CloudWatchMetrics[0]?.Dimensions).toEqual([['service', 'method', 'route', 'status']]);
    expect(doc?.route).toBe('none');
    expect(logger.lines).toEqual([]);
  });

  it('the middleware publishes after an invocation and after a failed one', () => {
    const m = emf();
    const middleware = m.middleware();
    m.securityEvents.inc({ kind: 'command_forged' });
    expect(captureStdout(() => middleware.after()).documents).toHaveLength(1);
    m.securityEvents.inc({ kind: 'command_expired' });
    expect(captureStdout(() => middleware.onError()).documents).toHaveLength(1);
    expect(m.hasStoredMetrics()).toBe(false);
  });
});
