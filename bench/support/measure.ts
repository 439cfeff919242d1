import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

/** What a batch of concurrent operations achieved. */
export interface Throughput {
  ops: number;
  seconds: number;
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Share of the machine's CPU time (all cores, every process) that was busy meanwhile; NaN off Linux. */
  machineBusy: number;
  /** CPU seconds this process used meanwhile. */
  processCpuSeconds: number;
}

/** Busy and total jiffies of the whole machine since boot (first line of /proc/stat). */
function machineJiffies(): { busy: number; total: number } | null {
  try {
    const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
  } catch {
    return null;
  }
}

/** Nearest-rank percentile of ascending `sorted` values (p in 0..100). */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

/**
 * Runs `op(0) … op(total - 1)` on `concurrency` workers that pull the next index from a shared
 * counter (so a slow operation delays one worker, not a fixed share), timing each operation.
 */
export async function runConcurrent(
  total: number,
  concurrency: number,
  op: (index: number) => Promise<void>,
): Promise<Throughput> {
  const latencies: number[] = [];
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < total; i = next++) {
      const t0 = performance.now();
      await op(i);
      latencies.push(performance.now() - t0);
    }
  };
  const j0 = machineJiffies();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const j1 = machineJiffies();
  latencies.sort((a, b) => a - b);
  return {
    ops: total,
    seconds,
    opsPerSecond: total / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    machineBusy: j0 && j1 && j1.total > j0.total ? (j1.busy - j0.busy) / (j1.total - j0.total) : Number.NaN,
    processCpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

export const MiB = 1024 * 1024;

/** Reads a positive integer from the environment, or the default. */
export function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, not ${JSON.stringify(raw)}`);
  return n;
}

/** A plain-text table with columns padded to their widest cell. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((cell, c) => cell.padEnd(widths[c] as number)).join(' | ')} |`;
  const rule = `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

export const fmt = (n: number, digits = 1): string =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : 'n/a';
