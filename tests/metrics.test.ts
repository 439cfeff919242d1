import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { instrumentBackend } from '../shared/backends/instrumented.ts';
import { LocalExecutor } from '../shared/backends/local/local-executor.ts';
import { S3Executor } from '../shared/backends/s3/s3-executor.ts';
import { BackendRegistry } from '../shared/backends/registry.ts';
import type { Backend } from '../shared/backends/types.ts';
import { FilestoreError } from '../shared/errors.ts';
import { OutboxRelay } from '../shared/events/relay.ts';
import { defaultMetrics, PromMetrics } from '../shared/metrics/prom.ts';
import { Orchestrator } from '../shared/orchestrator/orchestrator.ts';
import type { Filestore } from '../shared/runtime.ts';
import { backendConformanceSuite, collect, readAll, sha256 } from './conformance/backend-suite.ts';
import { expectCode } from './support/assertions.ts';
import { createTestMount, sharedS3, startFilestore, stopS3, type BackendKind, type TestMount } from './support/filestore.ts';
import { emptyBucket, getRawKey, putRawKey, TEST_S3_CREDENTIALS } from './support/s3.ts';

// ---- A minimal parser of the Prometheus text exposition format (what GET /metrics serves).

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  help: Set<string>;
  types: Map<string, string>;
  samples: Sample[];
}

function parseExposition(text: string): Exposition {
  const out: Exposition = { help: new Set(), types: new Map(), samples: [] };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) {
      out.help.add(line.slice(7).split(' ', 1)[0] as string);
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const [name, type] = line.slice(7).split(' ');
      out.types.set(name as string, type as string);
      continue;
    }
    if (line.startsWith('#')) continue;
    out.samples.push(parseSample(line));
  }
  return out;
}

function parseSample(line: string): Sample {
  const nameEnd = line.search(/[{ ]/);
  const name = line.slice(0, nameEnd);
  const labels: Record<string, string> = {};
  let i = nameEnd;
  if (line[i] === '{') {
    i += 1;
    while (line[i] !== '}') {
      const eq = line.indexOf('=', i);
      const key = line.slice(i, eq);
      if (line[eq + 1] !== '"') throw new Error(`malformed sample: ${line}`);
      let value = '';
      let j = eq + 2;
      for (; line[j] !== '"'; j += 1) {
        if (j >= line.length) throw new Error(`unterminated label value: ${line}`);
        if (line[j] === '\\') {
          j += 1;
          value += line[j] === 'n' ? '\n' : line[j];
        } else {
          value += line[j];
        }
      }
      labels[key] = value;
      i = j + 1;
      if (line[i] === ',') i += 1;
    }
    i += 1;
  }
  const raw = line.slice(i).trim().split(' ')[0] as string;
  const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
  return { name, labels, value };
}

const sameLabels = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(b).every(([k, v]) => a[k] === v);

/** The value of the sample with exactly this name and label set; undefined when absent. */
function sampleValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  return parseExposition(text).samples.find((s) => s.name === name && sameLabels(s.labels, labels))?.value;
}

/** Reads a counter-like sample as 0 when the series does not exist yet. */
const counterOf = async (m: PromMetrics, name: string, labels: Record<string, string>) =>
  sampleValue(await m.text(), name, labels) ?? 0;

const OPS = 'filestore_executor_operations_total';
const BYTES = 'filestore_executor_bytes_total';
const body = (s: string | Buffer) => Readable.from([Buffer.from(s)]);

// ---- Commands on real mounts, counted in an injected registry.

let core: Filestore;
let metrics: PromMetrics;
let backends: BackendRegistry;
let orchestrator: Orchestrator;
let relay: OutboxRelay;

beforeAll(async () => {
  // This process publishes through `relay` only, so the lag it reports is its own.
  core = await startFilestore({ relay: false });
  metrics = new PromMetrics();
  backends = new BackendRegistry({ credentials: TEST_S3_CREDENTIALS }, { metrics });
  relay = new OutboxRelay({ pool: core.pool, bus: core.bus, intervalMs: 600_000, metrics });
  orchestrator = new Orchestrator({ pool: core.pool, backends });
});
afterAll(async () => {
  await relay.stop();
  await core.close();
  await stopS3();
});

