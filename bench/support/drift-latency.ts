/**
 * Part 1 of the drift bench: single-file changes, one at a time.
 *
 * Each change rewrites one existing, catalogued file with plain fs (outside Filestore) to a
 * size it never had, then waits for both the agent's `filestore.node.reconciled` event for that
 * path with that size (Redis pub/sub, received here) and inotifywait's line for it (the peer,
 * watching the same directory during the same changes). Every file is changed once, so no
 * earlier event of the same path can be mistaken for this one. The next change starts as soon
 * as both have arrived. The `filestore.drift.detected` event of the change is recorded too: it
 * splits the latency into "watcher + debounce + drift sink" and "reconcile job + relay".
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { EventTap } from './drift-agent.ts';
import type { InotifyMonitor } from './drift-inotify.ts';
import { percentile } from './measure.ts';
import { machineBusySince, machineJiffies, processCpuSeconds } from './proc.ts';

export interface LatencyPlan {
  tap: EventTap;
  monitor: InotifyMonitor;
  mountId: string;
  root: string;
  /** Mount-relative paths of catalogued files, one per change (warm-up ones first). */
  files: string[];
  warmup: number;
  /** Makes the new sizes of this run differ from every earlier run's. */
  round: number;
  agentPid: number;
  /** The agent's /metrics: its event-loop delay (prom-client, reset at each scrape) over the measured changes. */
  metricsUrl: string;
  timeoutMs?: number | undefined;
  progress: (line: string) => void;
}

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface LatencyResult {
  changes: number;
  warmup: number;
  /** Changes whose event (or inotifywait line) did not arrive within the timeout. */
  timeouts: { reconciled: number; inotify: number; drift: number };
  reconciled: Percentiles;
  drift: Percentiles;
  /**
   * The drift.detected part split at its `occurredAt` (the drift sink's transaction, on the
   * database clock of this machine): write → event written, and written → received (the
   * time the event waited in the outbox for the relay).
   */
  driftWritten: Percentiles;
  driftInOutbox: Percentiles;
  /** reconciled − drift.detected, per change. */
  afterDrift: Percentiles;
  inotify: Percentiles;
  seconds: number;
  machineBusy: number;
  agentCpuSecondsPerChange: number;
  /** The agent's event-loop delay over the measured changes (ms), from its nodejs_eventloop_lag_* gauges. */
  eventLoop: { p99: number; max: number; mean: number };
  /** The slowest changes: latency, its part before drift.detected, and when it started (s into the measured run). */
  slowest: Array<{ ms: number; driftMs: number; inOutboxMs: number; atS: number }>;
}

