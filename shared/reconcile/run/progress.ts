/** A run's counts as others see them while it runs: progress reports, and a checkpoint's counts. */
import type { ReconcileCounts } from '../types.ts';

// Progress (the job row's counts, for `filestore reconcile --wait`) every PROGRESS_EVERY
// entries and at most every PROGRESS_MS, written beside the work rather than awaited by it:
// awaited every 2,000 entries, a 100k audit waited on ~50 UPDATEs of its job row.
export const PROGRESS_EVERY = 2_000;
const PROGRESS_MS = 250;

/** Writes progress beside the run: at most one report at a time, never failing the run. */
export class ProgressReporter {
  /** `checked` at the last look: the next comes PROGRESS_EVERY entries later. */
  last = 0;
  private lastAt = Number.NEGATIVE_INFINITY;
  /** The report being written, if any (the run awaits it before it returns). */
  running: Promise<void> | null = null;

  constructor(
    private readonly counts: ReconcileCounts,
    private readonly progress: (counts: ReconcileCounts) => Promise<void>,
  ) {}

  /** Progress now, unless a report is still being written or the last one is too recent. */
  report(): void {
    // The next look comes PROGRESS_EVERY entries later either way (not on every entry).
    this.last = this.counts.checked;
    const now = performance.now();
    if (this.running !== null || now - this.lastAt < PROGRESS_MS) return;
    this.lastAt = now;
    const counts = { ...this.counts };
    // The worker's callback logs a failed write itself: progress must not fail the work, even
    // a callback that throws rather than rejects.
    this.running = Promise.resolve()
      .then(() => this.progress(counts))
      .catch(() => {})
      .finally(() => (this.running = null));
  }
}

export function addCounts(a: ReconcileCounts, b: ReconcileCounts): ReconcileCounts {
  const out = { ...a };
  for (const k of Object.keys(b) as Array<keyof ReconcileCounts>) out[k] += b[k];
  return out;
}

export function subtractCounts(a: ReconcileCounts, b: ReconcileCounts): ReconcileCounts {
  const out = { ...a };
  for (const k of Object.keys(b) as Array<keyof ReconcileCounts>) out[k] -= b[k];
  return out;
}