describe.each<BackendKind>(['local', 's3'])('executor metrics on %s', (kind) => {
  let t: TestMount;
  let m: string;
  const ops = (operation: string, outcome: 'ok' | 'error') => counterOf(metrics, OPS, { backend: kind, operation, outcome });
  const bytes = (operation: string) => counterOf(metrics, BYTES, { backend: kind, operation });

  beforeEach(async () => {
    t = await createTestMount(core, kind);
    m = t.mount.key;
    return () => t.cleanup();
  });

  /** Puts a file on storage without Filestore knowing (drift). */
  const putOutOfBand = async (rel: string, bytes: string) => {
    if (kind === 'local') {
      await mkdir(path.dirname(path.join(t.root as string, rel)), { recursive: true });
      await writeFile(path.join(t.root as string, rel), bytes);
    } else {
      await putRawKey((await sharedS3()).client, t.mount.bucket as string, `${t.mount.prefix}${rel}`, bytes);
    }
  };

  it('successful mkdir, writeFile and delete are counted with outcome ok, and written bytes add up', async () => {
    const before = { mkdir: await ops('mkdir', 'ok'), write: await ops('writeFile', 'ok'), del: await ops('delete', 'ok'), bytes: await bytes('writeFile') };
    const durationBefore = sampleValue(await metrics.text(), 'filestore_executor_duration_seconds_count', { backend: kind, operation: 'writeFile' }) ?? 0;

    await orchestrator.mkdir(m, { path: 'docs' });
    await orchestrator.writeFile(m, { path: 'docs/a.txt' }, body('hello world'));
    await orchestrator.writeFile(m, { path: 'docs/b.bin' }, body(Buffer.alloc(1000, 7)));
    await orchestrator.delete(m, { path: 'docs/a.txt' });

    const text = await metrics.text();
    expect(sampleValue(text, OPS, { backend: kind, operation: 'mkdir', outcome: 'ok' })).toBe(before.mkdir + 1);
    expect(sampleValue(text, OPS, { backend: kind, operation: 'writeFile', outcome: 'ok' })).toBe(before.write + 2);
    expect(sampleValue(text, OPS, { backend: kind, operation: 'delete', outcome: 'ok' })).toBe(before.del + 1);
    expect(sampleValue(text, BYTES, { backend: kind, operation: 'writeFile' })).toBe(before.bytes + 11 + 1000);
    expect(sampleValue(text, 'filestore_executor_duration_seconds_count', { backend: kind, operation: 'writeFile' })).toBe(durationBefore + 2);
    // Every write finished within the largest finite bucket.
    expect(sampleValue(text, 'filestore_executor_duration_seconds_bucket', { backend: kind, operation: 'writeFile', le: '60' })).toBe(durationBefore + 2);
  });

  it('a delete refused by storage (a directory non-empty only on storage) is counted as an error', async () => {
    await orchestrator.mkdir(m, { path: 'd' });
    await putOutOfBand('d/stray.txt', 'not in the catalogue');
    const before = { error: await ops('delete', 'error'), ok: await ops('delete', 'ok') };

    await expectCode(orchestrator.delete(m, { path: 'd' }), 'DIRECTORY_NOT_EMPTY');

    expect(await ops('delete', 'error')).toBe(before.error + 1);
    expect(await ops('delete', 'ok')).toBe(before.ok);
  });

  it('a write refused by storage (checksum mismatch) is an error and adds no bytes', async () => {
    const before = { error: await ops('writeFile', 'error'), bytes: await bytes('writeFile') };
    await expectCode(orchestrator.writeFile(m, { path: 'c.txt', expectedSha256: sha256('other') }, body('data')), 'CHECKSUM_MISMATCH');
    expect(await ops('writeFile', 'error')).toBe(before.error + 1);
    expect(await bytes('writeFile')).toBe(before.bytes);
  });

  it('read counts the bytes streamed out, whole or ranged; a failed open is an error', async () => {
    const content = Buffer.alloc(5000, 'x');
    await orchestrator.writeFile(m, { path: 'r.bin' }, body(content));
    const backend = backends.forMount(t.mount);
    const before = { bytes: await bytes('read'), ok: await ops('read', 'ok'), error: await ops('read', 'error') };

    expect(await readAll(await backend.read('r.bin'))).toEqual(content);
    expect(await bytes('read')).toBe(before.bytes + 5000);
    expect((await readAll(await backend.read('r.bin', { start: 10, end: 19 }))).length).toBe(10);
    expect(await bytes('read')).toBe(before.bytes + 5010);
    await expectCode(backend.read('absent.bin'), 'NOT_FOUND');

    expect(await ops('read', 'ok')).toBe(before.ok + 2);
    expect(await ops('read', 'error')).toBe(before.error + 1);
  });

  it('a listing is counted once, when exhausted or abandoned, not per entry', async () => {
    for (const p of ['l/1.txt', 'l/2.txt', 'l/3.txt']) await orchestrator.writeFile(m, { path: p }, body(p));
    const backend = backends.forMount(t.mount);
    const before = await ops('list', 'ok');

    expect((await collect(backend.list('l'))).map((e) => e.path)).toEqual(['l/1.txt', 'l/2.txt', 'l/3.txt']);
    expect(await ops('list', 'ok')).toBe(before + 1);
    for await (const _ of backend.list('l')) break;
    expect(await ops('list', 'ok')).toBe(before + 2);

    const errorsBefore = await ops('list', 'error');
    await expectCode(collect(backend.list('l/1.txt')), 'NOT_A_DIRECTORY');
    expect(await ops('list', 'error')).toBe(errorsBefore + 1);
  });
});

