import { readFileSync } from 'node:fs';

/** Busy and total jiffies of the whole machine since boot (first line of /proc/stat); null off Linux. */
export function machineJiffies(): { busy: number; total: number } | null {
  try {
    const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
  } catch {
    return null;
  }
}

/** Share of the machine's CPU time (all cores, every process) that was busy since `before`; NaN off Linux. */
export function machineBusySince(before: { busy: number; total: number } | null): number {
  const after = machineJiffies();
  return before && after && after.total > before.total ? (after.busy - before.busy) / (after.total - before.total) : Number.NaN;
}

/**
 * CPU seconds (user + system) another process has used so far, from /proc/<pid>/stat; NaN off
 * Linux. `ticksPerSecond` is `getconf CLK_TCK` (100 on every Linux we run on).
 */
export function processCpuSeconds(pid: number, ticksPerSecond = 100): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond; // utime, stime (fields 14, 15)
  } catch {
    return Number.NaN;
  }
}

/** Peak resident set size (VmHWM, KiB) of another process so far; 0 off Linux or once it is gone. */
export function processPeakRssKB(pid: number): number {
  try {
    return Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** Proportional set size (KiB) of a process now: its own pages, plus its share of pages it shares; 0 when unreadable. */
export function processPssKB(pid: number | 'self'): number {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}