/** nodejs_eventloop_lag_{p99,max,mean}_seconds of the agent, in ms (NaN if unreadable). */
async function eventLoopLag(metricsUrl: string): Promise<{ p99: number; max: number; mean: number }> {
  const text = await fetch(metricsUrl)
    .then((r) => r.text())
    .catch(() => '');
  const gauge = (name: string) => Number(new RegExp(`^nodejs_eventloop_lag_${name}_seconds (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN) * 1000;
  return { p99: gauge('p99'), max: gauge('max'), mean: gauge('mean') };
}

/** Size of file `i`'s rewrite in run `round`: 2,000 B and up, never the 1,000 B it was created with. */
export const rewriteSize = (round: number, i: number): number => 2000 + round * 1000 + (i % 1000);

export function summarise(values: number[]): Percentiles {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? Number.NaN };
}

interface Arrival {
  reconciled: number;
  drift: number;
  inotify: number;
  /** When the write started, ms into the measured run. */
  at: number;
  /** occurredAt of the change's drift.detected, on our clock. */
  driftWritten: number;
}

export async function measureLatency(p: LatencyPlan): Promise<LatencyResult> {
  const timeoutMs = p.timeoutMs ?? 10_000;
  const measured: Arrival[] = [];
  let j0 = machineJiffies();
  let cpu0 = processCpuSeconds(p.agentPid);
  let t0All = performance.now();
  for (let i = 0; i < p.files.length; i++) {
    if (i === p.warmup) {
      await eventLoopLag(p.metricsUrl); // a scrape resets the agent's delay histogram
      j0 = machineJiffies();
      cpu0 = processCpuSeconds(p.agentPid);
      t0All = performance.now();
    }
    const path = p.files[i] as string;
    const abs = join(p.root, path);
    const size = rewriteSize(p.round, i);
    const arrival: Arrival = { reconciled: Number.NaN, drift: Number.NaN, inotify: Number.NaN, at: 0, driftWritten: Number.NaN };
    let done: () => void = () => {};
    const both = new Promise<void>((resolve) => (done = resolve));
    const check = () => {
      if (Number.isFinite(arrival.reconciled) && Number.isFinite(arrival.inotify)) done();
    };
    const offEvents = p.tap.on((e) => {
      if (e.type === 'filestore.drift.detected' && e.data.path === path && !Number.isFinite(arrival.drift)) {
        arrival.drift = e.at;
        arrival.driftWritten = Date.parse(e.occurredAt) - performance.timeOrigin;
      }
      if (e.type !== 'filestore.node.reconciled') return;
      const node = e.data.node as { path?: string; sizeBytes?: number | string } | undefined;
      if (node?.path === path && Number(node.sizeBytes) === size && !Number.isFinite(arrival.reconciled)) {
        arrival.reconciled = e.at;
        check();
      }
    });
    const offLines = p.monitor.onLine((l) => {
      if (l.path === abs && !Number.isFinite(arrival.inotify)) {
        arrival.inotify = l.at;
        check();
      }
    });
    const start = performance.now();
    await writeFile(abs, Buffer.alloc(size, 0x62));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([both, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    offEvents();
    offLines();
    if (i >= p.warmup) {
      measured.push({
        reconciled: arrival.reconciled - start,
        drift: arrival.drift - start,
        inotify: arrival.inotify - start,
        at: start - t0All,
        driftWritten: arrival.driftWritten - start,
      });
    }
    const n = i + 1 - p.warmup;
    if (n > 0 && n % 250 === 0) {
      const so = summarise(measured.map((m) => m.reconciled));
      p.progress(`  ${n}/${p.files.length - p.warmup} changes: reconciled p50 ${so.p50.toFixed(0)} ms, p99 ${so.p99.toFixed(0)} ms so far`);
    }
  }
  const seconds = (performance.now() - t0All) / 1000;
  const eventLoop = await eventLoopLag(p.metricsUrl);
  const machineBusy = machineBusySince(j0);
  const agentCpu = processCpuSeconds(p.agentPid) - cpu0;
  const missing = (k: keyof Arrival) => measured.filter((m) => !Number.isFinite(m[k])).length;
  // A change whose event never came counts as the timeout in the percentiles: slower than anything seen.
  const orTimeout = (v: number) => (Number.isFinite(v) ? v : timeoutMs);
  return {
    changes: measured.length,
    warmup: p.warmup,
    timeouts: { reconciled: missing('reconciled'), inotify: missing('inotify'), drift: missing('drift') },
    reconciled: summarise(measured.map((m) => orTimeout(m.reconciled))),
    drift: summarise(measured.map((m) => m.drift)),
    driftWritten: summarise(measured.map((m) => m.driftWritten)),
    driftInOutbox: summarise(measured.map((m) => m.drift - m.driftWritten)),
    afterDrift: summarise(measured.map((m) => m.reconciled - m.drift)),
    inotify: summarise(measured.map((m) => orTimeout(m.inotify))),
    seconds,
    machineBusy,
    agentCpuSecondsPerChange: agentCpu / Math.max(1, measured.length),
    eventLoop,
    slowest: measured
      .map((m) => ({ ms: orTimeout(m.reconciled), driftMs: m.drift, inOutboxMs: m.drift - m.driftWritten, atS: m.at / 1000 }))
      .sort((a, b) => b.ms - a.ms)
      .slice(0, 10),
  };
}