describe('outbox lag', () => {
  it('is the age of the oldest event in the last published batch, and 0 when idle', async () => {
    const m = new PromMetrics({ collectDefaults: false });
    const now = Date.parse('2030-01-01T00:00:10Z');
    m.recordOutboxPublished([{ occurredAt: '2030-01-01T00:00:08.500Z' }, { occurredAt: '2030-01-01T00:00:07Z' }], now);
    expect(sampleValue(await m.text(), 'filestore_outbox_lag_seconds')).toBe(3);
    m.recordOutboxPublished([], now);
    expect(sampleValue(await m.text(), 'filestore_outbox_lag_seconds')).toBe(0);
  });

  it('the relay sets it when it publishes a batch', async () => {
    const t = await createTestMount(core, 'local');
    try {
      await orchestrator.mkdir(t.mount.key, { path: 'lag' });
      await new Promise((r) => setTimeout(r, 50));
      const published = await relay.drain();
      const lag = sampleValue(await metrics.text(), 'filestore_outbox_lag_seconds');
      expect(lag).toBeGreaterThanOrEqual(0);
      // Relays of other test processes may have published this event first (one relay at a time).
      if (published > 0) expect(lag).toBeGreaterThanOrEqual(0.05);
      // A pass that finds nothing (unless another test process committed meanwhile) is idle.
      if ((await relay.drain()) === 0) expect(sampleValue(await metrics.text(), 'filestore_outbox_lag_seconds')).toBe(0);
    } finally {
      await t.cleanup();
    }
  });
});

describe('the metric set', () => {
  it('every metric of SPEC §7 and the HTTP metrics are exposed with HELP, TYPE and their label names', async () => {
    const m = new PromMetrics();
    m.recordExecutor('local', 'stat', 'ok', 0.002);
    m.executorBytes.inc({ backend: 'local', operation: 'read' }, 1);
    m.watcherEvents.inc({ mount: 'docs', event: 'add' });
    m.driftDetected.inc({ mount: 'docs' });
    m.reconcileBacklog.set({ queue: 'filestore-reconcile' }, 4);
    m.reconcileJobs.inc({ backend: 's3', reason: 'audit', outcome: 'ok' });
    m.reconcileDuration.observe({ backend: 's3' }, 1.5);
    m.nodeTransitions.inc({ from: 'ACTIVE', to: 'MISSING' });
    m.recordHttpRequest('GET', '/v1/nodes/:id', 200, 0.01);

    const expected: Array<[string, string, string[]]> = [
      ['filestore_executor_duration_seconds', 'histogram', ['backend', 'operation']],
      ['filestore_executor_operations_total', 'counter', ['backend', 'operation', 'outcome']],
      ['filestore_executor_bytes_total', 'counter', ['backend', 'operation']],
      ['filestore_watcher_events_total', 'counter', ['mount', 'event']],
      ['filestore_drift_detected_total', 'counter', ['mount']],
      ['filestore_reconcile_backlog', 'gauge', ['queue']],
      ['filestore_reconcile_jobs_total', 'counter', ['backend', 'reason', 'outcome']],
      ['filestore_reconcile_duration_seconds', 'histogram', ['backend']],
      ['filestore_node_transitions_total', 'counter', ['from', 'to']],
      ['filestore_outbox_lag_seconds', 'gauge', []],
      ['filestore_http_requests_total', 'counter', ['method', 'route', 'status']],
      ['filestore_http_request_duration_seconds', 'histogram', ['method', 'route']],
    ];
    const exposition = parseExposition(await m.text());
    for (const [name, type, labelNames] of expected) {
      expect(exposition.help.has(name), `HELP ${name}`).toBe(true);
      expect(exposition.types.get(name), `TYPE ${name}`).toBe(type);
      const sampleName = type === 'histogram' ? `${name}_count` : name;
      const sample = exposition.samples.find((s) => s.name === sampleName);
      expect(Object.keys(sample?.labels ?? {}).sort(), `labels of ${name}`).toEqual([...labelNames].sort());
    }
    expect(sampleValue(await m.text(), 'filestore_http_requests_total', { method: 'GET', route: '/v1/nodes/:id', status: '200' })).toBe(1);
    // prom-client's process metrics are collected too, on this instance's own registry.
    expect(exposition.types.get('process_cpu_seconds_total')).toBe('counter');
    expect(m.contentType).toMatch(/^text\/plain/);
  });

  it('the runtime counts into defaultMetrics() when no instance is injected', async () => {
    const t = await createTestMount(core, 'local');
    try {
      const labels = { backend: 'local', operation: 'mkdir', outcome: 'ok' };
      const before = await counterOf(defaultMetrics(), OPS, labels);
      await core.orchestrator.mkdir(t.mount.key, { path: 'via-runtime' });
      expect(await counterOf(defaultMetrics(), OPS, labels)).toBe(before + 1);
    } finally {
      await t.cleanup();
    }
  });
});

// ---- The wrapper changes no behaviour.

describe('instrumentBackend', () => {
  const failure = new FilestoreError('STORAGE_ERROR', 'disk on fire');
  const failing: Backend = {
    kind: 'local',
    stat: () => Promise.reject(failure),
    list: () => ({
      [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(failure) }),
    }),
    listBatches: () => ({
      [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(failure) }),
    }),
    mkdir: () => Promise.reject(failure),
    writeFile: () => Promise.reject(failure),
    open: () => Promise.reject(failure),
    read: async () => {
      let reads = 0;
      return new Readable({
        read() {
          if (reads++ === 0) this.push(Buffer.from('abc'));
          else setImmediate(() => this.destroy(failure));
        },
      });
    },
    hash: () => Promise.reject(failure),
    move: () => Promise.reject(failure),
    copy: () => Promise.reject(failure),
    delete: () => Promise.reject(failure),
    discardStaging: () => Promise.reject(failure),
  };

  it('rethrows the very error of every operation and counts it', async () => {
    const m = new PromMetrics({ collectDefaults: false });
    const b = instrumentBackend(failing, m);
    await expect(b.stat('x')).rejects.toBe(failure);
    await expect(b.mkdir('x', { parents: false })).rejects.toBe(failure);
    await expect(b.writeFile('x', body('x'), { stagingId: 's' })).rejects.toBe(failure);
    await expect(b.hash('x')).rejects.toBe(failure);
    await expect(b.open('x')).rejects.toBe(failure);
    await expect(b.move('x', 'y', { overwrite: false })).rejects.toBe(failure);
    await expect(b.copy('x', 'y', { overwrite: false })).rejects.toBe(failure);
    await expect(b.delete('x', { recursive: false })).rejects.toBe(failure);
    await expect(b.discardStaging('s')).rejects.toBe(failure);
    await expect(collect(b.list(''))).rejects.toBe(failure);
    const text = await m.text();
    for (const operation of ['stat', 'mkdir', 'writeFile', 'hash', 'read', 'move', 'copy', 'delete', 'discardStaging', 'list']) {
      expect(sampleValue(text, OPS, { backend: 'local', operation, outcome: 'error' }), operation).toBe(1);
      expect(sampleValue(text, OPS, { backend: 'local', operation, outcome: 'ok' }), operation).toBeUndefined();
    }
  });

  it('a stream that fails mid-way fails for the consumer with the same error, after the bytes it gave', async () => {
    const m = new PromMetrics({ collectDefaults: false });
    const stream = await instrumentBackend(failing, m).read('x');
    const seen: Buffer[] = [];
    await expect(
      (async () => {
        for await (const chunk of stream) seen.push(chunk as Buffer);
      })(),
    ).rejects.toBe(failure);
    expect(Buffer.concat(seen).toString()).toBe('abc');
    const text = await m.text();
    expect(sampleValue(text, OPS, { backend: 'local', operation: 'read', outcome: 'ok' })).toBe(1);
    expect(sampleValue(text, BYTES, { backend: 'local', operation: 'read' })).toBe(3);
  });

  it('a consumer that destroys the stream early releases the source', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-metrics-'));
    try {
      await writeFile(path.join(root, 'big.bin'), Buffer.alloc(4 * 1024 * 1024));
      let source: Readable | undefined;
      const local = new LocalExecutor({ rootPath: root });
      const spy: Backend = { ...failing, read: async (p) => (source = await local.read(p)) };
      const stream = await instrumentBackend(spy, new PromMetrics({ collectDefaults: false })).read('big.bin');
      for await (const _ of stream) break;
      await new Promise((r) => setImmediate(r));
      expect(source?.destroyed).toBe(true);
      expect((await readFile(path.join(root, 'big.bin'))).length).toBe(4 * 1024 * 1024);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

// The same conformance suites the bare executors pass, run through the wrapper.
backendConformanceSuite('local, instrumented', async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-metrics-'));
  const raw = (rel: string) => path.join(root, rel);
  return {
    backend: instrumentBackend(new LocalExecutor({ rootPath: root }), new PromMetrics({ collectDefaults: false })),
    async putRaw(rel, bytes) {
      await mkdir(path.dirname(raw(rel)), { recursive: true });
      await writeFile(raw(rel), bytes);
    },
    async getRaw(rel) {
      return readFile(raw(rel)).catch(() => null);
    },
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});

backendConformanceSuite('s3, instrumented', async () => {
  const server = await sharedS3();
  const bucket = await server.createBucket();
  const prefix = 'tenant/';
  return {
    backend: instrumentBackend(
      new S3Executor({ bucket, prefix, endpoint: server.endpoint, region: 'us-east-1', credentials: TEST_S3_CREDENTIALS }),
      new PromMetrics({ collectDefaults: false }),
    ),
    putRaw: (rel, bytes) => putRawKey(server.client, bucket, prefix + rel, bytes),
    getRaw: (rel) => getRawKey(server.client, bucket, prefix + rel),
    cleanup: () => emptyBucket(server.client, bucket),
  };
});
